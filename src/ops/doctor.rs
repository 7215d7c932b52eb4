//! `sp doctor`: one line per check of what sp needs; fails when any check fails.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;

use super::Ctx;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
}

impl DoctorReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{:<4} {:<14} {}",
                    if c.ok { "ok" } else { "FAIL" },
                    c.name,
                    c.detail
                )
            })
            .collect();
        write!(f, "{}", lines.join("\n"))
    }
}

/// Minimum free space wanted under sites_dir and backup_dir.
const MIN_FREE: u64 = 1 << 30;

/// `sp doctor`.
pub async fn run(ctx: &Ctx) -> Result<DoctorReport> {
    let mut checks = Vec::new();
    let mut check = |name: &str, r: std::result::Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        checks.push(Check {
            name: name.into(),
            ok,
            detail,
        });
    };
    check("config", Ok(ctx.config_path.display().to_string()));
    let docker = match ctx.engine().await {
        Ok(e) => e.version().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    check("docker", docker);
    let mysql = async {
        let db = ctx.db().map_err(|e| e.to_string())?;
        let version = db.version().await.map_err(|e| e.to_string())?;
        let grants = db.grants().await.map_err(|e| e.to_string())?;
        db.close().await;
        Ok::<_, String>((version, grants))
    }
    .await;
    match mysql {
        Ok((version, grants)) => {
            check("mysql", Ok(version));
            let all = grants.iter().any(|g| {
                let g = g.to_ascii_uppercase();
                (g.contains("ALL PRIVILEGES ON *.*") || g.contains("CREATE USER"))
                    && g.contains("WITH GRANT OPTION")
            });
            check(
                "mysql grants",
                if all {
                    Ok("can create databases, users and grants".into())
                } else {
                    Err(format!(
                        "the admin account needs CREATE, CREATE USER and GRANT OPTION; has: {}",
                        grants.join("; ")
                    ))
                },
            );
        }
        Err(e) => check("mysql", Err(e)),
    }
    check(
        "mysql user_host",
        crate::config::check_user_host(&ctx.config.mysql.user_host),
    );
    check("site networks", site_networks(ctx).await);
    check("proxy", proxy(ctx).await);
    for (name, dir) in [
        ("sites_dir", &ctx.config.sites_dir),
        ("backup_dir", &ctx.config.backup_dir),
        ("state_dir", &ctx.config.state_dir),
    ] {
        check(name, writable(dir));
    }
    for (name, dir) in [
        ("disk sites", &ctx.config.sites_dir),
        ("disk backups", &ctx.config.backup_dir),
    ] {
        check(name, free_space(dir));
    }
    for d in &ctx.config.destinations {
        let reached = crate::store::Destination::open(d, &ctx.config.retention)
            .and_then(|dest| {
                crate::store::blocking(|| crate::store::offsite::ids(dest.store.as_ref()))
            })
            .map(|ids| format!("{} snapshot(s) at {}", ids.len(), d.url))
            .map_err(|e| e.to_string());
        check(&format!("destination {}", d.name), reached);
    }
    if ctx.config.encryption.local {
        // The newest local snapshot, read as the encrypted store it is.
        let stored = super::snapshots::stored_local(ctx).map(|s| {
            let (n, newest) = s
                .map(|(_, l, _)| (l.len(), l.last().map(|x| x.id.clone())))
                .unwrap_or_default();
            format!(
                "snapshots in backup_dir are encrypted to {} age recipient(s): {n} snapshot(s), newest {}; restoring one needs --identity FILE",
                ctx.config.encryption.recipients.len(),
                newest.as_deref().unwrap_or("none")
            )
        });
        check("local encryption", stored.map_err(|e| e.to_string()));
        if !ctx.config.backup.drill_schedule.trim().is_empty() {
            check(
                "drill schedule",
                Ok("WARNING: the scheduled `sp drill` cannot decrypt backup_dir (the age identity is kept off the host), so every scheduled drill fails and is recorded as failed; run `sp drill latest --identity FILE` by hand where the identity is, and set backup.drill_schedule = \"\"".into()),
            );
        }
    }
    if !ctx.config.destinations.is_empty() {
        check(
            "encryption",
            Ok(if ctx.config.encryption.recipients.is_empty() {
                "WARNING: no [encryption] recipients: off-host snapshots are uploaded UNENCRYPTED (database passwords, credentials, every site's data); `sp key generate --output FILE` makes an identity".into()
            } else {
                format!(
                    "off-host snapshots are encrypted to {} age recipient(s)",
                    ctx.config.encryption.recipients.len()
                )
            }),
        );
    }
    let creds = ctx.credentials_path();
    if creds.exists() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        check(
            "credentials",
            if mode & 0o077 == 0 {
                Ok(format!("{} (mode {mode:o})", creds.display()))
            } else {
                Err(format!(
                    "{} is mode {mode:o}; run chmod 600",
                    creds.display()
                ))
            },
        );
    }
    Ok(DoctorReport { checks })
}

/// Every site network that exists is behind sp's nftables table (a reboot empties it;
/// `sp apply` puts it back).
async fn site_networks(ctx: &Ctx) -> std::result::Result<String, String> {
    let engine = ctx.engine().await.map_err(|e| e.to_string())?;
    let mut apart = 0;
    let mut open = Vec::new();
    for name in ctx.site_names().map_err(|e| e.to_string())? {
        let net = crate::engine::site_network(&ctx.config.instance, &name);
        let Some(bridge) = engine.bridge_of(&net).await else {
            continue;
        };
        match crate::firewall::admitted(&bridge) {
            Ok(true) => apart += 1,
            Ok(false) => open.push(name),
            Err(e) => return Err(e.to_string()),
        }
    }
    if open.is_empty() {
        Ok(format!(
            "{apart} site network(s), each kept apart by sp's nftables table"
        ))
    } else {
        Err(format!(
            "not behind sp's nftables table (after a reboot; run `sp apply`): {}",
            open.join(", ")
        ))
    }
}

/// The proxy runs (when sp runs it), and every routed domain has a certificate.
async fn proxy(ctx: &Ctx) -> std::result::Result<String, String> {
    if !ctx.config.proxy.enabled() {
        return Ok("off (proxy.mode = \"none\"): the host brings its own front door".into());
    }
    let st = super::proxy::status(ctx).await.map_err(|e| e.to_string())?;
    if !st.running {
        return Err(format!(
            "{} is not running; run `sp proxy up`",
            st.container
        ));
    }
    let missing: Vec<&str> = st
        .domains
        .iter()
        .filter(|d| d.expires.is_none())
        .map(|d| d.domain.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "no certificate yet for {} — check that DNS points here and ports {}/{} are open, then `sp proxy status`",
            missing.join(", "),
            st.http_port,
            st.https_port
        ));
    }
    Ok(format!(
        "{} running on {}:{}, {} domain(s) with certificates",
        st.container,
        st.listen,
        st.https_port,
        st.domains.len()
    ))
}

fn writable(dir: &Path) -> std::result::Result<String, String> {
    if !dir.is_dir() {
        return Err(format!(
            "{} does not exist (sp init creates it)",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".sp-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"x").map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(format!("{} writable", dir.display()))
}

fn free_space(dir: &Path) -> std::result::Result<String, String> {
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let c =
        std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statvfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "statvfs {}: {}",
            probe.display(),
            std::io::Error::last_os_error()
        ));
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let gib = free as f64 / (1u64 << 30) as f64;
    if free < MIN_FREE {
        Err(format!("only {gib:.1} GiB free under {}", probe.display()))
    } else {
        Ok(format!("{gib:.1} GiB free under {}", probe.display()))
    }
}
