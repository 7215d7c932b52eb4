//! `sp verify [ID|latest]`: re-hash every file, walk every archive, check every dump's trailer
//! (one read per file), after checking the manifest's signature; non-zero exit naming each
//! faulty file. `--from NAME|URL` checks a destination's copy in place: every object against
//! the signed index (ciphertext), and with `--identity FILE` every plaintext against the
//! signed manifest, archives walked and dumps read to their trailer.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::snapshot::{self, Fault};
use crate::store::{offsite, Source};

use super::Ctx;

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub id: String,
    /// The destination checked (none: a local directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Only the ciphertext was checked (encrypted, and no --identity).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ciphertext_only: bool,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub faults: Vec<Fault>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.faults.is_empty()
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = self
            .destination
            .as_ref()
            .map(|d| format!(" on {d}"))
            .unwrap_or_default();
        if self.ok() {
            write!(
                f,
                "snapshot {}{on}: ok ({} files, {} checked in {:.1}s)",
                self.id,
                self.files,
                super::backup::human_bytes(self.bytes),
                self.seconds
            )?;
            if self.ciphertext_only {
                write!(
                    f,
                    "; ciphertext only: pass --identity FILE to check the plaintext too"
                )?;
            }
            Ok(())
        } else {
            let lines: Vec<String> = self
                .faults
                .iter()
                .map(|x| format!("FAULT {}: {}", x.file, x.problem))
                .collect();
            write!(
                f,
                "snapshot {}{on}: {} fault(s)\n{}",
                self.id,
                self.faults.len(),
                lines.join("\n")
            )
        }
    }
}

/// Options of `sp verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyOpts {
    /// Snapshot id, `latest` (the newest full snapshot) or `all` (every one, a line each).
    #[arg(default_value = "latest")]
    pub id: String,
    #[command(flatten)]
    pub source: super::source::SourceOpts,
}

/// The identity and keyring a source names.
fn credentials(
    ctx: &Ctx,
    source: &super::source::SourceOpts,
) -> Result<(Option<crate::crypt::Identity>, crate::key::Keyring)> {
    let identity = source
        .identity
        .as_deref()
        .map(crate::crypt::Identity::load)
        .transpose()?;
    Ok((identity, ctx.keyring(&source.keys)?))
}

/// `sp verify`. A sound snapshot is marked verified (shown by `sp snapshots`, used by prune).
pub async fn run(ctx: &Ctx, opts: &VerifyOpts) -> Result<VerifyReport> {
    let id = opts.id.as_str();
    let (identity, keyring) = credentials(ctx, &opts.source)?;
    match Source::resolve(&ctx.config, opts.source.from.as_deref())? {
        Source::Local(from) => {
            let (id, dir) = snapshot::resolve(&from, id, snapshot::Pick::Host)?;
            verify_one(ctx, id, dir, keyring).await
        }
        Source::Remote(d) => crate::store::blocking(|| {
            let id = offsite::resolve(d.store.as_ref(), id, snapshot::Pick::Host)?;
            Ok(verify_remote(&d, id, &keyring, identity.as_ref()))
        }),
    }
}

