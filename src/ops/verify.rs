//! `sp verify [ID|latest]`: re-hash every file, walk every archive, check every dump's trailer
//! (one read per file), after checking the manifest's signature; non-zero exit naming each
//! faulty file.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::snapshot::{self, Fault};

use super::Ctx;

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub id: String,
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
        if self.ok() {
            write!(
                f,
                "snapshot {}: ok ({} files, {} checked in {:.1}s)",
                self.id,
                self.files,
                super::backup::human_bytes(self.bytes),
                self.seconds
            )
        } else {
            let lines: Vec<String> = self
                .faults
                .iter()
                .map(|x| format!("FAULT {}: {}", x.file, x.problem))
                .collect();
            write!(
                f,
                "snapshot {}: {} fault(s)\n{}",
                self.id,
                self.faults.len(),
                lines.join("\n")
            )
        }
    }
}

/// `sp verify`. A sound snapshot is marked verified (shown by `sp snapshots`, used by prune).
pub async fn run(
    ctx: &Ctx,
    id: &str,
    from: Option<&Path>,
    keys: &[PathBuf],
) -> Result<VerifyReport> {
    let from = from.unwrap_or(&ctx.config.backup_dir);
    let (id, dir) = snapshot::resolve(from, id, snapshot::Pick::Host)?;
    let keyring = ctx.keyring(keys)?;
    verify_one(ctx, id, dir, keyring).await
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

/// `sp verify all [--from DIR]`.
pub async fn all(ctx: &Ctx, from: Option<&Path>, keys: &[PathBuf]) -> Result<VerifyAllReport> {
    let from = from.unwrap_or(&ctx.config.backup_dir);
    let keyring = ctx.keyring(keys)?;
    let (list, unreadable) = snapshot::list(from)?;
    let mut snapshots = Vec::new();
    for s in list {
        snapshots.push(verify_one(ctx, s.id, s.dir, keyring.clone()).await?);
    }
    for u in unreadable {
        let (id, problem) = u.split_once(": ").unwrap_or((u.as_str(), "unreadable"));
        snapshots.push(VerifyReport {
            id: id.to_string(),
            files: 0,
            bytes: 0,
            seconds: 0.0,
            faults: vec![Fault {
                file: snapshot::MANIFEST.into(),
                problem: problem.to_string(),
            }],
        });
    }
    Ok(VerifyAllReport { snapshots })
}
