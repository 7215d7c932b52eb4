//! Operations: one file per verb, and the only place that orchestrates the systems
//! (config, site, engine, db, registry, lock). Each op takes the [`Ctx`] and plain options and
//! returns a report that is both `Display` (for people) and `Serialize` (for `--json`).
//!
//! Start here to find any behaviour:
//! - `sp init` → [`init`], `sp doctor` → [`doctor`], `sp registry login` → [`registry_login`]
//! - `sp site add` → [`site_add`]; `list`/`show` → [`site_info`]; `deploy` → [`deploy`];
//!   `rollback` → [`rollback`]; `history` → [`history`]; `env` → [`site_env`]
//! - `start`/`stop`/`restart`/`logs`/`exec` → [`control`]; `remove` → [`site_remove`]
//! - `sp apply` → [`apply`]; building blocks shared by add, apply and deploy → [`provision`]
//! - `sp backup` → [`backup`]; `sp snapshots`, `sp snapshot pin` → [`snapshots`];
//!   `sp verify` → [`verify`]; `sp prune` → [`prune`]; `sp status` → [`status`]
//! - `sp schedule show|install` → [`schedule`]; `sp site job` → [`job`]
//! - `sp restore` → [`restore`]; `sp drill` → [`drill`]; `sp log` → [`log`]

pub mod apply;
pub mod backup;
pub mod control;
pub mod deploy;
pub mod doctor;
pub mod drill;
pub mod history;
pub mod init;
pub mod job;
pub mod key;
pub mod log;
pub mod provision;
pub mod proxy;
pub mod prune;
pub mod registry_login;
pub mod restore;
pub mod rollback;
pub mod schedule;
pub mod site_add;
pub mod site_env;
pub mod site_info;
pub mod site_remove;
pub mod snapshots;
pub mod source;
pub mod status;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::db::Db;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::lock::HostLock;
use crate::registry::{credentials_path, Credentials};
use crate::site::{validate_name, DeployState, SitePaths, SiteSpec};

/// Refuses a spec whose `name` is not the directory it lives in (a copied directory, a clone
/// cut short): acting on it would touch the other site.
pub fn check_spec_name(spec: &SiteSpec, dir_name: &str, path: &Path) -> Result<()> {
    if spec.name != dir_name {
        return Err(Error::Invalid(format!(
            "{} says name = {:?} but lives in the directory of {dir_name:?}; fix the name (or the directory) first",
            path.display(),
            spec.name
        )));
    }
    Ok(())
}

/// Receives what a person at the terminal should see while an op runs: one-line notes
/// ("pulling …") and byte counts of long transfers. The binary decides how (or whether) to
/// show them; the library itself never prints.
pub trait Reporter: Send + Sync {
    fn note(&self, msg: &str);
    /// `bytes` processed so far by the task `label`; `done` once it has finished.
    fn progress(&self, _label: &str, _bytes: u64, _done: bool) {}
    /// The task `label` will process about `bytes` in all (so a bar can show percent and ETA);
    /// sent before or with its first progress.
    fn total(&self, _label: &str, _bytes: u64) {}
}

/// Closures are reporters that only take notes.
impl<F: Fn(&str) + Send + Sync> Reporter for F {
    fn note(&self, msg: &str) {
        self(msg)
    }
}

pub type Notifier = Box<dyn Reporter>;

/// What every op gets: the loaded config and where it came from.
pub struct Ctx {
    pub config: Config,
    pub config_path: PathBuf,
    notify: std::sync::Arc<Notifier>,
}

impl Ctx {
    /// Loads the config at `config_path`.
    pub fn load(config_path: &Path, notify: Notifier) -> Result<Ctx> {
        Ok(Ctx {
            config: Config::load(config_path)?,
            config_path: config_path.to_path_buf(),
            notify: std::sync::Arc::new(notify),
        })
    }

    /// A context over the config file as it is now (after a restore rewrote it).
    pub fn reload(&self) -> Result<Ctx> {
        Ok(Ctx {
            config: Config::load(&self.config_path)?,
            config_path: self.config_path.clone(),
            notify: self.notify.clone(),
        })
    }

    /// The same context with another config (a drill's scratch namespace).
    pub fn with_config(&self, config: Config) -> Ctx {
        Ctx {
            config,
            config_path: self.config_path.clone(),
            notify: self.notify.clone(),
        }
    }

    /// Tells the person at the terminal what is happening (once: the notifier is the one
    /// voice for notes, whatever the log level).
    pub fn note(&self, msg: &str) {
        self.notify.note(msg);
    }

