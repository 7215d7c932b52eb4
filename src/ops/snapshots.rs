//! `sp snapshots`, `sp snapshot pin|unpin ID`.

use serde::Serialize;

use crate::error::Result;
use crate::snapshot::{self, SnapshotInfo};

use super::backup::human_bytes;
use super::Ctx;

#[derive(Debug, Serialize)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotInfo>,
    /// Folders that look like snapshots but whose manifest cannot be read.
    pub unreadable: Vec<String>,
}

impl std::fmt::Display for SnapshotList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.snapshots.is_empty() {
            write!(f, "no snapshots")?;
        } else {
            write!(
                f,
                "{:<20} {:<20} {:>10} {:<8} SITES",
                "ID", "TIME (UTC)", "SIZE", "VERIFIED"
            )?;
            for s in &self.snapshots {
                write!(
                    f,
                    "\n{:<20} {:<20} {:>10} {:<8} {}{}",
                    s.id,
                    s.time.format("%Y-%m-%d %H:%M:%S"),
                    human_bytes(s.size),
                    if s.verified.is_some() { "yes" } else { "no" },
                    s.sites.join(","),
                    if s.pinned { "  [pinned]" } else { "" }
                )?;
            }
        }
        for u in &self.unreadable {
            write!(f, "\nunreadable: {u}")?;
        }
        Ok(())
    }
}

/// `sp snapshots`.
pub fn list(ctx: &Ctx) -> Result<SnapshotList> {
    let (snapshots, unreadable) = snapshot::list(&ctx.config.backup_dir)?;
    Ok(SnapshotList {
        snapshots,
        unreadable,
    })
}

#[derive(Debug, Serialize)]
pub struct PinReport {
    pub id: String,
    pub pinned: bool,
}

impl std::fmt::Display for PinReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pinned {
            write!(f, "pinned {}: sp prune will keep it", self.id)
        } else {
            write!(f, "unpinned {}", self.id)
        }
    }
}

/// `sp snapshot pin|unpin ID`.
pub fn pin(ctx: &Ctx, id: &str, pinned: bool) -> Result<PinReport> {
    let _lock = ctx.lock("snapshot pin")?;
    let s = snapshot::find(&ctx.config.backup_dir, id)?;
    snapshot::set_pinned(&s.dir, pinned)?;
    Ok(PinReport { id: s.id, pinned })
}
