//! A configured `[[destination]]` opened as a store, what a directory of snapshots holds
//! ([`Layout`]), and where a command reads snapshots from (`--from`, see [`Source`]).

use super::{dir, offsite, remote, sftp, Store, Url};
use crate::config::DestinationConfig;
use crate::error::{Error, Result};

/// A configured place snapshots are copied to (a `[[destination]]`), opened.
pub struct Destination {
    pub name: String,
    pub store: Box<dyn Store>,
    /// Its own retention policy (the host's `[retention]` when it names none).
    pub retention: crate::snapshot::retention::Policy,
    /// This is `backup_dir` itself, holding encrypted snapshots (`[encryption] local = true`).
    pub local: bool,
}

impl Destination {
    /// Opens the store a destination's URL names, with its credentials. Call under a tokio
    /// runtime (the S3 client runs on it).
    pub fn open(
        cfg: &DestinationConfig,
        retention: &crate::snapshot::retention::Policy,
    ) -> Result<Destination> {
        let url = Url::parse(&cfg.url)
            .map_err(|e| Error::Invalid(format!("destination {}: {e}", cfg.name)))?;
        let store: Box<dyn Store> = match url {
            Url::Dir(p) => Box::new(dir::DirStore::new(p)),
            Url::S3 { bucket, prefix } => Box::new(remote::s3(cfg, &bucket, &prefix)?),
            Url::Sftp {
                user,
                host,
                port,
                path,
            } => Box::new(sftp::open(cfg, &user, &host, port, &path)?),
        };
        Ok(Destination {
            name: cfg.name.clone(),
            store,
            retention: cfg.retention.clone().unwrap_or_else(|| retention.clone()),
            local: false,
        })
    }

    /// `backup_dir` as a directory store: where `[encryption] local = true` keeps snapshots,
    /// in the off-host format, by the host's `[retention]` policy.
    pub fn local(cfg: &crate::config::Config) -> Destination {
        Destination::encrypted_dir(cfg, &cfg.backup_dir)
    }

    /// A directory of snapshots in the off-host format, read by the host's `[retention]`;
    /// `local` when it is `backup_dir` itself.
    fn encrypted_dir(cfg: &crate::config::Config, path: &std::path::Path) -> Destination {
        Destination {
            name: path.display().to_string(),
            store: Box::new(dir::DirStore::new(path.to_path_buf())),
            retention: cfg.retention.clone(),
            local: path == cfg.backup_dir,
        }
    }
}

/// What a directory of snapshots holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// No snapshot at all (or no such directory).
    Empty,
    /// Only snapshots in the local layout (plaintext files beside a manifest).
    Plain,
    /// Only complete snapshots in the off-host format (`ID/index.json`, `.age` objects).
    Encrypted,
    /// Both: plaintext snapshots from before `[encryption] local = true`, and encrypted ones;
    /// `newest_encrypted`: the newest snapshot id of all is an encrypted one (the usual case:
    /// local encryption switched on later).
    Mixed { newest_encrypted: bool },
}

/// Which kinds of snapshots `dir` holds (reads only its folders' names and markers).
pub fn layout(dir: &std::path::Path) -> Layout {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Layout::Empty;
    };
    // The newest id of each kind (ids are sortable timestamps).
    let (mut plain, mut encrypted): (Option<String>, Option<String>) = (None, None);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        let newest = if p.join(offsite::INDEX).is_file() {
            &mut encrypted
        } else if !crate::snapshot::is_stored_folder(&p)
            && p.join(crate::snapshot::MANIFEST).is_file()
        {
            &mut plain
        } else {
            continue;
        };
        if newest.as_ref().is_none_or(|n| *n < name) {
            *newest = Some(name);
        }
    }
    match (plain, encrypted) {
        (None, None) => Layout::Empty,
        (Some(_), None) => Layout::Plain,
        (None, Some(_)) => Layout::Encrypted,
        (Some(p), Some(e)) => Layout::Mixed {
            newest_encrypted: e > p,
        },
    }
}

/// Where a command reads snapshots from (`--from NAME|URL|DIR`).
pub enum Source {
    /// A directory of snapshots in the local layout (`backup_dir`, or a copy of one).
    Local(std::path::PathBuf),
    /// A destination (by name, or an `s3://` URL with credentials from the environment).
    Remote(Destination),
}

