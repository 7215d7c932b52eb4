//! `sp site list` and `sp site show` (the whole effective spec and the last deploys).

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

/// How many of the last deploys `sp site show` lists.
const SHOWN_DEPLOYS: usize = 5;

/// `sp site show NAME`: the site as `list` has it, plus the whole effective spec and the last
/// deploys. Secret env values are masked unless `--reveal`.
#[derive(Debug, Serialize)]
pub struct SiteDetail {
    #[serde(flatten)]
    pub info: SiteInfo,
    /// The spec's env (not the DATABASE_* variables sp adds).
    pub env: Vec<super::site_env::EnvEntry>,
    pub memory: Option<String>,
    pub health: crate::site::Health,
    pub release: Vec<String>,
    pub jobs: Vec<crate::site::Job>,
    pub data_mount: String,
    pub container: crate::site::ContainerSpec,
    pub backup: crate::site::BackupSpec,
    pub paths: SitePathsInfo,
    /// The last deploys, newest last (`sp site history` has them all).
    pub deploys: Vec<crate::site::history::DeployRecord>,
}

/// Where the site's files are.
#[derive(Debug, Serialize)]
pub struct SitePathsInfo {
    pub root: String,
    pub spec: String,
    pub data: String,
    pub secret_env: String,
    pub history: String,
}

impl std::fmt::Display for SiteDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let none = || "-".to_string();
        writeln!(f, "{}", self.info)?;
        writeln!(
            f,
            "memory:      {}",
            self.memory.clone().unwrap_or_else(|| "no limit".into())
        )?;
        writeln!(
            f,
            "health:      {} (timeout {}s, grace {}s)",
            self.health
                .path
                .clone()
                .unwrap_or_else(|| "running is healthy".into()),
            self.health.timeout_secs(),
            self.health.grace_secs()
        )?;
        writeln!(
            f,
            "release:     {}",
            if self.release.is_empty() {
                none()
            } else {
                self.release.join(" ")
            }
        )?;
        writeln!(f, "data mount:  {} -> {}", self.paths.data, self.data_mount)?;
        writeln!(f, "spec:        {}", self.paths.spec)?;
        if self.env.is_empty() {
            writeln!(f, "env:         -")?;
        } else {
            writeln!(f, "env:")?;
            for e in &self.env {
                writeln!(f, "  {}", super::site_env::shown(e))?;
            }
        }
        if self.jobs.is_empty() {
            writeln!(f, "jobs:        -")?;
        } else {
            writeln!(f, "jobs:")?;
            for j in &self.jobs {
                writeln!(f, "  {}  {}  {}", j.name, j.schedule, j.command.join(" "))?;
            }
        }
        if self.deploys.is_empty() {
            write!(f, "deploys:     -")
        } else {
            write!(f, "deploys (sp site history {} has all):", self.info.name)?;
            for r in &self.deploys {
                let hex = r.digest().trim_start_matches("sha256:");
                write!(
                    f,
                    "\n  {:>3}  {}  {:<6}  {:<11}  {}  {}",
                    r.n,
                    r.time,
                    match r.result {
                        crate::site::history::Outcome::Ok => "ok",
                        crate::site::history::Outcome::Failed => "FAILED",
                    },
                    match r.rollback_to {
                        Some(n) => format!("{}→{n}", r.reason),
                        None => r.reason.clone(),
                    },
                    &hex[..hex.len().min(12)],
                    r.actor
                )?;
            }
            Ok(())
        }
    }
}

/// `sp site show NAME [--reveal]`.
pub async fn show(ctx: &Ctx, name: &str, reveal: bool) -> Result<SiteDetail> {
    let spec = ctx.site(name)?;
    let engine = ctx.engine().await?;
    let info = SiteInfo::gather(ctx, &engine, &spec).await?;
    let paths = ctx.paths(name);
    // A damaged history (a snapshot's) does not keep the rest from showing; `sp site history`
    // names the problem.
    let mut deploys = crate::site::history::load(&paths.history()).unwrap_or_default();
    let skip = deploys.len().saturating_sub(SHOWN_DEPLOYS);
    deploys.drain(..skip);
    let shown = |p: std::path::PathBuf| p.display().to_string();
    Ok(SiteDetail {
        info,
        env: super::site_env::entries(&spec, reveal),
        memory: spec.memory.clone(),
        health: spec.health.clone(),
        release: spec.release.clone(),
        jobs: spec.jobs.clone(),
        data_mount: spec.data_mount.clone(),
        container: spec.container.clone(),
        backup: spec.backup.clone(),
        paths: SitePathsInfo {
            root: shown(paths.root.clone()),
            spec: shown(paths.spec()),
            data: shown(paths.data()),
            secret_env: shown(paths.secret_env()),
            history: shown(paths.history()),
        },
        deploys,
    })
}
