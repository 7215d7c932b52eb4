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

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{check_path, Store};
use crate::crypt::{Identity, Recipients};
use crate::error::{Error, Result};
use crate::key::{HostKey, Keyring, Refusal};
use crate::snapshot::archive::{HashingReader, HashingWriter};
use crate::snapshot::{self, Fault, Kind, Manifest, SnapshotInfo};

pub const INDEX: &str = "index.json";
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
    pub stored_size: u64,
    pub stored_sha256: String,
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

/// Reports bytes moved for a label (`done` at the end); see [`crate::ops::Reporter`].
pub type Progress<'a> = &'a (dyn Fn(&str, u64, bool) + Sync);

/// Sizes and hashes of one upload.
struct Put {
    size: u64,
    sha256: String,
    stored_size: u64,
    stored_sha256: String,
}

/// Streams `input` to `object`, encrypted when `rcpt` has recipients, hashing both sides.
fn put(
    store: &dyn Store,
    rcpt: &Recipients,
    mut input: impl Read,
    object: &str,
    progress: Progress,
) -> Result<Put> {
    let label = format!("upload {object}");
    let up = store.write(object)?;
    let mut stored = HashingWriter::new(up);
    let (mut plain_bytes, mut plain) = (0u64, HashingWriter::new(std::io::sink()));
    let mut buf = vec![0u8; 1 << 20];
    let io = |e: std::io::Error| Error::io(format!("upload {object} to {}", store.describe()), e);
    if rcpt.is_empty() {
        loop {
            let n = input.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            plain.write_all(&buf[..n]).map_err(io)?;
            stored.write_all(&buf[..n]).map_err(io)?;
            plain_bytes += n as u64;
            progress(&label, plain_bytes, false);
        }
    } else {
        let mut enc = rcpt.encrypt(&mut stored)?;
        loop {
            let n = input.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            plain.write_all(&buf[..n]).map_err(io)?;
            enc.write_all(&buf[..n]).map_err(io)?;
            plain_bytes += n as u64;
            progress(&label, plain_bytes, false);
        }
        enc.finish().map_err(io)?;
    }
    let (up, stored_size, stored_sha256) = stored.finish();
    up.commit()?;
    progress(&label, plain_bytes, true);
    let (_, size, sha256) = plain.finish();
    Ok(Put {
        size,
        sha256,
        stored_size,
        stored_sha256,
    })
}

fn put_bytes(store: &dyn Store, object: &str, bytes: &[u8]) -> Result<()> {
    let mut w = store.write(object)?;
    w.write_all(bytes)
        .map_err(|e| Error::io(format!("upload {object} to {}", store.describe()), e))?;
    w.commit()
}

fn get_bytes(store: &dyn Store, object: &str, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    store
        .read(object)?
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(format!("read {object} from {}", store.describe()), e))?;
    Ok(out)
}

/// The object name of `path` (`.age` appended when encrypted).
fn object_name(path: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{path}.age")
    } else {
        path.to_string()
    }
}

/// Uploads one image archive unless the store has it already; returns its entry.
fn put_image(
    store: &dyn Store,
    rcpt: &Recipients,
    images_dir: &Path,
    image_id: &str,
    progress: Progress,
) -> Result<Option<StoredImage>> {
    let hex = image_id.trim_start_matches("sha256:");
    let object = object_name(&format!("{IMAGES}/{hex}.tar.zst"), !rcpt.is_empty());
    let sum = format!("{object}.json");
    if store.stat(&sum)?.is_some() {
        let bytes = get_bytes(store, &sum, 1 << 16)?;
        if let Ok(e) = serde_json::from_slice::<StoredImage>(&bytes) {
            if e.object == object && store.stat(&object)? == Some(e.stored_size) {
                return Ok(Some(e));
            }
        }
    }
    let local = images_dir.join(format!("{hex}.tar.zst"));
    let file = match std::fs::File::open(&local) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io_path("open", &local, e)),
    };
    let p = put(
        store,
        rcpt,
        std::io::BufReader::new(file),
        &object,
        progress,
    )?;
    let entry = StoredImage {
        id: image_id.to_string(),
        object: object.clone(),
        size: p.size,
        sha256: p.sha256,
        stored_size: p.stored_size,
        stored_sha256: p.stored_sha256,
    };
    let json = serde_json::to_vec_pretty(&entry).map_err(|e| Error::Other(e.to_string()))?;
    put_bytes(store, &sum, &json)?;
    Ok(Some(entry))
}

