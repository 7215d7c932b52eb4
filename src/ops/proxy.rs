//! `sp proxy up|status|reload`, and [`converge`]: the one path by which add, deploy, rollback,
//! apply, remove, restore and `proxy up` bring the HTTPS front door in line with the sites.
//!
//! [`converge`]:
//! 1. the proxy's image: pulled and pinned by digest once (recorded in
//!    `STATE/proxy/image.json`; its archive is kept by `sp backup` like a site's image);
//! 2. its network and container ([`crate::proxy::container`]): created when missing or when
//!    the plan changed, started when stopped; Caddy's data lives in `STATE/proxy/data`, which
//!    every snapshot carries;
//! 3. the proxy joins the network of every site it routes to;
//! 4. the routes — every site with domains → its current container (or, mid-deploy, the new
//!    one) — become a Caddyfile ([`crate::proxy::caddyfile`]);
//! 5. Caddy adapts and loads it in one step; a config it rejects changes nothing, the running
//!    one keeps serving, and the command fails with Caddy's reason. The accepted file becomes
//!    the one the container starts with.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Role};
use crate::error::{Error, Result};
use crate::proxy::{self, cert, ProxyPlan, Route};

use super::{provision, Ctx};

/// One converge at a time in this process (a restore starts many sites at once); other
/// processes are kept out by the host lock every mutating command holds.
static CONVERGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the proxy keeps its state on the host: `STATE/proxy/`.
pub struct ProxyPaths {
    pub root: PathBuf,
}

impl ProxyPaths {
    pub fn new(ctx: &Ctx) -> Self {
        ProxyPaths {
            root: ctx.config.state_dir.join("proxy"),
        }
    }
    /// Caddy's `/data`: certificates, ACME account keys, OCSP staples.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// Caddy's `/config` (its autosave; sp never reads it).
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }
    /// Mounted read-only at `/etc/caddy`: the Caddyfile and the ACME CA root.
    pub fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }
    pub fn image_state(&self) -> PathBuf {
        self.root.join("image.json")
    }
}

/// The proxy image as pinned: what `proxy.image` said, and what it resolved to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageState {
    /// `proxy.image` when it was pinned.
    pub image: String,
    /// Pinned by digest.
    pub pinned: String,
    /// Local image id.
    pub id: String,
}

impl ImageState {
    /// The recorded pin, if there is one sp can trust (it may come from a snapshot): see
    /// [`ImageState::is_pin_of`].
    pub fn load(paths: &ProxyPaths) -> Option<ImageState> {
        let path = paths.image_state();
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > 64 << 10 {
            return None;
        }
        let st: ImageState = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        st.is_pin_of(&st.image).then_some(st)
    }

    /// Whether this is a pin of `image`: an image id, and a reference to `image`'s own
    /// repository pinned by digest — so a recorded (or restored) file can never make the
    /// proxy run another image than `proxy.image` names.
    pub fn is_pin_of(&self, image: &str) -> bool {
        let (Ok(want), Ok(got)) = (
            crate::site::ImageRef::parse(image),
            crate::site::ImageRef::parse(&self.pinned),
        ) else {
            return false;
        };
        crate::site::history::is_image_id(&self.id)
            && got.digest.is_some()
            && got.registry == want.registry
            && got.path == want.path
    }
}

/// A route as it is served.
#[derive(Debug, Clone, Serialize)]
pub struct DomainRoute {
    pub domain: String,
    pub site: String,
    pub upstream: String,
}

/// What a converge did.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyReport {
    pub container: String,
    pub image: String,
    /// Whether the container was (re)created.
    pub created: bool,
    pub routes: Vec<DomainRoute>,
}

impl std::fmt::Display for ProxyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "proxy {} {} ({}), {} route(s)",
            self.container,
            if self.created { "started" } else { "running" },
            self.image,
            self.routes.len()
        )?;
        for r in &self.routes {
            write!(f, "\n  https://{} → {} ({})", r.domain, r.upstream, r.site)?;
        }
        Ok(())
    }
}

/// Mid-deploy: this site's route goes to this container.
#[derive(Debug, Clone, Copy)]
pub struct Switch<'a> {
    pub site: &'a str,
    pub container: &'a str,
}