/// One snapshot of a destination (a snapshot that does not authenticate is one fault).
fn verify_remote(
    d: &crate::store::Destination,
    id: String,
    keyring: &crate::key::Keyring,
    identity: Option<&crate::crypt::Identity>,
) -> VerifyReport {
    let started = std::time::Instant::now();
    let mut r = VerifyReport {
        id: id.clone(),
        destination: Some(d.name.clone()),
        ciphertext_only: false,
        files: 0,
        bytes: 0,
        seconds: 0.0,
        faults: Vec::new(),
    };
    match offsite::verify(d.store.as_ref(), &id, keyring, identity) {
        Ok(v) => {
            r.files = v.index.files.len() + v.index.images.len();
            r.bytes = v.index.files.iter().map(|f| f.stored_size).sum::<u64>()
                + v.index.images.iter().map(|i| i.stored_size).sum::<u64>();
            r.ciphertext_only = !v.full;
            r.faults = v.faults;
            if d.local && v.full && r.faults.is_empty() {
                // backup_dir's own encrypted snapshot, proven to its plaintext: prune keeps
                // verified ones as it does plaintext ones (best effort: the check stands).
                let _ = snapshot::mark_verified(
                    &std::path::Path::new(&d.name).join(&id),
                    chrono::Utc::now(),
                );
            }
        }
        Err(e) => r.faults.push(Fault {
            file: format!("{id}/{}", offsite::INDEX),
            problem: e.to_string(),
        }),
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

async fn verify_one(
    ctx: &Ctx,
    id: String,
    dir: PathBuf,
    keyring: crate::key::Keyring,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let snap_dir = dir.clone();
    let checked = std::sync::Arc::new(snapshot::Checked::default());
    let counts = checked.clone();
    let work = tokio::task::spawn_blocking(move || {
        snapshot::verify_sites_counted(&dir, snapshot::Depth::Full, &[], &[], &keyring, &counts)
    });
    let label = format!("verify {id}");
    let (manifest, faults) = match ctx
        .with_progress(&label, &checked.done, &checked.total, work)
        .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Ok(VerifyReport {
                id,
                destination: None,
                ciphertext_only: false,
                files: 0,
                bytes: 0,
                seconds: started.elapsed().as_secs_f64(),
                faults: vec![Fault {
                    file: snapshot::MANIFEST.into(),
                    problem: e.to_string(),
                }],
            })
        }
        Err(e) => return Err(Error::Other(format!("verify task failed: {e}"))),
    };
    if faults.is_empty() {
        snapshot::mark_verified(&snap_dir, chrono::Utc::now())?;
    }
    Ok(VerifyReport {
        id,
        destination: None,
        ciphertext_only: false,
        files: manifest.files.len(),
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        seconds: started.elapsed().as_secs_f64(),
        faults,
    })
}

/// `sp verify all`: every snapshot, one line each.
#[derive(Debug, Serialize)]
pub struct VerifyAllReport {
    pub snapshots: Vec<VerifyReport>,
}

impl VerifyAllReport {
    pub fn ok(&self) -> bool {
        self.snapshots.iter().all(VerifyReport::ok)
    }
}

impl std::fmt::Display for VerifyAllReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.snapshots.is_empty() {
            return write!(f, "no snapshots");
        }
        let lines: Vec<String> = self
            .snapshots
            .iter()
            .map(|r| {
                if r.ok() {
                    r.to_string()
                } else {
                    let first = r
                        .faults
                        .first()
                        .map(|x| format!("{}: {}", x.file, x.problem))
                        .unwrap_or_default();
                    format!(
                        "snapshot {}: {} fault(s), first {first}",
                        r.id,
                        r.faults.len()
                    )
                }
            })
            .collect();
        write!(f, "{}", lines.join("\n"))
    }
}

/// `sp verify all [--from NAME|URL|DIR]`.
pub async fn all(ctx: &Ctx, source: &super::source::SourceOpts) -> Result<VerifyAllReport> {
    let (identity, keyring) = credentials(ctx, source)?;
    let from = match Source::resolve(&ctx.config, source.from.as_deref())? {
        Source::Local(dir) => dir,
        Source::Remote(d) => {
            return crate::store::blocking(|| {
                let (list, unreadable) = offsite::list(d.store.as_ref())?;
                let mut snapshots: Vec<VerifyReport> = list
                    .into_iter()
                    .map(|s| verify_remote(&d, s.id, &keyring, identity.as_ref()))
                    .collect();
                snapshots.extend(unreadable.into_iter().map(unreadable_report));
                Ok(VerifyAllReport { snapshots })
            })
        }
    };
    let (list, unreadable) = snapshot::list(&from)?;
    let mut snapshots = Vec::new();
    for s in list {
        snapshots.push(verify_one(ctx, s.id, s.dir, keyring.clone()).await?);
    }
    snapshots.extend(unreadable.into_iter().map(unreadable_report));
    Ok(VerifyAllReport { snapshots })
}

fn unreadable_report(u: String) -> VerifyReport {
    let (id, problem) = u.split_once(": ").unwrap_or((u.as_str(), "unreadable"));
    VerifyReport {
        id: id.to_string(),
        destination: None,
        ciphertext_only: false,
        files: 0,
        bytes: 0,
        seconds: 0.0,
        faults: vec![Fault {
            file: snapshot::MANIFEST.into(),
            problem: problem.to_string(),
        }],
    }
}
