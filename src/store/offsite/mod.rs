//! Snapshots in a [`Store`]: the same files as in `backup_dir`, each encrypted to the
//! `[encryption]` recipients as it streams up, and an index written last.
//!
//! ```text
//! ID/manifest.json, manifest.json.sig, manifest.json.sha256   as in backup_dir (no site data)
//! ID/host.tar.zst.age, ID/sites/NAME.tar.zst.age, …           every file, age ciphertext
//! ID/index.json.sig                                           the host key's signature of:
//! ID/index.json      written LAST: each file's plaintext and ciphertext size + sha256,
//!                    the manifest's sha256, the image archives the snapshot needs
//! images/HEX.tar.zst.age, images/HEX.tar.zst.age.json         image archives, once per image
//! ```
//!
//! Only a snapshot with an `index.json` is listed, so an upload cut off midway is never one.
//! The index is signed like the manifest (see [`crate::key`]), so `sp verify --from` checks
//! every object against it without the identity (ciphertext hashes) and fully with it
//! (decrypting, hashing the plaintext, walking every archive). Without recipients the
//! objects are plaintext and carry no `.age` suffix.

mod check;
mod copy;
mod segments;
mod upload;

pub use self::check::{authenticate, fetch, verify, Verified};
pub use self::copy::{copy, copy_image};
pub use self::segments::segment_limit;
pub use self::upload::{finish, hashed, put_file, Input};

use std::io::{Read, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{check_path, Store};
use crate::error::{Error, Result};
use crate::key::Keyring;
use crate::snapshot::{self, Kind, SnapshotInfo};

pub const INDEX: &str = "index.json";
/// The newest index format this sp reads (2: files in segments).
pub const FORMAT: u32 = 2;
pub const INDEX_SIG: &str = "index.json.sig";
const IMAGES: &str = "images";

/// `ID/index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    pub id: String,
    pub kind: Kind,
    pub created: DateTime<Utc>,
    pub host: String,
    pub sites: Vec<String>,
    /// Objects are age ciphertext.
    pub encrypted: bool,
    /// sha256 of `ID/manifest.json`.
    pub manifest_sha256: String,
    pub files: Vec<StoredFile>,
    #[serde(default)]
    pub images: Vec<StoredImage>,
}

/// One file of the snapshot as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Its path in the snapshot (as in the manifest).
    pub path: String,
    /// The object, relative to the snapshot's folder.
    pub object: String,
    pub size: u64,
    pub sha256: String,
    /// The stored bytes (the whole ciphertext stream): their size and sha256.
    pub stored_size: u64,
    pub stored_sha256: String,
    /// When the store splits files (see [`Store::segment_size`]): the stored stream is these
    /// objects in order, `OBJECT.0000`, `OBJECT.0001`, … (see [`segment_object`]), and no
    /// object is named `OBJECT` itself. Empty: one object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
}

/// One piece of a split file: its size and sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub size: u64,
    pub sha256: String,
}

/// Segments per file at most (with 8 MiB segments growing as [`segment_limit`]
/// says: ~8 TiB).
pub const MAX_SEGMENTS: usize = 10_000;

/// A split file's `stored_sha256`: the sha256 of its segments' list (`SIZE SHA256\n` each),
/// which the signed index holds beside them, so the stream is never hashed a second time.
pub fn segments_digest(segments: &[Segment]) -> String {
    let list: String = segments
        .iter()
        .map(|s| format!("{} {}\n", s.size, s.sha256))
        .collect();
    snapshot::sha256_hex(list.as_bytes())
}

/// The object holding segment `n` of `object`.
pub fn segment_object(object: &str, n: usize) -> String {
    format!("{object}.{n:04}")
}

/// An image archive as stored (`images/HEX.tar.zst[.age]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredImage {
    /// `sha256:HEX`, the image id.
    pub id: String,
    /// The object, relative to the store's root.
    pub object: String,
    pub size: u64,
    pub sha256: String,
    pub stored_size: u64,
    pub stored_sha256: String,
}

/// Reports bytes moved for a label, of `total` (0: not known yet, e.g. a file still being
/// written), `done` at the end; see [`crate::ops::Reporter`].
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64, bool) + Sync);

pub(super) fn put_bytes(store: &dyn Store, object: &str, bytes: &[u8]) -> Result<()> {
    let mut w = store.write(object)?;
    w.write_all(bytes)
        .map_err(|e| Error::io(format!("upload {object} to {}", store.describe()), e))?;
    w.commit()
}

