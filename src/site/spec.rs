//! `site.toml`: the spec of one site and its validation.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    check_entry, toml_error, validate_domain, validate_env_key, validate_name, ContainerSpec,
    ImageRef, SecretEnv, RESERVED_ENV,
};
use crate::error::{Error, Result};

/// Parses a memory limit like `512m`, `1g`, `256M` or a byte count, into bytes.
pub fn parse_memory(text: &str) -> Result<i64> {
    let bad = || {
        Error::Invalid(format!(
            "invalid memory limit {text:?}: use e.g. 256m or 1g"
        ))
    };
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(bad()),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < 6 << 20 {
        return Err(Error::Invalid(format!(
            "invalid memory limit {text:?}: Docker needs at least 6m"
        )));
    }
    Ok(bytes)
}

/// How sp decides a freshly started container is healthy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// HTTP path answered with 2xx/3xx when healthy; none means "running for `grace` seconds".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds to wait for the HTTP check before giving up (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Seconds the container must stay running when there is no path (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<u64>,
}

impl Health {
    pub fn timeout_secs(&self) -> u64 {
        self.timeout.unwrap_or(60)
    }
    pub fn grace_secs(&self) -> u64 {
        self.grace.unwrap_or(3)
    }
}

/// The site's database section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// Whether the site has a database and user (named like the site). `--no-db` sets false.
    pub enabled: bool,
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        DatabaseSpec { enabled: true }
    }
}

/// `/sites/NAME/site.toml`: everything sp needs to run the site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub name: String,
    /// Image reference as the user gave it (usually a tag; deploys pin its digest).
    pub image: String,
    /// Per-site uid (and gid) that owns `data/` and runs the container.
    pub uid: u32,
    /// Port the app listens on inside the container.
    pub port: u16,
    /// Also publish the container on a 127.0.0.1 host port while the proxy is on (for
    /// debugging; without the proxy every site is published).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Memory limit such as "512m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Where `data/` is mounted inside the container (default /data).
    #[serde(default = "default_data_mount")]
    pub data_mount: String,
    /// Release command run in the new image before it replaces the old one (e.g. migrations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<String>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub database: DatabaseSpec,
    #[serde(default, skip_serializing_if = "BackupSpec::is_default")]
    pub backup: BackupSpec,
    /// How far the container is confined (capabilities, privileges, processes, logs).
    #[serde(default, skip_serializing_if = "ContainerSpec::is_default")]
    pub container: ContainerSpec,
    /// Scheduled commands run in the site's own image (`sp schedule install` writes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Job>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Env values kept out of this file, in `secrets/env` beside it ([`SecretEnv`]); read by
    /// [`SiteSpec::load`], never written into `site.toml`.
    #[serde(skip)]
    pub secret_env: BTreeMap<String, String>,
}

/// How the site's files are captured by `sp backup`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSpec {
    /// Run inside the running container before the files are archived (e.g. an SQLite
    /// `.backup` into data/); a non-zero exit fails the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_command: Vec<String>,
    /// Pause the container while its files are archived.
    #[serde(default)]
    pub pause: bool,
}

impl BackupSpec {
    fn is_default(&self) -> bool {
        *self == BackupSpec::default()
    }
}

/// A scheduled per-site command, e.g. Django's clearsessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Name used by `sp site job NAME JOB`: lowercase letters, digits and '-'.
    pub name: String,
    /// Standard 5-field crontab expression.
    pub schedule: String,
    pub command: Vec<String>,
}

fn default_data_mount() -> String {
    "/data".to_string()
}

impl SiteSpec {
    /// Validates every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        ImageRef::parse(&self.image)?;
        if self.uid < 1000 {
            return Err(Error::Invalid(format!(
                "{}: uid {} is below 1000",
                self.name, self.uid
            )));
        }
        if self.port == 0 {
            return Err(Error::Invalid(format!(
                "{}: port must be 1-65535",
                self.name
            )));
        }
        for d in &self.domains {
            validate_domain(d)?;
        }
        if let Some(m) = &self.memory {
            parse_memory(m)?;
        }
        if !self.data_mount.starts_with('/') || self.data_mount.contains("..") {
            return Err(Error::Invalid(format!(
                "{}: data_mount must be an absolute path without '..'",
                self.name
            )));
        }
        self.container.validate(&self.name)?;
        if let Some(p) = &self.health.path {
            if !p.starts_with('/') {
                return Err(Error::Invalid(format!(
                    "{}: health.path must start with '/'",
                    self.name
                )));
            }
        }
        for j in &self.jobs {
            let name_ok = !j.name.is_empty()
                && j.name.len() <= 40
                && j.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(Error::Invalid(format!(
                    "{}: job name {:?}: use lowercase letters, digits and '-'",
                    self.name, j.name
                )));
            }
            crate::schedule::parse(&j.schedule)
                .map_err(|e| Error::Invalid(format!("{}: job {}: {e}", self.name, j.name)))?;
            if j.command.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: job {} has no command",
                    self.name, j.name
                )));
            }
        }
        for k in self.env.keys() {
            validate_env_key(k)?;
            if RESERVED_ENV.contains(&k.as_str()) {
                return Err(Error::Invalid(format!(
                    "{}: env {k} is set by sp itself",
                    self.name
                )));
            }
        }
        for (k, v) in &self.secret_env {
            check_entry(k, v).map_err(|e| Error::Invalid(format!("{}: {e}", self.name)))?;
            if self.env.contains_key(k) {
                return Err(Error::Invalid(format!(
                    "{}: env {k} is set both in site.toml and in secrets/env; `sp site env {} unset {k}` and set it again",
                    self.name, self.name
                )));
            }
        }
        Ok(())
    }

    /// Every env entry of the spec, secret ones included, by key.
    pub fn all_env(&self) -> impl Iterator<Item = (&String, &String)> {
        self.env.iter().chain(self.secret_env.iter())
    }

    /// Reads and validates a spec file, with the secret env values beside it (`secrets/env`).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io_path("read", path, e))?;
        let mut spec: SiteSpec = toml::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{}: {}", path.display(), toml_error(&text, &e)))
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let paths = super::SitePaths {
            root: dir.to_path_buf(),
        };
        spec.secret_env = SecretEnv::load(&paths.secret_env())?.0;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as TOML text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!(
            "# sp site spec: the source of truth for this site. Edit, then run `sp apply {}`.\n{body}",
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::DatabaseSpec;

    #[test]
    fn memory() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn example_specs_validate() {
        for f in ["sites/django-app.toml", "sites/static-site.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            SiteSpec::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn spec_round_trips() {
        let spec = SiteSpec {
            name: "blog".into(),
            image: "reg.example.com/a/b:1".into(),
            uid: 20001,
            port: 8000,
            publish: false,
            domains: vec!["blog.example.com".into()],
            memory: Some("256m".into()),
            data_mount: "/data".into(),
            release: vec!["migrate".into()],
            health: Health {
                path: Some("/".into()),
                ..Default::default()
            },
            database: DatabaseSpec::default(),
            backup: BackupSpec {
                pre_command: vec!["true".into()],
                pause: true,
            },
            container: ContainerSpec {
                cap_add: vec!["NET_BIND_SERVICE".into()],
                pids_limit: Some(100),
                ..Default::default()
            },
            jobs: vec![Job {
                name: "clear".into(),
                schedule: "0 4 * * 0".into(),
                command: vec!["x".into()],
            }],
            env: [("A".to_string(), "1".to_string())].into(),
            secret_env: BTreeMap::new(),
        };
        let back: SiteSpec = toml::from_str(&spec.to_toml()).unwrap();
        assert_eq!(back, spec);
    }
}
