//! Copying a stored snapshot from one store to another as it is: each object's bytes verbatim
//! (ciphertext stays ciphertext, to the same recipients), checked against the signed index
//! on the way, the image archives it needs, then the signed index — last. This is how a
//! backup catches a destination up from an encrypted `backup_dir` without decrypting.

use std::io::Read;

use super::{
    authenticate, get_bytes, held_image, put_bytes, read_index, Index, Progress, INDEX, INDEX_SIG,
};
use crate::error::{Error, Result};
use crate::key::{HostKey, Keyring};
use crate::snapshot::{self, archive::HashingReader};
use crate::store::Store;

/// Streams `object` from `from` to `to`, committing it only when its size and sha256 are the
/// index's.
fn copy_object(
    from: &dyn Store,
    to: &dyn Store,
    object: &str,
    stored_size: u64,
    stored_sha256: &str,
    progress: Progress,
) -> Result<()> {
    let label = format!("upload {object}");
    progress(&label, 0, stored_size, false);
    let mut r = HashingReader::new(from.read(object)?.take(stored_size.saturating_add(1)));
    let mut w = to.write(object)?;
    let io = |e: std::io::Error| Error::io(format!("copy {object} to {}", to.describe()), e);
    std::io::copy(&mut r, &mut w).map_err(io)?;
    let (n, sha) = r.finish().map_err(io)?;
    if n != stored_size || sha != stored_sha256 {
        // Dropped uncommitted: nothing is left under its name.
        return Err(Error::Unauthentic(format!(
            "{}: {object} differs from its signed index (changed after sp wrote it); it was not copied — `sp verify` names what else is damaged",
            from.describe()
        )));
    }
    w.commit()?;
    progress(&label, stored_size, stored_size, true);
    Ok(())
}

/// Copies snapshot `id` from `from` to `to` (authenticated with `keyring` first; every object
/// checked against the index as it is copied); the index goes last. An image archive `to`
/// already holds is kept, and the copied index (then signed again with `key`) names it.
/// Returns the index as written.
pub fn copy(
    from: &dyn Store,
    to: &dyn Store,
    id: &str,
    keyring: &Keyring,
    key: &HostKey,
    progress: Progress,
) -> Result<Index> {
    let (index, _, mbytes) = authenticate(from, id, keyring)?;
    // The index as it will be copied: signed by a trusted key, and the one just checked.
    let (bytes, again) = read_index(from, id)?;
    let sig = get_bytes(from, &format!("{id}/{INDEX_SIG}"), 4096)?;
    if keyring
        .check(&bytes, &String::from_utf8_lossy(&sig))
        .is_err()
        || again.files != index.files
        || again.images != index.images
    {
        return Err(Error::Unauthentic(format!(
            "snapshot {id} on {}: its index changed while it was being copied; nothing of it was copied",
            from.describe()
        )));
    }
    for f in &index.files {
        if f.segments.is_empty() {
            let object = format!("{id}/{}", f.object);
            copy_object(from, to, &object, f.stored_size, &f.stored_sha256, progress)?;
        }
        for (n, seg) in f.segments.iter().enumerate() {
            let object = format!("{id}/{}", super::segment_object(&f.object, n));
            copy_object(from, to, &object, seg.size, &seg.sha256, progress)?;
        }
    }
    // An image archive the destination already holds is never replaced (its ciphertext
    // differs — age is randomized — and older snapshots there are signed over it): the copied
    // index names the destination's archive instead, and is signed again with the host key.
    let mut images = Vec::with_capacity(index.images.len());
    for i in &index.images {
        if let Some(theirs) = held_image(to, &i.id, &i.object)? {
            images.push(theirs);
            continue;
        }
        copy_object(
            from,
            to,
            &i.object,
            i.stored_size,
            &i.stored_sha256,
            progress,
        )?;
        let json = serde_json::to_vec_pretty(i).map_err(|e| Error::Other(e.to_string()))?;
        put_bytes(to, &format!("{}.json", i.object), &json)?;
        images.push(i.clone());
    }
    let (index, bytes, sig) = if images == index.images {
        (index, bytes, sig)
    } else {
        let mut ours = index;
        ours.images = images;
        let b = serde_json::to_vec_pretty(&ours).map_err(|e| Error::Other(e.to_string()))?;
        let s = key.sign(&b).into_bytes();
        (ours, b, s)
    };
    put_bytes(to, &format!("{id}/{}", snapshot::MANIFEST), &mbytes)?;
    for name in [snapshot::MANIFEST_SUM, snapshot::MANIFEST_SIG] {
        let object = format!("{id}/{name}");
        if from.stat(&object)?.is_some() {
            put_bytes(to, &object, &get_bytes(from, &object, 4096)?)?;
        }
    }
    put_bytes(to, &format!("{id}/{INDEX_SIG}"), &sig)?;
    put_bytes(to, &format!("{id}/{INDEX}"), &bytes)?;
    Ok(index)
}

/// Copies the image archive of `image_id` from `from` to `to` unless `to` has it; `false`
/// when `from` has none either. Used when the plaintext archive was not made again because
/// the encrypted `backup_dir` already holds it.
pub fn copy_image(
    from: &dyn Store,
    to: &dyn Store,
    image_id: &str,
    encrypted: bool,
    progress: Progress,
) -> Result<bool> {
    let hex = image_id.trim_start_matches("sha256:");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(false);
    }
    let object = super::image_object(hex, encrypted);
    if held_image(to, image_id, &object)?.is_some() {
        return Ok(true);
    }
    let Some(e) = held_image(from, image_id, &object)? else {
        return Ok(false);
    };
    copy_object(from, to, &object, e.stored_size, &e.stored_sha256, progress)?;
    let json = serde_json::to_vec_pretty(&e).map_err(|e| Error::Other(e.to_string()))?;
    put_bytes(to, &format!("{object}.json"), &json)?;
    Ok(true)
}