pub(super) fn get_bytes(store: &dyn Store, object: &str, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    store
        .read(object)?
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(format!("read {object} from {}", store.describe()), e))?;
    Ok(out)
}

/// The object name of `path` (`.age` appended when encrypted).
pub(super) fn object_name(path: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{path}.age")
    } else {
        path.to_string()
    }
}

/// The object of the image archive `images/HEX.tar.zst[.age]`.
pub fn image_object(hex: &str, encrypted: bool) -> String {
    object_name(&format!("{IMAGES}/{hex}.tar.zst"), encrypted)
}

/// The snapshot folders of a store, each list oldest first: those with an index, and those
/// without one (an upload under way, or one that failed).
pub struct Folders {
    pub complete: Vec<String>,
    pub incomplete: Vec<String>,
}

/// One listing of the store's root, and a stat of each folder's index.
pub fn folders(store: &dyn Store) -> Result<Folders> {
    let mut f = Folders {
        complete: Vec::new(),
        incomplete: Vec::new(),
    };
    for id in store.folders()? {
        if id == IMAGES || check_path(&id).is_err() {
            continue;
        }
        if store.stat(&format!("{id}/{INDEX}"))?.is_some() {
            f.complete.push(id);
        } else if snapshot::is_id(&id) {
            f.incomplete.push(id);
        }
    }
    Ok(f)
}

impl Folders {
    /// The incomplete ones older than `newest` (the newest authenticated snapshot there): the
    /// objects of uploads that never completed and never will (a snapshot missing on a
    /// destination is uploaded again only while it is newer than the newest there). Delete
    /// them only with the host lock held, so no upload of this host is under way.
    pub fn unfinished(&self, newest: &str) -> Vec<String> {
        self.incomplete
            .iter()
            .filter(|id| id.as_str() < newest)
            .cloned()
            .collect()
    }
}

/// The ids of the complete snapshots in `store` (those with an index), oldest first.
pub fn ids(store: &dyn Store) -> Result<Vec<String>> {
    folders(store).map(|f| f.complete)
}

/// Reads an index without authenticating it (for listing; see [`authenticate`]).
pub(super) fn read_index(store: &dyn Store, id: &str) -> Result<(Vec<u8>, Index)> {
    let bytes = get_bytes(store, &format!("{id}/{INDEX}"), 16 << 20)?;
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Other(format!(
            "{}: {id}/{INDEX} is not a valid index: {e}",
            store.describe()
        ))
    })?;
    if index.format > FORMAT {
        return Err(Error::Other(format!(
            "{}: snapshot {id} is in format {} (this sp reads up to {FORMAT}): upgrade sp to read it",
            store.describe(),
            index.format
        )));
    }
    if index.id != id {
        return Err(Error::Other(format!(
            "{}: {id}/{INDEX} names snapshot {:?}",
            store.describe(),
            index.id
        )));
    }
    Ok((bytes, index))
}

/// The snapshots in `store`, oldest first, as `sp snapshots` lists them (and those whose
/// index cannot be read, named).
pub fn list(store: &dyn Store) -> Result<(Vec<SnapshotInfo>, Vec<String>)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for id in ids(store)? {
        match read_index(store, &id) {
            Ok((_, i)) => out.push(i.info()),
            Err(e) => bad.push(format!("{id}: {e}")),
        }
    }
    Ok((out, bad))
}

impl Index {
    /// The snapshot as `sp snapshots` lists it.
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            id: self.id.clone(),
            kind: self.kind,
            time: self.created,
            sites: self.sites.clone(),
            size: self.files.iter().map(|f| f.size).sum(),
            pinned: false,
            verified: None,
            dir: PathBuf::new(),
        }
    }
}

/// Resolves an id or `latest` (see [`snapshot::Pick`]) to a snapshot of `store`.
pub fn resolve(store: &dyn Store, id: &str, pick: snapshot::Pick) -> Result<String> {
    if id != "latest" {
        check_path(id).map_err(|_| Error::Invalid(format!("invalid snapshot id {id:?}")))?;
        if store.stat(&format!("{id}/{INDEX}"))?.is_some() {
            return Ok(id.to_string());
        }
        return Err(Error::NotFound(format!(
            "no snapshot {id:?} on {} (`sp snapshots --from` lists them)",
            store.describe()
        )));
    }
    let (all, _) = list(store)?;
    all.iter()
        .rev()
        .find(|s| picked(pick, s))
        .map(|s| s.id.clone())
        .ok_or_else(|| none_picked(store, pick, &[]))
}

