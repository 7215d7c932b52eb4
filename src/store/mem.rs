//! An in-memory [`Store`] for unit tests.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, Mutex};

use super::{Object, Store, Upload};
use crate::error::{Error, Result};

#[derive(Default, Clone)]
pub struct MemStore {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    segment: Option<u64>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// A store that splits files into objects of `bytes` (as S3 destinations do).
    pub fn segmented(bytes: u64) -> MemStore {
        MemStore {
            segment: Some(bytes),
            ..MemStore::default()
        }
    }

    /// A copy of every object (for tests to look at or change).
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Replaces one object's bytes.
    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        if let Ok(mut m) = self.objects.lock() {
            m.insert(path.to_string(), bytes);
        }
    }

    fn map(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>>> {
        self.objects
            .lock()
            .map_err(|_| Error::Other("memory store poisoned".into()))
    }
}

struct MemUpload {
    store: MemStore,
    path: String,
    buf: Vec<u8>,
}

impl Write for MemUpload {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Upload for MemUpload {
    fn commit(self: Box<Self>) -> Result<()> {
        let me = *self;
        me.store.map()?.insert(me.path, me.buf);
        Ok(())
    }
}

impl Store for MemStore {
    fn segment_size(&self) -> Option<u64> {
        self.segment
    }

    fn describe(&self) -> String {
        "memory".into()
    }
    fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        Ok(self
            .map()?
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Object {
                path: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
    fn stat(&self, path: &str) -> Result<Option<u64>> {
        Ok(self.map()?.get(path).map(|v| v.len() as u64))
    }
    fn read(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        match self.map()?.get(path) {
            Some(v) => Ok(Box::new(Cursor::new(v.clone()))),
            None => Err(Error::NotFound(format!("memory: no object {path}"))),
        }
    }
    fn write(&self, path: &str) -> Result<Box<dyn Upload>> {
        Ok(Box::new(MemUpload {
            store: self.clone(),
            path: path.to_string(),
            buf: Vec::new(),
        }))
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.map()?.remove(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_visible_only_once_committed() {
        let s = MemStore::new();
        let mut w = s.write("a/b").unwrap();
        w.write_all(b"hello").unwrap();
        assert_eq!(s.stat("a/b").unwrap(), None);
        w.commit().unwrap();
        assert_eq!(s.stat("a/b").unwrap(), Some(5));
        let w = s.write("a/c").unwrap();
        drop(w);
        assert_eq!(s.list("a/").unwrap().len(), 1);
        let mut text = String::new();
        s.read("a/b").unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
        s.delete("a/b").unwrap();
        s.delete("a/b").unwrap();
        assert!(s.list("").unwrap().is_empty());
    }
}
