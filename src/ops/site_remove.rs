//! `sp site remove NAME [--purge]`.
//!
//! Without `--purge` the containers and the site's network go and everything else stays: `data/`, `secrets/`, the
//! database and its user. The spec is renamed to `site.toml.removed` so `sp apply` leaves the
//! site alone. `--purge` also drops the database and user and deletes `/sites/NAME`, after the
//! user typed the site's name (or gave `--yes`).

use serde::Serialize;

use crate::error::{Error, Result, StepExt};

use super::Ctx;

#[derive(Debug, Clone, Default)]
pub struct RemoveOpts {
    pub site: String,
    pub purge: bool,
    pub yes: bool,
}

#[derive(Debug, Serialize)]
pub struct RemoveReport {
    pub site: String,
    /// The snapshot taken just before removing.
    pub final_snapshot: Option<String>,
    pub containers_removed: usize,
    pub purged: bool,
}

impl std::fmt::Display for RemoveReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: removed {} container(s)",
            self.site, self.containers_removed
        )?;
        if self.purged {
            write!(f, "; database, user and files deleted")
        } else {
            write!(
                f,
                "; data, secrets and database kept (--purge deletes them)"
            )
        }
    }
}

/// `confirm` is asked (with the prompt text) before a purge without `--yes`; it returns the
/// line the user typed.
pub async fn run(
    ctx: &Ctx,
    opts: &RemoveOpts,
    confirm: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<RemoveReport> {
    crate::site::validate_name(&opts.site)?;
    let retired = ctx.paths(&opts.site).root.join("site.toml.removed");
    // A site removed without --purge keeps its spec as site.toml.removed; it can still be purged.
    let spec = if !ctx.paths(&opts.site).spec().exists() && retired.exists() {
        let spec = crate::site::SiteSpec::load(&retired)?;
        super::check_spec_name(&spec, &opts.site, &retired)?;
        spec
    } else {
        ctx.site(&opts.site)?
    };
    let name = spec.name.clone();
    if opts.purge && !opts.yes {
        let typed = confirm(&format!(
            "This deletes site {name}: its database, user and everything under {}.\nType the site name to confirm: ",
            ctx.paths(&name).root.display()
        ));
        if typed.as_deref().map(str::trim) != Some(name.as_str()) {
            return Err(Error::Invalid(format!(
                "not confirmed; nothing removed (type {name:?} or pass --yes)"
            )));
        }
    }
    let _lock = ctx.lock(&format!("site remove {name}"))?;
    // A final snapshot first; a purge without one is refused.
    let final_snapshot = match super::backup::snapshot_sites(
        ctx,
        std::slice::from_ref(&spec),
        crate::snapshot::Kind::Final,
    )
    .await
    {
        Ok(r) => Some(r.id),
        Err(e) if opts.purge => {
            return Err(Error::Other(format!(
                "the final snapshot failed, so nothing was purged: {e}"
            ))
            .at_step(&name, "final snapshot"))
        }
        Err(e) => {
            ctx.note(&format!(
                "{name}: warning: the final snapshot failed ({e}); data and database are kept"
            ));
            None
        }
    };
    let engine = ctx.engine().await?;
    let containers = engine.list(&ctx.config.instance, Some(&name), None).await?;
    for c in &containers {
        engine.remove(&c.id).await.step(&name, "remove container")?;
    }
    engine
        .remove_networks(&ctx.config.instance, Some(&name))
        .await
        .step(&name, "remove network")?;
    let paths = ctx.paths(&name);
    if opts.purge {
        if spec.database.enabled {
            let db = ctx.db()?;
            db.drop_user(&name, &ctx.config.mysql.user_host)
                .await
                .step(&name, "drop user")?;
            db.drop_database(&name).await.step(&name, "drop database")?;
            db.close().await;
        }
        std::fs::remove_dir_all(&paths.root)
            .map_err(|e| Error::io_path("delete", &paths.root, e))
            .step(&name, "delete files")?;
    } else if paths.spec().exists() {
        std::fs::rename(paths.spec(), &retired)
            .map_err(|e| Error::io_path("rename", &paths.spec(), e))
            .step(&name, "retire spec")?;
    }
    Ok(RemoveReport {
        final_snapshot,
        site: name,
        containers_removed: containers.len(),
        purged: opts.purge,
    })
}
