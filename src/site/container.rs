//! The spec's `[container]` table: how far a site's container is confined. Every capability
//! is dropped, `no-new-privileges` is on, processes are limited and logs rotate; a site that
//! needs more says so here. The app runs as the site's uid, so a capability in `cap_add` only
//! stays in the bounding set: a process gets it through a binary with file capabilities, which
//! also needs `no_new_privileges = false`. Binding a port below 1024 needs none (Docker lets
//! containers do that).

use serde::{Deserialize, Serialize};

use crate::engine::Confinement;
use crate::error::{Error, Result};

/// Default most processes and threads a site container may have.
pub const DEFAULT_PIDS_LIMIT: u32 = 512;
/// Default size of one json-file log file before it rotates.
pub const DEFAULT_LOG_MAX_SIZE: &str = "10m";
/// Default number of json-file log files kept.
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;

/// The Linux capabilities Docker knows (without the `CAP_` prefix).
const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// `[container]` in `site.toml`; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Capabilities kept after all are dropped, e.g. `["NET_RAW"]` (see the module docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Forbid gaining privileges through setuid binaries (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_new_privileges: Option<bool>,
    /// Most processes and threads in the container (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
    /// Size of one json-file log file before it rotates, e.g. "10m" (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<String>,
    /// How many log files are kept (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_files: Option<u32>,
}

impl ContainerSpec {
    pub fn is_default(&self) -> bool {
        *self == ContainerSpec::default()
    }

    /// Checks every key; `site` names the spec in errors.
    pub fn validate(&self, site: &str) -> Result<()> {
        let bad = |what: String| Err(Error::Invalid(format!("{site}: container.{what}")));
        for cap in &self.cap_add {
            let name = cap.strip_prefix("CAP_").unwrap_or(cap);
            if !CAPABILITIES.contains(&name) {
                return bad(format!(
                    "cap_add {cap:?}: not a capability name; name each one the app needs, like \"NET_BIND_SERVICE\""
                ));
            }
        }
        if self.pids_limit == Some(0) {
            return bad("pids_limit must be at least 1".into());
        }
        if let Some(size) = &self.log_max_size {
            let digits = size.trim_end_matches(['k', 'm', 'g']);
            let ok = !digits.is_empty()
                && digits.len() + 1 >= size.len()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u64>().map(|n| n > 0).unwrap_or(false);
            if !ok {
                return bad(format!(
                    "log_max_size {size:?}: use a size like 10m, 500k or 1g"
                ));
            }
        }
        if self.log_max_files == Some(0) {
            return bad("log_max_files must be at least 1".into());
        }
        Ok(())
    }

    /// The confinement the engine applies, defaults filled in (capability names without
    /// `CAP_`, as Docker reports them).
    pub fn confinement(&self) -> Confinement {
        Confinement {
            cap_add: self
                .cap_add
                .iter()
                .map(|c| c.strip_prefix("CAP_").unwrap_or(c).to_string())
                .collect(),
            no_new_privileges: self.no_new_privileges.unwrap_or(true),
            pids_limit: i64::from(self.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT)),
            log_max_size: self
                .log_max_size
                .clone()
                .unwrap_or_else(|| DEFAULT_LOG_MAX_SIZE.into()),
            log_max_files: self.log_max_files.unwrap_or(DEFAULT_LOG_MAX_FILES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_confine_fully() {
        let c = ContainerSpec::default().confinement();
        assert_eq!(
            c,
            Confinement {
                cap_add: vec![],
                no_new_privileges: true,
                pids_limit: 512,
                log_max_size: "10m".into(),
                log_max_files: 3,
            }
        );
    }

    #[test]
    fn overrides_are_checked_and_applied() {
        let spec = ContainerSpec {
            cap_add: vec!["CAP_NET_BIND_SERVICE".into(), "CHOWN".into()],
            no_new_privileges: Some(false),
            pids_limit: Some(64),
            log_max_size: Some("500k".into()),
            log_max_files: Some(1),
        };
        spec.validate("blog").unwrap();
        let c = spec.confinement();
        assert_eq!(c.cap_add, vec!["NET_BIND_SERVICE", "CHOWN"]);
        assert!(!c.no_new_privileges);
        assert_eq!((c.pids_limit, c.log_max_files), (64, 1));
        assert_eq!(c.log_max_size, "500k");
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            ContainerSpec {
                cap_add: vec!["ALL".into()],
                ..Default::default()
            },
            ContainerSpec {
                cap_add: vec!["net_bind_service".into()],
                ..Default::default()
            },
            ContainerSpec {
                pids_limit: Some(0),
                ..Default::default()
            },
            ContainerSpec {
                log_max_size: Some("10mb".into()),
                ..Default::default()
            },
            ContainerSpec {
                log_max_size: Some("0m".into()),
                ..Default::default()
            },
            ContainerSpec {
                log_max_size: Some("m".into()),
                ..Default::default()
            },
            ContainerSpec {
                log_max_files: Some(0),
                ..Default::default()
            },
        ];
        for c in cases {
            let err = c.validate("blog").unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().starts_with("blog: container."), "{err}");
        }
    }
}
