//! Snapshots: the on-disk format, the manifest, listing, verification and retention.
//!
//! One folder per snapshot, named by its UTC time so ids sort by time:
//!
//! ```text
//! BACKUP_DIR/20261121T220417Z/
//!   manifest.json          written last: sp version, host, time, sites, size + sha256 of every file
//!   manifest.json.sha256   sha256 of manifest.json, in `sha256sum -c` format
//!   manifest.json.sig      the host key's ed25519 signature of manifest.json (see [`crate::key`])
//!   host.tar.zst           the host config and registry credentials
//!   sites/NAME.tar.zst     /sites/NAME without tmp/
//!   sites/NAME.sql.zst     the site's database dump (no CREATE DATABASE / USE)
//! ```
//!
//! A snapshot is written under `.tmp-ID` and renamed into place only when complete and
//! fsynced; folders starting with `.` never count. Markers beside the manifest (`.pinned`,
//! `.verified`) are not part of the snapshot's content.

pub mod archive;
mod check;
pub mod follow;
mod members;
pub mod retention;
pub mod stage;
pub mod unpack;
pub mod walk;

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use self::check::{verify, verify_sites, verify_sites_counted, Checked, Depth, Fault};

pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_SUM: &str = "manifest.json.sha256";
pub const MANIFEST_SIG: &str = "manifest.json.sig";
pub const HOST_ARCHIVE: &str = "host.tar.zst";
/// The proxy's state: Caddy's data (certificates, ACME account keys) and its pinned image.
pub const PROXY_ARCHIVE: &str = "proxy.tar.zst";
const PINNED: &str = ".pinned";
const VERIFIED: &str = ".verified";

