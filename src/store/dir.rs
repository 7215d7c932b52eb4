//! A directory [`Store`]: objects are files under the root; a write goes to a `.part-*` file
//! beside its target and is renamed into place, fsynced, only on commit. Names starting with
//! `.` are never listed.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{check_path, Object, Store, Upload};
use crate::error::{Error, Result};

pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: PathBuf) -> DirStore {
        DirStore { root }
    }

    fn path(&self, path: &str) -> Result<PathBuf> {
        check_path(path)?;
        Ok(self.root.join(path))
    }
}

struct DirUpload {
    file: Option<tempfile::NamedTempFile>,
    target: PathBuf,
}

impl Write for DirUpload {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(b),
            None => Err(std::io::Error::other("upload already committed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Upload for DirUpload {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        f.as_file()
            .sync_all()
            .map_err(|e| Error::io_path("fsync", &self.target, e))?;
        f.persist(&self.target)
            .map_err(|e| Error::io_path("rename into place", &self.target, e.error))?;
        if let Some(dir) = self.target.parent() {
            crate::snapshot::sync_dir(dir)?;
        }
        Ok(())
    }
}

fn walk(root: &Path, rel: &str, out: &mut Vec<Object>) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io_path("read", &dir, e)),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        // symlink_metadata: a link is never followed out of the store.
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &child, out)?;
        } else if meta.is_file() {
            out.push(Object {
                path: child,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

impl Store for DirStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn folders(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io_path("read", &self.root, e)),
        };
        let mut out: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        out.sort();
        Ok(out)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        let start = super::list_start(prefix)?;
        let mut out = Vec::new();
        walk(&self.root, &start, &mut out)?;
        out.retain(|o| o.path.starts_with(prefix));
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn stat(&self, path: &str) -> Result<Option<u64>> {
        let p = self.path(path)?;
        match p.symlink_metadata() {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io_path("stat", &p, e)),
        }
    }

    fn read(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.path(path)?;
        let f = File::open(&p).map_err(|e| Error::io_path("open", &p, e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    }

    fn write(&self, path: &str) -> Result<Box<dyn Upload>> {
        let target = self.path(path)?;
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("create", &dir, e))?;
        let file = tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(&dir)
            .map_err(|e| Error::io_path("create a file in", &dir, e))?;
        Ok(Box::new(DirUpload {
            file: Some(file),
            target,
        }))
    }

    fn delete(&self, path: &str) -> Result<()> {
        let p = self.path(path)?;
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io_path("delete", &p, e))
            }
            _ => {
                // Empty folders left behind go too (best effort).
                let mut d = p.parent();
                while let Some(dir) = d {
                    if dir == self.root || std::fs::remove_dir(dir).is_err() {
                        break;
                    }
                    d = dir.parent();
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_the_roots_directories_as_a_listing_names_them() {
        let t = tempfile::tempdir().unwrap();
        let s = DirStore::new(t.path().join("store"));
        assert!(s.folders().unwrap().is_empty(), "no root yet");
        for p in ["b/x", "a/sites/y", "top-file"] {
            let mut w = s.write(p).unwrap();
            w.write_all(b"1").unwrap();
            w.commit().unwrap();
        }
        std::fs::create_dir_all(t.path().join("store/.tmp-1")).unwrap();
        std::fs::create_dir_all(t.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), t.path().join("store/link"))
            .unwrap();
        assert_eq!(s.folders().unwrap(), vec!["a", "b"]);
        // The default (from a listing) agrees.
        let mem = crate::store::mem::MemStore::default();
        for p in ["b/x", "a/sites/y", "top-file"] {
            mem.put(p, b"1".to_vec());
        }
        assert_eq!(mem.folders().unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn atomic_writes_listing_and_delete() {
        let t = tempfile::tempdir().unwrap();
        let s = DirStore::new(t.path().to_path_buf());
        let mut w = s.write("ID/sites/a.tar.zst").unwrap();
        w.write_all(b"abc").unwrap();
        assert!(
            s.list("").unwrap().is_empty(),
            "a part file is never listed"
        );
        w.commit().unwrap();
        let mut w = s.write("ID/host.tar.zst").unwrap();
        w.write_all(b"x").unwrap();
        drop(w);
        assert_eq!(
            s.list("ID/").unwrap(),
            vec![Object {
                path: "ID/sites/a.tar.zst".into(),
                size: 3
            }]
        );
        assert_eq!(s.list("I").unwrap().len(), 1);
        assert!(s.write("../escape").is_err());
        assert!(s.read("/etc/passwd").is_err());
        s.delete("ID/sites/a.tar.zst").unwrap();
        assert!(
            !t.path().join("ID").exists(),
            "empty folders go with their last object"
        );
        assert_eq!(s.stat("ID/sites/a.tar.zst").unwrap(), None);
    }
}
