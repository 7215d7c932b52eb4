//! One snapshot: written under `.tmp-ID`, every site taken in turn, the manifest signed last,
//! renamed into place only when complete and fsynced. With `[encryption] local = true` the
//! snapshot is written encrypted into `backup_dir` as a store while `.tmp-ID` grows (see
//! [`super::upload`]), its index last, and `.tmp-ID` — the plaintext — is removed instead
//! (kept as a plaintext snapshot when the encrypted write fails: no data is lost).

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::engine::Engine;
use crate::error::{Error, Result, StepExt};
use crate::site::SiteSpec;
use crate::snapshot::follow::Tee;
use crate::snapshot::{self, archive, FileEntry, Manifest};

use super::super::Ctx;
use super::site::backup_site;
use super::upload::Uploader;
use super::{human_bytes, BackupReport, SiteBackup, SiteFailure};

/// Takes one snapshot of `specs`, of `kind` (the caller holds the lock). Used by `sp backup`,
/// by `sp site remove` for its final snapshot and by `sp restore --yes` for what it replaces.
pub async fn snapshot_sites(
    ctx: &Ctx,
    specs: &[SiteSpec],
    kind: snapshot::Kind,
) -> Result<BackupReport> {
    take_snapshot(ctx, specs, kind, None, false).await
}

/// Like [`snapshot_sites`], but a site that fails is left out (and named in the report) rather
/// than failing the snapshot; `failed` are sites already known to fail. A snapshot that leaves
/// any site out is `partial`. Fails only when no site at all could be taken. The snapshot is
/// also uploaded to every `[[destination]]` (see [`super::upload`]).
pub(super) async fn snapshot_sites_tolerant(
    ctx: &Ctx,
    specs: &[SiteSpec],
    kind: snapshot::Kind,
    failed: Vec<SiteFailure>,
) -> Result<BackupReport> {
    take_snapshot(ctx, specs, kind, Some(failed), true).await
}