/// Refuses a proxy command on a host whose `proxy.mode` is `none`.
fn require_enabled(ctx: &Ctx) -> Result<()> {
    if !ctx.config.proxy.enabled() {
        return Err(Error::Invalid(format!(
            "{}: proxy.mode is \"none\" (the host brings its own front door); set mode = \"caddy\" in [proxy] to let sp run it",
            ctx.config_path.display()
        )));
    }
    Ok(())
}

/// `sp proxy up` and `sp proxy reload`: converge now.
pub async fn up(ctx: &Ctx) -> Result<ProxyReport> {
    require_enabled(ctx)?;
    let _lock = ctx.lock("proxy up")?;
    let engine = ctx.engine().await?;
    converge(ctx, &engine, None).await
}

/// Brings the proxy in line with the sites (the steps in the module docs); refused when the
/// proxy is off (callers ask `proxy.enabled()` first). The caller holds the host lock.
pub async fn converge(
    ctx: &Ctx,
    engine: &Engine,
    switch: Option<Switch<'_>>,
) -> Result<ProxyReport> {
    require_enabled(ctx)?;
    let _one = CONVERGE.lock().await;
    let paths = ProxyPaths::new(ctx);
    // 1. The image.
    let image = ensure_image(ctx, engine, &paths).await?;
    // 2. Network and container.
    for d in [paths.data(), paths.config(), paths.etc()] {
        std::fs::create_dir_all(&d).map_err(|e| Error::io_path("create", &d, e))?;
        set_mode(&d, 0o700)?;
    }
    let mut global = proxy::Global::from_config(&ctx.config.proxy);
    if let Some(root) = &ctx.config.proxy.acme_ca_root {
        let bytes = read_admin_file("proxy.acme_ca_root", root)?;
        if cert::parse_pem(&bytes).is_none() {
            return Err(Error::Invalid(format!(
                "proxy.acme_ca_root {}: not a PEM certificate",
                root.display()
            )));
        }
        crate::fsutil::write_atomic(&paths.etc().join("acme-ca-root.pem"), &bytes, 0o644)?;
    }
    let caddyfile = paths.etc().join("Caddyfile");
    if !caddyfile.exists() {
        // Global options only, until the first load succeeds.
        let text = proxy::caddyfile(&global, &[])?;
        crate::fsutil::write_atomic(&caddyfile, text.as_bytes(), 0o644)?;
    }
    let plan = ProxyPlan {
        instance: ctx.config.instance.clone(),
        image: image.id.clone(),
        image_ref: image.pinned.clone(),
        listen: ctx.config.proxy.listen.clone(),
        http_port: ctx.config.proxy.http_port,
        https_port: ctx.config.proxy.https_port,
        data_dir: paths.data(),
        config_dir: paths.config(),
        etc_dir: paths.etc(),
    };
    let name = proxy::proxy_name(&ctx.config.instance);
    let mut created = false;
    let existing = engine.proxy_container(&ctx.config.instance).await?;
    let mut container = match existing {
        Some(c) if c.config == plan.config_hash() => c,
        other => {
            if let Some(old) = other {
                ctx.note("proxy: its settings changed; recreating the proxy container");
                engine.remove(&old.id).await?;
            }
            engine
                .ensure_plain_network(proxy::container::proxy_network_spec(&ctx.config.instance))
                .await?;
            ctx.note(&format!("proxy: starting {name} ({})", image.pinned));
            let id = engine
                .create_body(&name, proxy::proxy_container_spec(&plan))
                .await?;
            created = true;
            crate::engine::ProxyContainer {
                id,
                running: false,
                config: plan.config_hash(),
                image_ref: image.pinned.clone(),
                networks: vec![proxy::proxy_network(&ctx.config.instance)],
            }
        }
    };
    if !container.running {
        engine.start(&container.id).await.map_err(|e| {
            Error::Other(format!(
                "the proxy container did not start: {e} — is something else listening on {}:{} or :{}? (`sp doctor`)",
                plan.listen, plan.http_port, plan.https_port
            ))
        })?;
        container.running = true;
    }

    // 3 and 4. Routes, and the networks they need.
    let (routes, shown) = routes(ctx, engine, switch).await?;
    for site in routes.iter().map(|r| r.site.as_str()) {
        let net = crate::engine::site_network(&ctx.config.instance, site);
        if !container.networks.contains(&net) {
            engine.join_network(&net, &container.id).await?;
            container.networks.push(net);
        }
    }
    if let Some(extra) = &ctx.config.proxy.extra {
        let bytes = read_admin_file("proxy.extra", extra)?;
        global.extra = Some(String::from_utf8(bytes).map_err(|_| {
            Error::Invalid(format!("proxy.extra {}: not UTF-8 text", extra.display()))
        })?);
    }
    let text = proxy::caddyfile(&global, &routes)?;

    // 5. Load it, and give Caddy a moment to get certificates for domains it routes now for
    // the first time.
    let before = std::fs::read_to_string(paths.etc().join("Caddyfile"))
        .map(|t| proxy::routed_domains(&t))
        .unwrap_or_default();
    load(engine, &container.id, &paths, &text).await?;
    let new: Vec<&str> = shown
        .iter()
        .map(|r| r.domain.as_str())
        .filter(|d| !before.contains(*d))
        .collect();
    await_certificates(ctx, &paths, &new).await;
    Ok(ProxyReport {
        container: name,
        image: image.pinned,
        created,
        routes: shown,
    })
}

