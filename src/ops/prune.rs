//! `sp prune [--dry-run]`: delete the snapshots the `[retention]` policy does not keep.
//! Plan first (printed either way), then apply unless `--dry-run`.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::snapshot::retention::{plan, Candidate, Decision};
use crate::snapshot::{self};

use super::Ctx;

#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    pub deleted: Vec<String>,
    /// Image archives no remaining snapshot uses.
    pub images_deleted: Vec<String>,
}

/// Deletes image archives that no remaining snapshot refers to.
fn prune_images(ctx: &Ctx) -> Result<Vec<String>> {
    let dir = ctx.config.backup_dir.join("images");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let (snaps, unreadable) = snapshot::list(&ctx.config.backup_dir)?;
    if !unreadable.is_empty() {
        // A snapshot we cannot read might need any image: keep them all.
        return Ok(Vec::new());
    }
    let mut used = std::collections::HashSet::new();
    for s in &snaps {
        for site in snapshot::read_manifest(&s.dir)?.sites {
            if let Some(id) = site.image_id {
                used.insert(id.trim_start_matches("sha256:").to_string());
            }
        }
    }
    let mut deleted = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let hex = name.split('.').next().unwrap_or("").to_string();
        if !used.contains(&hex) {
            std::fs::remove_file(e.path())
                .map_err(|err| Error::io_path("delete", &e.path(), err))?;
            if name.ends_with(".tar.zst") {
                deleted.push(hex);
            }
        }
    }
    Ok(deleted)
}

impl std::fmt::Display for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.decisions.is_empty() {
            return write!(f, "no snapshots");
        }
        let mut lines = Vec::new();
        for d in &self.decisions {
            if d.keep {
                lines.push(format!("keep   {} ({})", d.id, d.reasons.join(", ")));
            } else {
                lines.push(format!(
                    "{} {}",
                    if self.dry_run {
                        "would delete"
                    } else {
                        "delete"
                    },
                    d.id
                ));
            }
        }
        let n = self.decisions.iter().filter(|d| !d.keep).count();
        if self.dry_run {
            lines.push(format!(
                "dry run: {n} snapshot(s) would be deleted; nothing was deleted"
            ));
        } else {
            lines.push(format!(
                "deleted {} snapshot(s) and {} unused image archive(s)",
                self.deleted.len(),
                self.images_deleted.len()
            ));
        }
        write!(f, "{}", lines.join("\n"))
    }
}

/// `sp prune`.
pub async fn run(ctx: &Ctx, dry_run: bool) -> Result<PruneReport> {
    let result = prune(ctx, dry_run);
    if dry_run {
        return result;
    }
    // A failed prune (the disk fills up next) reaches `sp status` and the failure hook.
    let mut status = super::backup::BackupStatus::load(ctx);
    match &result {
        Ok(_) => {
            status.prune_failure = None;
            status.prune_error = None;
        }
        Err(e) => {
            status.prune_failure = Some(chrono::Utc::now());
            status.prune_error = Some(e.to_string());
        }
    }
    status.save(ctx);
    if let Err(e) = &result {
        ctx.report_failure(serde_json::json!({ "prune": e.to_string() }))
            .await;
    }
    result
}

fn prune(ctx: &Ctx, dry_run: bool) -> Result<PruneReport> {
    let _lock = ctx.lock("prune")?;
    let (snaps, _) = snapshot::list(&ctx.config.backup_dir)?;
    let candidates: Vec<Candidate> = snaps
        .iter()
        .map(|s| Candidate {
            id: s.id.clone(),
            time: s.time,
            pinned: s.pinned,
            verified: s.verified.is_some(),
            sites: s.sites.clone(),
        })
        .collect();
    let decisions = plan(&candidates, &ctx.config.retention);
    let mut deleted = Vec::new();
    if !dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            let Some(s) = snaps.iter().find(|s| s.id == d.id) else {
                continue;
            };
            // Rename first so a half-deleted folder never looks like a snapshot.
            let doomed = ctx.config.backup_dir.join(format!(".tmp-prune-{}", s.id));
            std::fs::rename(&s.dir, &doomed).map_err(|e| Error::io_path("rename", &s.dir, e))?;
            std::fs::remove_dir_all(&doomed).map_err(|e| Error::io_path("delete", &doomed, e))?;
            deleted.push(s.id.clone());
        }
    }
    let images_deleted = if dry_run {
        Vec::new()
    } else {
        prune_images(ctx)?
    };
    Ok(PruneReport {
        dry_run,
        decisions,
        deleted,
        images_deleted,
    })
}