/// Why a snapshot was taken, which decides what `latest` means (see [`Pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Every site the host had (`sp backup`).
    #[default]
    Full,
    /// Some sites only (`sp backup --site`, or a host backup in which a site failed).
    Partial,
    /// A removed site's last state (`sp site remove`).
    Final,
    /// What `sp restore --yes` replaced; only ever restored by its id.
    PreRestore,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Partial => "partial",
            Kind::Final => "final",
            Kind::PreRestore => "pre-restore",
        }
    }

    /// Parses `full`, `partial`, `final` or `pre-restore`.
    pub fn parse(text: &str) -> Result<Kind> {
        [Kind::Full, Kind::Partial, Kind::Final, Kind::PreRestore]
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "snapshot kind {text:?}: use full, partial, final or pre-restore"
                ))
            })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// Why it was taken (manifests written before kinds existed read as `full`).
    #[serde(default)]
    pub kind: Kind,
    pub sp_version: String,
    pub host: String,
    pub instance: String,
    pub created: DateTime<Utc>,
    pub duration_ms: u64,
    pub sites: Vec<SiteEntry>,
    pub files: Vec<FileEntry>,
    /// Sites the backup meant to take and could not (`site: step 'x' failed: why`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// The proxy's image id (its archive is kept and uploaded like a site's image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_image_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteEntry {
    pub name: String,
    /// Image running at backup time, pinned by digest.
    pub image: Option<String>,
    /// Its local image id (`sha256:` of the config), the key of the image archive.
    #[serde(default)]
    pub image_id: Option<String>,
    pub uid: u32,
    /// `sites/NAME.tar.zst`
    pub archive: String,
    pub database: Option<DatabaseEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseEntry {
    pub name: String,
    /// `sites/NAME.sql.zst`
    pub dump: String,
    /// Tables and views dumped.
    pub tables: Vec<TableEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableEntry {
    pub name: String,
    /// `BASE TABLE` or `VIEW`.
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Relative to the snapshot folder.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A new snapshot id for `now`: `YYYYMMDDTHHMMSSZ`.
pub fn new_id(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Whether `name` is a snapshot id as [`new_id`] makes them (`-N` appended when two fall in
/// one second).
pub fn is_id(name: &str) -> bool {
    let (time, n) = match name.split_once('-') {
        Some((t, n)) => (t, Some(n)),
        None => (name, None),
    };
    time.len() == 16
        && chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%SZ").is_ok()
        && n.is_none_or(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A snapshot on disk, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub kind: Kind,
    pub time: DateTime<Utc>,
    pub sites: Vec<String>,
    /// Bytes of all files.
    pub size: u64,
    pub pinned: bool,
    /// Time of the last successful `sp verify`.
    pub verified: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Reads a snapshot's manifest (after checking it against its checksum file).
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| Error::io_path("read", &path, e))?;
    if let Ok(sum) = std::fs::read_to_string(dir.join(MANIFEST_SUM)) {
        let want = sum.split_whitespace().next().unwrap_or("");
        let got = sha256_hex(&bytes);
        if want != got {
            return Err(Error::Other(format!(
                "{}: checksum mismatch (manifest.json.sha256 says {want}, file hashes to {got})",
                path.display()
            )));
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{}: not a valid manifest: {e}", path.display())))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes manifest.json, its checksum file and its signature by `key`, fsynced.
pub fn write_manifest(dir: &Path, m: &Manifest, key: &crate::key::HostKey) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(m).map_err(|e| Error::Other(format!("encode manifest: {e}")))?;
    crate::fsutil::write_atomic(&dir.join(MANIFEST), &bytes, 0o600)?;
    let sum = format!("{}  {MANIFEST}\n", sha256_hex(&bytes));
    crate::fsutil::write_atomic(&dir.join(MANIFEST_SUM), sum.as_bytes(), 0o600)?;
    crate::fsutil::write_atomic(&dir.join(MANIFEST_SIG), key.sign(&bytes).as_bytes(), 0o600)
}

/// Reads a snapshot's manifest only if a key of `keyring` signed it, byte for byte: the
/// manifest names every file with its sha256, so this is what makes a whole snapshot
/// trustworthy. The error says why not and what to do.
pub fn authenticate(dir: &Path, keyring: &crate::key::Keyring) -> Result<Manifest> {
    use crate::key::Refusal;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| Error::io_path("read", &path, e))?;
    let sig = match std::fs::read_to_string(dir.join(MANIFEST_SIG)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Unauthentic(format!(
                "snapshot {id} is not signed (no {MANIFEST_SIG}): sp did not write it, or wrote it before snapshots were signed; nothing from it is used"
            )))
        }
        Err(e) => return Err(Error::io_path("read", &dir.join(MANIFEST_SIG), e)),
    };
    match keyring.check(&bytes, &sig) {
        Ok(_) => {}
        Err(Refusal::Malformed) => {
            return Err(Error::Unauthentic(format!(
                "snapshot {id}: {MANIFEST_SIG} is not a signature sp wrote; nothing from it is used"
            )))
        }
        Err(Refusal::Untrusted(k)) => {
            return Err(Error::Unauthentic(format!(
                "snapshot {id} is signed by key {k}, which this host does not trust: pass --key FILE with that host's key (`sp key export --public` on it), or `sp key import FILE`"
            )))
        }
        Err(Refusal::BadSignature) => {
            return Err(Error::Unauthentic(format!(
                "snapshot {id}: {MANIFEST} does not match its signature (changed after sp wrote it); nothing from it is used"
            )))
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{}: not a valid manifest: {e}", path.display())))
}

/// fsyncs a directory so renames and new entries in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io_path("fsync", dir, e))
}

/// Whether `dir` holds a snapshot in the off-host format (see [`crate::store::offsite`]):
/// an index, or — an encrypted snapshot still being written, or cut off — its host archive's
/// ciphertext, which is always stored first. Its manifest is there in plaintext, its files
/// are not: it is no snapshot of the local layout, damaged or not.
pub fn is_stored_folder(dir: &Path) -> bool {
    dir.join(crate::store::offsite::INDEX).is_file()
        || dir.join(format!("{HOST_ARCHIVE}.age")).is_file()
}

/// All complete snapshots in `backup_dir`, oldest first. Folders without a readable manifest
/// are skipped (and named in the second list); so are encrypted snapshots (see
/// [`is_stored_folder`]: `[encryption] local = true` reads them as a store).
pub fn list(backup_dir: &Path) -> Result<(Vec<SnapshotInfo>, Vec<String>)> {
    let entries = match std::fs::read_dir(backup_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io_path("read", backup_dir, e)),
    };
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            || !e.path().join(MANIFEST).is_file()
            || is_stored_folder(&e.path())
        {
            continue;
        }
        match info(&e.path()) {
            Ok(i) => out.push(i),
            Err(err) => bad.push(format!("{name}: {err}")),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((out, bad))
}

/// A snapshot folder's pin and last successful verify (see [`set_pinned`],
/// [`mark_verified`]; an encrypted snapshot in `backup_dir` keeps them beside its objects).
pub fn markers(dir: &Path) -> (bool, Option<DateTime<Utc>>) {
    let verified = std::fs::read_to_string(dir.join(VERIFIED))
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&Utc));
    (dir.join(PINNED).exists(), verified)
}

/// One snapshot's listing entry.
pub fn info(dir: &Path) -> Result<SnapshotInfo> {
    let m = read_manifest(dir)?;
    let (_, verified) = markers(dir);
    Ok(SnapshotInfo {
        id: m.id.clone(),
        kind: m.kind,
        time: m.created,
        sites: m.sites.iter().map(|s| s.name.clone()).collect(),
        size: m.files.iter().map(|f| f.size).sum(),
        pinned: dir.join(PINNED).exists(),
        verified,
        dir: dir.to_path_buf(),
    })
}

/// What `latest` means for a command.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// The whole host (restore, drill and verify without `--site`): the newest `full` snapshot.
    Host,
    /// The newest snapshot that holds every one of these sites and is not `pre-restore`.
    Sites(&'a [String]),
    /// The newest snapshot of any kind (pin, unpin).
    Any,
}

/// Resolves an id or `latest` (see [`Pick`]) to a snapshot folder. An id is found without
/// reading its manifest (so a damaged one is still found, and reported by whoever reads it);
/// `latest` reads the manifests to choose, and trusts them for nothing else.
pub fn resolve(backup_dir: &Path, id: &str, pick: Pick) -> Result<(String, PathBuf)> {
    if id != "latest" {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(Error::Invalid(format!("invalid snapshot id {id:?}")));
        }
        let dir = backup_dir.join(id);
        if is_stored_folder(&dir) {
            return Err(Error::NotFound(format!(
                "snapshot {id:?} in {} is encrypted: read it without --from when that is backup_dir (with --identity FILE), or move the plaintext snapshots elsewhere and name that directory with --from",
                backup_dir.display()
            )));
        }
        if dir.join(MANIFEST).is_file() {
            return Ok((id.to_string(), dir));
        }
        return Err(Error::NotFound(format!(
            "no snapshot {id:?} in {}; `sp snapshots` lists them (another directory: --from DIR)",
            backup_dir.display()
        )));
    }
    let (all, _) = list(backup_dir)?;
    let chosen = all.iter().rev().find(|s| match pick {
        Pick::Host => s.kind == Kind::Full,
        Pick::Sites(names) => {
            s.kind != Kind::PreRestore && names.iter().all(|n| s.sites.contains(n))
        }
        Pick::Any => true,
    });
    match chosen {
        Some(s) => Ok((s.id.clone(), s.dir.clone())),
        None if all.is_empty() => Err(Error::NotFound(format!(
            "no snapshots in {}; take one with `sp backup`, or name where they are with --from DIR",
            backup_dir.display()
        ))),
        None => Err(Error::NotFound(match pick {
            Pick::Host => format!(
                "no full snapshot in {} (only partial, final or pre-restore ones: name one by its id, or pick sites with --site; `sp snapshots` lists them)",
                backup_dir.display()
            ),
            Pick::Sites(names) => format!(
                "no snapshot in {} holds {} (pre-restore snapshots are only restored by their id; `sp snapshots` lists them)",
                backup_dir.display(),
                names.join(", ")
            ),
            Pick::Any => format!("no snapshots in {}", backup_dir.display()),
        })),
    }
}

/// Finds a snapshot by id or `latest` (any kind).
pub fn find(backup_dir: &Path, id: &str) -> Result<SnapshotInfo> {
    let (_, dir) = resolve(backup_dir, id, Pick::Any)?;
    info(&dir)
}

pub fn set_pinned(dir: &Path, pinned: bool) -> Result<()> {
    let p = dir.join(PINNED);
    if pinned {
        std::fs::write(&p, b"pinned: `sp prune` never deletes this snapshot\n")
            .map_err(|e| Error::io_path("write", &p, e))
    } else {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io_path("remove", &p, e))
            }
            _ => Ok(()),
        }
    }
}

pub fn mark_verified(dir: &Path, at: DateTime<Utc>) -> Result<()> {
    let p = dir.join(VERIFIED);
    std::fs::write(&p, at.to_rfc3339()).map_err(|e| Error::io_path("write", &p, e))
}