    /// Reports the progress of a long transfer.
    pub fn progress(&self, label: &str, bytes: u64, done: bool) {
        self.notify.progress(label, bytes, done);
    }

    /// The reporter, for worker threads that outlive a borrow of the context (uploads).
    pub fn reporter(&self) -> std::sync::Arc<Notifier> {
        self.notify.clone()
    }

    /// Announces how many bytes the task `label` will process (percent and ETA).
    pub fn progress_total(&self, label: &str, bytes: u64) {
        self.notify.total(label, bytes);
    }

    /// Runs `work`, reporting `done` (bytes so far) as the progress of `label` four times a
    /// second, with `total` (0 while unknown) for percent and ETA; the line goes when it ends.
    pub async fn with_progress<T>(
        &self,
        label: &str,
        done: &std::sync::atomic::AtomicU64,
        total: &std::sync::atomic::AtomicU64,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        use std::sync::atomic::Ordering::Relaxed;
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut announced = 0;
        let out = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => {
                    let t = total.load(Relaxed);
                    if t != announced {
                        self.notify.total(label, t);
                        announced = t;
                    }
                    self.notify.progress(label, done.load(Relaxed), false);
                }
            }
        };
        self.notify.progress(label, done.load(Relaxed), true);
        out
    }

    /// Takes the host lock for a mutating command.
    pub fn lock(&self, what: &str) -> Result<HostLock> {
        HostLock::acquire(
            &self.config.state_dir,
            what,
            Duration::from_secs(self.config.lock_timeout),
            &mut |holder| self.note(&format!("waiting for the host lock ({holder})")),
        )
    }

    pub async fn engine(&self) -> Result<Engine> {
        let timeout = crate::config::parse_duration(&self.config.docker.timeout)
            .map_err(|e| crate::Error::Invalid(format!("docker.timeout {e}")))?;
        Engine::connect(timeout).await
    }

    pub fn db(&self) -> Result<Db> {
        Db::open(&self.config.mysql)
    }

    /// The keys whose snapshot signatures this command accepts: the host's own (and earlier
    /// ones), the config's `trusted_keys`, and `files` (`--key`).
    pub fn keyring(&self, files: &[PathBuf]) -> Result<crate::key::Keyring> {
        crate::key::Keyring::load(&self.config.state_dir, &self.config.trusted_keys, files)
    }

    /// POSTs `what` failed (a JSON object) to `backup.on_failure_url`, if one is set, with this
    /// host's name and instance added.
    pub async fn report_failure(&self, mut what: serde_json::Value) {
        let Some(url) = &self.config.backup.on_failure_url else {
            return;
        };
        if let Some(o) = what.as_object_mut() {
            o.insert("host".into(), crate::hook::hostname().into());
            o.insert("instance".into(), self.config.instance.clone().into());
        }
        crate::hook::call(url, Some(what)).await;
    }

    pub fn paths(&self, site: &str) -> SitePaths {
        SitePaths::new(&self.config.sites_dir, site)
    }

    pub fn credentials_path(&self) -> PathBuf {
        credentials_path(&self.config_path)
    }

    pub fn credentials(&self) -> Result<Credentials> {
        Credentials::load(&self.credentials_path())
    }

    /// Loads an existing site's spec; a clear error when there is none.
    pub fn site(&self, name: &str) -> Result<SiteSpec> {
        validate_name(name)?;
        let p = self.paths(name).spec();
        if !p.exists() {
            return Err(Error::NotFound(format!(
                "no site named {name:?} (no {}); `sp site list` shows the sites",
                p.display()
            )));
        }
        let spec = SiteSpec::load(&p)?;
        check_spec_name(&spec, name, &p)?;
        Ok(spec)
    }

    pub fn deploy_state(&self, name: &str) -> Result<DeployState> {
        DeployState::load(&self.paths(name).deploy())
    }

    pub fn save_deploy_state(&self, name: &str, state: &DeployState) -> Result<()> {
        crate::fsutil::write_atomic(
            &self.paths(name).deploy(),
            state.to_toml().as_bytes(),
            0o644,
        )
    }

    /// Names of all sites (directories under `sites_dir` holding a `site.toml`), sorted.
    pub fn site_names(&self) -> Result<Vec<String>> {
        let dir = &self.config.sites_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io_path("read", dir, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("site.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// All site specs, sorted by name.
    pub fn sites(&self) -> Result<Vec<SiteSpec>> {
        self.site_names()?.iter().map(|n| self.site(n)).collect()
    }
}
