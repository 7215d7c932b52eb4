//! A snapshot file read by others while it is written. The writer ([`Writer`]) hashes what it
//! writes: sha256, and a CRC32 that costs next to nothing. Each [`Follower`] (an upload) reads
//! the file as it grows and takes only the CRC32 of what it read; when its size and CRC32 match
//! the writer's, the writer's sha256 is the digest of what was read, so the bytes are not
//! hashed a second time on their way up (a mismatch fails the upload).
//!
//! The file is complete only when its [`Followed`] says so (a site can still be left out after
//! its archive is written); dropped without that, every follower fails instead of waiting.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::archive::HashingWriter;

const WRITING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// What a file's writer and its followers share.
#[derive(Default)]
struct Shared {
    state: AtomicU8,
    /// The writer's size, sha256 and CRC32 of the whole file, once written.
    digest: Mutex<Option<(u64, String, u32)>>,
}

/// The writer's end of a file's followers (none: nobody follows it).
#[derive(Default)]
pub struct Tee {
    shared: Option<Arc<Shared>>,
}

/// Says when a followed file is complete; see [`follow`].
pub struct Followed {
    shared: Arc<Shared>,
}

/// Sets up `readers` followers of `path`, creating it (0600, as a snapshot file) and opening it
/// for each of them now, so a later rename of its folder does not matter. The [`Tee`] goes to
/// the [`Writer`] (see [`crate::snapshot::archive::zstd_file`]).
pub fn follow(path: &Path, readers: usize) -> io::Result<(Tee, Vec<Follower>, Followed)> {
    use std::os::unix::fs::OpenOptionsExt;
    let shared = Arc::new(Shared::default());
    let mut followers = Vec::new();
    for _ in 0..readers {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        followers.push(Follower {
            file,
            pos: 0,
            crc: crc32fast::Hasher::new(),
            shared: shared.clone(),
        });
    }
    let tee = Tee {
        shared: Some(shared.clone()),
    };
    Ok((tee, followers, Followed { shared }))
}

impl Followed {
    /// The file is complete (written, fsynced and kept): followers read it to its end.
    pub fn done(self) {
        self.shared.state.store(DONE, Ordering::SeqCst);
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        let _ = self.shared.state.compare_exchange(
            WRITING,
            ABANDONED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// A snapshot file being written, hashed as it goes (and CRC'd when followed).
pub struct Writer {
    file: HashingWriter<File>,
    crc: Option<crc32fast::Hasher>,
    tee: Tee,
}

impl Writer {
    pub fn new(file: File, tee: Tee) -> Writer {
        Writer {
            file: HashingWriter::new(file),
            crc: tee.shared.as_ref().map(|_| crc32fast::Hasher::new()),
            tee,
        }
    }

    /// Fsyncs the file and returns its size and sha256 (for its followers too).
    pub fn finish(self) -> io::Result<(u64, String)> {
        let (file, bytes, sha) = self.file.finish();
        file.sync_all()?;
        if let (Some(s), Some(crc)) = (self.tee.shared, self.crc) {
            if let Ok(mut d) = s.digest.lock() {
                *d = Some((bytes, sha.clone(), crc.finalize()));
            }
        }
        Ok((bytes, sha))
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(c) = &mut self.crc {
            c.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Reads a followed file as it is written, waiting at its end for more until it is complete.
pub struct Follower {
    file: File,
    pos: u64,
    crc: crc32fast::Hasher,
    shared: Arc<Shared>,
}

impl Follower {
    /// Size and sha256 of everything read, once read to the end: the writer's, when what was
    /// read is what it wrote.
    pub fn digest(self) -> io::Result<(u64, String)> {
        let written = self.shared.digest.lock().ok().and_then(|d| d.clone());
        match written {
            Some((size, sha, crc)) if size == self.pos && crc == self.crc.finalize() => {
                Ok((size, sha))
            }
            Some((size, ..)) => Err(io::Error::other(format!(
                "the {} bytes read back differ from the {size} written",
                self.pos
            ))),
            None => Err(io::Error::other("the file was not written to its end")),
        }
    }

    /// Tells, even once this follower is gone, whether the file was abandoned (its site left
    /// out) rather than failed.
    pub fn abandoned(&self) -> impl Fn() -> bool + Send + 'static {
        let s = self.shared.clone();
        move || s.state.load(Ordering::SeqCst) == ABANDONED
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // The state is read first: when it says done, everything was written before.
            let state = self.shared.state.load(Ordering::SeqCst);
            let n = self.file.read(buf)?;
            if n > 0 {
                self.crc.update(&buf[..n]);
                self.pos += n as u64;
                return Ok(n);
            }
            match state {
                DONE => return Ok(0),
                ABANDONED => return Err(io::Error::other("the file was abandoned")),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(path: &Path, tee: Tee, chunks: usize) -> (u64, String) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .unwrap();
        let mut w = Writer::new(file, tee);
        for i in 0..chunks {
            w.write_all(&[(i % 251) as u8; 1000]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        w.finish().unwrap()
    }

    fn read_all(mut f: Follower) -> io::Result<(Vec<u8>, (u64, String))> {
        let mut out = Vec::new();
        f.read_to_end(&mut out)?;
        Ok((out, f.digest()?))
    }

    #[test]
    fn followers_read_everything_and_get_the_writers_digest() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let (tee, fs, done) = follow(&p, 2).unwrap();
        let readers: Vec<_> = fs
            .into_iter()
            .map(|f| std::thread::spawn(move || read_all(f)))
            .collect();
        let digest = written(&p, tee, 50);
        done.done();
        for r in readers {
            let (out, got) = r.join().unwrap().unwrap();
            assert_eq!(out.len(), 50_000);
            assert_eq!(out[49_999], 49);
            assert_eq!(got, digest);
            assert_eq!(got.1, crate::snapshot::sha256_hex(&out));
        }
    }

    #[test]
    fn bytes_read_back_that_differ_from_those_written_fail_the_follower() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let (tee, mut fs, done) = follow(&p, 1).unwrap();
        written(&p, tee, 5);
        // Changed on the disk behind the writer's back (same size).
        let mut b = std::fs::read(&p).unwrap();
        b[4321] ^= 1;
        std::fs::write(&p, &b).unwrap();
        done.done();
        let err = read_all(fs.pop().unwrap()).unwrap_err();
        assert!(err.to_string().contains("differ"), "{err}");
    }

    #[test]
    fn an_abandoned_file_fails_its_followers_instead_of_waiting() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let (tee, mut fs, done) = follow(&p, 1).unwrap();
        let f = fs.pop().unwrap();
        let reader = std::thread::spawn(move || read_all(f));
        written(&p, tee, 5);
        drop(done);
        assert!(reader.join().unwrap().is_err());

        // A writer dropped midway (its site failed): the same.
        let (tee, mut fs, done) = follow(&p, 1).unwrap();
        let f = fs.pop().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let mut w = Writer::new(file, tee);
        w.write_all(b"partial").unwrap();
        drop(w);
        drop(done);
        assert!(read_all(f).is_err());
    }
}
