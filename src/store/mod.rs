//! Where snapshots can live besides `backup_dir`: the [`Store`] seam and its stores — a
//! directory ([`dir`]), memory for unit tests ([`mem`]) and S3-compatible buckets on opendal
//! ([`remote`]). A destination is chosen by URL (`/path`, `s3://bucket/prefix`); see
//! [`Destination`]. [`offsite`] is the snapshot format on top of any store (each file
//! encrypted as it streams up, an index signed and written last).
//!
//! Stores are blocking (call them from `spawn_blocking` or another worker thread; the remote
//! store drives its async client on the runtime it was opened under).

pub mod dir;
pub mod mem;
pub mod offsite;
pub mod remote;

use std::io::{Read, Write};

use crate::config::DestinationConfig;
use crate::error::{Error, Result};

/// One object of a store: its path (relative to the store's root, `/`-separated) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub path: String,
    pub size: u64,
}

/// A streaming write that becomes visible only on [`Upload::commit`]; dropping it unfinished
/// leaves nothing under its name.
pub trait Upload: Write + Send {
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A place that holds objects by path.
pub trait Store: Send + Sync {
    /// How errors and reports name it (never with credentials).
    fn describe(&self) -> String;
    /// Every object under `prefix` (recursively), in path order.
    fn list(&self, prefix: &str) -> Result<Vec<Object>>;
    /// The size of `path`, or `None` when there is none.
    fn stat(&self, path: &str) -> Result<Option<u64>>;
    /// Reads `path` as a stream.
    fn read(&self, path: &str) -> Result<Box<dyn Read + Send>>;
    /// Writes `path` as a stream (atomically: see [`Upload`]).
    fn write(&self, path: &str) -> Result<Box<dyn Upload>>;
    /// Deletes `path` (no error when it is already gone).
    fn delete(&self, path: &str) -> Result<()>;
}

/// Checks a path an index or manifest names before it is used as a store path.
pub fn check_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with('.'));
    if bad {
        return Err(Error::Invalid(format!(
            "object path {path:?} is not a plain relative path; nothing was read or written"
        )));
    }
    Ok(())
}

/// The kind of place a destination URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Url {
    /// An absolute directory.
    Dir(std::path::PathBuf),
    /// `s3://BUCKET/PREFIX`.
    S3 { bucket: String, prefix: String },
}

impl Url {
    /// Parses `/path` or `s3://bucket[/prefix]`.
    pub fn parse(text: &str) -> std::result::Result<Url, String> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                return Err(format!(
                    "{text:?}: the bucket name must be 3-63 of [a-z0-9.-], as in s3://my-bucket/sp"
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if !prefix.is_empty() {
                check_path(&prefix).map_err(|e| e.to_string())?;
            }
            return Ok(Url::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if text.starts_with("sftp://") {
            return Err(format!(
                "{text:?}: sftp:// destinations are not supported yet; use s3://BUCKET/PREFIX or an absolute directory (e.g. an sshfs mount)"
            ));
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: use an absolute directory or s3://BUCKET/PREFIX"
            ));
        }
        let p = std::path::PathBuf::from(text);
        if !p.is_absolute() {
            return Err(format!(
                "{text:?}: a directory destination must be an absolute path"
            ));
        }
        Ok(Url::Dir(p))
    }
}

/// A configured place snapshots are copied to (a `[[destination]]`), opened.
pub struct Destination {
    pub name: String,
    pub store: Box<dyn Store>,
    /// Its own retention policy (the host's `[retention]` when it names none).
    pub retention: crate::snapshot::retention::Policy,
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
        };
        Ok(Destination {
            name: cfg.name.clone(),
            store,
            retention: cfg.retention.clone().unwrap_or_else(|| retention.clone()),
        })
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
    /// `None`: `backup_dir`. A configured destination's name (or URL): that destination.
    /// An `s3://` URL: that bucket, credentials from `AWS_*`. Anything else: a directory.
    /// Call from the runtime.
    pub fn resolve(cfg: &crate::config::Config, from: Option<&std::path::Path>) -> Result<Source> {
        let Some(from) = from else {
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
            Url::parse(&text).map_err(Error::Invalid)?;
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
        Ok(Source::Local(from.to_path_buf()))
    }
}

/// Runs blocking store work from async code without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Url::parse("s3://my-bucket/sp/host1/").unwrap(),
            Url::S3 {
                bucket: "my-bucket".into(),
                prefix: "sp/host1".into()
            }
        );
        assert_eq!(
            Url::parse("s3://my-bucket").unwrap(),
            Url::S3 {
                bucket: "my-bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(Url::parse("/mnt/usb").unwrap(), Url::Dir("/mnt/usb".into()));
        for bad in [
            "relative/dir",
            "s3://A_B/x",
            "s3://ok-bucket/../x",
            "ftp://h/x",
            "s3://b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        for ok in [
            "a",
            "20261201T000000Z/sites/blog.tar.zst.age",
            "images/ab.tar.zst",
        ] {
            check_path(ok).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "./a",
            ".tmp/x",
            "a\\b",
            "a/",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
