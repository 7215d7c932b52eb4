//! Copies a snapshot to every `[[destination]]` while the backup goes on: one worker thread
//! per destination streams each file up *while it is being written* (each site's archive and
//! dump read as they grow, their sha256 taken from the backup's writer, see [`follow`]; the
//! small host archive once written),
//! encrypting it on the way (see [`crate::store::offsite`]),
//! and once the local snapshot is in place uploads the image archives, the manifest and —
//! last — the signed index. A destination that fails keeps failing for this snapshot (its
//! partial upload is never listed); the next backup uploads what is missing: every local
//! snapshot newer than the destination's newest.
//!
//! With `[encryption] local = true` one more worker writes the snapshot the same way into
//! `backup_dir` itself, as a directory store (see [`Destination::local`]): that is the local
//! snapshot, and the plaintext working copy goes once it is done. Its failure fails the
//! backup (the working copy is then kept as a plaintext snapshot, see `take`). A destination is then caught up by copying the encrypted store's objects as
//! they are (already ciphertext to the same recipients), the index last.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::crypt::Recipients;
use crate::error::{Error, Result};
use crate::snapshot::follow::{self, Followed, Follower, Tee};
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
    /// A file still being written, read as it grows (see [`follow`]).
    Follow(String, Follower),
    /// The snapshot is in place at this folder: upload the rest and the index.
    Finish(PathBuf),
}

struct Worker {
    name: String,
    /// The encrypted store in `backup_dir` (`[encryption] local = true`).
    local: bool,
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
    /// This snapshot's plaintext image archives.
    images: PathBuf,
    /// The encrypted store in `backup_dir`, with `[encryption] local = true`.
    local: Option<Destination>,
    keyring: Option<crate::key::Keyring>,
    notify: Arc<Notifier>,
}

/// What [`Uploader::finish`] reports.
pub struct Uploads {
    /// One per `[[destination]]`.
    pub remote: Vec<UploadReport>,
    /// The encrypted store in `backup_dir` (`[encryption] local = true`): the only local copy,
    /// so its failure fails the snapshot.
    pub local: Option<UploadReport>,
}

