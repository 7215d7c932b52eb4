//! `sp site list` and `sp site show`.

use serde::Serialize;

use crate::engine::{Engine, Role};
use crate::error::Result;
use crate::site::SiteSpec;

use super::Ctx;

/// One site as `list` and `show --json` report it. No secrets.
#[derive(Debug, Clone, Serialize)]
pub struct SiteInfo {
    #[serde(rename = "site")]
    pub name: String,
    /// Image reference from the spec.
    pub image: String,
    /// Digest that runs now (`sha256:…`), if deployed.
    pub digest: Option<String>,
    /// running, stopped, exited, missing (no container), ...
    pub state: String,
    /// Host port on 127.0.0.1.
    #[serde(rename = "host_port")]
    pub port: Option<u16>,
    pub domains: Vec<String>,
    pub uid: u32,
    pub container_port: u16,
    pub database: Option<String>,
    pub previous: Option<String>,
    pub deployed_at: Option<String>,
    pub containers: Vec<String>,
}

impl SiteInfo {
    async fn gather(ctx: &Ctx, engine: &Engine, spec: &SiteSpec) -> Result<SiteInfo> {
        let state = ctx.deploy_state(&spec.name)?;
        let containers = engine
            .list(&ctx.config.instance, Some(&spec.name), Some(Role::Web))
            .await?;
        let shown = match containers
            .iter()
            .find(|c| c.running())
            .or(containers.first())
        {
            Some(c) if !c.running() && state.stopped => "stopped".to_string(),
            Some(c) => c.state.clone(),
            None => "missing".to_string(),
        };
        let digest = |r: &Option<String>| {
            r.as_ref()
                .and_then(|i| i.split_once('@'))
                .map(|(_, d)| d.to_string())
        };
        Ok(SiteInfo {
            name: spec.name.clone(),
            image: spec.image.clone(),
            digest: digest(&state.current),
            state: shown,
            port: containers
                .iter()
                .find_map(|c| c.host_port)
                .or(state.host_port),
            domains: spec.domains.clone(),
            uid: spec.uid,
            container_port: spec.port,
            database: spec.database.enabled.then(|| spec.name.clone()),
            previous: digest(&state.previous),
            deployed_at: state.deployed_at.clone(),
            containers: containers.iter().map(|c| c.name.clone()).collect(),
        })
    }
}

/// The table of `sp site list` (`--json`: `{"sites": [...]}`).
#[derive(Debug, Serialize)]
pub struct SiteList {
    pub sites: Vec<SiteInfo>,
}

impl std::fmt::Display for SiteList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.sites.is_empty() {
            return write!(f, "no sites");
        }
        writeln!(
            f,
            "{:<20} {:<9} {:<6} {:<20} {:<40}",
            "NAME", "STATE", "PORT", "DIGEST", "IMAGE"
        )?;
        for s in &self.sites {
            let digest = s
                .digest
                .as_deref()
                .map(|d| d.trim_start_matches("sha256:"))
                .unwrap_or("-");
            writeln!(
                f,
                "{:<20} {:<9} {:<6} {:<20} {}{}",
                s.name,
                s.state,
                s.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                &digest[..digest.len().min(12)],
                s.image,
                if s.domains.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", s.domains.join(", "))
                }
            )?;
        }
        Ok(())
    }
}

impl std::fmt::Display for SiteInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let none = || "-".to_string();
        writeln!(f, "name:        {}", self.name)?;
        writeln!(f, "state:       {}", self.state)?;
        writeln!(f, "image:       {}", self.image)?;
        writeln!(
            f,
            "digest:      {}",
            self.digest.clone().unwrap_or_else(none)
        )?;
        writeln!(
            f,
            "previous:    {}",
            self.previous.clone().unwrap_or_else(none)
        )?;
        writeln!(
            f,
            "deployed at: {}",
            self.deployed_at.clone().unwrap_or_else(none)
        )?;
        writeln!(
            f,
            "port:        127.0.0.1:{} -> {}",
            self.port.map(|p| p.to_string()).unwrap_or_else(none),
            self.container_port
        )?;
        writeln!(
            f,
            "domains:     {}",
            if self.domains.is_empty() {
                none()
            } else {
                self.domains.join(", ")
            }
        )?;
        writeln!(f, "uid:         {}", self.uid)?;
        writeln!(
            f,
            "database:    {}",
            self.database.clone().unwrap_or_else(none)
        )?;
        write!(
            f,
            "containers:  {}",
            if self.containers.is_empty() {
                none()
            } else {
                self.containers.join(", ")
            }
        )
    }
}

/// `sp site list`.
pub async fn list(ctx: &Ctx) -> Result<SiteList> {
    let sites = ctx.sites()?;
    if sites.is_empty() {
        return Ok(SiteList { sites: Vec::new() });
    }
    let engine = ctx.engine().await?;
    let mut out = Vec::new();
    for spec in &sites {
        out.push(SiteInfo::gather(ctx, &engine, spec).await?);
    }
    Ok(SiteList { sites: out })
}

/// `sp site show NAME`.
pub async fn show(ctx: &Ctx, name: &str) -> Result<SiteInfo> {
    let spec = ctx.site(name)?;
    let engine = ctx.engine().await?;
    SiteInfo::gather(ctx, &engine, &spec).await
}
