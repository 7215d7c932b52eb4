//! `sp snapshots [--site NAME] [--kind K] [--from NAME|URL|DIR]`, `sp snapshot pin|unpin ID`.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::snapshot::{self, SnapshotInfo};
use crate::store::{offsite, Source};

/// Which snapshots `sp snapshots` lists.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListOpts {
    /// Only snapshots that hold this site.
    #[arg(long, value_name = "NAME")]
    pub site: Option<String>,
    /// Only snapshots of this kind: full, partial, final or pre-restore.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// A [[destination]] name, an s3:// URL, or a directory of snapshots (default: backup_dir).
    #[arg(long, value_name = "NAME|URL|DIR")]
    pub from: Option<PathBuf>,
}

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
                "{:<20} {:<11} {:<20} {:>10} {:<8} SITES",
                "ID", "KIND", "TIME (UTC)", "SIZE", "VERIFIED"
            )?;
            for s in &self.snapshots {
                write!(
                    f,
                    "\n{:<20} {:<11} {:<20} {:>10} {:<8} {}{}",
                    s.id,
                    s.kind.as_str(),
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
pub fn list(ctx: &Ctx, opts: &ListOpts) -> Result<SnapshotList> {
    if let Some(s) = &opts.site {
        crate::site::validate_name(s)?;
    }
    let kind = opts
        .kind
        .as_deref()
        .map(snapshot::Kind::parse)
        .transpose()?;
    let (mut snapshots, unreadable) = match Source::resolve(&ctx.config, opts.from.as_deref())? {
        Source::Local(dir) => snapshot::list(&dir)?,
        Source::Remote(d) => crate::store::blocking(|| offsite::list(d.store.as_ref()))?,
    };
    snapshots.retain(|s| {
        kind.is_none_or(|k| s.kind == k) && opts.site.as_ref().is_none_or(|n| s.sites.contains(n))
    });
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
