//! `sp site job NAME JOB`: runs one of the site's `[[jobs]]` in a one-off container of the
//! site's current image, with its env and mounts (what cron calls).

use std::io::Write;

use crate::engine::Role;
use crate::error::{Error, Result};

use super::{provision, Ctx};

/// Runs the job; its output goes to `out`; returns its exit code.
pub async fn run(ctx: &Ctx, site: &str, job: &str, out: &mut (dyn Write + Send)) -> Result<i64> {
    let spec = ctx.site(site)?;
    let Some(j) = spec.jobs.iter().find(|j| j.name == job) else {
        let names: Vec<&str> = spec.jobs.iter().map(|j| j.name.as_str()).collect();
        return Err(Error::NotFound(format!(
            "{site} has no job {job:?} (jobs: {})",
            names.join(", ")
        )));
    };
    let state = ctx.deploy_state(site)?;
    let Some(pinned) = state.current else {
        return Err(Error::NotFound(format!(
            "{site} is not deployed yet; deploy it first: `sp site deploy {site}`"
        )));
    };
    let engine = ctx.engine().await?;
    let id = provision::ensure_image(ctx, &engine, &pinned, state.current_id.as_deref()).await?;
    let (code, logs) =
        provision::run_oneoff(ctx, &engine, &spec, &id, &pinned, Role::Job, &j.command).await?;
    if !logs.is_empty() {
        let _ = writeln!(out, "{logs}");
    }
    Ok(code)
}
