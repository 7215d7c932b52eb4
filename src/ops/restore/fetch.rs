//! `--from NAME|URL` for restore and drill — and no `--from` when `backup_dir` holds encrypted
//! snapshots (`[encryption] local = true`): the snapshot is downloaded (and decrypted with
//! `--identity`) into a private staging folder beside `backup_dir` first, each file proven
//! against the signed manifest as it is written (see [`offsite::fetch`]); then the same
//! restore path as for a local snapshot runs on it. The folder goes when the op is done; one
//! left by an sp that was killed (plaintext of an encrypted snapshot) goes with the next
//! backup, restore or drill (see [`clear_stale`]).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::snapshot::Pick;
use crate::store::{offsite, Source};

use super::super::Ctx;

/// Where the snapshots are read from for this op; removes a staging folder on drop.
pub struct Staged {
    /// A folder of snapshots in the local layout.
    pub dir: PathBuf,
    /// The resolved id when it was fetched (then `latest` has already been decided).
    pub id: Option<String>,
    staging: Option<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(s) = &self.staging {
            let _ = std::fs::remove_dir_all(s);
        }
    }
}

/// Resolves `--from`: a local folder as it is, or a destination's snapshot `id` fetched.
pub async fn stage(
    ctx: &Ctx,
    source: &crate::ops::source::SourceOpts,
    id: &str,
    pick: Pick<'_>,
) -> Result<Staged> {
    let dest = match Source::resolve(&ctx.config, source.from.as_deref())? {
        Source::Local(dir) => {
            return Ok(Staged {
                dir,
                id: None,
                staging: None,
            })
        }
        Source::Remote(d) => d,
    };
    if dest.local && source.identity.is_none() {
        return Err(Error::Invalid(format!(
            "the snapshots in {} are encrypted ([encryption] local = true): pass --identity FILE, the age identity whose recipient is in [encryption] recipients; nothing was changed",
            dest.name
        )));
    }
    let identity = source
        .identity
        .as_deref()
        .map(crate::crypt::Identity::load)
        .transpose()?;
    let keyring = ctx.keyring(&source.keys)?;
    let root = &ctx.config.backup_dir;
    std::fs::create_dir_all(root).map_err(|e| Error::io_path("create", root, e))?;
    clear_stale(root);
    let staging = root.join(staging_name(std::process::id(), rand::random()));
    let mut staged = Staged {
        dir: staging.clone(),
        id: None,
        staging: Some(staging.clone()),
    };
    let notify = ctx.reporter();
    let progress = move |label: &str, bytes: u64, total: u64, done: bool| {
        if bytes == 0 {
            notify.total(label, total);
        }
        notify.progress(label, bytes, done)
    };
    let (fetched, skipped) = crate::store::blocking(|| -> Result<(String, Vec<String>)> {
        let store = dest.store.as_ref();
        let (id, skipped) = offsite::resolve_trusted(store, id, pick, &keyring)?;
        offsite::fetch(store, &id, &keyring, identity.as_ref(), &staging, &progress)?;
        Ok((id, skipped))
    })?;
    for s in &skipped {
        ctx.note(&format!("skipped {s}"));
    }
    ctx.note(&format!("fetched snapshot {fetched} from {}", dest.name));
    staged.id = Some(fetched);
    Ok(staged)
}

/// A staging folder's name: `.fetch-PID-RAND`, so a later op can tell one whose sp is gone.
fn staging_name(pid: u32, rand: u32) -> String {
    format!(".fetch-{pid}-{rand:08x}")
}

/// Whether `name` is a staging folder no running sp owns (`alive` says whether a pid runs).
fn is_stale_staging(name: &str, alive: impl Fn(u32) -> bool) -> bool {
    let Some(rest) = name.strip_prefix(".fetch-") else {
        return false;
    };
    match rest
        .split_once('-')
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
    {
        Some(pid) => !alive(pid),
        // Not ours to judge by pid (an earlier build's name): nobody is using it either.
        None => true,
    }
}

/// Removes the staging folders in `root` left by an sp that was killed mid-restore or drill:
/// with `[encryption] local = true` they hold the only plaintext that ever touched the disk.
pub fn clear_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if is_stale_staging(&name, alive) && e.path().is_dir() {
            tracing::info!("removing the staging folder {name} of an sp that is gone");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_folder_is_stale_once_its_sp_is_gone() {
        let name = staging_name(4242, 0xab);
        assert_eq!(name, ".fetch-4242-000000ab");
        assert!(!is_stale_staging(&name, |pid| pid == 4242));
        assert!(is_stale_staging(&name, |_| false));
        assert!(is_stale_staging(".fetch-0badc0de", |_| true));
        for other in [
            ".tmp-20261201T000000Z",
            "20261201T000000Z",
            "fetch-1-2",
            "images",
        ] {
            assert!(!is_stale_staging(other, |_| false), "{other}");
        }
    }
}
