//! Where snapshots can live besides `backup_dir`: the [`Store`] seam and its stores — a
//! directory ([`dir`]), memory for unit tests ([`mem`]) and S3-compatible buckets on opendal
//! ([`remote`]) and SFTP servers ([`sftp`]). A destination is chosen by URL (`/path`,
//! `s3://bucket/prefix`, `sftp://user@host[:port]/path`); see
//! [`Destination`]. [`offsite`] is the snapshot format on top of any store (each file
//! encrypted as it streams up, an index signed and written last).
//!
//! Stores are blocking (call them from `spawn_blocking` or another worker thread; the remote
//! store drives its async client on the runtime it was opened under).

mod destination;
pub mod dir;
pub mod mem;
pub mod offsite;
pub mod remote;
pub mod sftp;
mod url;

use std::io::{Read, Write};

pub use self::destination::{layout, Destination, Layout, Source};
pub use self::url::Url;
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

    /// Starts the commit and returns at once where the store can (a bucket completes the
    /// object while the caller writes the next one); [`Pending::wait`] says how it ended.
    /// Dropped unwaited, the object may or may not appear. By default: commits now.
    fn commit_later(self: Box<Self>) -> Result<Pending> {
        self.commit()?;
        Ok(Pending::ready())
    }
}

/// A commit under way (see [`Upload::commit_later`]).
pub struct Pending(Box<dyn FnOnce() -> Result<()> + Send>);

impl Pending {
    /// One that has already completed.
    pub fn ready() -> Pending {
        Pending(Box::new(|| Ok(())))
    }

    /// One that `wait` completes.
    pub fn new(wait: impl FnOnce() -> Result<()> + Send + 'static) -> Pending {
        Pending(Box::new(wait))
    }

    /// Waits for the commit to end.
    pub fn wait(self) -> Result<()> {
        (self.0)()
    }
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
    /// The folders at the root (names that some object's path starts with, then `/`), sorted:
    /// where a recursive listing of a bucket would page through every segment of every
    /// snapshot, a store lists only its root.
    fn folders(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .list("")?
            .into_iter()
            .filter_map(|o| o.path.split_once('/').map(|(f, _)| f.to_string()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    /// Split every file into objects of at most this many bytes (see
    /// [`offsite::Segment`]); `None`: one object a file.
    fn segment_size(&self) -> Option<u64> {
        None
    }
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

/// The directory a listing of `prefix` starts its walk in: the prefix itself when it ends in
/// `/`, else the directory it names a name in (`a/b` → `a`, `a` → the root), checked.
pub fn list_start(prefix: &str) -> Result<String> {
    let base = prefix.trim_end_matches('/');
    let start = match base.rsplit_once('/') {
        Some((d, _)) if !prefix.ends_with('/') => d.to_string(),
        _ if prefix.ends_with('/') => base.to_string(),
        _ => String::new(),
    };
    if !start.is_empty() {
        check_path(&start)?;
    }
    Ok(start)
}

/// Runs blocking store work from async code without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[cfg(test)]
mod tests {
    use super::*;

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