/// Uploads one file of a snapshot (already open, so a rename of its folder does not matter).
pub fn put_file(
    store: &dyn Store,
    rcpt: &Recipients,
    id: &str,
    path: &str,
    file: std::fs::File,
    progress: Progress,
) -> Result<StoredFile> {
    check_path(path)?;
    let object = object_name(path, !rcpt.is_empty());
    let p = put(
        store,
        rcpt,
        std::io::BufReader::with_capacity(1 << 20, file),
        &format!("{id}/{object}"),
        progress,
    )?;
    Ok(StoredFile {
        path: path.to_string(),
        object,
        size: p.size,
        sha256: p.sha256,
        stored_size: p.stored_size,
        stored_sha256: p.stored_sha256,
    })
}

/// Completes the upload of the snapshot in `dir`: the files not in `done` yet, the image
/// archives it needs (from `images_dir`), the manifest, then the signed index — last.
pub fn finish(
    store: &dyn Store,
    rcpt: &Recipients,
    key: &HostKey,
    dir: &Path,
    images_dir: &Path,
    mut done: Vec<StoredFile>,
    progress: Progress,
) -> Result<Index> {
    let manifest_bytes = std::fs::read(dir.join(snapshot::MANIFEST))
        .map_err(|e| Error::io_path("read", &dir.join(snapshot::MANIFEST), e))?;
    let m: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Error::Other(format!("{}: not a valid manifest: {e}", dir.display())))?;
    let id = m.id.as_str();
    for f in &m.files {
        if done.iter().any(|d| d.path == f.path) {
            continue;
        }
        let p = dir.join(&f.path);
        let file = std::fs::File::open(&p).map_err(|e| Error::io_path("open", &p, e))?;
        done.push(put_file(store, rcpt, id, &f.path, file, progress)?);
    }
    done.sort_by_key(|d| m.files.iter().position(|f| f.path == d.path));
    let mut images = Vec::new();
    for s in &m.sites {
        if let Some(img) = &s.image_id {
            if images.iter().any(|i: &StoredImage| &i.id == img) {
                continue;
            }
            if let Some(e) = put_image(store, rcpt, images_dir, img, progress)? {
                images.push(e);
            }
        }
    }
    for name in [
        snapshot::MANIFEST,
        snapshot::MANIFEST_SUM,
        snapshot::MANIFEST_SIG,
    ] {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => put_bytes(store, &format!("{id}/{name}"), &b)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io_path("read", &p, e)),
        }
    }
    let index = Index {
        format: 1,
        id: id.to_string(),
        kind: m.kind,
        created: m.created,
        host: m.host.clone(),
        sites: m.sites.iter().map(|s| s.name.clone()).collect(),
        encrypted: !rcpt.is_empty(),
        manifest_sha256: snapshot::sha256_hex(&manifest_bytes),
        files: done,
        images,
    };
    let bytes = serde_json::to_vec_pretty(&index).map_err(|e| Error::Other(e.to_string()))?;
    put_bytes(
        store,
        &format!("{id}/{INDEX_SIG}"),
        key.sign(&bytes).as_bytes(),
    )?;
    put_bytes(store, &format!("{id}/{INDEX}"), &bytes)?;
    Ok(index)
}

/// The ids of the complete snapshots in `store` (those with an index), oldest first.
pub fn ids(store: &dyn Store) -> Result<Vec<String>> {
    let mut out: Vec<String> = store
        .list("")?
        .into_iter()
        .filter_map(|o| {
            let (id, rest) = o.path.split_once('/')?;
            (rest == INDEX && id != IMAGES && check_path(id).is_ok()).then(|| id.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Reads an index without authenticating it (for listing; see [`authenticate`]).
fn read_index(store: &dyn Store, id: &str) -> Result<(Vec<u8>, Index)> {
    let bytes = get_bytes(store, &format!("{id}/{INDEX}"), 16 << 20)?;
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Other(format!(
            "{}: {id}/{INDEX} is not a valid index: {e}",
            store.describe()
        ))
    })?;
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
            Ok((_, i)) => out.push(SnapshotInfo {
                id: i.id.clone(),
                kind: i.kind,
                time: i.created,
                sites: i.sites.clone(),
                size: i.files.iter().map(|f| f.size).sum(),
                pinned: false,
                verified: None,
                dir: PathBuf::new(),
            }),
            Err(e) => bad.push(format!("{id}: {e}")),
        }
    }
    Ok((out, bad))
}

