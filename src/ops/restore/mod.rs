//! `sp restore [ID|latest] [--site NAME]... [--as NEWNAME] [--from NAME|URL|DIR] [--identity FILE]
//! [--yes] [--dry-run]`: bring sites back from a snapshot — on a bare host, or next to the
//! originals as a clone.
//!
//! 1. find the snapshot (`latest`: see [`snapshot::Pick`]; in `--from DIR` or `backup_dir`;
//!    from a destination it is first fetched and decrypted into a staging folder, see
//!    [`fetch`]); take the host lock;
//! 2. plan ([`plan::RestorePlan`]) from the signed manifest (see [`crate::key`]) and what is on
//!    the host, reading no data: each site's target, what it would replace, where its image
//!    comes from; a site whose uid another site holds is refused, and so is any conflict
//!    without `--yes`; `--dry-run` prints the plan and stops;
//! 3. verify the checksums of the dumps to load **before changing anything** (each dump's
//!    trailer is checked as it loads; each site archive is hashed and checked member by member
//!    as it unpacks into a staging directory, see [`snapshot::stage`]); a site that replaces a
//!    live one is proven whole here;
//! 4. what `--yes` replaces is snapshotted (`pre-restore`) and taken down; the registry
//!    credentials are merged (pulls need them while files unpack); the proxy's certificates
//!    and account keys are put in place unless the host's proxy has data of its own, so the
//!    proxy serves the same certificates the moment it starts;
//! 5. per site ([`site`]), all sites at once: the files (unpacked into
//!    `SITES_DIR/.sp-staging-NAME-*`, its `site.toml` checked like input, renamed into place
//!    only once proven) ‖ the database (loaded as the site's own user) ‖ the image, then the
//!    user with its original password and the container through the same code as `sp apply`.
//!    A site whose archive is refused or damaged leaves nothing behind, and the host config
//!    ([`host`]) is written only once some site's files are proven;
//! 6. the proxy's routes, for every restored site.
//!
//! While a restore is under way each site directory carries a `.sp-restore` marker
//! (`ID running` / `ID done`) — before its files are in place, `SITES_DIR/.sp-restore-NAME`
//! stands in for it — which is what makes a killed restore safe to run again; the markers go
//! when the whole restore has succeeded.

pub mod fetch;
mod host;
pub mod plan;
mod site;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result, StepExt};
use crate::site::validate_name;
use crate::snapshot::{self, SiteEntry};

use self::host::plan_host;
use self::plan::RestorePlan;
pub(super) use self::site::restore_into;
use self::site::{pending_marker, read_marker, restore_site, Run, Target, MARKER};
use super::{provision, Ctx};

/// Connections that load one site's dump at once (a site's tables load side by side).
pub const LOAD_CONNECTIONS: usize = 2;

