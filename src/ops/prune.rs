//! `sp prune [--dry-run] [--from NAME|URL]`: delete the snapshots the `[retention]` policy does
//! not keep — in `backup_dir`, and on every `[[destination]]` by that destination's own
//! policy (`[destination.retention]`, else `[retention]`); `--from` prunes one destination
//! only. Plan first (printed either way), then apply unless `--dry-run`. On a destination a
//! snapshot's index goes first (it stops being listed), then its objects, then the image
//! archives no remaining snapshot names. An encrypted `backup_dir` (`[encryption] local = true`)
//! is pruned the same way, by `[retention]`, together with its plaintext snapshots from before.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::lock::HostLock;
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
    /// The same for each destination pruned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationPrune>,
    /// Only destinations were pruned (`--from`): the local lines are empty.
    #[serde(skip)]
    remote_only: bool,
}

/// One destination's prune.
#[derive(Debug, Serialize)]
pub struct DestinationPrune {
    pub destination: String,
    pub decisions: Vec<Decision>,
    pub deleted: Vec<String>,
    pub images_deleted: Vec<String>,
    /// Folders of uploads that never completed (no index) and never will: removed (with
    /// `--dry-run`: would be).
    pub unfinished: Vec<String>,
    /// Snapshots no trusted key signed (planted, damaged, or another host's): neither counted
    /// by the policy nor deleted; each with why.
    pub unauthentic: Vec<String>,
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
        let m = snapshot::read_manifest(&s.dir)?;
        let ids = m.sites.into_iter().filter_map(|site| site.image_id);
        for id in ids.chain(m.proxy_image_id) {
            used.insert(id.trim_start_matches("sha256:").to_string());
        }
    }
    let mut deleted = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let hex = name.split('.').next().unwrap_or("").to_string();
        // Encrypted archives are the encrypted store's (see `prune`).
        if name.contains(".age") || name.starts_with('.') {
            continue;
        }
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

fn plan_lines(dry_run: bool, decisions: &[Decision], deleted: usize, images: usize) -> Vec<String> {
    if decisions.is_empty() {
        return vec!["no snapshots".into()];
    }
    let mut lines = Vec::new();
    for d in decisions {
        if d.keep {
            lines.push(format!("keep   {} ({})", d.id, d.reasons.join(", ")));
        } else {
            lines.push(format!(
                "{} {}",
                if dry_run { "would delete" } else { "delete" },
                d.id
            ));
        }
    }
    let n = decisions.iter().filter(|d| !d.keep).count();
    if dry_run {
        lines.push(format!(
            "dry run: {n} snapshot(s) would be deleted; nothing was deleted"
        ));
    } else {
        lines.push(format!(
            "deleted {deleted} snapshot(s) and {images} unused image archive(s)"
        ));
    }
    lines
}

impl std::fmt::Display for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::new();
        if !self.remote_only {
            out.push(self.local_lines());
        }
        for d in &self.destinations {
            let mut lines = plan_lines(
                self.dry_run,
                &d.decisions,
                d.deleted.len(),
                d.images_deleted.len(),
            );
            for u in &d.unauthentic {
                lines.push(format!(
                    "left alone, not signed by a trusted key (not counted by the policy): {u}"
                ));
            }
            if !d.unfinished.is_empty() {
                lines.push(format!(
                    "{} the objects of {} upload(s) that never completed: {}",
                    if self.dry_run {
                        "would remove"
                    } else {
                        "removed"
                    },
                    d.unfinished.len(),
                    d.unfinished.join(", ")
                ));
            }
            out.push(format!("on {}:\n{}", d.destination, lines.join("\n")));
        }
        write!(f, "{}", out.join("\n"))
    }
}

impl PruneReport {
    fn local_lines(&self) -> String {
        plan_lines(
            self.dry_run,
            &self.decisions,
            self.deleted.len(),
            self.images_deleted.len(),
        )
        .join("\n")
    }
}

/// `sp prune`.
pub async fn run(ctx: &Ctx, dry_run: bool, from: Option<&std::path::Path>) -> Result<PruneReport> {
    let result = match from {
        // One lock for all of it: a backup that started between the local prune and a
        // destination's would upload image archives no index names yet, which that prune
        // deletes.
        None => ctx.lock("prune").and_then(|lock| {
            let mut r = prune(ctx, &lock, dry_run)?;
            if !ctx.config.destinations.is_empty() {
                let keyring = ctx.keyring(&[])?;
                for d in &ctx.config.destinations {
                    let dest = crate::store::Destination::open(d, &ctx.config.retention)?;
                    r.destinations
                        .push(prune_destination(&lock, &keyring, &dest, dry_run)?);
                }
            }
            Ok(r)
        }),
        // backup_dir itself: the local prune (pins and verified marks honoured; its plaintext
        // image archives are the plaintext snapshots'), without the destinations.
        Some(from) if same_dir(from, &ctx.config.backup_dir) => {
            ctx.lock("prune").and_then(|lock| prune(ctx, &lock, dry_run))
        }
        Some(from) if !is_destination(&ctx.config, from) => Err(Error::Invalid(format!(
            "--from {}: prune takes a [[destination]] name or URL, or backup_dir itself (add another directory as a [[destination]] to prune it)",
            from.display()
        ))),
        Some(from) => match crate::store::Source::resolve(&ctx.config, Some(from))? {
            crate::store::Source::Remote(dest) => {
                let lock = ctx.lock("prune")?;
                let keyring = ctx.keyring(&[])?;
                prune_destination(&lock, &keyring, &dest, dry_run).map(|d| PruneReport {
                    dry_run,
                    decisions: Vec::new(),
                    deleted: Vec::new(),
                    images_deleted: Vec::new(),
                    destinations: vec![d],
                    remote_only: true,
                })
            }
            crate::store::Source::Local(_) => Err(Error::Invalid(format!(
                "--from {}: prune takes a [[destination]] name or URL (backup_dir is pruned without --from)",
                from.display()
            ))),
        },
    };
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

/// `a` and `b` name the same directory.
fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.components().eq(b.components()),
    }
}

