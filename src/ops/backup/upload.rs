//! Copies a snapshot to every `[[destination]]` while the backup goes on: one worker thread
//! per destination streams each file up *while it is being written* (each site's archive and
//! dump are followed as they grow, see [`Followed`]; the small host archive once written),
//! encrypting it on the way (see [`crate::store::offsite`]),
//! and once the local snapshot is in place uploads the image archives, the manifest and —
//! last — the signed index. A destination that fails keeps failing for this snapshot (its
//! partial upload is never listed); the next backup uploads what is missing: every local
//! snapshot newer than the destination's newest.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::crypt::Recipients;
use crate::error::{Error, Result};
use crate::store::{offsite, Destination};

use super::super::{Ctx, Notifier};

/// What one destination got.
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    pub destination: String,
    pub ok: bool,
    /// Bytes stored (ciphertext), this snapshot and any caught up.
    pub bytes: u64,
    pub seconds: f64,
    /// Earlier snapshots uploaded because the destination lacked them.
    pub caught_up: Vec<String>,
    pub error: Option<String>,
}

impl std::fmt::Display for UploadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            None => {
                write!(
                    f,
                    "uploaded to {}: {} in {:.1}s",
                    self.destination,
                    super::human_bytes(self.bytes),
                    self.seconds
                )?;
                if !self.caught_up.is_empty() {
                    write!(f, " (and the missing {})", self.caught_up.join(", "))?;
                }
                Ok(())
            }
            Some(e) => write!(
                f,
                "FAILED upload to {}: {e} — the local snapshot is kept; the next `sp backup` uploads what is missing",
                self.destination
            ),
        }
    }
}

enum Job {
    /// A finished file of the snapshot, already open.
    File(String, std::fs::File),
    /// A file still being written, read as it grows.
    Follow(String, FollowReader),
    /// The snapshot is in place at this folder: upload the rest and the index.
    Finish(PathBuf),
}

struct Worker {
    name: String,
    tx: mpsc::Sender<Job>,
    handle: std::thread::JoinHandle<UploadReport>,
}

/// Uploads to every destination, file by file as the backup hands them over.
pub struct Uploader {
    workers: Vec<Worker>,
    /// Destinations that could not even be opened (bad credentials file, …).
    failed: Vec<UploadReport>,
}

struct Setup {
    id: String,
    rcpt: Recipients,
    state_dir: PathBuf,
    backup_dir: PathBuf,
    notify: Arc<Notifier>,
}

impl Uploader {
    /// Opens every destination (none configured: `None`). Call from the runtime.
    pub fn start(ctx: &Ctx, id: &str) -> Result<Option<Uploader>> {
        if ctx.config.destinations.is_empty() {
            return Ok(None);
        }
        let rcpt = Recipients::parse(&ctx.config.encryption.recipients).map_err(Error::Invalid)?;
        let mut workers = Vec::new();
        let mut failed = Vec::new();
        for d in &ctx.config.destinations {
            // One that cannot be opened fails its upload, not the local snapshot.
            let dest = match Destination::open(d, &ctx.config.retention) {
                Ok(dest) => dest,
                Err(e) => {
                    failed.push(UploadReport {
                        destination: d.name.clone(),
                        ok: false,
                        bytes: 0,
                        seconds: 0.0,
                        caught_up: Vec::new(),
                        error: Some(e.to_string()),
                    });
                    continue;
                }
            };
            let (tx, rx) = mpsc::channel();
            let setup = Setup {
                id: id.to_string(),
                rcpt: rcpt.clone(),
                state_dir: ctx.config.state_dir.clone(),
                backup_dir: ctx.config.backup_dir.clone(),
                notify: ctx.reporter(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("upload-{}", d.name))
                .spawn(move || work(dest, setup, rx))
                .map_err(|e| Error::io("start an upload thread", e))?;
            workers.push(Worker {
                name: d.name.clone(),
                tx,
                handle,
            });
        }
        Ok(Some(Uploader { workers, failed }))
    }

    /// Hands a finished file (`path` relative to the snapshot folder `dir`) to every worker.
    pub fn send(&self, dir: &std::path::Path, path: &str) {
        for w in &self.workers {
            // A worker that is gone has failed; its report says why.
            if let Ok(f) = std::fs::File::open(dir.join(path)) {
                let _ = w.tx.send(Job::File(path.to_string(), f));
            }
        }
    }

    /// Creates `path` in `dir` (as the backup will write it: 0600) and hands it to every
    /// worker to upload as it grows; say [`Followed::done`] once it is complete. Dropped
    /// without it (the site was left out), the partial uploads are abandoned, never committed.
    pub fn follow(&self, dir: &std::path::Path, path: &str) -> Result<Followed> {
        use std::os::unix::fs::OpenOptionsExt;
        let state = Arc::new(AtomicU8::new(WRITING));
        let p = dir.join(path);
        for w in &self.workers {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&p)
                .map_err(|e| Error::io_path("create", &p, e))?;
            let r = FollowReader {
                file,
                state: state.clone(),
            };
            let _ = w.tx.send(Job::Follow(path.to_string(), r));
        }
        Ok(Followed { state })
    }

