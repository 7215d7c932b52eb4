//! Files stored as several objects (see [`Store::segment_size`]): a writer that commits a
//! segment each time one fills, so the store completes it while the rest is still being
//! written (an S3 server assembles a multipart object only once it is complete, which for
//! one large object left all of that work for the end of the backup), and a reader that
//! reads them back in order, checking each against the signed index.

use std::io::{self, Read, Write};

use super::{segment_object, Segment, StoredFile, MAX_SEGMENTS};
use crate::error::{Error, Result};
use crate::snapshot::archive::{HashingReader, HashingWriter};
use crate::store::{Pending, Store, Upload};

/// Where one file's stored bytes go: one upload, or segments.
pub(super) enum StoredWriter<'a> {
    Whole(Box<dyn Upload>),
    Split(Box<Segmented<'a>>),
}

impl<'a> StoredWriter<'a> {
    /// Opens `object` (a full store path): split as `store` wants files written when
    /// `split` (a snapshot's file), else whole (an image archive: shared by snapshots).
    pub fn open(store: &'a dyn Store, object: &str, split: bool) -> Result<StoredWriter<'a>> {
        Ok(match store.segment_size().filter(|_| split) {
            Some(size) => StoredWriter::Split(Box::new(Segmented {
                store,
                object: object.to_string(),
                size: size.max(1),
                current: None,
                pending: None,
                done: Vec::new(),
            })),
            None => StoredWriter::Whole(store.write(object)?),
        })
    }

    /// Commits what was written; returns the segments (none for a whole object).
    pub fn commit(self) -> Result<Vec<Segment>> {
        match self {
            StoredWriter::Whole(up) => up.commit().map(|_| Vec::new()),
            StoredWriter::Split(s) => s.finish(),
        }
    }
}

impl Write for StoredWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StoredWriter::Whole(up) => up.write(buf),
            StoredWriter::Split(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            StoredWriter::Whole(up) => up.flush(),
            StoredWriter::Split(_) => Ok(()),
        }
    }
}

/// Writes a stream as `OBJECT.0000`, `OBJECT.0001`, … of `size` bytes each (the last one
/// shorter; see [`segment_limit`] for a very large file), each committed as soon as it is
/// full — in the background, one at a time, while the next fills. Dropped unfinished, the
/// segment being written is abandoned (never visible); committed ones stay unlisted until an
/// index names them.
pub(super) struct Segmented<'a> {
    store: &'a dyn Store,
    object: String,
    size: u64,
    current: Option<HashingWriter<Box<dyn Upload>>>,
    /// The last full segment's commit, still under way.
    pending: Option<Pending>,
    done: Vec<Segment>,
}

/// Segments of one size come in runs of this many; each run's are twice the size of the
/// previous run's.
const RUN: usize = 1000;

/// The size of segment `n` of a file whose segments start at `base` bytes: `base` for the
/// first [`RUN`], then doubling with each run (up to 1,024 times `base`), so the first
/// gigabytes go up in small single requests and a file of terabytes still fits in
/// [`MAX_SEGMENTS`].
pub fn segment_limit(base: u64, n: usize) -> u64 {
    base.saturating_mul(1 << (n / RUN).min(10))
}

impl Segmented<'_> {
    /// Starts the commit of the segment being written, once the one before it has completed.
    fn close_segment(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let (up, size, sha256) = w.finish();
            if let Some(p) = self.pending.take() {
                p.wait()?;
            }
            self.pending = Some(up.commit_later()?);
            self.done.push(Segment { size, sha256 });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Segment>> {
        if self.current.is_none() && self.done.is_empty() {
            // An empty stream is still one (empty) object.
            self.current = Some(HashingWriter::new(
                self.store.write(&segment_object(&self.object, 0))?,
            ));
        }
        self.close_segment()?;
        if let Some(p) = self.pending.take() {
            p.wait()?;
        }
        Ok(std::mem::take(&mut self.done))
    }
}

impl Write for Segmented<'_> {
    /// Takes all of `buf`, across as many segments as it fills (a short write would break
    /// writers that expect one `write` to take their whole header).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let w = match &mut self.current {
                Some(w) => w,
                None => {
                    if self.done.len() >= MAX_SEGMENTS {
                        return Err(io::Error::other(format!(
                            "{} would need more than {MAX_SEGMENTS} segments: raise segment_mib",
                            self.object
                        )));
                    }
                    let up = self
                        .store
                        .write(&segment_object(&self.object, self.done.len()))
                        .map_err(io::Error::other)?;
                    self.current.insert(HashingWriter::new(up))
                }
            };
            let limit = segment_limit(self.size, self.done.len());
            let room = limit.saturating_sub(w.bytes());
            let n = rest.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            w.write_all(&rest[..n])?;
            rest = &rest[n..];
            if w.bytes() >= limit {
                self.close_segment().map_err(io::Error::other)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens the stored bytes of `f` in the snapshot folder `id` of `store`: its one object, or
/// its segments in order.
pub(super) fn open_stored<'a>(
    store: &'a dyn Store,
    id: &str,
    f: &StoredFile,
) -> Result<Box<dyn Read + 'a>> {
    let object = format!("{id}/{}", f.object);
    if f.segments.is_empty() {
        return Ok(Box::new(store.read(&object)?));
    }
    if f.segments.len() > MAX_SEGMENTS {
        return Err(Error::Unauthentic(format!(
            "{object}: the index names more than {MAX_SEGMENTS} segments"
        )));
    }
    Ok(Box::new(SegmentsReader::new(
        store,
        object,
        f.segments.clone(),
    )))
}

/// Reads a split file's segments in order; a segment whose size or sha256 is not the
/// index's fails the read that ends it, naming that object.
pub(super) struct SegmentsReader<'a> {
    store: &'a dyn Store,
    object: String,
    segments: Vec<Segment>,
    next: usize,
    current: Option<HashingReader<io::Take<Box<dyn Read + Send>>>>,
}

impl<'a> SegmentsReader<'a> {
    pub(super) fn new(store: &'a dyn Store, object: String, segments: Vec<Segment>) -> Self {
        SegmentsReader {
            store,
            object,
            segments,
            next: 0,
            current: None,
        }
    }
}

impl Read for SegmentsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let r = match &mut self.current {
                Some(r) => r,
                None => {
                    let Some(seg) = self.segments.get(self.next) else {
                        return Ok(0);
                    };
                    let name = segment_object(&self.object, self.next);
                    let r = self.store.read(&name).map_err(io::Error::other)?;
                    self.current
                        .insert(HashingReader::new(r.take(seg.size.saturating_add(1))))
                }
            };
            let n = r.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This segment is at its end: it must be the one the index names.
            let (size, sha256) = match self.current.take() {
                Some(r) => r.finish()?,
                None => return Ok(0),
            };
            let name = segment_object(&self.object, self.next);
            let want = &self.segments[self.next];
            if size != want.size {
                return Err(io::Error::other(format!(
                    "{name}: size {size} differs from the index's {}",
                    want.size
                )));
            }
            if sha256 != want.sha256 {
                return Err(io::Error::other(format!(
                    "{name}: sha256 differs from the index (object changed)"
                )));
            }
            self.next += 1;
        }
    }
}