/// `--from` names a destination: a configured one (name or URL), a URL, or a bare word (which
/// [`crate::store::Source::resolve`] refuses naming the configured ones) — not a directory.
fn is_destination(cfg: &crate::config::Config, from: &std::path::Path) -> bool {
    let text = from.to_string_lossy();
    cfg.destinations
        .iter()
        .any(|d| d.name == text || d.url == text)
        || text.contains("://")
        || (!text.contains('/') && !from.exists())
}

/// Prunes `backup_dir` by `[retention]`: its plaintext snapshots and — when it holds them
/// encrypted (`[encryption] local = true`) — its encrypted ones, planned together (so the
/// plaintext ones from before age out as encrypted ones replace them).
fn prune(ctx: &Ctx, _lock: &HostLock, dry_run: bool) -> Result<PruneReport> {
    let (snaps, _) = snapshot::list(&ctx.config.backup_dir)?;
    let stored = super::snapshots::stored_local(ctx)?;
    let stored_ids: Vec<String> = stored
        .as_ref()
        .map(|(_, l, _)| l.iter().map(|s| s.id.clone()).collect())
        .unwrap_or_default();
    let mut all: Vec<&snapshot::SnapshotInfo> = snaps.iter().collect();
    if let Some((_, list, _)) = &stored {
        all.extend(list.iter());
        all.sort_by(|a, b| a.id.cmp(&b.id));
    }
    let candidates: Vec<Candidate> = all
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
            let Some(s) = all.iter().find(|s| s.id == d.id) else {
                continue;
            };
            if let (Some((dest, _, _)), true) = (&stored, stored_ids.contains(&s.id)) {
                // Its index first: it stops being a snapshot at once; then its objects and
                // the markers beside them.
                crate::store::offsite::delete(dest.store.as_ref(), &s.id)?;
                match std::fs::remove_dir_all(&s.dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io_path("delete", &s.dir, e))
                    }
                    _ => {}
                }
                deleted.push(s.id.clone());
                continue;
            }
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
        let mut images = prune_images(ctx)?;
        if let Some((dest, _, _)) = &stored {
            let gone = crate::store::offsite::prune_images_where(dest.store.as_ref(), |o| {
                o.ends_with(".age")
            })?;
            images.extend(gone);
        }
        images
    };
    Ok(PruneReport {
        dry_run,
        decisions,
        deleted,
        images_deleted,
        destinations: Vec::new(),
        remote_only: false,
    })
}

/// Prunes one destination by its own policy.
fn prune_destination(
    _lock: &HostLock,
    keyring: &crate::key::Keyring,
    dest: &crate::store::Destination,
    dry_run: bool,
) -> Result<DestinationPrune> {
    use crate::store::offsite;
    let store = dest.store.as_ref();
    let fail = |e: Error| Error::Other(format!("prune {}: {e}", dest.name));
    crate::store::blocking(|| {
        let found = offsite::folders(store)?;
        // Whoever can write to the bucket could plant "newer snapshots" for the policy to keep
        // in place of the real ones: only authenticated ones count (leaving one out never
        // makes the policy delete more).
        let mut snaps = Vec::new();
        let mut unauthentic = Vec::new();
        for id in &found.complete {
            match offsite::authenticate(store, id, keyring) {
                Ok((index, ..)) => snaps.push(index.info()),
                Err(e) => unauthentic.push(format!("{id}: {e}")),
            }
        }
        let candidates: Vec<Candidate> = snaps
            .iter()
            .map(|s| Candidate {
                id: s.id.clone(),
                time: s.time,
                pinned: false,
                verified: false,
                sites: s.sites.clone(),
            })
            .collect();
        let decisions = plan(&candidates, &dest.retention);
        let unfinished = match snaps.iter().map(|s| s.id.as_str()).max() {
            Some(newest) => found.unfinished(newest),
            None => Vec::new(),
        };
        let mut deleted = Vec::new();
        let mut images_deleted = Vec::new();
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                offsite::delete(store, &d.id)?;
                deleted.push(d.id.clone());
            }
            for id in &unfinished {
                offsite::delete(store, id)?;
            }
            images_deleted = offsite::prune_images(store)?;
        }
        Ok(DestinationPrune {
            destination: dest.name.clone(),
            decisions,
            deleted,
            images_deleted,
            unfinished,
            unauthentic,
        })
    })
    .map_err(fail)
}