/// How long a converge waits for Caddy to obtain a new domain's first certificate.
const CERT_WAIT: Duration = Duration::from_secs(30);

/// Waits until Caddy holds a certificate for each of `domains` (at most [`CERT_WAIT`]), so a
/// command that adds a domain returns when HTTPS answers on it; a domain still without one is
/// a note, not a failure (Caddy keeps asking its CA).
async fn await_certificates(ctx: &Ctx, paths: &ProxyPaths, domains: &[&str]) {
    let deadline = std::time::Instant::now() + CERT_WAIT;
    let data = paths.data();
    loop {
        let missing: Vec<&str> = domains
            .iter()
            .copied()
            .filter(|d| cert::find(&data, d).is_none())
            .collect();
        if missing.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            ctx.note(&format!(
                "proxy: no certificate yet for {} — Caddy keeps asking {}; check DNS and ports 80/443, then `sp proxy status`",
                missing.join(", "),
                ctx.config.proxy.acme_ca
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The most sp reads of a file the config names for the proxy.
const ADMIN_FILE_MAX: u64 = 256 << 10;

/// Reads a file the config names for the proxy (`what`): a regular file, not a link, of at
/// most [`ADMIN_FILE_MAX`] — anything else is refused without a word of its content.
fn read_admin_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io_path("read", path, e))?;
    if !meta.is_file() || meta.len() > ADMIN_FILE_MAX {
        return Err(Error::Invalid(format!(
            "{what} {}: must be a regular file (not a link) of at most {} KiB",
            path.display(),
            ADMIN_FILE_MAX >> 10
        )));
    }
    std::fs::read(path).map_err(|e| Error::io_path("read", path, e))
}

/// Every site with domains → its upstream on its network: the `switch` container for the
/// site being deployed, else its current web container (running, of the image deploy.toml
/// names, before any other). Sites with no container yet get no route (yet); a spec that does
/// not load keeps no route and is named in a note, and the other sites' routes go on.
async fn routes(
    ctx: &Ctx,
    engine: &Engine,
    switch: Option<Switch<'_>>,
) -> Result<(Vec<Route>, Vec<DomainRoute>)> {
    let containers = engine
        .list(&ctx.config.instance, None, Some(Role::Web))
        .await?;
    let mut routes = Vec::new();
    let mut shown = Vec::new();
    for name in ctx.site_names()? {
        let spec = match ctx.site(&name) {
            Ok(s) => s,
            Err(e) => {
                ctx.note(&format!("proxy: {name} gets no route: {e}"));
                continue;
            }
        };
        if spec.domains.is_empty() {
            continue;
        }
        let target = match switch {
            Some(s) if s.site == spec.name => Some(s.container.to_string()),
            _ => {
                let current = ctx.deploy_state(&name).ok().and_then(|s| s.current_id);
                current_container(&containers, &name, current.as_deref())
            }
        };
        let Some(target) = target else { continue };
        let upstream = format!("{target}:{}", spec.port);
        for d in &spec.domains {
            shown.push(DomainRoute {
                domain: d.clone(),
                site: spec.name.clone(),
                upstream: upstream.clone(),
            });
        }
        routes.push(Route {
            site: spec.name.clone(),
            domains: spec.domains.clone(),
            upstream,
        });
    }
    Ok((routes, shown))
}

/// The container a site's route goes to: running and of the deployed image id, else running,
/// else any (a stopped site's, which answers 502 until it starts).
fn current_container(
    containers: &[crate::engine::ContainerInfo],
    site: &str,
    image_id: Option<&str>,
) -> Option<String> {
    let mine: Vec<_> = containers.iter().filter(|c| c.site == site).collect();
    mine.iter()
        .find(|c| c.running() && image_id.is_some_and(|i| c.image == i))
        .or_else(|| mine.iter().find(|c| c.running()))
        .or(mine.first())
        .map(|c| c.name.clone())
}

/// Pins the proxy image once: the recorded pin while `proxy.image` is unchanged (its image
/// pulled by digest, or loaded from its archive, when missing), else a fresh pull.
async fn ensure_image(ctx: &Ctx, engine: &Engine, paths: &ProxyPaths) -> Result<ImageState> {
    let want = &ctx.config.proxy.image;
    if let Some(st) = ImageState::load(paths).filter(|s| &s.image == want) {
        let id = provision::ensure_image(ctx, engine, &st.pinned, Some(&st.id))
            .await
            .map_err(|e| Error::Other(format!("proxy image {}: {e}", st.pinned)))?;
        return Ok(ImageState { id, ..st });
    }
    let pinned = provision::pull(ctx, engine, want)
        .await
        .map_err(|e| Error::Other(format!("proxy image (proxy.image = {want:?}): {e}")))?;
    let id = engine.image_id(&pinned).await?;
    let st = ImageState {
        image: want.clone(),
        pinned,
        id,
    };
    std::fs::create_dir_all(&paths.root).map_err(|e| Error::io_path("create", &paths.root, e))?;
    let text = serde_json::to_string_pretty(&st).map_err(|e| Error::Other(e.to_string()))?;
    crate::fsutil::write_atomic(&paths.image_state(), text.as_bytes(), 0o600)?;
    Ok(st)
}

/// Has Caddy adapt and load `text` (from a file beside the one it started with); only an
/// accepted config replaces that file.
async fn load(engine: &Engine, id: &str, paths: &ProxyPaths, text: &str) -> Result<()> {
    let next = paths.etc().join("Caddyfile.next");
    crate::fsutil::write_atomic(&next, text.as_bytes(), 0o644)?;
    let cmd: Vec<String> = [
        "caddy",
        "reload",
        "--config",
        "/etc/caddy/Caddyfile.next",
        "--adapter",
        "caddyfile",
    ]
    .map(String::from)
    .to_vec();
    // A container that has just started takes a moment to open its admin API.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (code, output) = loop {
        let (code, output) = engine.exec_capture(id, &cmd).await?;
        let not_up = output.contains("connection refused") || output.contains("connect: ");
        if code == 0 || !not_up || std::time::Instant::now() >= deadline {
            break (code, output);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if code != 0 {
        let _ = std::fs::remove_file(&next);
        return Err(Error::Invalid(format!(
            "Caddy refused the new proxy config, so the previous one keeps serving: {}",
            caddy_reason(&output)
        )));
    }
    let live = paths.etc().join("Caddyfile");
    std::fs::rename(&next, &live).map_err(|e| Error::io_path("replace", &live, e))?;
    Ok(())
}

/// The line of Caddy's output that says what is wrong (its last `Error:` line).
pub fn caddy_reason(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Error:"))
        .or(lines.last())
        .copied()
        .unwrap_or("no reason given");
    crate::site::one_line(line.trim_start_matches("Error:").trim())
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io_path("chmod", path, e))
}

/// One domain in `sp proxy status`.
#[derive(Debug, Clone, Serialize)]
pub struct DomainStatus {
    pub domain: String,
    pub site: String,
    pub upstream: String,
    /// The certificate Caddy holds for it (none yet: not issued).
    pub issuer: Option<String>,
    pub expires: Option<String>,
    pub serial: Option<String>,
}

/// `sp proxy status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub mode: String,
    pub container: String,
    pub running: bool,
    pub image: Option<String>,
    pub listen: String,
    pub http_port: u16,
    pub https_port: u16,
    pub acme_ca: String,
    pub domains: Vec<DomainStatus>,
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.mode == "none" {
            return write!(f, "proxy: off (proxy.mode = \"none\")");
        }
        write!(
            f,
            "proxy {}: {} on {}:{} (http :{}), {}",
            self.container,
            if self.running {
                "running"
            } else {
                "NOT running"
            },
            self.listen,
            self.https_port,
            self.http_port,
            self.image.as_deref().unwrap_or("no image pinned yet")
        )?;
        for d in &self.domains {
            write!(f, "\n  {} → {} ({})", d.domain, d.upstream, d.site)?;
            match (&d.issuer, &d.expires) {
                (Some(i), Some(e)) => write!(f, ": certificate from {i}, expires {e}")?,
                _ => write!(f, ": no certificate yet")?,
            }
        }
        Ok(())
    }
}

