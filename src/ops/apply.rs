//! `sp apply [NAME]`: converge the host to the `site.toml` files.
//!
//! First every spec is checked: a uid or domain another site has (a removed one's uid too)
//! is refused before anything changes. Then for each site: directories, owners and modes,
//! the site's own network, database and user (with the password on file),
//! and the container: rolled out through the deploy path (pull, release command, health check)
//! when site.toml names another image than the one deployed, recreated when missing or when
//! its configuration (env included) drifted from the spec, started when it stopped by itself. A site the user stopped stays stopped. Running it twice
//! changes nothing the second time.

use serde::Serialize;

use crate::engine::{Engine, Role};
use crate::error::{Result, StepExt};
use crate::site::SiteSpec;

use super::deploy::{rollout_recorded, Release, Why};
use super::provision::{self, container_plan};
use super::Ctx;

#[derive(Debug, Serialize)]
pub struct ApplyReport {
    pub sites: Vec<SiteChanges>,
}

#[derive(Debug, Serialize)]
pub struct SiteChanges {
    pub site: String,
    pub changes: Vec<String>,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.sites.is_empty() {
            return write!(f, "no sites");
        }
        let mut first = true;
        for s in &self.sites {
            if !first {
                writeln!(f)?;
            }
            first = false;
            if s.changes.is_empty() {
                write!(f, "{}: up to date", s.site)?;
            } else {
                write!(f, "{}: {}", s.site, s.changes.join("; "))?;
            }
        }
        Ok(())
    }
}

/// `sp apply [NAME]`.
pub async fn run(ctx: &Ctx, site: Option<&str>) -> Result<ApplyReport> {
    if let Some(name) = site {
        ctx.site(name)?;
    }
    let _lock = ctx.lock("apply")?;
    // Specs are read under the lock: a site purged meanwhile must not come back.
    let specs = match site {
        Some(name) => vec![ctx.site(name)?],
        None => ctx.sites()?,
    };
    // A hand-written spec may not take another site's uid or domain.
    let claims = provision::claims(ctx)?;
    for spec in &specs {
        crate::site::check_unique(spec, &claims)?;
    }
    let engine = ctx.engine().await?;
    let db = if specs.iter().any(|s| s.database.enabled) {
        Some(ctx.db()?)
    } else {
        None
    };
    let mut sites = Vec::new();
    for spec in &specs {
        let mut changes =
            provision::ensure_dirs(&ctx.paths(&spec.name), spec.uid).step(&spec.name, "files")?;
        if let (true, Some(db)) = (spec.database.enabled, &db) {
            changes.extend(
                provision::ensure_database(ctx, db, spec)
                    .await
                    .step(&spec.name, "database")?,
            );
        }
        changes.extend(converge_container(ctx, &engine, spec, WHY).await?);
        sites.push(SiteChanges {
            site: spec.name.clone(),
            changes,
        });
    }
    if let Some(db) = db {
        db.close().await;
    }
    // Routes follow the specs (a domain added or dropped needs no new container).
    if ctx.config.proxy.enabled() {
        super::proxy::converge(ctx, &engine, None).await?;
    }
    Ok(ApplyReport { sites })
}

/// How apply's roll-outs appear in the history.
const WHY: Why<'static> = Why::because("apply");

/// Converges one site's container: first deploy, the spec's image when it changed (pulled,
/// release command run), a missing or drifted container recreated, a stopped one started.
/// `why` names the command in the site's history (apply, restore).
pub(crate) async fn converge_container(
    ctx: &Ctx,
    engine: &Engine,
    spec: &SiteSpec,
    why: Why<'static>,
) -> Result<Vec<String>> {
    let name = spec.name.as_str();
    let state = ctx.deploy_state(name)?;
    let mut changes = Vec::new();
    let image = match &state.current {
        Some(pinned) => pinned.clone(),
        None => {
            let pinned = provision::pull(ctx, engine, &spec.image)
                .await
                .step(name, "pull")?;
            changes.push(format!("first deploy of {pinned}"));
            let r = rollout_recorded(ctx, engine, spec, &pinned, None, Release::Run, why).await?;
            changes.push(format!("started {}", r.container));
            return Ok(changes);
        }
    };
    // site.toml names another image than the one deployed from it (deploy.toml keeps the
    // reference it was deployed as; a rollback keeps it too, so apply does not undo one).
    let deployed_as = state.image.as_deref().unwrap_or(&spec.image);
    if deployed_as != spec.image {
        let pinned = provision::pull(ctx, engine, &spec.image)
            .await
            .step(name, "pull")?;
        let r = rollout_recorded(ctx, engine, spec, &pinned, None, Release::Run, why).await?;
        changes.push(format!(
            "image changed from {deployed_as} to {}: started {}",
            spec.image, r.container
        ));
        return Ok(changes);
    }
    let containers = engine
        .list(&ctx.config.instance, Some(name), Some(Role::Web))
        .await?;
    let image_id = match &state.current_id {
        Some(id) => id.clone(),
        None => provision::ensure_image(ctx, engine, &image, None)
            .await
            .step(name, "pull")?,
    };
    // The hash ignores the host port; any value stands in for it.
    let port = provision::publishes(ctx, spec).then_some(0);
    let plan = container_plan(ctx, spec, &image_id, &image, Role::Web, port, None)?;
    let want = plan.config_hash();
    // The site's network and its firewall entry (the kernel forgets it on a reboot).
    engine.ensure_network(&plan).await.step(name, "network")?;
    let good = containers.iter().find(|c| c.config == want);
    match good {
        None => {
            let drift = if containers.is_empty() {
                "container was missing"
            } else {
                "spec changed"
            };
            let r = rollout_recorded(
                ctx,
                engine,
                spec,
                &image,
                Some(&image_id),
                Release::Skip,
                why,
            )
            .await?;
            changes.push(format!("{drift}: started {}", r.container));
        }
        Some(c) => {
            for other in containers.iter().filter(|o| o.id != c.id) {
                engine
                    .remove(&other.id)
                    .await
                    .step(name, "remove stray container")?;
                changes.push(format!("removed stray container {}", other.name));
            }
            if !c.running() && !state.stopped {
                engine.start(&c.id).await.step(name, "start")?;
                changes.push(format!("started {}", c.name));
            }
            if state.host_port != c.host_port && c.host_port.is_some() {
                let mut st = state.clone();
                st.host_port = c.host_port;
                ctx.save_deploy_state(name, &st)?;
                changes.push("recorded host port".into());
            }
        }
    }
    Ok(changes)
}
