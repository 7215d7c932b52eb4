//! `sp site rollback NAME [--to N|DIGEST] [--dry-run]`: an earlier image, from the history.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::site::history::{self, Target};
use crate::site::SiteSpec;

use super::deploy::{rollout_recorded, Release, Rollout, Why};
use super::{provision, Ctx};

/// Options of `sp site rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackOpts {
    /// The site.
    #[arg(value_name = "NAME")]
    pub site: String,
    /// A history entry number (`sp site history NAME`) or an image digest (sha256:…, or at
    /// least 7 hex digits of one in the history); default: the successful deploy before the
    /// one running now.
    #[arg(long, value_name = "N|DIGEST")]
    pub to: Option<String>,
    /// Print what would be rolled out; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a rollback rolls out (the plan `--dry-run` prints).
#[derive(Debug, Clone, Serialize)]
pub struct RollbackPlan {
    pub site: String,
    /// What runs now, pinned by digest.
    pub from: Option<String>,
    /// What the rollback rolls out, pinned by digest.
    pub to: String,
    /// The image reference it was deployed as.
    pub image: String,
    /// The history entry it goes back to.
    pub entry: Option<u64>,
    #[serde(skip)]
    image_id: Option<String>,
}

/// What `sp site rollback` did (or, with --dry-run, would do).
#[derive(Debug, Serialize)]
pub struct RollbackReport {
    pub plan: RollbackPlan,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

impl std::fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rollout {
            Some(r) => write!(
                f,
                "{r}{}",
                self.plan
                    .entry
                    .map(|n| format!(" — rolled back to entry {n}"))
                    .unwrap_or_default()
            ),
            None => write!(
                f,
                "{}: would roll back from {} to {}{} (dry run: nothing changed)",
                self.plan.site,
                self.plan.from.as_deref().unwrap_or("nothing"),
                self.plan.to,
                self.plan
                    .entry
                    .map(|n| format!(" (entry {n})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// The rollback plan from the site's history and deploy state (sites deployed before sp kept
/// a history fall back to the one previous digest deploy.toml names).
fn plan_rollback(ctx: &Ctx, spec: &SiteSpec, to: Option<&str>) -> Result<RollbackPlan> {
    let site = spec.name.as_str();
    let state = ctx.deploy_state(site)?;
    let entries = history::load(&ctx.paths(site).history())?;
    if entries.is_empty() && to.is_none() {
        let Some(previous) = state.previous.clone() else {
            return Err(Error::NotFound(format!(
                "{site}: no previous deploy to roll back to"
            )));
        };
        return Ok(RollbackPlan {
            site: site.to_string(),
            from: state.current,
            image: previous
                .split_once('@')
                .map(|(repo, _)| repo.to_string())
                .unwrap_or_else(|| spec.image.clone()),
            to: previous,
            entry: None,
            image_id: state.previous_id,
        });
    }
    let (to, entry, image_id, image) =
        match history::target(site, &entries, state.current.as_deref(), to)? {
            Target::Entry(r) => (r.pinned, Some(r.n), r.image_id, r.image),
            Target::Digest(d) => {
                let repo = crate::site::ImageRef::parse(&spec.image)?;
                (repo.pinned(&d), None, None, repo.repository())
            }
        };
    Ok(RollbackPlan {
        site: site.to_string(),
        from: state.current,
        to,
        image,
        entry,
        image_id,
    })
}

/// `sp site rollback NAME [--to N|DIGEST] [--dry-run]`: redeploys an earlier image.
/// 1. picks the target from the history (pure: [`history::target`]); `--dry-run` stops here;
/// 2. makes the image present: local, else the registry, else the image archive kept with the
///    snapshots (`backup.keep_images`) — or fails saying so, with nothing changed;
/// 3. rolls it out without the release command (migrations do not run backwards), recorded
///    as a rollback to that entry. The spec's image stays as it is.
pub async fn rollback(ctx: &Ctx, opts: &RollbackOpts) -> Result<RollbackReport> {
    let site = opts.site.as_str();
    ctx.site(site)?;
    let _lock = ctx.lock(&format!("site rollback {site}"))?;
    let spec = ctx.site(site)?;
    let plan = plan_rollback(ctx, &spec, opts.to.as_deref())?;
    if opts.dry_run {
        return Ok(RollbackReport {
            plan,
            dry_run: true,
            rollout: None,
        });
    }
    let engine = ctx.engine().await?;
    let image_id = provision::ensure_image(ctx, &engine, &plan.to, plan.image_id.as_deref())
        .await
        .map_err(|e| {
            Error::NotFound(format!(
                "{site}: cannot roll back to {}: the image is not on this host, the registry cannot serve it ({e}) and no image archive holds it (backup.keep_images keeps them); nothing was changed",
                plan.to
            ))
        })?;
    let why = Why {
        reason: "rollback",
        rollback_to: plan.entry,
        image: Some(&plan.image),
    };
    let r = rollout_recorded(
        ctx,
        &engine,
        &spec,
        &plan.to,
        Some(&image_id),
        Release::Skip,
        why,
    )
    .await?;
    Ok(RollbackReport {
        plan,
        dry_run: false,
        rollout: Some(r),
    })
}