    /// The snapshot is complete at `dir`: waits for every destination to finish.
    pub async fn finish(self, dir: PathBuf) -> Vec<UploadReport> {
        let mut out = self.failed;
        for w in self.workers {
            let _ = w.tx.send(Job::Finish(dir.clone()));
            drop(w.tx);
            let name = w.name.clone();
            let r = tokio::task::spawn_blocking(move || w.handle.join()).await;
            out.push(match r {
                Ok(Ok(r)) => r,
                _ => UploadReport {
                    destination: name,
                    ok: false,
                    bytes: 0,
                    seconds: 0.0,
                    caught_up: Vec::new(),
                    error: Some("the upload thread failed".into()),
                },
            });
        }
        out
    }
}

fn work(dest: Destination, s: Setup, rx: mpsc::Receiver<Job>) -> UploadReport {
    let started = Instant::now();
    let notify = s.notify.clone();
    let progress = move |label: &str, bytes: u64, total: u64, done: bool| {
        if bytes == 0 {
            notify.total(label, total);
        }
        notify.progress(label, bytes, done)
    };
    let store = dest.store.as_ref();
    let mut done = Vec::new();
    let mut failed: Option<Error> = None;
    let mut result: Result<(u64, Vec<String>)> = Err(Error::Other(
        "the backup stopped before its snapshot was complete".into(),
    ));
    for job in rx {
        match job {
            Job::File(path, file) => {
                if failed.is_none() {
                    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
                    match offsite::put_file(store, &s.rcpt, &s.id, &path, file, total, &progress) {
                        Ok(f) => done.push(f),
                        Err(e) => failed = Some(e),
                    }
                }
            }
            Job::Follow(path, mut reader) => {
                if failed.is_some() {
                    continue;
                }
                let state = reader.state.clone();
                match offsite::put_file(store, &s.rcpt, &s.id, &path, &mut reader, 0, &progress) {
                    Ok(f) => done.push(f),
                    // A left-out site: its upload was never committed, and is not needed.
                    Err(_) if state.load(Ordering::SeqCst) == ABANDONED => {}
                    Err(e) => failed = Some(e),
                }
            }
            Job::Finish(dir) => {
                result = match failed.take() {
                    Some(e) => Err(e),
                    None => finish(&dest, &s, dir, std::mem::take(&mut done), &progress),
                };
                break;
            }
        }
    }
    let (bytes, caught_up, error) = match result {
        Ok((b, c)) => (b, c, None),
        Err(e) => (0, Vec::new(), Some(e.to_string())),
    };
    UploadReport {
        destination: dest.name.clone(),
        ok: error.is_none(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        caught_up,
        error,
    }
}

fn finish(
    dest: &Destination,
    s: &Setup,
    dir: PathBuf,
    done: Vec<offsite::StoredFile>,
    progress: offsite::Progress,
) -> Result<(u64, Vec<String>)> {
    let store = dest.store.as_ref();
    let key = crate::key::HostKey::load(&s.state_dir)?
        .ok_or_else(|| Error::Other("no snapshot key to sign the upload with".into()))?;
    let images = s.backup_dir.join("images");
    // What the destination held before: the next backup catches up from its newest.
    let before = offsite::ids(store)?;
    let index = offsite::finish(store, &s.rcpt, &key, &dir, &images, done, progress)?;
    let mut bytes: u64 = index.files.iter().map(|f| f.stored_size).sum();
    let mut caught_up = Vec::new();
    if let Some(newest) = before.last() {
        let (local, _) = crate::snapshot::list(&s.backup_dir)?;
        for l in local {
            if l.id > *newest && l.id != s.id && !before.contains(&l.id) {
                let i =
                    offsite::finish(store, &s.rcpt, &key, &l.dir, &images, Vec::new(), progress)?;
                bytes += i.files.iter().map(|f| f.stored_size).sum::<u64>();
                caught_up.push(l.id);
            }
        }
    }
    Ok((bytes, caught_up))
}

const WRITING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

/// A file of the snapshot being uploaded while it is written (see [`Uploader::follow`]).
pub struct Followed {
    state: Arc<AtomicU8>,
}

impl Followed {
    /// The file is complete (closed and fsynced): the uploads read it to its end.
    pub fn done(self) {
        self.state.store(DONE, Ordering::SeqCst);
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        let _ = self
            .state
            .compare_exchange(WRITING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Reads a file as it grows: at its current end it waits for more until the writer says done.
struct FollowReader {
    file: std::fs::File,
    state: Arc<AtomicU8>,
}

impl Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // The state is read first: when it says done, everything was written before.
            let state = self.state.load(Ordering::SeqCst);
            let n = self.file.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            match state {
                DONE => return Ok(0),
                ABANDONED => return Err(std::io::Error::other("the file was abandoned")),
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_follower_reads_everything_written_before_done() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let mut w = std::fs::File::create(&p).unwrap();
        let state = Arc::new(AtomicU8::new(WRITING));
        let mut r = FollowReader {
            file: std::fs::File::open(&p).unwrap(),
            state: state.clone(),
        };
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            r.read_to_end(&mut out).map(|_| out)
        });
        for i in 0..50u8 {
            w.write_all(&[i; 1000]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let f = Followed { state };
        f.done();
        let got = reader.join().unwrap().unwrap();
        assert_eq!(got.len(), 50_000);
        assert_eq!(got[49_999], 49);

        // Abandoned (dropped without done): the reader fails instead of waiting forever.
        let state = Arc::new(AtomicU8::new(WRITING));
        let mut r = FollowReader {
            file: std::fs::File::open(&p).unwrap(),
            state: state.clone(),
        };
        drop(Followed { state });
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
