//! `sp site deploy` and `sp site rollback`, and the roll-out they share with `site add` and
//! `apply`.
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
        // Its requests have drained: a short SIGTERM grace to close up, then it goes.
        let _ = engine.stop_within(&c.id, OLD_STOP_SECS).await;
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

/// Options of `sp site deploy`.
#[derive(Debug, Clone)]
pub struct DeployOpts {
    pub site: String,
    /// A new image reference; it becomes the spec's image when the deploy succeeds.
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
    let report = rollout(ctx, &engine, &spec, &pinned, None, Release::Run).await?;
    if opts.image.is_some() && spec.image != image {
        spec.image = image;
        provision::write_spec(&ctx.paths(&spec.name), &spec).step(&spec.name, "record")?;
    }
    Ok(report)
}

/// `sp site rollback NAME`: redeploys the previous digest.
pub async fn rollback(ctx: &Ctx, site: &str) -> Result<Rollout> {
    let spec = ctx.site(site)?;
    let _lock = ctx.lock(&format!("site rollback {site}"))?;
    let state = ctx.deploy_state(site)?;
    let Some(previous) = state.previous.clone() else {
        return Err(Error::NotFound(format!(
            "{site}: no previous deploy to roll back to"
        )));
    };
    let engine = ctx.engine().await?;
    rollout(
        ctx,
        &engine,
        &spec,
        &previous,
        state.previous_id.as_deref(),
        Release::Skip,
    )
    .await
}