impl Source {
    /// `None`: `backup_dir` — as the encrypted store it is with `[encryption] local = true`,
    /// or when its newest snapshot is an encrypted one (a new host whose config does not say
    /// so yet, its old plaintext snapshots beside them or not); else its plaintext snapshots. A configured destination's name (or URL): that
    /// destination. An `s3://` URL: that bucket, credentials from `AWS_*`. Anything else: a
    /// directory — read as a directory store when it holds encrypted snapshots only (a copy of
    /// an encrypted `backup_dir`, a directory destination), else in the local layout (so
    /// `--from BACKUP_DIR` reads the plaintext snapshots taken before `local = true`).
    /// Call from the runtime.
    pub fn resolve(cfg: &crate::config::Config, from: Option<&std::path::Path>) -> Result<Source> {
        let Some(from) = from else {
            let newest_encrypted = matches!(
                layout(&cfg.backup_dir),
                Layout::Encrypted
                    | Layout::Mixed {
                        newest_encrypted: true
                    }
            );
            if cfg.encryption.local || newest_encrypted {
                return Ok(Source::Remote(Destination::local(cfg)));
            }
            return Ok(Source::Local(cfg.backup_dir.clone()));
        };
        let text = from.to_string_lossy();
        if let Some(d) = cfg
            .destinations
            .iter()
            .find(|d| d.name == text || d.url == text)
        {
            return Ok(Source::Remote(Destination::open(d, &cfg.retention)?));
        }
        if text.contains("://") {
            if let Url::Sftp { .. } = Url::parse(&text).map_err(Error::Invalid)? {
                return Err(Error::Invalid(format!(
                    "--from {text}: an sftp:// server needs key_file and known_hosts: add it as a [[destination]] and use --from NAME"
                )));
            }
            let d = DestinationConfig {
                name: text.to_string(),
                url: text.to_string(),
                endpoint: std::env::var("AWS_ENDPOINT_URL").ok(),
                path_style: std::env::var("AWS_ENDPOINT_URL").is_ok(),
                ..Default::default()
            };
            return Ok(Source::Remote(Destination::open(&d, &cfg.retention)?));
        }
        // A bare word that is no directory was meant as a destination's name.
        if !text.contains('/') && !from.exists() {
            let names: Vec<&str> = cfg.destinations.iter().map(|d| d.name.as_str()).collect();
            return Err(Error::NotFound(format!(
                "--from {text}: no such directory, and no [[destination]] of that name (configured: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        }
        if layout(from) == Layout::Encrypted {
            return Ok(Source::Remote(Destination::encrypted_dir(cfg, from)));
        }
        Ok(Source::Local(from.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A config whose backup_dir is `dir`, encrypted locally or not.
    fn config(dir: &std::path::Path, local: bool) -> crate::config::Config {
        let mut c = crate::config::Config {
            backup_dir: dir.to_path_buf(),
            ..Default::default()
        };
        c.encryption.local = local;
        c
    }

    fn snapshot_folder(root: &std::path::Path, id: &str, encrypted: bool) {
        let d = root.join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(crate::snapshot::MANIFEST), b"{}").unwrap();
        if encrypted {
            std::fs::write(d.join("host.tar.zst.age"), b"x").unwrap();
            std::fs::write(d.join(offsite::INDEX), b"{}").unwrap();
        }
    }

    fn is_store(s: &Source) -> Option<bool> {
        match s {
            Source::Remote(d) => Some(d.local),
            Source::Local(_) => None,
        }
    }

    #[test]
    fn layouts_and_the_default_source() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        assert_eq!(layout(&root.join("none")), Layout::Empty);
        assert_eq!(layout(root), Layout::Empty);
        // local = false: backup_dir in the local layout, as always…
        let plain = config(root, false);
        assert_eq!(is_store(&Source::resolve(&plain, None).unwrap()), None);
        // …and local = true: the encrypted store, even before its first snapshot.
        let enc = config(root, true);
        assert_eq!(is_store(&Source::resolve(&enc, None).unwrap()), Some(true));

        snapshot_folder(root, "20260101T000000Z", true);
        // An unfinished encrypted snapshot (no index) is no plaintext one either.
        let cut = root.join("20260102T000000Z");
        std::fs::create_dir_all(&cut).unwrap();
        std::fs::write(cut.join(crate::snapshot::MANIFEST), b"{}").unwrap();
        std::fs::write(cut.join("host.tar.zst.age"), b"x").unwrap();
        assert_eq!(layout(root), Layout::Encrypted);
        assert!(crate::snapshot::list(root).unwrap().0.is_empty());
        assert!(crate::snapshot::list(root).unwrap().1.is_empty());
        // A new host whose config does not say local = true yet still reads them.
        assert_eq!(
            is_store(&Source::resolve(&plain, None).unwrap()),
            Some(true)
        );
        // --from a directory of encrypted snapshots: a directory store.
        let other = tempfile::tempdir().unwrap();
        assert_eq!(
            is_store(&Source::resolve(&config(other.path(), false), Some(root)).unwrap()),
            Some(false)
        );

        // Plaintext ones from before: --from BACKUP_DIR reads them in the local layout; by
        // default the newest kind is read — the encrypted snapshots, even when the config
        // does not say local = true (the runbook's minimal config on a new host).
        snapshot_folder(root, "20251201T000000Z", false);
        assert_eq!(
            layout(root),
            Layout::Mixed {
                newest_encrypted: true
            }
        );
        assert_eq!(is_store(&Source::resolve(&enc, None).unwrap()), Some(true));
        assert_eq!(
            is_store(&Source::resolve(&plain, None).unwrap()),
            Some(true)
        );
        assert_eq!(is_store(&Source::resolve(&enc, Some(root)).unwrap()), None);
        // A plaintext snapshot newer than every encrypted one (local switched off again): the
        // plaintext ones, unless the config says local = true.
        snapshot_folder(root, "20260201T000000Z", false);
        assert_eq!(
            layout(root),
            Layout::Mixed {
                newest_encrypted: false
            }
        );
        assert_eq!(is_store(&Source::resolve(&plain, None).unwrap()), None);
        assert_eq!(is_store(&Source::resolve(&enc, None).unwrap()), Some(true));
        let e = crate::snapshot::resolve(root, "20260101T000000Z", crate::snapshot::Pick::Any)
            .unwrap_err()
            .to_string();
        assert!(e.contains("encrypted"), "{e}");
    }
}
