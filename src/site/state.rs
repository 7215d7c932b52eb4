//! `deploy.toml`: sp's own record of what runs for a site.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::toml_error;
use crate::error::{Error, Result};

/// sp's record of what runs for a site (`deploy.toml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployState {
    /// Image pinned by digest (`repo@sha256:…`) that runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The local image id (`sha256:` of its config) of `current`; containers are created from
    /// it, so a site also runs from an image loaded from the image archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_id: Option<String>,
    /// What ran before the last deploy, for `sp site rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    /// Host port on 127.0.0.1 that the current container publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// The user stopped the site; `sp apply` leaves it stopped.
    #[serde(default)]
    pub stopped: bool,
    /// RFC 3339 time of the last successful deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
}

impl DeployState {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                Error::Invalid(format!("{}: {}", path.display(), toml_error(&text, &e)))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeployState::default()),
            Err(e) => Err(Error::io_path("read", path, e)),
        }
    }

    pub fn to_toml(&self) -> String {
        format!(
            "# written by sp: what is deployed for this site. Do not edit.\n{}",
            toml::to_string_pretty(self).unwrap_or_default()
        )
    }
}
