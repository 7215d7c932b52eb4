//! Where snapshots can live besides `backup_dir`: the [`Store`] seam and its stores — a
//! directory ([`dir`]), memory for unit tests ([`mem`]) and S3-compatible buckets on opendal
//! ([`remote`]) and SFTP servers ([`sftp`]). A destination is chosen by URL (`/path`,
//! `s3://bucket/prefix`, `sftp://user@host[:port]/path`); see
//! [`Destination`]. [`offsite`] is the snapshot format on top of any store (each file
//! encrypted as it streams up, an index signed and written last).
//!
//! Stores are blocking (call them from `spawn_blocking` or another worker thread; the remote
//! store drives its async client on the runtime it was opened under).

pub mod dir;
pub mod mem;
pub mod offsite;
pub mod remote;
pub mod sftp;

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

/// The kind of place a destination URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Url {
    /// An absolute directory.
    Dir(std::path::PathBuf),
    /// `s3://BUCKET/PREFIX`.
    S3 { bucket: String, prefix: String },
    /// `sftp://USER@HOST[:PORT]/PATH` (PATH absolute on the server).
    Sftp {
        user: String,
        host: String,
        port: u16,
        path: String,
    },
}

impl Url {
    /// Parses `/path`, `s3://bucket[/prefix]` or `sftp://user@host[:port]/path`.
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
        if let Some(rest) = text.strip_prefix("sftp://") {
            return parse_sftp(text, rest);
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: use an absolute directory, s3://BUCKET/PREFIX or sftp://USER@HOST[:PORT]/PATH"
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

/// `sftp://USER@HOST[:PORT]/PATH`, `rest` after the scheme.
fn parse_sftp(text: &str, rest: &str) -> std::result::Result<Url, String> {
    let usage = "as in sftp://backup@nas.example.org:2222/srv/sp/host1";
    let Some((authority, path)) = rest.find('/').map(|i| rest.split_at(i)) else {
        return Err(format!(
            "{text:?}: name the directory on the server, {usage}"
        ));
    };
    let Some((user, hostport)) = authority.rsplit_once('@') else {
        return Err(format!("{text:?}: name the user to log in as, {usage}"));
    };
    let user_ok = !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !user_ok {
        return Err(format!(
            "{text:?}: the user must be 1-64 of [A-Za-z0-9._-] (no password in the URL: sp logs in with key_file), {usage}"
        ));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(format!("{text:?}: an IPv6 host is written [ADDR], {usage}"));
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{text:?}: {h:?} is not an IPv6 address"));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(format!(
                    "{text:?}: after [ADDR] comes :PORT or the path, {usage}"
                ))
            }
        };
        (h, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let host_ok = hostport.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && !host.starts_with('-')
            && !host.starts_with('.')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !host_ok {
        return Err(format!(
            "{text:?}: {host:?} is not a host name or address, {usage}"
        ));
    }
    let port = match port {
        None => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("{text:?}: the port must be 1-65535, {usage}")),
        },
    };
    let trimmed = path.trim_end_matches('/');
    let path_ok = !trimmed.is_empty()
        && trimmed[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !trimmed
            .chars()
            .any(|c| c.is_control() || matches!(c, '\\' | '?' | '#' | '%'));
    if !path_ok {
        return Err(format!(
            "{text:?}: the path must be an absolute directory on the server other than / (no ., .., //, ?, #, %), {usage}"
        ));
    }
    Ok(Url::Sftp {
        user: user.to_string(),
        host: host.to_string(),
        port,
        path: trimmed.to_string(),
    })
}

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
    fn sftp_urls() {
        assert_eq!(
            Url::parse("sftp://backup@nas.example.org:2222/srv/sp/host1/").unwrap(),
            Url::Sftp {
                user: "backup".into(),
                host: "nas.example.org".into(),
                port: 2222,
                path: "/srv/sp/host1".into()
            }
        );
        assert_eq!(
            Url::parse("sftp://root@127.0.0.1/tmp/x").unwrap(),
            Url::Sftp {
                user: "root".into(),
                host: "127.0.0.1".into(),
                port: 22,
                path: "/tmp/x".into()
            }
        );
        assert_eq!(
            Url::parse("sftp://u@[::1]:2200/b").unwrap(),
            Url::Sftp {
                user: "u".into(),
                host: "::1".into(),
                port: 2200,
                path: "/b".into()
            }
        );
        for bad in [
            "sftp://host/path",
            "sftp://@host/path",
            "sftp://u:secret@host/path",
            "sftp://u@host",
            "sftp://u@host/",
            "sftp://u@host:0/p",
            "sftp://u@host:99999/p",
            "sftp://u@host:/p",
            "sftp://u@host:22x/p",
            "sftp://u@/p",
            "sftp://u@-oProxyCommand=x/p",
            "sftp://-u@host/p",
            "sftp://u@host/a/../b",
            "sftp://u@host/a//b",
            "sftp://u@host/a/./b",
            "sftp://u@host/a?b",
            "sftp://u@host/a%2fb",
            "sftp://u@[nope]/p",
            "sftp://u@[::1/p",
            "sftp://u@[::1]x/p",
            "sftp://u@ho st/p",
        ] {
            let e = Url::parse(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
    }

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