async fn take_snapshot(
    ctx: &Ctx,
    specs: &[SiteSpec],
    kind: snapshot::Kind,
    tolerate: Option<Vec<SiteFailure>>,
    upload: bool,
) -> Result<BackupReport> {
    let started = Instant::now();
    let backup_dir = &ctx.config.backup_dir;
    std::fs::create_dir_all(backup_dir).map_err(|e| Error::io_path("create", backup_dir, e))?;
    clear_stale(backup_dir);
    let now = Utc::now();
    let mut id = snapshot::new_id(now);
    let mut n = 1;
    while backup_dir.join(&id).exists() {
        id = format!("{}-{n}", snapshot::new_id(now));
        n += 1;
    }
    let tmp = backup_dir.join(format!(".tmp-{id}"));
    std::fs::create_dir_all(tmp.join("sites")).map_err(|e| Error::io_path("create", &tmp, e))?;
    crate::fsutil::chmod(&tmp, 0o700)?;
    // With local encryption the plaintext is a working copy only, image archives included.
    let local = ctx.config.encryption.local;
    let images = if local {
        tmp.join("images")
    } else {
        backup_dir.join("images")
    };
    let uploader = Uploader::start(ctx, &id, upload, &images)?;
    let tolerant = tolerate.is_some();
    let result = write_snapshot(
        ctx,
        specs,
        kind,
        tolerate,
        &id,
        now,
        &tmp,
        started,
        uploader.as_ref(),
    )
    .await;
    match result {
        Ok(mut report) => {
            if let Some(u) = uploader {
                let uploads = u.finish(report.dir.clone()).await;
                report.uploads = uploads.remote;
                if let Some(l) = uploads.local {
                    let dir = backup_dir.join(&id);
                    if let Some(e) = l.error {
                        // The complete, signed plaintext snapshot is kept rather than lost.
                        discard_stored(ctx, &id);
                        keep_plaintext(backup_dir, &tmp, &dir)?;
                        let msg = format!(
                            "the local encrypted copy of snapshot {id} failed ({e}); the plaintext snapshot was kept in {} instead — fix that and run `sp backup` again (`sp prune` ages the plaintext one out)",
                            dir.display()
                        );
                        report.dir = dir;
                        report.seconds = started.elapsed().as_secs_f64();
                        if tolerant {
                            report.local_error = Some(msg);
                            return Ok(report);
                        }
                        return Err(Error::Other(msg));
                    }
                    // The encrypted snapshot is durable before its plaintext working copy goes.
                    for d in [dir.join("sites"), dir.clone(), backup_dir.join("images")] {
                        if d.is_dir() {
                            snapshot::sync_dir(&d)?;
                        }
                    }
                    snapshot::sync_dir(backup_dir)?;
                    let _ = std::fs::remove_dir_all(&tmp);
                    report.dir = dir;
                }
                report.seconds = started.elapsed().as_secs_f64();
            }
            Ok(report)
        }
        Err(e) => {
            if local {
                // Nothing may write into backup_dir once the partial snapshot goes.
                if let Some(u) = uploader {
                    u.abandon().await;
                }
                discard_stored(ctx, &id);
            }
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Puts the complete plaintext working copy `tmp` into place as snapshot `dir` (when its
/// encrypted copy failed): renamed, its image archives moved to `backup_dir/images` (left in
/// the snapshot's `images/` when they cannot be), everything fsynced.
fn keep_plaintext(backup_dir: &Path, tmp: &Path, dir: &Path) -> Result<()> {
    std::fs::rename(tmp, dir).map_err(|e| {
        Error::io_path(
            "keep the plaintext snapshot (its encrypted copy failed); it is still in",
            tmp,
            e,
        )
    })?;
    let held = dir.join("images");
    let images = backup_dir.join("images");
    if let Ok(entries) = std::fs::read_dir(&held) {
        let _ = std::fs::create_dir_all(&images);
        for e in entries.flatten() {
            let to = images.join(e.file_name());
            if to.exists() {
                let _ = std::fs::remove_file(e.path());
            } else if let Err(err) = std::fs::rename(e.path(), &to) {
                tracing::warn!("image archive left in {}: {err}", held.display());
            }
        }
        let _ = std::fs::remove_dir(&held);
        if images.is_dir() {
            snapshot::sync_dir(&images)?;
        }
    }
    snapshot::sync_dir(dir)?;
    snapshot::sync_dir(backup_dir)
}

/// Removes what the encrypted store holds of snapshot `id`, which never got its index.
fn discard_stored(ctx: &Ctx, id: &str) {
    let dir = ctx.config.backup_dir.join(id);
    if !dir.join(crate::store::offsite::INDEX).exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes `.tmp-*` folders, and encrypted snapshots that never got their index: with the
/// lock held, they can only be left by a killed backup. And the staging folders of a restore
/// or drill that was killed.
fn clear_stale(backup_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(backup_dir) {
        for e in entries.flatten() {
            let p = e.path();
            let unfinished = e.file_name().to_string_lossy().starts_with(".tmp-")
                || (snapshot::is_stored_folder(&p)
                    && !p.join(crate::store::offsite::INDEX).exists());
            if unfinished {
                tracing::info!("removing the unfinished snapshot {}", p.display());
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    crate::ops::restore::fetch::clear_stale(backup_dir);
}

#[allow(clippy::too_many_arguments)]
async fn write_snapshot(
    ctx: &Ctx,
    specs: &[SiteSpec],
    kind: snapshot::Kind,
    tolerate: Option<Vec<SiteFailure>>,
    id: &str,
    now: DateTime<Utc>,
    tmp: &Path,
    started: Instant,
    uploader: Option<&Uploader>,
) -> Result<BackupReport> {
    let level = ctx.config.backup.zstd_level;
    let threads = match ctx.config.backup.zstd_threads {
        0 => crate::cores() as u32,
        n => n,
    };
    let mut files = Vec::new();

    // The host: config and registry credentials.
    let host_items: Vec<(PathBuf, &str)> = [
        (ctx.config_path.clone(), "etc/config.toml"),
        (ctx.credentials_path(), "etc/registries.toml"),
    ]
    .into_iter()
    .filter(|(p, _)| p.exists())
    .collect();
    let host_file = tmp.join(snapshot::HOST_ARCHIVE);
    let (size, sha) = (|| -> std::io::Result<(u64, String)> {
        let enc = archive::zstd_file(&host_file, level, 0, Default::default())?;
        let mut b = tar::Builder::new(enc);
        b.mode(tar::HeaderMode::Complete);
        for (src, name) in &host_items {
            b.append_path_with_name(src, name)?;
        }
        archive::finish_zstd_file(b.into_inner()?)
    })()
    .map_err(|e| Error::io("write host.tar.zst", e))?;
    files.push(FileEntry {
        path: snapshot::HOST_ARCHIVE.into(),
        size,
        sha256: sha,
    });
    if let Some(u) = uploader {
        u.send(tmp, snapshot::HOST_ARCHIVE);
    }

    // The proxy's certificates and account keys, so a new host serves them without asking
    // the CA again (its config and autosave are regenerated, not kept).
    let proxy = crate::ops::proxy::ProxyPaths::new(ctx);
    if proxy.data().is_dir() {
        let out = tmp.join(snapshot::PROXY_ARCHIVE);
        let root = proxy.root.clone();
        let (size, sha) = (|| -> std::io::Result<(u64, String)> {
            let enc = archive::zstd_file(&out, level, 0, Default::default())?;
            let (enc, _) = crate::snapshot::walk::write_tree(&root, &["etc", "config"], enc)?;
            archive::finish_zstd_file(enc)
        })()
        .map_err(|e| Error::io("write proxy.tar.zst", e))?;
        files.push(FileEntry {
            path: snapshot::PROXY_ARCHIVE.into(),
            size,
            sha256: sha,
        });
    }

    let needs_engine = ctx.config.backup.keep_images
        || specs
            .iter()
            .any(|s| !s.backup.pre_command.is_empty() || s.backup.pause);
    let engine = if needs_engine {
        Some(ctx.engine().await?)
    } else {
        None
    };
    let db = if specs.iter().any(|s| s.database.enabled) {
        Some(ctx.db()?)
    } else {
        None
    };
    let dumper = match &db {
        Some(db) => Some(std::sync::Arc::new(db.dump_client(&ctx.config.state_dir)?)),
        None => None,
    };

    let mut sites = Vec::new();
    let mut entries = Vec::new();
    let mut failed = tolerate.clone().unwrap_or_default();
    for spec in specs {
        let t0 = Instant::now();
        // Each destination uploads the site's archive and dump while they are written.
        let mut follows = Vec::new();
        let mut tees = (Tee::default(), Tee::default());
        if let Some(u) = uploader {
            let (tee, f) = u.follow(tmp, &format!("sites/{}.tar.zst", spec.name))?;
            (tees.0, follows) = (tee, vec![f]);
            if spec.database.enabled {
                let (tee, f) = u.follow(tmp, &format!("sites/{}.sql.zst", spec.name))?;
                tees.1 = tee;
                follows.push(f);
            }
        }
        let taken = backup_site(
            ctx,
            spec,
            engine.as_ref(),
            db.as_ref(),
            dumper.clone(),
            tmp,
            level,
            threads,
            tees,
        )
        .await;
        let (entry, site_files, warnings) = match (taken, &tolerate) {
            (Ok(t), _) => t,
            (Err(e), _) if matches!(e.root(), Error::Interrupted(_)) => return Err(e),
            (Err(e), None) => return Err(e),
            (Err(e), Some(_)) => {
                // Left out: none of its files stay in the snapshot.
                for ext in ["tar.zst", "sql.zst"] {
                    let _ = std::fs::remove_file(tmp.join(format!("sites/{}.{ext}", spec.name)));
                }
                let f = SiteFailure::of(&spec.name, &e);
                ctx.note(&format!("{f}; the other sites are still backed up"));
                failed.push(f);
                continue;
            }
        };
        let files_bytes = site_files.first().map(|f| f.size).unwrap_or(0);
        let dump_bytes = site_files.get(1).map(|f| f.size).unwrap_or(0);
        let report = SiteBackup {
            name: spec.name.clone(),
            files_bytes,
            dump_bytes,
            tables: entry.database.as_ref().map(|d| d.tables.len()).unwrap_or(0),
            seconds: t0.elapsed().as_secs_f64(),
            warnings,
        };
        ctx.note(&format!(
            "{}: files {}, dump {} in {:.1}s",
            spec.name,
            human_bytes(files_bytes),
            human_bytes(dump_bytes),
            report.seconds
        ));
        sites.push(report);
        for f in follows {
            f.done();
        }
        files.extend(site_files);
        entries.push(entry);
    }
    if let Some(db) = db {
        db.close().await;
    }
    if entries.is_empty() && !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|f| f.to_string()).collect();
        return Err(Error::Other(format!(
            "no site could be backed up: {}",
            list.join("; ")
        )));
    }
    let kind = if failed.is_empty() {
        kind
    } else {
        snapshot::Kind::Partial
    };
    let proxy_image = crate::ops::proxy::ImageState::load(&proxy).map(|st| st.id);
    if let (true, Some(engine)) = (ctx.config.backup.keep_images, &engine) {
        if let Some(id) = &proxy_image {
            keep_image(ctx, engine, id, level, tmp)
                .await
                .step("proxy", "image archive")?;
        }
        for e in &entries {
            if let Some(id) = &e.image_id {
                keep_image(ctx, engine, id, level, tmp)
                    .await
                    .step(&e.name, "image archive")?;
            }
        }
    }

    let manifest = Manifest {
        format: 1,
        id: id.to_string(),
        kind,
        sp_version: env!("CARGO_PKG_VERSION").to_string(),
        host: crate::hook::hostname(),
        instance: ctx.config.instance.clone(),
        created: now,
        duration_ms: started.elapsed().as_millis() as u64,
        sites: entries,
        files,
        failed: failed.iter().map(|f| f.to_string()).collect(),
        proxy_image_id: proxy_image,
    };
    let (key, made) = crate::key::HostKey::load_or_create(&ctx.config.state_dir)?;
    if made {
        ctx.note(&format!(
            "made this host's snapshot key ({}); keep a copy off the host: `sp key export`",
            key.public()
        ));
    }
    snapshot::write_manifest(tmp, &manifest, &key)?;
    snapshot::sync_dir(&tmp.join("sites"))?;
    snapshot::sync_dir(tmp)?;
    let dir = if ctx.config.encryption.local {
        // The encrypted store's worker finishes from the working copy; it goes after.
        tmp.to_path_buf()
    } else {
        let dir = ctx.config.backup_dir.join(id);
        std::fs::rename(tmp, &dir).map_err(|e| Error::io_path("rename into place", &dir, e))?;
        snapshot::sync_dir(&ctx.config.backup_dir)?;
        dir
    };
    Ok(BackupReport {
        id: id.to_string(),
        kind,
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        dir,
        sites,
        failed,
        seconds: started.elapsed().as_secs_f64(),
        uploads: Vec::new(),
        local_error: None,
    })
}

/// Saves an image into `backup_dir/images` unless it is there already. With
/// `[encryption] local = true` into the working copy's `images/` instead (`tmp`), and only
/// when the encrypted store does not hold it yet (a plaintext archive of it from before is
/// linked in rather than saved again): the encrypted store gets it from there.
async fn keep_image(ctx: &Ctx, engine: &Engine, id: &str, level: i32, tmp: &Path) -> Result<()> {
    let kept = super::super::provision::image_archive(ctx, id);
    let path = if ctx.config.encryption.local {
        let hex = id.trim_start_matches("sha256:");
        let local = crate::store::Destination::local(&ctx.config);
        let object = crate::store::offsite::image_object(hex, true);
        if crate::store::blocking(|| {
            crate::store::offsite::held_image(local.store.as_ref(), id, &object)
        })?
        .is_some()
        {
            return Ok(());
        }
        let path = tmp.join(format!("images/{hex}.tar.zst"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
        }
        if kept.exists()
            && (std::fs::hard_link(&kept, &path).is_ok() || std::fs::copy(&kept, &path).is_ok())
        {
            return Ok(());
        }
        path
    } else {
        kept
    };
    if path.exists() {
        return Ok(());
    }
    if !engine.has_image(id).await {
        tracing::warn!("image {id} is not on this host; no image archive kept");
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
    }
    ctx.note(&format!("keeping image {}", &id[..id.len().min(19)]));
    engine.save_image(id, &path, level).await
}
