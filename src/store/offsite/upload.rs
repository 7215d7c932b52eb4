//! Uploading a snapshot to a store: each file streamed (and encrypted) with both hashes taken
//! on the way, image archives once per image, the manifest, then the signed index — last.

use std::io::{Read, Write};
use std::path::Path;

use super::segments::StoredWriter;
use super::{
    object_name, put_bytes, Index, Progress, Segment, StoredFile, StoredImage, INDEX, INDEX_SIG,
};
use crate::crypt::Recipients;
use crate::error::{Error, Result};
use crate::key::HostKey;
use crate::snapshot::archive::{HashingReader, HashingWriter};
use crate::snapshot::follow::Follower;
use crate::snapshot::{self, Manifest};
use crate::store::{check_path, Store};

/// Sizes and hashes of one upload.
struct Put {
    size: u64,
    sha256: String,
    stored_size: u64,
    stored_sha256: String,
    segments: Vec<Segment>,
}

/// The bytes of a file to upload, and their size and sha256 once read to the end.
pub trait Input: Read + Send {
    fn digest(self: Box<Self>) -> std::io::Result<(u64, String)>;
}

/// Hashed as it is read.
impl<R: Read + Send> Input for HashingReader<R> {
    fn digest(self: Box<Self>) -> std::io::Result<(u64, String)> {
        self.finish()
    }
}

/// Hashed by its writer (see [`follow`](crate::snapshot::follow)).
impl Input for Follower {
    fn digest(self: Box<Self>) -> std::io::Result<(u64, String)> {
        Follower::digest(*self)
    }
}

/// A file (or any reader) to upload, hashed as it is read.
pub fn hashed<'a, R: Read + Send + 'a>(r: R) -> Box<dyn Input + 'a> {
    Box::new(HashingReader::new(std::io::BufReader::with_capacity(
        1 << 20,
        r,
    )))
}

/// Streams `input` to `object`, encrypted when `rcpt` has recipients, hashing what is stored.
fn put(
    store: &dyn Store,
    rcpt: &Recipients,
    mut input: Box<dyn Input + '_>,
    object: &str,
    split: bool,
    total: u64,
    progress: Progress,
) -> Result<Put> {
    let label = format!("upload {object}");
    progress(&label, 0, total, false);
    let up = StoredWriter::open(store, object, split)?;
    // A split file's segments are hashed one by one: the stream is only counted here.
    let mut stored = match up {
        StoredWriter::Split(_) => HashingWriter::counting(up),
        StoredWriter::Whole(_) => HashingWriter::new(up),
    };
    let mut plain_bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let io = |e: std::io::Error| Error::io(format!("upload {object} to {}", store.describe()), e);
    if rcpt.is_empty() {
        loop {
            let n = input.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            stored.write_all(&buf[..n]).map_err(io)?;
            plain_bytes += n as u64;
            progress(&label, plain_bytes, total, false);
        }
    } else {
        let mut enc = rcpt.encrypt(&mut stored)?;
        loop {
            let n = input.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            enc.write_all(&buf[..n]).map_err(io)?;
            plain_bytes += n as u64;
            progress(&label, plain_bytes, total, false);
        }
        enc.finish().map_err(io)?;
    }
    let (up, stored_size, mut stored_sha256) = stored.finish();
    let segments = up.commit()?;
    if !segments.is_empty() {
        stored_sha256 = super::segments_digest(&segments);
    }
    let (size, sha256) = input.digest().map_err(io)?;
    progress(&label, plain_bytes, total, true);
    Ok(Put {
        size,
        sha256,
        stored_size,
        stored_sha256,
        segments,
    })
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
    let object = super::image_object(hex, !rcpt.is_empty());
    let sum = format!("{object}.json");
    if let Some(e) = super::held_image(store, image_id, &object)? {
        return Ok(Some(e));
    }
    let local = images_dir.join(format!("{hex}.tar.zst"));
    let file = match std::fs::File::open(&local) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io_path("open", &local, e)),
    };
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let p = put(store, rcpt, hashed(file), &object, false, total, progress)?;
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
    input: Box<dyn Input + '_>,
    total: u64,
    progress: Progress,
) -> Result<StoredFile> {
    check_path(path)?;
    let object = object_name(path, !rcpt.is_empty());
    let p = put(
        store,
        rcpt,
        input,
        &format!("{id}/{object}"),
        true,
        total,
        progress,
    )?;
    Ok(StoredFile {
        path: path.to_string(),
        object,
        size: p.size,
        sha256: p.sha256,
        stored_size: p.stored_size,
        stored_sha256: p.stored_sha256,
        segments: p.segments,
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
    // Only what the manifest names, as it names it (a file followed while it was written and
    // then left out, or rewritten, is uploaded again or not at all).
    done.retain(|d| {
        m.files
            .iter()
            .any(|f| f.path == d.path && f.size == d.size && f.sha256 == d.sha256)
    });
    for f in &m.files {
        if done.iter().any(|d| d.path == f.path) {
            continue;
        }
        let p = dir.join(&f.path);
        let file = std::fs::File::open(&p).map_err(|e| Error::io_path("open", &p, e))?;
        done.push(put_file(
            store,
            rcpt,
            id,
            &f.path,
            hashed(file),
            f.size,
            progress,
        )?);
    }
    done.sort_by_key(|d| m.files.iter().position(|f| f.path == d.path));
    let mut images = Vec::new();
    let ids = m.sites.iter().filter_map(|s| s.image_id.as_ref());
    for img in ids.chain(m.proxy_image_id.as_ref()) {
        if images.iter().any(|i: &StoredImage| &i.id == img) {
            continue;
        }
        if let Some(e) = put_image(store, rcpt, images_dir, img, progress)? {
            images.push(e);
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
        // 2: some file is in segments (an sp that knows only 1 could not read it).
        format: if done.iter().any(|f| !f.segments.is_empty()) {
            2
        } else {
            1
        },
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
