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
    /// The spec's image reference (as written in site.toml) when it was last deployed; `sp
    /// apply` rolls the spec's image out when site.toml names another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// RFC 3339 time of the last successful deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
}

impl DeployState {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let state: DeployState = toml::from_str(&text).map_err(|e| {
                    Error::Invalid(format!("{}: {}", path.display(), toml_error(&text, &e)))
                })?;
                state.check().map_err(|why| {
                    Error::Invalid(format!(
                        "{}: {why}; sp did not write that (fix or remove the file)",
                        path.display()
                    ))
                })?;
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeployState::default()),
            Err(e) => Err(Error::io_path("read", path, e)),
        }
    }

    /// What a snapshot could put here that sp must not act on: image ids that are not digests
    /// (they name image archive files), references that do not parse.
    fn check(&self) -> std::result::Result<(), String> {
        for id in [&self.current_id, &self.previous_id].into_iter().flatten() {
            if !super::history::is_image_id(id) {
                return Err(format!("image id {id:?} is not a sha256 digest"));
            }
        }
        for r in [&self.current, &self.previous, &self.image]
            .into_iter()
            .flatten()
        {
            super::ImageRef::parse(r).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        format!(
            "# written by sp: what is deployed for this site. Do not edit.\n{}",
            toml::to_string_pretty(self).unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_name_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("deploy.toml");
        let good = format!(
            "current = \"reg.test/a@sha256:{0}\"\ncurrent_id = \"sha256:{0}\"\nimage = \"reg.test/a:v1\"\n",
            "a".repeat(64)
        );
        std::fs::write(&p, &good).unwrap();
        let st = DeployState::load(&p).unwrap();
        assert_eq!(st.image.as_deref(), Some("reg.test/a:v1"));
        for bad in [
            "current_id = \"sha256:../../../etc/shadow\"\n",
            "previous_id = \"/etc/shadow\"\n",
            "current = \"not a ref\"\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = DeployState::load(&p).unwrap_err().to_string();
            assert!(e.contains("sp did not write that"), "{e}");
        }
        assert_eq!(
            DeployState::load(&dir.path().join("none")).unwrap(),
            DeployState::default()
        );
    }
}
