//! `sp init`: write a commented default config, create the directories and the host's
//! snapshot key. An existing config or key is never overwritten.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct InitOpts {
    pub instance: Option<String>,
    pub sites_dir: Option<PathBuf>,
    pub backup_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub mysql_url: Option<String>,
    pub mysql_host_for_containers: Option<String>,
    pub port_range: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub config: PathBuf,
    pub written: bool,
    pub created_dirs: Vec<PathBuf>,
    /// The host's snapshot key, made now unless it had one.
    pub public_key: String,
    pub key_created: bool,
}

impl std::fmt::Display for InitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.written {
            write!(f, "wrote {}", self.config.display())?;
        } else {
            write!(f, "{} exists; left unchanged", self.config.display())?;
        }
        for d in &self.created_dirs {
            write!(f, "\ncreated {}", d.display())?;
        }
        if self.key_created {
            write!(
                f,
                "\nmade the snapshot key {}; keep a copy off this host: `sp key export`",
                self.public_key
            )?;
        }
        Ok(())
    }
}

/// `sp init`.
pub fn run(config_path: &std::path::Path, opts: &InitOpts) -> Result<InitReport> {
    let written = !config_path.exists();
    let config = if written {
        let mut c = Config::default();
        if let Some(v) = &opts.instance {
            c.instance = v.clone();
        }
        if let Some(v) = &opts.sites_dir {
            c.sites_dir = v.clone();
        }
        if let Some(v) = &opts.backup_dir {
            c.backup_dir = v.clone();
        }
        if let Some(v) = &opts.state_dir {
            c.state_dir = v.clone();
        }
        if let Some(v) = &opts.mysql_url {
            c.mysql.url = v.clone();
        }
        if let Some(v) = &opts.mysql_host_for_containers {
            c.mysql.host_for_containers = v.clone();
        }
        if let Some(v) = &opts.port_range {
            c.docker.port_range = v.clone();
        }
        let text = c.commented_default();
        // Validate what we are about to write, so a bad flag changes nothing.
        let parsed: Config = toml::from_str(&text)
            .map_err(|e| Error::Invalid(crate::site::toml_error(&text, &e)))?;
        let tmp = tempfile_in_same_dir(config_path);
        crate::fsutil::write_private(&tmp, text.as_bytes())?;
        let checked = Config::load(&tmp);
        let _ = std::fs::remove_file(&tmp);
        checked.map_err(|e| {
            Error::Invalid(e.to_string().replace(&tmp.display().to_string(), "init"))
        })?;
        crate::fsutil::write_private(config_path, text.as_bytes())?;
        parsed
    } else {
        Config::load(config_path)?
    };
    let mut created_dirs = Vec::new();
    for d in [&config.sites_dir, &config.backup_dir, &config.state_dir] {
        if !d.exists() {
            std::fs::create_dir_all(d).map_err(|e| Error::io_path("create", d, e))?;
            created_dirs.push(d.clone());
        }
    }
    crate::fsutil::chmod(&config.backup_dir, 0o700)?;
    let (key, key_created) = crate::key::HostKey::load_or_create(&config.state_dir)?;
    Ok(InitReport {
        config: config_path.to_path_buf(),
        written,
        created_dirs,
        public_key: key.public().to_string(),
        key_created,
    })
}

fn tempfile_in_same_dir(path: &std::path::Path) -> PathBuf {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    dir.join(format!(".sp-init-check-{}.toml", std::process::id()))
}
