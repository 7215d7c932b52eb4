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
    /// A [[destination]] name, an s3:// URL, or a directory of snapshots (default: backup_dir,
    /// read as the encrypted store it is with [encryption] local = true).
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
    /// With `backup_dir` encrypted: its plaintext snapshots from before (`--from BACKUP_DIR`
    /// reads them; `sp prune` ages them out by the same policy).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plaintext: Vec<SnapshotInfo>,
    /// With `backup_dir` read as plaintext (its newest snapshot is one, no `local = true`):
    /// the ids of the encrypted snapshots beside them, which `[encryption] local = true` reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encrypted: Vec<String>,
}

/// `backup_dir` as the encrypted store, its snapshots and those whose index cannot be read.
pub type StoredLocal = (crate::store::Destination, Vec<SnapshotInfo>, Vec<String>);

/// The encrypted snapshots `backup_dir` holds (`[encryption] local = true`, or only encrypted
/// ones there), oldest first, with their pin and verify markers; `None` when it is read in the
/// local layout.
pub fn stored_local(ctx: &Ctx) -> Result<Option<StoredLocal>> {
    let Source::Remote(d) = Source::resolve(&ctx.config, None)? else {
        return Ok(None);
    };
    let (mut list, unreadable) = offsite::list(d.store.as_ref())?;
    for s in &mut list {
        s.dir = ctx.config.backup_dir.join(&s.id);
        (s.pinned, s.verified) = snapshot::markers(&s.dir);
    }
    Ok(Some((d, list, unreadable)))
}

/// Every snapshot in `backup_dir`, oldest first: plaintext and — with local encryption —
/// encrypted ones alike (for `sp status`, which only reads their listing).
pub fn all_local(ctx: &Ctx) -> Result<Vec<SnapshotInfo>> {
    let (mut all, _) = snapshot::list(&ctx.config.backup_dir)?;
    if let Some((_, stored, _)) = stored_local(ctx)? {
        all.extend(stored);
        all.sort_by(|a, b| a.id.cmp(&b.id));
    }
    Ok(all)
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
        if !self.plaintext.is_empty() {
            write!(
                f,
                "\nplaintext, from before [encryption] local = true (--from BACKUP_DIR reads them): {}",
                self.plaintext
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if !self.encrypted.is_empty() {
            write!(
                f,
                "\nencrypted, older than the newest plaintext snapshot ([encryption] local = true reads them): {}",
                self.encrypted.join(", ")
            )?;
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
    let mut plaintext = Vec::new();
    let mut encrypted = Vec::new();
    let (mut snapshots, unreadable) = match opts.from.as_deref() {
        None => match stored_local(ctx)? {
            Some((_, list, unreadable)) => {
                (plaintext, _) = snapshot::list(&ctx.config.backup_dir)?;
                (list, unreadable)
            }
            None => {
                if let crate::store::Layout::Mixed { .. } =
                    crate::store::layout(&ctx.config.backup_dir)
                {
                    let dir = crate::store::dir::DirStore::new(ctx.config.backup_dir.clone());
                    encrypted = offsite::ids(&dir)?;
                }
                snapshot::list(&ctx.config.backup_dir)?
            }
        },
        Some(from) => match Source::resolve(&ctx.config, Some(from))? {
            Source::Local(dir) => snapshot::list(&dir)?,
            Source::Remote(d) => crate::store::blocking(|| offsite::list(d.store.as_ref()))?,
        },
    };
    let wanted = |s: &SnapshotInfo| {
        kind.is_none_or(|k| s.kind == k) && opts.site.as_ref().is_none_or(|n| s.sites.contains(n))
    };
    snapshots.retain(wanted);
    plaintext.retain(wanted);
    Ok(SnapshotList {
        snapshots,
        unreadable,
        plaintext,
        encrypted,
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
    if let Some((d, list, _)) = stored_local(ctx)? {
        // An encrypted snapshot keeps its pin beside its objects (never listed as one).
        let sid = offsite::resolve(d.store.as_ref(), id, snapshot::Pick::Any).ok();
        if let Some(s) = list.into_iter().find(|s| Some(&s.id) == sid.as_ref()) {
            snapshot::set_pinned(&s.dir, pinned)?;
            return Ok(PinReport { id: s.id, pinned });
        }
    }
    let s = snapshot::find(&ctx.config.backup_dir, id)?;
    snapshot::set_pinned(&s.dir, pinned)?;
    Ok(PinReport { id: s.id, pinned })
}
