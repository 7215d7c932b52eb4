//! `sp backup [--site NAME]...`: one snapshot of the host.
//!
//! 1. take the lock; clear `.tmp-*` folders left by a killed backup;
//! 2. write `host.tar.zst` (config, registry credentials) into `.tmp-ID/`;
//! 3. per site: run its pre-backup command, pause it if asked, then archive `/sites/NAME`
//!    (without `tmp/`) and dump its database **at the same time**, each straight into zstd;
//! 4. write `manifest.json` (+ its checksum) last, fsync, rename `.tmp-ID` → `ID`.
//!
//! 5. a site that fails (its spec, pre-backup command, dump or archive) is left out and named
//!    with its step: the snapshot is then `partial`, `sp backup` exits 1, the failure hook is
//!    called and `sp status` names it (see [`run`]).
//!
//! 6. with `[[destination]]`s, each site's archive and dump are uploaded (encrypted) while
//!    they are written; the index last, once the local snapshot is in place
//!    ([`upload`]). A failed upload keeps the local snapshot and fails the backup like a
//!    left-out site (exit 1, status, failure hook); the next backup uploads what is missing.
//!
//! A failure of the whole snapshot removes the temporary folder, leaves earlier snapshots
//! alone, is recorded in `STATE_DIR/backup-status.json` (shown by `sp status`), pings the
//! failure hook, and names the site and the step. [`take`] writes one snapshot, [`site`]
//! takes one site into it.

mod site;
mod take;
pub mod upload;

pub use self::take::snapshot_sites;
use self::take::snapshot_sites_tolerant;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::snapshot;

use super::Ctx;

#[derive(Debug, Clone, Default)]
pub struct BackupOpts {
    /// Only these sites (all when empty).
    pub sites: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub kind: snapshot::Kind,
    pub dir: PathBuf,
    pub sites: Vec<SiteBackup>,
    /// Sites left out of the snapshot, with the step that failed (the snapshot is `partial`).
    pub failed: Vec<SiteFailure>,
    pub bytes: u64,
    pub seconds: f64,
    /// One per `[[destination]]`: what was uploaded, or why not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<upload::UploadReport>,
    /// `[encryption] local = true` and the encrypted local copy failed: why, and that the
    /// plaintext snapshot was kept instead (`sp backup` exits 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_error: Option<String>,
}

impl BackupReport {
    /// Every site taken and every upload done (else `sp backup` exits 1).
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.uploads.iter().all(|u| u.ok) && self.local_error.is_none()
    }

    fn upload_errors(&self) -> Vec<String> {
        self.local_error
            .iter()
            .cloned()
            .chain(self.uploads.iter().filter_map(|u| {
                u.error
                    .as_ref()
                    .map(|e| format!("upload to {}: {e}", u.destination))
            }))
            .collect()
    }
}

/// A site a backup could not take, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteFailure {
    pub site: String,
    pub step: String,
    pub error: String,
}

impl SiteFailure {
    fn of(site: &str, e: &Error) -> SiteFailure {
        let (step, error) = match e {
            Error::Step { step, source, .. } => (step.to_string(), source.to_string()),
            other => ("backup".to_string(), other.to_string()),
        };
        SiteFailure {
            site: site.to_string(),
            step,
            error,
        }
    }
}

impl std::fmt::Display for SiteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: step '{}' failed: {}",
            self.site, self.step, self.error
        )
    }
}

#[derive(Debug, Serialize)]
pub struct SiteBackup {
    #[serde(rename = "site")]
    pub name: String,
    /// Compressed bytes of the file archive and the dump.
    pub files_bytes: u64,
    pub dump_bytes: u64,
    pub tables: usize,
    pub seconds: f64,
    /// What the file walk noticed: special files left out, names that vanished or changed
    /// while being archived, members `sp restore` will refuse.
    pub warnings: Vec<String>,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.sites {
            writeln!(
                f,
                "{}: files {}, dump {} ({} tables) in {:.1}s",
                s.name,
                human_bytes(s.files_bytes),
                human_bytes(s.dump_bytes),
                s.tables,
                s.seconds
            )?;
            for w in &s.warnings {
                writeln!(f, "{}: warning: {w}", s.name)?;
            }
        }
        for x in &self.failed {
            writeln!(f, "FAILED {x}")?;
        }
        write!(
            f,
            "snapshot {} ({}, {}) in {:.1}s",
            self.id,
            self.kind,
            human_bytes(self.bytes),
            self.seconds
        )?;
        if !self.failed.is_empty() {
            write!(
                f,
                "; {} site(s) left out — fix them and run `sp backup` again",
                self.failed.len()
            )?;
        }
        for u in &self.uploads {
            write!(f, "\n{u}")?;
        }
        if let Some(e) = &self.local_error {
            write!(f, "\nFAILED {e}")?;
        }
        Ok(())
    }
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// What the last backups did, kept in `STATE_DIR/backup-status.json` for `sp status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupStatus {
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_snapshot: Option<String>,
    pub last_failure: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Sites the last backup left out (empty when it took every site).
    #[serde(default)]
    pub failed_sites: Vec<SiteFailure>,
    /// The last `sp prune` failed: when and why (cleared by one that succeeds).
    #[serde(default)]
    pub prune_failure: Option<DateTime<Utc>>,
    #[serde(default)]
    pub prune_error: Option<String>,
}

