//! Small file-system helpers shared by the systems: atomic writes and private files.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically (temp file, fsync, rename) with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io_path("write", path, e));
    }
    Ok(())
}

/// Writes a secret file readable by root only (0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Sets owner and group of `path` (not following symlinks).
pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io_path("chown", path, e))
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io_path("chmod", path, e))
}

/// About how many bytes `tar` makes of the tree at `root` (file sizes plus a header per
/// entry), leaving out the top-level names in `skip`: an estimate for a progress bar. Never
/// follows a symlink at a name it has looked at; a tree that changes under it (or is past a
/// million entries) ends the count early — it is only ever an estimate. None when `root`
/// cannot be read.
pub fn tree_bytes(root: &Path, skip: &[&str]) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut entries = 0u32;
    let mut dirs = vec![(root.to_path_buf(), true)];
    while let Some((dir, top)) = dirs.pop() {
        let Ok(list) = fs::read_dir(&dir) else {
            if top {
                return None;
            }
            continue;
        };
        for e in list.flatten() {
            entries += 1;
            if entries > 1_000_000 {
                return Some(total);
            }
            if top && skip.iter().any(|s| e.file_name() == *s) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            total += 512;
            if meta.is_dir() {
                // A tenant may swap it for a link before it is read: then the count strays
                // (never more than a million entries), nothing else happens.
                dirs.push((e.path(), false));
            } else if meta.is_file() {
                total += meta.size().div_ceil(512) * 512;
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_bytes_counts_files_and_headers_not_links_or_skipped_names() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("data/sub")).unwrap();
        fs::create_dir_all(d.path().join("tmp")).unwrap();
        fs::write(d.path().join("data/sub/a"), vec![0u8; 1000]).unwrap();
        fs::write(d.path().join("tmp/big"), vec![0u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("/usr", d.path().join("data/link")).unwrap();
        // data, data/sub, data/sub/a (1024 rounded), data/link: four headers.
        assert_eq!(tree_bytes(d.path(), &["tmp"]), Some(4 * 512 + 1024));
        assert_eq!(tree_bytes(&d.path().join("nope"), &[]), None);
    }
}
