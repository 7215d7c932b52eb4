//! Stored registry credentials (`sp registry login`), used for every pull from that registry.
//!
//! They live in `registries.toml` beside the config file, mode 0600, written atomically. GitLab
//! deploy tokens are the usual content. Nothing here ever logs a password.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential {{ username: {:?}, password: *** }}",
            self.username
        )
    }
}

/// All stored credentials, by registry host (`host[:port]`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub registries: BTreeMap<String, Credential>,
}

/// The credentials file that belongs to a config file.
pub fn credentials_path(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("registries.toml")
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Error::Config {
                path: path.display().to_string(),
                message: crate::site::toml_error(&text, &e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(e) => Err(Error::io_path("read", path, e)),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| Error::Other(format!("cannot encode credentials: {e}")))?;
        crate::fsutil::write_private(path, text.as_bytes())
    }

    pub fn get(&self, registry: &str) -> Option<&Credential> {
        self.registries.get(registry)
    }
}

/// Checks a registry host given to `sp registry login`.
pub fn validate_host(host: &str) -> Result<()> {
    let probe = format!("{host}/probe/x");
    match crate::site::ImageRef::parse(&probe) {
        Ok(r) if r.registry == host => Ok(()),
        _ => Err(Error::Invalid(format!(
            "invalid registry host {host:?}: expected HOST[:PORT] like registry.gitlab.com"
        ))),
    }
}