fn refusal(what: &str, id: &str, r: Refusal) -> Error {
    Error::Unauthentic(match r {
        Refusal::Malformed => {
            format!("snapshot {id}: {what}.sig is not a signature sp wrote; nothing from it is used")
        }
        Refusal::Untrusted(k) => format!(
            "snapshot {id} is signed by key {k}, which this host does not trust: pass --key FILE with that host's key (`sp key export --public` on it), or `sp key import FILE`"
        ),
        Refusal::BadSignature => format!(
            "snapshot {id}: {what} does not match its signature (changed after sp wrote it); nothing from it is used"
        ),
    })
}

/// Reads and authenticates a snapshot's index and manifest: both must be signed by a
/// trusted key, and the index must name the manifest's hash and only safe paths.
pub fn authenticate(
    store: &dyn Store,
    id: &str,
    keyring: &Keyring,
) -> Result<(Index, Manifest, Vec<u8>)> {
    check_path(id)?;
    let (bytes, index) = read_index(store, id)?;
    let sig = match store.stat(&format!("{id}/{INDEX_SIG}"))? {
        Some(_) => get_bytes(store, &format!("{id}/{INDEX_SIG}"), 4096)?,
        None => {
            return Err(Error::Unauthentic(format!(
            "snapshot {id} on {} has no {INDEX_SIG}: sp did not write it; nothing from it is used",
            store.describe()
        )))
        }
    };
    keyring
        .check(&bytes, &String::from_utf8_lossy(&sig))
        .map_err(|r| refusal(INDEX, id, r))?;
    let mbytes = get_bytes(store, &format!("{id}/{}", snapshot::MANIFEST), 64 << 20)?;
    if snapshot::sha256_hex(&mbytes) != index.manifest_sha256 {
        return Err(Error::Unauthentic(format!(
            "snapshot {id}: {} does not match the hash its signed index records; nothing from it is used",
            snapshot::MANIFEST
        )));
    }
    let m: Manifest = serde_json::from_slice(&mbytes)
        .map_err(|e| Error::Other(format!("snapshot {id}: not a valid manifest: {e}")))?;
    if m.id != id {
        // A signed snapshot replayed under another name.
        return Err(Error::Unauthentic(format!(
            "snapshot {id}: its manifest is snapshot {:?}'s; nothing from it is used",
            m.id
        )));
    }
    for f in &index.files {
        check_path(&f.path)?;
        check_path(&f.object)?;
        if !m
            .files
            .iter()
            .any(|x| x.path == f.path && x.size == f.size && x.sha256 == f.sha256)
        {
            return Err(Error::Unauthentic(format!(
                "snapshot {id}: the index names {} differently from the manifest; nothing from it is used",
                f.path
            )));
        }
    }
    for i in &index.images {
        check_path(&i.object)?;
        let hex = i.id.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
            || !i.object.starts_with(&format!("{IMAGES}/{hex}."))
        {
            return Err(Error::Unauthentic(format!(
                "snapshot {id}: image entry {:?} is not images/HEX; nothing from it is used",
                i.object
            )));
        }
    }
    Ok((index, m, mbytes))
}

