//! `sp site deploy`, and the roll-out it shares with `site add`, `site env`, `rollback` and
//! `apply` (each recorded in the site's history: [`rollout_recorded`]).
//!
//! A roll-out, with no downtime:
//! 1. makes the pinned image present (pull with the stored credential);
//! 2. runs the spec's release command, if any, in the new image (Heroku's release phase);
//! 3. starts a new container next to the old one, on the site's own network (created with the
//!    first container); it publishes a fresh 127.0.0.1 port only without the proxy (or with
//!    `publish = true`);
//! 4. waits for it to be healthy, asking it on its network (or its host port);
//! 5. switches the site's route to it in one graceful proxy reload ([`super::proxy`]);
//! 6. lets requests the old container is still answering finish (`proxy.drain`), then stops
//!    and removes the old container(s), and records the new digest (and the previous one).
//!
//! If any step up to the switch fails, the new container is removed, the old one keeps
//! serving, and the error names the step.

use serde::Serialize;

use crate::engine::{Engine, Role};
use crate::error::{Error, Result, StepExt};
use crate::site::history::{self, DeployRecord, Outcome};
use crate::site::SiteSpec;

use super::provision::{self, container_name, container_plan, wait_healthy};
use super::Ctx;

/// How long an old container gets to exit after SIGTERM once its requests drained.
const OLD_STOP_SECS: i32 = 3;

/// What a roll-out did.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub site: String,
    /// The image now running, pinned by digest.
    pub image: String,
    pub previous: Option<String>,
    /// None when only the proxy reaches it.
    pub host_port: Option<u16>,
    pub container: String,
}

impl std::fmt::Display for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_port {
            Some(p) => write!(
                f,
                "{}: running {} on 127.0.0.1:{p} (container {})",
                self.site, self.image, self.container
            ),
            None => write!(
                f,
                "{}: running {} (container {})",
                self.site, self.image, self.container
            ),
        }
    }
}

/// Whether the roll-out runs the release command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    Run,
    Skip,
}

/// Rolls `pinned` out for `spec` (the steps in the module docs). `known_id` is the image id
/// recorded for `pinned`, which lets an image archive stand in for the registry. The caller
/// holds the lock.
pub async fn rollout(
    ctx: &Ctx,
    engine: &Engine,
    spec: &SiteSpec,
    pinned: &str,
    known_id: Option<&str>,
    release: Release,
) -> Result<Rollout> {
    let site = spec.name.as_str();
    let image_id = provision::ensure_image(ctx, engine, pinned, known_id)
        .await
        .step(site, "pull")?;
    if release == Release::Run && !spec.release.is_empty() {
        run_release(ctx, engine, spec, &image_id, pinned)
            .await
            .step(site, "release")?;
    }
    let old = engine
        .list(&ctx.config.instance, Some(site), Some(Role::Web))
        .await?;
    let lease = if provision::publishes(ctx, spec) {
        Some(
            provision::allocate_port(ctx, engine)
                .await
                .step(site, "port")?,
        )
    } else {
        None
    };
    let port = lease.as_ref().map(|l| l.0);
    let plan = container_plan(ctx, spec, &image_id, pinned, Role::Web, port, None)?;
    let name = container_name(ctx, site, Role::Web);
    match port {
        Some(port) => ctx.note(&format!("{site}: starting {name} on 127.0.0.1:{port}")),
        None => ctx.note(&format!("{site}: starting {name}")),
    }
    let id = engine.create(&name, &plan).await.step(site, "create")?;
    let proxied = ctx.config.proxy.enabled() && !spec.domains.is_empty();
    let started = async {
        engine.start(&id).await.step(site, "start")?;
        let addr = match port {
            Some(port) => format!("127.0.0.1:{port}"),
            None => {
                let ip = engine
                    .container_ip(&id, &plan.network)
                    .await
                    .step(site, "health")?
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "the new container has no address on {}",
                            plan.network
                        ))
                    })
                    .step(site, "health")?;
                format!("{ip}:{}", spec.port)
            }
        };
        wait_healthy(engine, &id, spec, &addr)
            .await
            .step(site, "health")?;
        if proxied {
            let switch = super::proxy::Switch {
                site,
                container: &name,
            };
            super::proxy::converge(ctx, engine, Some(switch))
                .await
                .step(site, "route")?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = started {
        let _ = engine.remove(&id).await;
        return Err(e);
    }
    let old: Vec<_> = old.into_iter().filter(|c| c.id != id).collect();
    if proxied && old.iter().any(|c| c.running()) {
        // In-flight requests on the old container finish; new ones already reach the new.
        let drain = ctx.config.proxy.drain_time().map_err(Error::Invalid)?;
        tokio::time::sleep(drain).await;
    }
    for c in &old {
        // Its requests have drained: a short SIGTERM grace to close up.
        let _ = engine.stop_within(&c.id, OLD_STOP_SECS).await;
    }
    super::control::keep_previous_logs(ctx, engine, site, &old, &id).await;
    for c in &old {
        engine
            .remove(&c.id)
            .await
            .step(site, "remove old container")?;
    }
    let mut state = ctx.deploy_state(site)?;
    if state.current.as_deref() != Some(pinned) {
        state.previous = state.current.take();
        state.previous_id = state.current_id.take();
    }
    state.current = Some(pinned.to_string());
    state.current_id = Some(image_id);
    state.image = Some(spec.image.clone());
    state.host_port = port;
    state.stopped = false;
    state.deployed_at = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    ctx.save_deploy_state(site, &state).step(site, "record")?;
    Ok(Rollout {
        site: site.to_string(),
        image: pinned.to_string(),
        previous: state.previous,
        host_port: port,
        container: name,
    })
}

