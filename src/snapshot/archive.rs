//! The byte-level pieces of a snapshot: tar+zstd writers and readers that hash as they go.
//!
//! Archives are plain `tar` streams compressed with `zstd` (with frame checksums), so
//! `zstd -dc FILE | tar -x` restores them by hand. Site trees are written by [`super::walk`]
//! and unpacked by [`super::stage`].

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::follow::{self, Tee};

/// Passes writes through while counting and hashing them.
pub struct HashingWriter<W: Write> {
    inner: W,
    /// `None`: counting only (the hash is taken elsewhere; see [`HashingWriter::counting`]).
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Some(Sha256::new()),
            bytes: 0,
        }
    }
    /// Counts without hashing: [`HashingWriter::finish`] then gives an empty hash.
    pub fn counting(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: None,
            bytes: 0,
        }
    }
    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// The inner writer, the byte count and the hex sha256 of everything written.
    pub fn finish(self) -> (W, u64, String) {
        let sha = self.hasher.map(|h| hex::encode(h.finalize()));
        (self.inner, self.bytes, sha.unwrap_or_default())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads through while counting and hashing them.
pub struct HashingReader<R: Read> {
    inner: R,
    /// `None`: counting only (see [`HashingReader::counting`]).
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Some(Sha256::new()),
            bytes: 0,
        }
    }
    /// Counts without hashing: [`HashingReader::finish`] then gives an empty hash.
    pub fn counting(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: None,
            bytes: 0,
        }
    }
    /// Reads the rest, then returns the byte count and hex sha256 of everything read.
    pub fn finish(mut self) -> io::Result<(u64, String)> {
        io::copy(&mut self, &mut io::sink())?;
        let sha = self.hasher.map(|h| hex::encode(h.finalize()));
        Ok((self.bytes, sha.unwrap_or_default()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Passes writes through, adding their length to a shared counter (for progress).
pub struct Counting<W> {
    inner: W,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Reading counts too (a restore's progress: bytes of the archive or dump read so far).
impl<R: io::Read> io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl<W> Counting<W> {
    pub fn new(inner: W, counter: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Counting { inner, counter }
    }
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.counter
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Keeps the last bytes written (to check a dump's completion trailer) and counts them.
pub struct TailKeeper<W: Write> {
    inner: W,
    tail: Vec<u8>,
    pub bytes: u64,
}

const TAIL: usize = 512;

impl<W: Write> TailKeeper<W> {
    pub fn new(inner: W) -> Self {
        TailKeeper {
            inner,
            tail: Vec::with_capacity(2 * TAIL),
            bytes: 0,
        }
    }
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for TailKeeper<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > 2 * TAIL {
            let cut = self.tail.len() - TAIL;
            self.tail.drain(..cut);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// True when a mysqldump/mariadb-dump output ends with its completion trailer.
pub fn has_dump_trailer(tail: &[u8]) -> bool {
    let text = String::from_utf8_lossy(tail);
    text.trim_end()
        .lines()
        .last()
        .map(|l| l.starts_with("-- Dump completed"))
        .unwrap_or(false)
}

/// zstd job size for multithreaded compression.
const JOB_SIZE: u32 = 2 << 20;

/// A zstd encoder over a hashing file writer, `threads` workers (0 = single-threaded), its
/// output read by `tee`'s followers as it is written (see [`super::follow`]).
pub fn zstd_file(
    path: &Path,
    level: i32,
    threads: u32,
    tee: Tee,
) -> io::Result<zstd::Encoder<'static, follow::Writer>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Snapshots hold secrets (database passwords, registry credentials): root only.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    let mut enc = zstd::Encoder::new(follow::Writer::new(file, tee), level)?;
    enc.include_checksum(true)?;
    if threads > 0 {
        enc.multithread(threads)?;
        // Small jobs keep memory bounded (each worker holds about two jobs' worth).
        enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(JOB_SIZE))?;
    }
    Ok(enc)
}

/// Finishes a zstd file: flushes, fsyncs, returns size and sha256.
pub fn finish_zstd_file(enc: zstd::Encoder<'static, follow::Writer>) -> io::Result<(u64, String)> {
    enc.finish()?.finish()
}

/// Decompresses a dump stream, returning whether it ends with the completion trailer.
pub fn check_dump_zstd<R: Read>(input: R) -> io::Result<bool> {
    let mut dec = zstd::Decoder::new(input)?;
    let mut keeper = TailKeeper::new(io::sink());
    io::copy(&mut dec, &mut keeper)?;
    Ok(has_dump_trailer(keeper.tail()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_trailer() {
        assert!(has_dump_trailer(
            b"INSERT ...;\n-- Dump completed on 2026-11-21 10:00:00\n"
        ));
        assert!(!has_dump_trailer(b"INSERT ...;\n"));
        let mut k = TailKeeper::new(io::sink());
        for _ in 0..1000 {
            k.write_all(b"0123456789").unwrap();
        }
        k.write_all(b"\n-- Dump completed on x\n").unwrap();
        assert!(has_dump_trailer(k.tail()));
        assert!(k.tail().len() <= 2 * TAIL);
    }
}