impl Uploader {
    /// Opens every destination when `remote` (none configured: `None`), and with
    /// `[encryption] local = true` the encrypted store in `backup_dir` too (see
    /// [`Uploads::local`]). `images` holds the plaintext image archives of this snapshot.
    /// Call from the runtime.
    pub fn start(
        ctx: &Ctx,
        id: &str,
        remote: bool,
        images: &std::path::Path,
    ) -> Result<Option<Uploader>> {
        let local = ctx.config.encryption.local;
        let remotes: &[crate::config::DestinationConfig] = if remote {
            &ctx.config.destinations
        } else {
            &[]
        };
        if remotes.is_empty() && !local {
            return Ok(None);
        }
        let rcpt = Recipients::parse(&ctx.config.encryption.recipients).map_err(Error::Invalid)?;
        // Catching a destination up from the encrypted store authenticates what it copies;
        // and a destination's newest snapshot counts only when it is authentic.
        let keyring = if local {
            Some(ctx.keyring(&[])?)
        } else {
            ctx.keyring(&[]).ok()
        };
        let mut workers = Vec::new();
        let mut failed = Vec::new();
        let mut dests = Vec::new();
        if local {
            dests.push(Ok(Destination::local(&ctx.config)));
        }
        for d in remotes {
            // One that cannot be opened fails its upload, not the local snapshot.
            dests.push(Destination::open(d, &ctx.config.retention).map_err(|e| (d, e)));
        }
        for dest in dests {
            let dest = match dest {
                Ok(dest) => dest,
                Err((d, e)) => {
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
                images: images.to_path_buf(),
                local: local.then(|| Destination::local(&ctx.config)),
                keyring: keyring.clone(),
                notify: ctx.reporter(),
            };
            let name = dest.name.clone();
            let is_local = dest.local;
            let handle = std::thread::Builder::new()
                .name(if is_local {
                    "store-local".to_string()
                } else {
                    format!("upload-{name}")
                })
                .spawn(move || work(dest, setup, rx))
                .map_err(|e| Error::io("start an upload thread", e))?;
            workers.push(Worker {
                name,
                local: is_local,
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
    /// worker to upload while it is written: the [`Tee`] goes to its writer; say
    /// [`Followed::done`] once it is complete. Dropped without it (the site was left out), the
    /// partial uploads are abandoned, never committed.
    pub fn follow(&self, dir: &std::path::Path, path: &str) -> Result<(Tee, Followed)> {
        let p = dir.join(path);
        let (tee, followers, followed) =
            follow::follow(&p, self.workers.len()).map_err(|e| Error::io_path("create", &p, e))?;
        for (w, f) in self.workers.iter().zip(followers) {
            let _ = w.tx.send(Job::Follow(path.to_string(), f));
        }
        Ok((tee, followed))
    }

    /// The snapshot is complete at `dir`: waits for every destination to finish.
    pub async fn finish(self, dir: PathBuf) -> Uploads {
        let mut out = Uploads {
            remote: self.failed,
            local: None,
        };
        for w in self.workers {
            let _ = w.tx.send(Job::Finish(dir.clone()));
            drop(w.tx);
            let name = w.name.clone();
            let r = tokio::task::spawn_blocking(move || w.handle.join()).await;
            let report = match r {
                Ok(Ok(r)) => r,
                _ => UploadReport {
                    destination: name,
                    ok: false,
                    bytes: 0,
                    seconds: 0.0,
                    caught_up: Vec::new(),
                    error: Some("the upload thread failed".into()),
                },
            };
            if w.local {
                out.local = Some(report);
            } else {
                out.remote.push(report);
            }
        }
        out
    }

    /// The snapshot failed: stops every worker (nothing is committed as a snapshot) and waits
    /// for them, so nothing writes into `backup_dir` any more.
    pub async fn abandon(self) {
        for w in self.workers {
            drop(w.tx);
            let _ = tokio::task::spawn_blocking(move || w.handle.join()).await;
        }
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
                    let file = offsite::hashed(file);
                    match offsite::put_file(store, &s.rcpt, &s.id, &path, file, total, &progress) {
                        Ok(f) => done.push(f),
                        Err(e) => failed = Some(e),
                    }
                }
            }
            Job::Follow(path, follower) => {
                if failed.is_some() {
                    continue;
                }
                let abandoned = follower.abandoned();
                match offsite::put_file(
                    store,
                    &s.rcpt,
                    &s.id,
                    &path,
                    Box::new(follower),
                    0,
                    &progress,
                ) {
                    Ok(f) => done.push(f),
                    // A left-out site: its upload was never committed, and is not needed.
                    Err(_) if abandoned() => {}
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
    if dest.local {
        // The encrypted store in backup_dir: this snapshot only (nothing to catch up).
        let index = offsite::finish(store, &s.rcpt, &key, &dir, &s.images, done, progress)?;
        return Ok((index.files.iter().map(|f| f.stored_size).sum(), Vec::new()));
    }
    // What the destination held before: the next backup catches up from its newest.
    let before = offsite::ids(store)?;
    if let Some(local) = &s.local {
        // An image archive the encrypted store already held was not made again in plaintext:
        // its ciphertext is copied as it is.
        let m = crate::snapshot::read_manifest(&dir)?;
        let ids = m.sites.iter().filter_map(|e| e.image_id.as_ref());
        for img in ids.chain(m.proxy_image_id.as_ref()) {
            let hex = img.trim_start_matches("sha256:");
            if !s.images.join(format!("{hex}.tar.zst")).exists() {
                offsite::copy_image(local.store.as_ref(), store, img, true, progress)?;
            }
        }
    }
    let index = offsite::finish(store, &s.rcpt, &key, &dir, &s.images, done, progress)?;
    let mut bytes: u64 = index.files.iter().map(|f| f.stored_size).sum();
    let mut caught_up = Vec::new();
    // The newest there that a trusted key signed: an index planted in the bucket, newer than
    // everything, would otherwise stop every catch-up.
    let newest = match &s.keyring {
        Some(k) => before
            .iter()
            .rev()
            .find(|id| offsite::authenticate(store, id, k).is_ok()),
        None => before.last(),
    };
    if let Some(newest) = newest {
        let images = s.backup_dir.join("images");
        // Plaintext snapshots (all of them with local = false; those from before it otherwise)
        // are encrypted on the way; the encrypted store's are copied as they are.
        let (plain, _) = crate::snapshot::list(&s.backup_dir)?;
        let mut todo: Vec<(String, Option<PathBuf>)> =
            plain.into_iter().map(|l| (l.id, Some(l.dir))).collect();
        if let Some(local) = &s.local {
            todo.extend(
                offsite::ids(local.store.as_ref())?
                    .into_iter()
                    .map(|id| (id, None)),
            );
            todo.sort();
        }
        for (id, plain_dir) in todo {
            if id <= *newest || id == s.id || before.contains(&id) {
                continue;
            }
            let i = match (&plain_dir, &s.local, &s.keyring) {
                (Some(d), _, _) => {
                    offsite::finish(store, &s.rcpt, &key, d, &images, Vec::new(), progress)?
                }
                (None, Some(local), Some(keyring)) => {
                    offsite::copy(local.store.as_ref(), store, &id, keyring, &key, progress)?
                }
                _ => continue,
            };
            bytes += i.files.iter().map(|f| f.stored_size).sum::<u64>();
            caught_up.push(id);
        }
    }
    Ok((bytes, caught_up))
}
