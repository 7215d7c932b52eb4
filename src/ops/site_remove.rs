//! `sp site remove NAME [--purge]`.
//!
//! Without `--purge` the containers and the site's network go and everything else stays: `data/`, `secrets/`, the
//! database and its user. The spec is renamed to `site.toml.removed` so `sp apply` leaves the
//! site alone. `--purge` also drops the database and user and deletes `/sites/NAME`, after the
//! user typed the site's name (or gave `--yes`).

use serde::Serialize;

use crate::error::{Error, Result, StepExt};

use super::{provision, Ctx};

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
    let paths = ctx.paths(&name);
    let db = if opts.purge && spec.database.enabled {
        Some(ctx.db()?)
    } else {
        None
    };
    let what = provision::Teardown {
        database: db.is_some(),
        files: opts.purge,
    };
    let removed = provision::teardown_site(ctx, &engine, db.as_ref(), &name, what).await;
    if let Some(db) = db {
        db.close().await;
    }
    let containers_removed = removed?;
    if !opts.purge && paths.spec().exists() {
        std::fs::rename(paths.spec(), &retired)
            .map_err(|e| Error::io_path("rename", &paths.spec(), e))
            .step(&name, "retire spec")?;
    }
    if ctx.config.proxy.enabled() {
        super::proxy::converge(ctx, &engine, None).await.map_err(|e| {
            Error::Other(format!(
                "{name} is removed, but the proxy still routes its domains: {e} — fix that, then run `sp proxy reload`"
            ))
        })?;
    }
    Ok(RemoveReport {
        final_snapshot,
        site: name,
        containers_removed,
        purged: opts.purge,
    })
}
