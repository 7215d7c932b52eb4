//! `sp site start|stop|restart|logs|exec`: the running container, by hand.

use std::io::Write;

use futures_util::StreamExt;
use serde::Serialize;

use crate::engine::{ContainerInfo, Engine, Role};
use crate::error::{Error, Result};

use super::Ctx;

/// What start/stop/restart did.
#[derive(Debug, Serialize)]
pub struct ControlReport {
    pub site: String,
    pub action: String,
    pub container: String,
}

impl std::fmt::Display for ControlReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.site, self.action, self.container)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

/// The site's web container (the running one if several).
async fn web_container(ctx: &Ctx, engine: &Engine, site: &str) -> Result<ContainerInfo> {
    let list = engine
        .list(&ctx.config.instance, Some(site), Some(Role::Web))
        .await?;
    list.iter()
        .find(|c| c.running())
        .or(list.first())
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{site}: no container; `sp apply {site}` recreates it"
            ))
        })
}

/// `sp site start|stop|restart NAME`.
pub async fn control(ctx: &Ctx, site: &str, action: Action) -> Result<ControlReport> {
    ctx.site(site)?;
    let verb = match action {
        Action::Start => "start",
        Action::Stop => "stop",
        Action::Restart => "restart",
    };
    let _lock = ctx.lock(&format!("site {verb} {site}"))?;
    let engine = ctx.engine().await?;
    let c = web_container(ctx, &engine, site).await?;
    if matches!(action, Action::Stop | Action::Restart) {
        engine.stop(&c.id).await?;
    }
    if matches!(action, Action::Start | Action::Restart) {
        engine.start(&c.id).await?;
    }
    let mut state = ctx.deploy_state(site)?;
    state.stopped = action == Action::Stop;
    ctx.save_deploy_state(site, &state)?;
    Ok(ControlReport {
        site: site.to_string(),
        action: match action {
            Action::Start => "started",
            Action::Stop => "stopped",
            Action::Restart => "restarted",
        }
        .to_string(),
        container: c.name,
    })
}

/// `sp site logs NAME [--follow]`: copies the container's output to `out`.
pub async fn logs(
    ctx: &Ctx,
    site: &str,
    follow: bool,
    tail: Option<u32>,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    ctx.site(site)?;
    let engine = ctx.engine().await?;
    let c = web_container(ctx, &engine, site).await?;
    let mut stream = Box::pin(engine.logs(&c.id, follow, tail));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk.into_bytes())
            .map_err(|e| Error::io("write logs", e))?;
        out.flush().map_err(|e| Error::io("write logs", e))?;
    }
    Ok(())
}

/// `sp site exec NAME -- CMD...`: runs CMD in the running container as the site's uid and
/// returns its exit code.
pub async fn exec(
    ctx: &Ctx,
    site: &str,
    cmd: &[String],
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<i64> {
    let spec = ctx.site(site)?;
    if cmd.is_empty() {
        return Err(Error::Invalid(
            "exec needs a command: sp site exec NAME -- CMD...".into(),
        ));
    }
    let engine = ctx.engine().await?;
    let c = web_container(ctx, &engine, site).await?;
    if !c.running() {
        return Err(Error::NotRunning(format!(
            "{site}: the container is not running (state {}); start it with `sp site start {site}`",
            c.state
        )));
    }
    engine
        .exec(&c.id, cmd, Some(&format!("{0}:{0}", spec.uid)), out, err)
        .await
}