impl BackupStatus {
    pub fn path(ctx: &Ctx) -> PathBuf {
        ctx.config.state_dir.join("backup-status.json")
    }
    pub fn load(ctx: &Ctx) -> BackupStatus {
        std::fs::read(Self::path(ctx))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
    pub fn save(&self, ctx: &Ctx) {
        if let Ok(bytes) = serde_json::to_vec_pretty(self) {
            if let Err(e) = crate::fsutil::write_atomic(&Self::path(ctx), &bytes, 0o644) {
                tracing::warn!("cannot record the backup status: {e}");
            }
        }
    }
}

/// `sp backup`. A host backup takes every site it can: a site whose spec does not load, or
/// whose pre-backup command, dump or archive fails, is left out and named (the snapshot is
/// then `partial`); the report, `sp status` and the failure hook say which and why.
pub async fn run(ctx: &Ctx, opts: &BackupOpts) -> Result<BackupReport> {
    let mut names = opts.sites.clone();
    names.sort();
    names.dedup();
    for n in &names {
        ctx.site(n)?;
    }
    let _lock = ctx.lock("backup")?;
    // Read under the lock: what a concurrent remove --purge took away is gone.
    let mut unreadable = Vec::new();
    let (specs, kind) = if names.is_empty() {
        let mut specs = Vec::new();
        for n in ctx.site_names()? {
            match ctx.site(&n) {
                Ok(s) => specs.push(s),
                Err(e) => unreadable.push(SiteFailure {
                    site: n,
                    step: "spec".into(),
                    error: e.to_string(),
                }),
            }
        }
        (specs, snapshot::Kind::Full)
    } else {
        let specs = names
            .iter()
            .map(|n| ctx.site(n))
            .collect::<Result<Vec<_>>>()?;
        (specs, snapshot::Kind::Partial)
    };
    // Fails only when no site at all could be taken (those already known to fail included).
    let result = snapshot_sites_tolerant(ctx, &specs, kind, unreadable.clone()).await;
    let mut status = BackupStatus::load(ctx);
    let now = Utc::now();
    status.last_attempt = Some(now);
    let failure = match &result {
        Ok(r) => {
            status.last_success = Some(now);
            status.last_snapshot = Some(r.id.clone());
            status.failed_sites = r.failed.clone();
            let uploads = r.upload_errors();
            (!r.ok()).then(|| {
                status.last_failure = Some(now);
                let mut why = Vec::new();
                if !r.failed.is_empty() {
                    why.push(format!(
                        "left out: {}",
                        r.failed
                            .iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                }
                why.extend(uploads.iter().cloned());
                status.last_error = Some(format!("snapshot {} {}", r.id, why.join("; ")));
                let error = (!uploads.is_empty()).then(|| uploads.join("; "));
                (Some(r.id.clone()), r.failed.clone(), error)
            })
        }
        Err(e) => {
            status.last_failure = Some(now);
            status.last_error = Some(e.to_string());
            status.failed_sites = unreadable.clone();
            Some((None, unreadable.clone(), Some(e.to_string())))
        }
    };
    status.save(ctx);
    match failure {
        None => {
            if let Some(url) = &ctx.config.backup.on_success_url {
                crate::hook::call(url, None).await;
            }
        }
        Some((id, failed, error)) => {
            ctx.report_failure(serde_json::json!({
                "snapshot": id,
                "failed": failed,
                "error": error,
            }))
            .await;
        }
    }
    result
}