/// `sp proxy status [--json]`: each domain, its site and upstream, and its certificate.
pub async fn status(ctx: &Ctx) -> Result<StatusReport> {
    let cfg = &ctx.config.proxy;
    let name = proxy::proxy_name(&ctx.config.instance);
    let mut report = StatusReport {
        mode: if cfg.enabled() { "caddy" } else { "none" }.into(),
        container: name,
        running: false,
        image: None,
        listen: cfg.listen.clone(),
        http_port: cfg.http_port,
        https_port: cfg.https_port,
        acme_ca: cfg.acme_ca.clone(),
        domains: Vec::new(),
    };
    if !cfg.enabled() {
        return Ok(report);
    }
    let engine = ctx.engine().await?;
    let paths = ProxyPaths::new(ctx);
    if let Some(c) = engine.proxy_container(&ctx.config.instance).await? {
        report.running = c.running;
        report.image = Some(c.image_ref);
    }
    let (_, shown) = routes(ctx, &engine, None).await?;
    for r in shown {
        let c = cert::find(&paths.data(), &r.domain);
        report.domains.push(DomainStatus {
            issuer: c.as_ref().map(|c| c.issuer.clone()),
            expires: c.as_ref().map(|c| c.not_after.clone()),
            serial: c.map(|c| c.serial),
            domain: r.domain,
            site: r.site,
            upstream: r.upstream,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_goes_to_the_deployed_running_container() {
        let c = |name: &str, site: &str, image: &str, state: &str| crate::engine::ContainerInfo {
            id: name.into(),
            name: name.into(),
            site: site.into(),
            role: "web".into(),
            config: String::new(),
            image: image.into(),
            state: state.into(),
            host_port: None,
        };
        let list = [
            c("stray", "a", "sha256:new", "running"),
            c("serving", "a", "sha256:cur", "running"),
            c("old", "a", "sha256:cur", "exited"),
            c("other", "b", "sha256:cur", "running"),
        ];
        assert_eq!(
            current_container(&list, "a", Some("sha256:cur")).as_deref(),
            Some("serving")
        );
        assert_eq!(
            current_container(&list, "a", None).as_deref(),
            Some("stray")
        );
        assert_eq!(
            current_container(&list[2..3], "a", Some("sha256:cur")).as_deref(),
            Some("old")
        );
        assert_eq!(current_container(&list, "c", None), None);
    }

    #[test]
    fn a_pin_must_be_of_the_configured_repository() {
        let id = format!("sha256:{}", "a".repeat(64));
        let pin = |pinned: &str, id: &str| ImageState {
            image: "caddy:2".into(),
            pinned: pinned.into(),
            id: id.into(),
        };
        let digest = format!("sha256:{}", "b".repeat(64));
        assert!(pin(&format!("caddy@{digest}"), &id).is_pin_of("caddy:2"));
        // Another repository, another registry, no digest, an id that is a name.
        assert!(!pin(&format!("evil/caddy@{digest}"), &id).is_pin_of("caddy:2"));
        assert!(!pin(&format!("reg.example.com/caddy@{digest}"), &id).is_pin_of("caddy:2"));
        assert!(!pin("caddy:2", &id).is_pin_of("caddy:2"));
        assert!(!pin(&format!("caddy@{digest}"), "some-site-image:v1").is_pin_of("caddy:2"));
    }

    #[test]
    fn caddys_reason_is_its_last_error_line() {
        let out = "{\"level\":\"info\",\"msg\":\"using provided configuration\"}\n\
                   Error: adapting config using caddyfile: /etc/caddy/Caddyfile.next:12: unrecognized directive: bogus\n";
        assert_eq!(
            caddy_reason(out),
            "adapting config using caddyfile: /etc/caddy/Caddyfile.next:12: unrecognized directive: bogus"
        );
        assert_eq!(caddy_reason("x\nlast words\n"), "last words");
        assert_eq!(caddy_reason(""), "no reason given");
    }
}