/// Reads `object` and checks it against its stored size and hash, and — with an identity,
/// when encrypted, or always when not — its plaintext against size and hash, walking
/// archives and dumps as `sp verify` does locally.
#[allow(clippy::too_many_arguments)]
fn check_object(
    store: &dyn Store,
    object: &str,
    path: &str,
    size: u64,
    sha256: &str,
    stored_size: u64,
    stored_sha256: &str,
    encrypted: bool,
    identity: Option<&Identity>,
    sink: Option<&Path>,
) -> std::result::Result<(), String> {
    let r = store.read(object).map_err(|e| e.to_string())?;
    let mut stored = HashingReader::new(r.take(stored_size.saturating_add(1)));
    let plain_check = match (encrypted, identity) {
        (true, None) => None,
        (true, Some(id)) => Some(read_plain(id.decrypt(&mut stored)?, path, size, sink)),
        (false, _) => Some(read_plain(&mut stored, path, size, sink)),
    };
    // Whatever is left counts for the stored hash too.
    std::io::copy(&mut stored, &mut std::io::sink()).map_err(|e| format!("read failed: {e}"))?;
    let (n, got) = stored.finish().map_err(|e| format!("read failed: {e}"))?;
    if n != stored_size {
        return Err(format!("size {n} differs from the index's {stored_size}"));
    }
    if got != stored_sha256 {
        return Err("sha256 differs from the index (object changed)".into());
    }
    if let Some(c) = plain_check {
        let (n, got) = c?;
        if n != size {
            return Err(format!(
                "plaintext size {n} differs from the manifest's {size}"
            ));
        }
        if got != sha256 {
            return Err("plaintext sha256 differs from the manifest".into());
        }
    }
    Ok(())
}

/// Hashes the plaintext (at most `size` + 1 bytes), walking archives and dumps; with `sink`,
/// writes it there too.
fn read_plain(
    r: impl Read,
    path: &str,
    size: u64,
    sink: Option<&Path>,
) -> std::result::Result<(u64, String), String> {
    let limited = r.take(size.saturating_add(1));
    if let Some(out) = sink {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(out)
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
        let mut limited = limited;
        std::io::copy(&mut limited, &mut w).map_err(|e| format!("cannot decrypt: {e}"))?;
        let (bw, n, sha) = w.finish();
        let f = bw.into_inner().map_err(|e| format!("write failed: {e}"))?;
        f.sync_all().map_err(|e| format!("fsync failed: {e}"))?;
        return Ok((n, sha));
    }
    let mut h = HashingReader::new(limited);
    if path.ends_with(".tar.zst") {
        match crate::snapshot::unpack::scan_tar_zstd(&mut h) {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => return Err(format!("unsafe archive member {why}")),
            Err(e) => return Err(format!("archive is damaged: {e}")),
        }
    } else if path.ends_with(".sql.zst") {
        match crate::snapshot::archive::check_dump_zstd(&mut h) {
            Ok(true) => {}
            Ok(false) => return Err("dump has no completion trailer (truncated?)".into()),
            Err(e) => return Err(format!("dump is damaged: {e}")),
        }
    }
    std::io::copy(&mut h, &mut std::io::sink()).map_err(|e| format!("cannot decrypt: {e}"))?;
    h.finish().map_err(|e| format!("read failed: {e}"))
}

/// How far [`verify`] got: `full` when every plaintext was checked too.
#[derive(Debug)]
pub struct Verified {
    pub index: Index,
    pub faults: Vec<Fault>,
    pub full: bool,
}

/// Checks snapshot `id` in `store`: the signed index and manifest, then every object against
/// the index (and, with `identity` or unencrypted, its plaintext against the manifest).
/// Faults name the object.
pub fn verify(
    store: &dyn Store,
    id: &str,
    keyring: &Keyring,
    identity: Option<&Identity>,
) -> Result<Verified> {
    let (index, _, _) = authenticate(store, id, keyring)?;
    let mut faults = Vec::new();
    let full = !index.encrypted || identity.is_some();
    for f in &index.files {
        let object = format!("{id}/{}", f.object);
        if let Err(problem) = check_object(
            store,
            &object,
            &f.path,
            f.size,
            &f.sha256,
            f.stored_size,
            &f.stored_sha256,
            index.encrypted,
            identity,
            None,
        ) {
            faults.push(Fault {
                file: object,
                problem,
            });
        }
    }
    for i in &index.images {
        if let Err(problem) = check_object(
            store,
            &i.object,
            &i.object,
            i.size,
            &i.sha256,
            i.stored_size,
            &i.stored_sha256,
            index.encrypted,
            identity,
            None,
        ) {
            faults.push(Fault {
                file: i.object.clone(),
                problem,
            });
        }
    }
    Ok(Verified {
        index,
        faults,
        full,
    })
}