/// Like [`resolve`], but `latest` is the newest snapshot a key of `keyring` signed: newer ones
/// that are not (planted in the bucket by whoever can write to it, or damaged) are passed
/// over, each named with why in the second value, so they cannot keep a host from coming back.
pub fn resolve_trusted(
    store: &dyn Store,
    id: &str,
    pick: snapshot::Pick,
    keyring: &Keyring,
) -> Result<(String, Vec<String>)> {
    if id != "latest" {
        return resolve(store, id, pick).map(|id| (id, Vec::new()));
    }
    // Each index is read once, by authenticate, newest first, only until one is picked.
    let mut skipped = Vec::new();
    for id in ids(store)?.into_iter().rev() {
        match authenticate(store, &id, keyring) {
            Ok((index, ..)) if picked(pick, &index.info()) => return Ok((id, skipped)),
            Ok(_) => {}
            Err(e) => skipped.push(format!("{id}: {e}")),
        }
    }
    Err(none_picked(store, pick, &skipped))
}

fn picked(pick: snapshot::Pick, s: &SnapshotInfo) -> bool {
    match pick {
        snapshot::Pick::Host => s.kind == Kind::Full,
        snapshot::Pick::Sites(names) => {
            s.kind != Kind::PreRestore && names.iter().all(|n| s.sites.contains(n))
        }
        snapshot::Pick::Any => true,
    }
}

fn none_picked(store: &dyn Store, pick: snapshot::Pick, skipped: &[String]) -> Error {
    let what = match pick {
        snapshot::Pick::Sites(n) => format!("matching ({})", n.join(", ")),
        snapshot::Pick::Host => "full".into(),
        snapshot::Pick::Any => "complete".into(),
    };
    let mut msg = format!(
        "no {what} snapshot on {} (`sp snapshots --from` lists them)",
        store.describe()
    );
    if !skipped.is_empty() {
        msg.push_str(&format!(
            "; passed over as not signed by a trusted key: {}",
            skipped.join("; ")
        ));
    }
    Error::NotFound(msg)
}

/// Deletes snapshot `id` from `store`: its index first, so it stops being a snapshot at once.
pub fn delete(store: &dyn Store, id: &str) -> Result<()> {
    check_path(id)?;
    store.delete(&format!("{id}/{INDEX}"))?;
    for o in store.list(&format!("{id}/"))? {
        store.delete(&o.path)?;
    }
    Ok(())
}

/// The store's entry for image archive `object` of `image_id`, when it holds that archive
/// whole: its `.json` names it and the object is there with the size recorded. (A `.json`
/// alone, say after a prune was cut off, is not an archive: it is made again.)
pub fn held_image(store: &dyn Store, image_id: &str, object: &str) -> Result<Option<StoredImage>> {
    let sum = format!("{object}.json");
    if store.stat(&sum)?.is_none() {
        return Ok(None);
    }
    let b = get_bytes(store, &sum, 1 << 16)?;
    let Ok(e) = serde_json::from_slice::<StoredImage>(&b) else {
        return Ok(None);
    };
    if e.object != object || e.id != image_id || store.stat(&e.object)? != Some(e.stored_size) {
        return Ok(None);
    }
    Ok(Some(e))
}

/// Deletes image archives no remaining index names; returns their objects.
pub fn prune_images(store: &dyn Store) -> Result<Vec<String>> {
    prune_images_where(store, |_| true)
}

/// [`prune_images`], touching only the objects `ours` says are (an encrypted `backup_dir`
/// also holds the plaintext image archives of snapshots from before it was encrypted).
pub fn prune_images_where(store: &dyn Store, ours: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let mut used = std::collections::HashSet::new();
    for id in ids(store)? {
        // An index we cannot read might need any image: keep them all.
        let (_, i) = read_index(store, &id)?;
        used.extend(i.images.into_iter().map(|i| i.object));
    }
    let mut deleted = Vec::new();
    let unused: Vec<_> = store
        .list(&format!("{IMAGES}/"))?
        .into_iter()
        .filter(|o| {
            let base = o.path.strip_suffix(".json").unwrap_or(&o.path);
            ours(base) && !used.contains(base)
        })
        .collect();
    // Each `.json` before its archive: cut off midway, what is left is an archive nothing
    // names (made again or pruned next time), never an entry naming a missing archive.
    let (sums, archives): (Vec<_>, Vec<_>) =
        unused.into_iter().partition(|o| o.path.ends_with(".json"));
    for o in sums {
        store.delete(&o.path)?;
    }
    for o in archives {
        store.delete(&o.path)?;
        deleted.push(o.path);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests;