/// Options of `sp restore`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RestoreOpts {
    /// Snapshot id, or `latest` (the whole host: the newest full snapshot; with --site: the newest holding it).
    #[arg(default_value = "latest")]
    pub id: String,
    /// Only this site (repeatable); all sites and the host config by default.
    #[arg(long = "site", value_name = "NAME")]
    pub sites: Vec<String>,
    /// Restore the one --site under this new name, database and user (a clone).
    #[arg(long = "as", value_name = "NEWNAME")]
    pub as_name: Option<String>,
    #[command(flatten)]
    pub source: super::source::SourceOpts,
    /// Replace sites, databases and containers that exist (their state is snapshotted first).
    #[arg(long, short)]
    pub yes: bool,
    /// Print what would be restored and replaced, and where each image comes from; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteRestore {
    pub site: String,
    /// The site's name in the snapshot (differs with --as).
    pub from_site: String,
    /// Already restored from this snapshot by an earlier run.
    pub skipped: bool,
    pub phases: Vec<Phase>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub id: String,
    pub from: PathBuf,
    /// Only the plan was made (`--dry-run`): nothing changed.
    pub dry_run: bool,
    pub plan: RestorePlan,
    pub verify_seconds: f64,
    pub host_config: bool,
    /// Snapshot taken of what --yes replaced.
    pub safety_snapshot: Option<String>,
    pub sites: Vec<SiteRestore>,
    /// Wall time of the whole restore: the measured RTO.
    pub seconds: f64,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run {
            return write!(f, "{}", self.plan);
        }
        writeln!(f, "snapshot {} from {}", self.id, self.from.display())?;
        writeln!(
            f,
            "checked the manifest and the dumps' checksums in {:.1}s (each archive was checked as it unpacked)",
            self.verify_seconds
        )?;
        if let Some(s) = &self.safety_snapshot {
            writeln!(f, "snapshot of the replaced state: {s}")?;
        }
        if self.host_config {
            writeln!(f, "host config and registry credentials restored")?;
        }
        for s in &self.sites {
            let from = if s.from_site != s.site {
                format!(" (from {})", s.from_site)
            } else {
                String::new()
            };
            if s.skipped {
                writeln!(f, "{}{from}: already restored from this snapshot", s.site)?;
                continue;
            }
            let phases: Vec<String> = s
                .phases
                .iter()
                .map(|p| format!("{} {:.1}s", p.name, p.seconds))
                .collect();
            writeln!(
                f,
                "{}{from}: {:.1}s ({})",
                s.site,
                s.seconds,
                phases.join(", ")
            )?;
        }
        write!(
            f,
            "restored {} site(s) in {:.1}s",
            self.sites.len(),
            self.seconds
        )
    }
}
/// `sp restore`.
pub async fn run(ctx: &Ctx, opts: &RestoreOpts) -> Result<RestoreReport> {
    let started = Instant::now();
    let id = if opts.id.is_empty() {
        "latest"
    } else {
        opts.id.as_str()
    };
    if let Some(n) = &opts.as_name {
        validate_name(n)?;
        if opts.sites.len() != 1 {
            return Err(Error::Invalid(
                "--as restores one site: name it with --site".into(),
            ));
        }
    }
    for s in &opts.sites {
        validate_name(s)?;
    }
    let mut wanted = opts.sites.clone();
    wanted.sort();
    wanted.dedup();
    let pick = if wanted.is_empty() {
        snapshot::Pick::Host
    } else {
        snapshot::Pick::Sites(&wanted)
    };
    let staged = fetch::stage(ctx, &opts.source, id, pick).await?;
    let from = staged.dir.clone();
    let (id, dir) = snapshot::resolve(&from, staged.id.as_deref().unwrap_or(id), pick)?;
    let keyring = ctx.keyring(&opts.source.keys)?;
    let _lock = ctx.lock(&format!("restore {id}"))?;

    // 2. Plan, from the signed manifest and what is on the host; no data is read yet.
    let manifest = snapshot::authenticate(&dir, &keyring)?;
    let entries: Vec<&SiteEntry> = if opts.sites.is_empty() {
        manifest.sites.iter().collect()
    } else {
        wanted
            .iter()
            .map(|n| {
                manifest
                    .sites
                    .iter()
                    .find(|s| &s.name == n)
                    .ok_or_else(|| Error::NotFound(format!("snapshot {id} has no site {n:?}")))
            })
            .collect::<Result<_>>()?
    };
    let whole_host = opts.sites.is_empty() && opts.as_name.is_none();
    // The host config decides where sites live: plan with it, write it only once the plan
    // holds.
    let mut host = plan_host(ctx, &dir, whole_host)?;
    let ctx = match &host.config {
        Some((_, cfg)) => ctx.with_config(cfg.clone()),
        None => ctx.reload()?,
    };
    let engine = ctx.engine().await?;
    let db = ctx.db()?;
    // Image archives live beside the snapshots we restore from.
    let mut rcfg = ctx.config.clone();
    rcfg.backup_dir = from.clone();
    let rctx = ctx.with_config(rcfg);
    // Uids and domains the host's other sites hold: a restored site may not take them.
    let names: Vec<String> = entries
        .iter()
        .map(|e| opts.as_name.clone().unwrap_or_else(|| e.name.clone()))
        .collect();
    let claims = provision::claims_except(&ctx, &names)?;
    let mut targets = Vec::new();
    let mut sites = Vec::new();
    for (e, name) in entries.iter().zip(&names) {
        if opts.as_name.is_none() {
            provision::check_uid_free(&claims, name, e.uid)?;
        }
        let paths = ctx.paths(name);
        let seen = plan::Observed {
            marker: read_marker(&paths),
            dir: paths.root.exists().then(|| paths.root.clone()),
            database: e.database.is_some() && db.database_exists(name).await?,
            containers: engine
                .list(&ctx.config.instance, Some(name), None)
                .await?
                .len(),
            image_local: match &e.image_id {
                Some(i) => engine.has_image(i).await,
                None => false,
            },
            image_archive: e
                .image_id
                .as_ref()
                .is_some_and(|i| provision::image_archive(&rctx, i).exists()),
        };
        let size: u64 = manifest
            .files
            .iter()
            .filter(|f| {
                f.path == e.archive || e.database.as_ref().is_some_and(|d| d.dump == f.path)
            })
            .map(|f| f.size)
            .sum();
        let sp = plan::site_plan(&id, e, name, &seen, size);
        targets.push(Target {
            entry: e,
            name: name.clone(),
            skip: sp.action == plan::Action::Skip,
        });
        sites.push(sp);
    }
    let replaced: Vec<String> = sites
        .iter()
        .filter(|s| !s.replaces.is_empty())
        .map(|s| s.site.clone())
        .collect();
    // Only what can be snapshotted first may be replaced.
    let mut specs = Vec::new();
    for n in &replaced {
        match ctx.site(n) {
            Ok(spec) => specs.push(spec),
            Err(e) => {
                return Err(Error::Conflict(format!(
                    "{n} exists but cannot be snapshotted before it is replaced ({e}); nothing was restored from snapshot {id} — purge or move it first"
                )))
            }
        }
    }
    let plan = RestorePlan {
        id: id.clone(),
        kind: manifest.kind,
        from: from.clone(),
        whole_host,
        host_config: host.config.is_some(),
        bytes: sites.iter().map(|s| s.bytes).sum(),
        sites,
        safety_snapshot_of: specs.iter().map(|s| s.name.clone()).collect(),
    };
    if !replaced.is_empty() && !opts.yes && !opts.dry_run {
        return Err(Error::Conflict(format!(
            "restoring snapshot {id} would replace existing state ({}); nothing was restored — pass --yes to replace it (its current state is snapshotted first), or --dry-run to see the whole plan",
            plan.conflicts().join("; ")
        )));
    }
    if opts.dry_run {
        return Ok(RestoreReport {
            id,
            from,
            dry_run: true,
            plan,
            verify_seconds: 0.0,
            host_config: false,
            safety_snapshot: None,
            sites: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    // 3. Verify before anything changes.
    ctx.note(&format!("verifying snapshot {id}"));
    let t = Instant::now();
    let d = dir.clone();
    let only = wanted.clone();
    // A site that replaces a live one is proven whole first (its archive decompressed and
    // checked too): its old state goes before its files could be checked while unpacking.
    let replacing: Vec<String> = plan
        .sites
        .iter()
        .filter(|s| !s.replaces.is_empty())
        .map(|s| s.from_site.clone())
        .collect();
    let (_, faults) = tokio::task::spawn_blocking(move || {
        snapshot::verify_sites(
            &d,
            snapshot::Depth::BeforeRestore,
            &only,
            &replacing,
            &keyring,
        )
    })
    .await
    .map_err(|e| Error::Other(format!("verify task failed: {e}")))??;
    if !faults.is_empty() {
        let list: Vec<String> = faults
            .iter()
            .map(|f| format!("{}: {}", f.file, f.problem))
            .collect();
        return Err(Error::Other(format!(
            "snapshot {id} failed verification; nothing was restored: {}",
            list.join("; ")
        )));
    }
    let verify_seconds = t.elapsed().as_secs_f64();

    // 4. What --yes replaces: snapshotted first, then removed.
    let mut safety_snapshot = None;
    if !specs.is_empty() {
        let r = super::backup::snapshot_sites(&ctx, &specs, snapshot::Kind::PreRestore)
            .await
            .step(&replaced.join(","), "snapshot before replacing")?;
        ctx.note(&format!("snapshot of the current state: {}", r.id));
        safety_snapshot = Some(r.id);
    }
    for n in &replaced {
        // Its database is replaced as the dump loads; its user keeps its grants meanwhile.
        let what = provision::Teardown {
            database: false,
            files: true,
        };
        provision::teardown_site(&ctx, &engine, Some(&db), n, what).await?;
    }

    // Pulls need the credentials while the files unpack; the config waits for proven files.
    host.apply_credentials(&ctx)?;
    // The proxy's certificates, before the first site starts the proxy.
    if host::restore_proxy(&rctx, &engine, &dir, &manifest.files).await? {
        ctx.note("restored the proxy's certificates and account keys");
    }
    let config_text = host.config.take().map(|(text, _)| text);

    // 5. The sites' files and data, about one site per core at a time, in order (each loads
    // its rows over several connections already); a site whose data is in starts its
    // container while the next ones load, rather than every site starting at the very end.
    let run = Run {
        ctx: &rctx,
        engine: &engine,
        db: &db,
        data_slots: tokio::sync::Semaphore::new(crate::cores()),
        id: &id,
        dir: &dir,
        claims,
        files: &manifest.files,
        config: std::sync::Mutex::new(config_text),
        config_written: std::sync::atomic::AtomicBool::new(false),
        files_failed: std::sync::atomic::AtomicBool::new(false),
    };
    let all = futures_util::future::join_all(targets.iter().map(|t| restore_site(&run, t)));
    let results = tokio::select! {
        r = all => r,
        // The markers say where it stopped; the same command goes on from there.
        _ = crate::interrupt::wait() => {
            return Err(Error::Interrupted(format!(
                "restore of snapshot {id} interrupted — to resume, run `{}`",
                resume_command(opts, &id)
            )));
        }
    };
    if !run.files_failed.load(std::sync::atomic::Ordering::SeqCst) {
        run.publish_config()?;
    }
    let host_config = run.config_written.load(std::sync::atomic::Ordering::SeqCst);
    db.close().await;
    let mut sites = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => sites.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        // Done: the markers only ever mean "a restore of this snapshot is under way".
        for t in &targets {
            let paths = rctx.paths(&t.name);
            let _ = std::fs::remove_file(paths.root.join(MARKER));
            let _ = std::fs::remove_file(pending_marker(&paths));
        }
    } else if errors.len() == 1 && errors[0].exit_code() != 1 {
        // Refused (bad input, a conflict): running it again would not help.
        return Err(errors.remove(0));
    } else {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        return Err(Error::Other(format!(
            "restore of {} site(s) from snapshot {id} failed: {} — to resume, run `{}`",
            list.len(),
            list.join("; "),
            resume_command(opts, &id)
        )));
    }
    // Every restored site's route (each one's start switched its own already).
    if rctx.config.proxy.enabled() && sites.iter().any(|s| !s.skipped) {
        super::proxy::converge(&rctx, &engine, None).await?;
    }
    Ok(RestoreReport {
        id,
        from,
        dry_run: false,
        plan,
        verify_seconds,
        host_config,
        safety_snapshot,
        sites,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The command that resumes this restore: the same one, with the snapshot named by its id (so
/// a newer snapshot taken meanwhile can never be picked up instead).
pub fn resume_command(opts: &RestoreOpts, id: &str) -> String {
    let q = |p: &Path| {
        let t = p.display().to_string();
        if t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
        {
            t
        } else {
            format!("'{}'", t.replace('\'', "'\\''"))
        }
    };
    let mut c = format!("sp restore {id}");
    for s in &opts.sites {
        c.push_str(&format!(" --site {s}"));
    }
    if let Some(a) = &opts.as_name {
        c.push_str(&format!(" --as {a}"));
    }
    if let Some(f) = &opts.source.from {
        c.push_str(&format!(" --from {}", q(f)));
    }
    for k in &opts.source.keys {
        c.push_str(&format!(" --key {}", q(k)));
    }
    if let Some(i) = &opts.source.identity {
        c.push_str(&format!(" --identity {}", q(i)));
    }
    if opts.yes {
        c.push_str(" --yes");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_command_names_the_snapshot_by_its_id() {
        let opts = RestoreOpts {
            id: "latest".into(),
            sites: vec!["blog".into()],
            as_name: Some("copy".into()),
            source: crate::ops::source::SourceOpts {
                from: Some("/mnt/my backups".into()),
                keys: vec!["/root/old.pub".into()],
                identity: None,
            },
            yes: true,
            dry_run: false,
        };
        assert_eq!(
            resume_command(&opts, "20261201T031700Z"),
            "sp restore 20261201T031700Z --site blog --as copy --from '/mnt/my backups' --key /root/old.pub --yes"
        );
        let opts = RestoreOpts {
            source: crate::ops::source::SourceOpts {
                from: Some("offsite".into()),
                identity: Some("/root/id.age".into()),
                ..opts.source.clone()
            },
            ..opts
        };
        assert_eq!(
            resume_command(&opts, "20261201T031700Z"),
            "sp restore 20261201T031700Z --site blog --as copy --from offsite --key /root/old.pub --identity /root/id.age --yes"
        );
    }
}