/// Runs the release command in a one-off container of the new image; fails on non-zero exit.
async fn run_release(
    ctx: &Ctx,
    engine: &Engine,
    spec: &SiteSpec,
    image_id: &str,
    pinned: &str,
) -> Result<()> {
    ctx.note(&format!(
        "{}: running release command {:?}",
        spec.name, spec.release
    ));
    let (code, logs) = provision::run_oneoff(
        ctx,
        engine,
        spec,
        image_id,
        pinned,
        Role::Release,
        &spec.release,
    )
    .await?;
    if code != 0 {
        return Err(Error::Other(format!(
            "release command exited with code {code}{}",
            if logs.is_empty() {
                String::new()
            } else {
                format!(": {}", crate::site::one_line(&logs))
            }
        )));
    }
    Ok(())
}

/// Why a roll-out happens, as its history entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Why<'a> {
    /// add, deploy, rollback, env, apply (a restore starts its sites as apply does).
    pub reason: &'static str,
    /// For a rollback: the history entry it goes back to.
    pub rollback_to: Option<u64>,
    /// The image reference to record, when it is not the spec's (a rollback's target was
    /// deployed as another reference than the spec names now).
    pub image: Option<&'a str>,
}

impl Why<'static> {
    pub const fn because(reason: &'static str) -> Why<'static> {
        Why {
            reason,
            rollback_to: None,
            image: None,
        }
    }
}

/// [`rollout`], with its outcome appended to the site's history (`sp site history`) whichever
/// way it ends. Every roll-out goes through here.
pub async fn rollout_recorded(
    ctx: &Ctx,
    engine: &Engine,
    spec: &SiteSpec,
    pinned: &str,
    known_id: Option<&str>,
    release: Release,
    why: Why<'_>,
) -> Result<Rollout> {
    let started = std::time::Instant::now();
    let result = rollout(ctx, engine, spec, pinned, known_id, release).await;
    let image_id = match &result {
        Ok(_) => ctx.deploy_state(&spec.name).ok().and_then(|s| s.current_id),
        Err(_) => known_id.map(str::to_string),
    };
    let record = DeployRecord {
        n: 0,
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        actor: history::actor(),
        reason: why.reason.to_string(),
        image: why.image.unwrap_or(&spec.image).to_string(),
        pinned: pinned.to_string(),
        image_id,
        result: if result.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
        error: result.as_ref().err().map(|e| {
            let line = crate::site::one_line(&e.to_string());
            line.chars().take(500).collect()
        }),
        duration_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        rollback_to: why.rollback_to,
    };
    if let Err(e) = record_history(ctx, &spec.name, record) {
        ctx.note(&format!(
            "{}: the deploy history was not updated: {e}",
            spec.name
        ));
    }
    result
}

/// Appends one entry to a site's history file (0600).
fn record_history(ctx: &Ctx, site: &str, record: DeployRecord) -> Result<u64> {
    let path = ctx.paths(site).history();
    // A damaged file (a snapshot's) starts over rather than blocking every deploy.
    let entries = history::load(&path).unwrap_or_default();
    let (text, n) = history::appended(entries, record);
    crate::fsutil::write_private(&path, text.as_bytes())?;
    Ok(n)
}

/// Options of `sp site deploy`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeployOpts {
    /// The site.
    #[arg(value_name = "NAME")]
    pub site: String,
    /// Deploy this image instead of the spec's (recorded in the spec on success).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
}

/// `sp site deploy NAME [--image REF]`.
pub async fn deploy(ctx: &Ctx, opts: &DeployOpts) -> Result<Rollout> {
    ctx.site(&opts.site)?;
    if let Some(img) = &opts.image {
        crate::site::ImageRef::parse(img)?;
    }
    let _lock = ctx.lock(&format!("site deploy {}", opts.site))?;
    let mut spec = ctx.site(&opts.site)?;
    let engine = ctx.engine().await?;
    let image = opts.image.clone().unwrap_or_else(|| spec.image.clone());
    let pinned = provision::pull(ctx, &engine, &image)
        .await
        .step(&spec.name, "pull")?;
    let changed = spec.image != image;
    // The history and deploy state name the image this deploy rolls out.
    spec.image = image;
    let report = rollout_recorded(
        ctx,
        &engine,
        &spec,
        &pinned,
        None,
        Release::Run,
        Why::because("deploy"),
    )
    .await?;
    if changed {
        provision::write_spec(&ctx.paths(&spec.name), &spec).step(&spec.name, "record")?;
    }
    Ok(report)
}