/// Downloads snapshot `id` from `store` into `root/ID` (and its image archives into
/// `root/images`), decrypting with `identity`, each file checked against the signed
/// manifest as it is written; the folder appears only once all of it is proven. Returns it.
pub fn fetch(
    store: &dyn Store,
    id: &str,
    keyring: &Keyring,
    identity: Option<&Identity>,
    root: &Path,
    progress: Progress,
) -> Result<PathBuf> {
    let (index, _, mbytes) = authenticate(store, id, keyring)?;
    if index.encrypted && identity.is_none() {
        return Err(Error::Invalid(format!(
            "snapshot {id} on {} is encrypted: pass --identity FILE (the age identity whose recipient is in [encryption] recipients)",
            store.describe()
        )));
    }
    let dir = root.join(id);
    let tmp = root.join(format!(".tmp-{id}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("sites")).map_err(|e| Error::io_path("create", &tmp, e))?;
    crate::fsutil::chmod(root, 0o700)?;
    let result = (|| -> Result<()> {
        crate::fsutil::write_atomic(&tmp.join(snapshot::MANIFEST), &mbytes, 0o600)?;
        for name in [snapshot::MANIFEST_SUM, snapshot::MANIFEST_SIG] {
            let object = format!("{id}/{name}");
            if store.stat(&object)?.is_some() {
                let b = get_bytes(store, &object, 4096)?;
                crate::fsutil::write_atomic(&tmp.join(name), &b, 0o600)?;
            }
        }
        for f in &index.files {
            let object = format!("{id}/{}", f.object);
            let label = format!("download {object}");
            progress(&label, 0, false);
            check_object(
                store,
                &object,
                &f.path,
                f.size,
                &f.sha256,
                f.stored_size,
                &f.stored_sha256,
                index.encrypted,
                identity,
                Some(&tmp.join(&f.path)),
            )
            .map_err(|p| Error::Other(format!("{}: {object}: {p}", store.describe())))?;
            progress(&label, f.size, true);
        }
        let images = root.join(IMAGES);
        for i in &index.images {
            let hex = i.id.trim_start_matches("sha256:");
            let target = images.join(format!("{hex}.tar.zst"));
            if target.exists() {
                continue;
            }
            std::fs::create_dir_all(&images).map_err(|e| Error::io_path("create", &images, e))?;
            let part = images.join(format!(".part-{hex}"));
            let _ = std::fs::remove_file(&part);
            let label = format!("download {}", i.object);
            check_object(
                store,
                &i.object,
                &i.object,
                i.size,
                &i.sha256,
                i.stored_size,
                &i.stored_sha256,
                index.encrypted,
                identity,
                Some(&part),
            )
            .map_err(|p| Error::Other(format!("{}: {}: {p}", store.describe(), i.object)))?;
            // The sum file beside it, as `sp backup` writes it (the restore checks it).
            crate::fsutil::write_atomic(
                &images.join(format!("{hex}.tar.zst.sha256")),
                format!("{}\n", i.sha256).as_bytes(),
                0o600,
            )?;
            std::fs::rename(&part, &target).map_err(|e| Error::io_path("rename", &target, e))?;
            progress(&label, i.size, true);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io_path("rename into place", &dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|_| dir)
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
        .find(|s| match pick {
            snapshot::Pick::Host => s.kind == Kind::Full,
            snapshot::Pick::Sites(names) => {
                s.kind != Kind::PreRestore && names.iter().all(|n| s.sites.contains(n))
            }
            snapshot::Pick::Any => true,
        })
        .map(|s| s.id.clone())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no {} snapshot on {} (`sp snapshots --from` lists them)",
                match pick {
                    snapshot::Pick::Sites(n) => format!("matching ({})", n.join(", ")),
                    snapshot::Pick::Host => "full".into(),
                    snapshot::Pick::Any => "complete".into(),
                },
                store.describe()
            ))
        })
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

/// Deletes image archives no remaining index names; returns their objects.
pub fn prune_images(store: &dyn Store) -> Result<Vec<String>> {
    let mut used = std::collections::HashSet::new();
    for id in ids(store)? {
        // An index we cannot read might need any image: keep them all.
        let (_, i) = read_index(store, &id)?;
        used.extend(i.images.into_iter().map(|i| i.object));
    }
    let mut deleted = Vec::new();
    for o in store.list(&format!("{IMAGES}/"))? {
        let base = o.path.strip_suffix(".json").unwrap_or(&o.path).to_string();
        if !used.contains(&base) {
            store.delete(&o.path)?;
            if !o.path.ends_with(".json") {
                deleted.push(o.path);
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::super::mem::MemStore;
    use super::*;

    fn snapshot_dir(key: &HostKey) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("20261201T000000Z");
        std::fs::create_dir_all(dir.join("sites")).unwrap();
        let mut files = Vec::new();
        let mut tar = tar::Builder::new(Vec::new());
        let body = b"host-MARKER".repeat(100);
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "etc/config.toml", &body[..])
            .unwrap();
        let tar = zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap();
        let mut dump = b"INSERT INTO t VALUES ('dump-MARKER');\n".repeat(50_000);
        dump.extend_from_slice(b"-- Dump completed on 2026-12-01\n");
        let dump = zstd::encode_all(&dump[..], 1).unwrap();
        for (p, content) in [("host.tar.zst", tar), ("sites/blog.sql.zst", dump)] {
            std::fs::write(dir.join(p), &content).unwrap();
            files.push(snapshot::FileEntry {
                path: p.into(),
                size: content.len() as u64,
                sha256: snapshot::sha256_hex(&content),
            });
        }
        let m = Manifest {
            format: 1,
            id: "20261201T000000Z".into(),
            kind: Kind::Full,
            sp_version: "test".into(),
            host: "h".into(),
            instance: "t".into(),
            created: Utc::now(),
            duration_ms: 1,
            sites: Vec::new(),
            files,
            failed: Vec::new(),
        };
        snapshot::write_manifest(&dir, &m, key).unwrap();
        (t, dir)
    }

    fn identity() -> (tempfile::TempDir, Identity, Recipients) {
        let (secret, public) = crate::crypt::generate();
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("id"), secret).unwrap();
        let id = Identity::load(&t.path().join("id")).unwrap();
        (t, id, Recipients::parse(&[public]).unwrap())
    }

    #[test]
    fn upload_is_ciphertext_verifies_and_fetches_back() {
        let key = HostKey::generate();
        let ring = Keyring {
            keys: vec![key.public()],
        };
        let (_t, dir) = snapshot_dir(&key);
        let (_i, id, rcpt) = identity();
        let store = MemStore::new();
        let none = |_: &str, _: u64, _: bool| {};
        let index = finish(
            &store,
            &rcpt,
            &key,
            &dir,
            Path::new("/nonexistent"),
            Vec::new(),
            &none,
        )
        .unwrap();
        assert!(index.encrypted);
        assert_eq!(ids(&store).unwrap(), vec!["20261201T000000Z".to_string()]);
        for (k, v) in store.objects() {
            if k.ends_with(".age") {
                assert!(v.starts_with(crate::crypt::MAGIC), "{k}");
                assert!(
                    memchr::memmem::find(&v, b"MARKER").is_none(),
                    "{k} holds plaintext"
                );
            }
        }
        let v = verify(&store, "20261201T000000Z", &ring, None).unwrap();
        assert!(v.faults.is_empty() && !v.full, "{:?}", v.faults);
        let v = verify(&store, "20261201T000000Z", &ring, Some(&id)).unwrap();
        assert!(v.faults.is_empty() && v.full, "{:?}", v.faults);

        let out = tempfile::tempdir().unwrap();
        let got = fetch(
            &store,
            "20261201T000000Z",
            &ring,
            Some(&id),
            out.path(),
            &none,
        )
        .unwrap();
        assert_eq!(
            std::fs::read(got.join("sites/blog.sql.zst")).unwrap(),
            std::fs::read(dir.join("sites/blog.sql.zst")).unwrap()
        );
        snapshot::authenticate(&got, &ring).unwrap();
        let err = fetch(&store, "20261201T000000Z", &ring, None, out.path(), &none).unwrap_err();
        assert!(err.to_string().contains("--identity"), "{err}");
    }

    #[test]
    fn a_changed_byte_is_named_and_an_unsigned_index_refused() {
        let key = HostKey::generate();
        let ring = Keyring {
            keys: vec![key.public()],
        };
        let (_t, dir) = snapshot_dir(&key);
        let (_i, id, rcpt) = identity();
        let store = MemStore::new();
        let none = |_: &str, _: u64, _: bool| {};
        finish(
            &store,
            &rcpt,
            &key,
            &dir,
            Path::new("/x"),
            Vec::new(),
            &none,
        )
        .unwrap();
        let obj = "20261201T000000Z/sites/blog.sql.zst.age";
        let mut b = store.objects()[obj].clone();
        let n = b.len() / 2;
        b[n] ^= 1;
        store.put(obj, b);
        let v = verify(&store, "20261201T000000Z", &ring, None).unwrap();
        assert_eq!(v.faults.len(), 1);
        assert_eq!(v.faults[0].file, obj);
        let out = tempfile::tempdir().unwrap();
        assert!(fetch(
            &store,
            "20261201T000000Z",
            &ring,
            Some(&id),
            out.path(),
            &none
        )
        .is_err());
        assert!(!out.path().join("20261201T000000Z").exists());

        // An index pointing outside the snapshot, re-signed by a key nobody trusts.
        let (bytes, mut index) = read_index(&store, "20261201T000000Z").unwrap();
        let _ = bytes;
        index.files[0].object = "../../etc/passwd".into();
        let bytes = serde_json::to_vec(&index).unwrap();
        store.put("20261201T000000Z/index.json", bytes.clone());
        let err = authenticate(&store, "20261201T000000Z", &ring).unwrap_err();
        assert!(matches!(err, Error::Unauthentic(_)), "{err}");
        store.put(
            "20261201T000000Z/index.json.sig",
            key.sign(&bytes).into_bytes(),
        );
        let err = authenticate(&store, "20261201T000000Z", &ring).unwrap_err();
        assert!(
            err.to_string().contains("not a plain relative path"),
            "{err}"
        );
    }

    #[test]
    fn a_replayed_snapshot_or_a_longer_object_is_refused() {
        let key = HostKey::generate();
        let ring = Keyring {
            keys: vec![key.public()],
        };
        let (_t, dir) = snapshot_dir(&key);
        let (_i, id, rcpt) = identity();
        let store = MemStore::new();
        let none = |_: &str, _: u64, _: bool| {};
        finish(
            &store,
            &rcpt,
            &key,
            &dir,
            Path::new("/x"),
            Vec::new(),
            &none,
        )
        .unwrap();
        // The same signed snapshot copied under a newer name is not that snapshot.
        for (k, v) in store.objects() {
            store.put(&k.replace("20261201T000000Z", "20261202T000000Z"), v);
        }
        let err = authenticate(&store, "20261202T000000Z", &ring).unwrap_err();
        assert!(err.to_string().contains("names snapshot"), "{err}");
        // An object that goes on past its recorded size is a fault, and never fetched.
        let obj = "20261201T000000Z/host.tar.zst.age";
        let mut b = store.objects()[obj].clone();
        b.extend_from_slice(&[0u8; 4096]);
        store.put(obj, b);
        let v = verify(&store, "20261201T000000Z", &ring, Some(&id)).unwrap();
        assert_eq!(v.faults.len(), 1, "{:?}", v.faults);
        assert!(v.faults[0].problem.contains("size"), "{:?}", v.faults);
        let out = tempfile::tempdir().unwrap();
        assert!(fetch(
            &store,
            "20261201T000000Z",
            &ring,
            Some(&id),
            out.path(),
            &none
        )
        .is_err());
        assert!(
            std::fs::read_dir(out.path()).unwrap().next().is_none(),
            "nothing left behind"
        );
    }

    #[test]
    fn without_an_index_nothing_is_listed_and_delete_takes_everything() {
        let key = HostKey::generate();
        let (_t, dir) = snapshot_dir(&key);
        let store = MemStore::new();
        let none = |_: &str, _: u64, _: bool| {};
        let rcpt = Recipients::parse(&[]).unwrap();
        let f = std::fs::File::open(dir.join("host.tar.zst")).unwrap();
        put_file(&store, &rcpt, "20261201T000000Z", "host.tar.zst", f, &none).unwrap();
        assert!(
            ids(&store).unwrap().is_empty(),
            "a partial upload is no snapshot"
        );
        finish(
            &store,
            &rcpt,
            &key,
            &dir,
            Path::new("/x"),
            Vec::new(),
            &none,
        )
        .unwrap();
        let (l, bad) = list(&store).unwrap();
        assert_eq!(l.len(), 1);
        assert!(bad.is_empty());
        delete(&store, "20261201T000000Z").unwrap();
        assert!(store.objects().is_empty());
    }
}
