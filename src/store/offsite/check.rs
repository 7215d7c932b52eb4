//! Reading a snapshot back from a store: the signed index and manifest authenticated, every
//! object checked against them (ciphertext always, plaintext with the identity), and fetched
//! into a local folder that appears only once all of it is proven.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::segments::open_stored;
use super::{get_bytes, read_index, Index, Progress, IMAGES, INDEX, INDEX_SIG};
use crate::crypt::Identity;
use crate::error::{Error, Result};
use crate::key::{Keyring, Refusal};
use crate::snapshot::archive::{HashingReader, HashingWriter};
use crate::snapshot::{self, Fault, Manifest};
use crate::store::{check_path, Store};

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
        let total = f
            .segments
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(s.size));
        if f.segments.len() > super::MAX_SEGMENTS
            || (!f.segments.is_empty()
                && (total != Some(f.stored_size)
                    || super::segments_digest(&f.segments) != f.stored_sha256))
        {
            return Err(Error::Unauthentic(format!(
                "snapshot {id}: the index's segments of {} do not add up; nothing from it is used",
                f.path
            )));
        }
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
    r: Result<Box<dyn Read + '_>>,
    segmented: bool,
    path: &str,
    size: u64,
    sha256: &str,
    stored_size: u64,
    stored_sha256: &str,
    encrypted: bool,
    identity: Option<&Identity>,
    sink: Option<&Path>,
) -> std::result::Result<(), String> {
    let r = r.map_err(|e| e.to_string())?;
    let limited = r.take(stored_size.saturating_add(1));
    // Segments are checked one by one as they are read (see `open_stored`); their list's
    // digest is `stored_sha256`, checked with the signed index.
    let mut stored = if segmented {
        HashingReader::counting(limited)
    } else {
        HashingReader::new(limited)
    };
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
    if !segmented && got != stored_sha256 {
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
            open_stored(store, id, f),
            !f.segments.is_empty(),
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
            store.read(&i.object).map(|r| Box::new(r) as Box<dyn Read>),
            false,
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
            progress(&label, 0, f.size, false);
            check_object(
                open_stored(store, id, f),
                !f.segments.is_empty(),
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
            progress(&label, f.size, f.size, true);
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
                store.read(&i.object).map(|r| Box::new(r) as Box<dyn Read>),
                false,
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
            progress(&label, i.size, i.size, true);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io_path("rename into place", &dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|_| dir)
}
