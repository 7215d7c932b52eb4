//! `sp init`: write a commented default config, create the directories and the host's
//! snapshot key. An existing config or key is never overwritten.
//!
//! The admin password never goes through argv: `--mysql-url` with one is refused, and it
//! comes from stdin (`--mysql-password-stdin`, stored 0600 as `mysql-admin.password` beside
//! the config) or from a root-only file (`--mysql-password-file`); either way the config
//! names it as `mysql.password_file`.

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
    /// The admin password, read from stdin.
    pub mysql_password: Option<String>,
    /// A file holding the admin password.
    pub mysql_password_file: Option<PathBuf>,
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

/// Name of the password file `--mysql-password-stdin` writes beside the config.
pub const PASSWORD_FILE_NAME: &str = "mysql-admin.password";

/// Refuses a `--mysql-url` that carries a password.
pub fn check_url(url: Option<&str>) -> Result<()> {
    match url {
        Some(u) if crate::config::url_has_password(u) => Err(Error::Invalid(
            "--mysql-url must not carry a password (every local user can read argv): give the URL without it and pass the password with --mysql-password-stdin or --mysql-password-file".into(),
        )),
        _ => Ok(()),
    }
}

/// Checks a `--mysql-password-file`: it exists, is a file and only its owner may read it.
fn check_password_file(path: &std::path::Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::absolute(path).map_err(|e| Error::io_path("resolve", path, e))?;
    let meta = std::fs::metadata(&path).map_err(|e| {
        Error::Invalid(format!(
            "--mysql-password-file {}: {e}; write the password into it first (install -m 600 /dev/null FILE)",
            path.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "--mysql-password-file {}: not a file",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "--mysql-password-file {}: others may read it (mode {:04o}); chmod 600 it first",
            path.display(),
            meta.permissions().mode() & 0o7777
        )));
    }
    Ok(path)
}

/// `sp init`.
pub fn run(config_path: &std::path::Path, opts: &InitOpts) -> Result<InitReport> {
    check_url(opts.mysql_url.as_deref())?;
    let written = !config_path.exists();
    if opts.mysql_password.as_deref() == Some("") {
        return Err(Error::Invalid(
            "--mysql-password-stdin: stdin held no password".into(),
        ));
    }
    let password_file = opts
        .mysql_password_file
        .as_deref()
        .map(check_password_file)
        .transpose()?;
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
        let stdin_file = opts.mysql_password.as_ref().map(|_| {
            let dir = config_path.parent().unwrap_or(std::path::Path::new("."));
            std::path::absolute(dir)
                .unwrap_or_else(|_| dir.to_path_buf())
                .join(PASSWORD_FILE_NAME)
        });
        c.mysql.password_file = password_file.or(stdin_file.clone());
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
        if let (Some(path), Some(pw)) = (&stdin_file, &opts.mysql_password) {
            crate::fsutil::write_private(path, pw.as_bytes())?;
        }
        if let Err(e) = crate::fsutil::write_private(config_path, text.as_bytes()) {
            if let Some(path) = &stdin_file {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
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
    // Snapshots and sp's state hold secrets; sites' trees are private one by one.
    crate::fsutil::chmod(&config.backup_dir, 0o700)?;
    crate::lock::ensure_private_dir(&config.state_dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn opts(dir: &std::path::Path) -> InitOpts {
        InitOpts {
            sites_dir: Some(dir.join("sites")),
            backup_dir: Some(dir.join("backups")),
            state_dir: Some(dir.join("state")),
            mysql_url: Some("mysql://sp_admin@127.0.0.1:3306".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("etc/config.toml");
        let mut o = opts(dir.path());
        o.mysql_url = Some("mysql://sp_admin:hunter2@127.0.0.1:3306".into());
        let err = run(&config, &o).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("--mysql-password-file"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_password_from_stdin_goes_into_a_private_file_the_config_names() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("etc/config.toml");
        let mut o = opts(dir.path());
        o.mysql_password = Some("hunter2".into());
        run(&config, &o).unwrap();
        let pw = dir.path().join("etc").join(PASSWORD_FILE_NAME);
        assert_eq!(std::fs::read_to_string(&pw).unwrap(), "hunter2");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pw), 0o600);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        let cfg = Config::load(&config).unwrap();
        assert_eq!(cfg.mysql.password_file.as_deref(), Some(pw.as_path()));
        assert!(!std::fs::read_to_string(&config)
            .unwrap()
            .contains("hunter2"));
        // An empty line is no password.
        let other = dir.path().join("other/config.toml");
        o.mysql_password = Some(String::new());
        assert_eq!(run(&other, &o).unwrap_err().exit_code(), 2);
        assert!(!other.exists());
    }
}
