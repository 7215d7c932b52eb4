//! `--from NAME|URL` for restore and drill — and no `--from` when `backup_dir` holds encrypted
//! snapshots (`[encryption] local = true`): the snapshot is downloaded (and decrypted with
//! `--identity`) into a private staging folder beside `backup_dir` first, each file proven
//! against the signed manifest as it is written (see [`offsite::fetch`]); then the same
//! restore path as for a local snapshot runs on it. The folder goes when the op is done.

use std::path::PathBuf;

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
    let staging = root.join(format!(".fetch-{:08x}", rand::random::<u32>()));
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
    let fetched = crate::store::blocking(|| -> Result<String> {
        let store = dest.store.as_ref();
        let id = offsite::resolve(store, id, pick)?;
        offsite::fetch(store, &id, &keyring, identity.as_ref(), &staging, &progress)?;
        Ok(id)
    })?;
    ctx.note(&format!("fetched snapshot {fetched} from {}", dest.name));
    staged.id = Some(fetched);
    Ok(staged)
}
