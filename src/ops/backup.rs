//! `sp backup [--site NAME]...`: one snapshot of the host.
//!
//! 1. take the lock; clear `.tmp-*` folders left by a killed backup;
//! 2. write `host.tar.zst` (config, registry credentials) into `.tmp-ID/`;
//! 3. per site: run its pre-backup command, pause it if asked, then archive `/sites/NAME`
//!    (without `tmp/`) and dump its database **at the same time**, each straight into zstd;
//! 4. write `manifest.json` (+ its checksum) last, fsync, rename `.tmp-ID` → `ID`.
//!
//! Any failure removes the temporary folder, leaves earlier snapshots alone, is recorded in
//! `STATE_DIR/backup-status.json` (shown by `sp status`), pings the failure hook, and names
//! the site and the step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::engine::{Engine, Role};
use crate::error::{Error, Result, StepExt};
use crate::site::SiteSpec;
use crate::snapshot::{self, archive, DatabaseEntry, FileEntry, Manifest, SiteEntry, TableEntry};

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
    let result = if specs.is_empty() && !unreadable.is_empty() {
        Err(Error::Other(format!(
            "no site could be backed up: {}",
            unreadable
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )))
    } else {
        snapshot_sites_tolerant(ctx, &specs, kind, unreadable.clone()).await
    };
    let mut status = BackupStatus::load(ctx);
    let now = Utc::now();
    status.last_attempt = Some(now);
    let failure = match &result {
        Ok(r) => {
            status.last_success = Some(now);
            status.last_snapshot = Some(r.id.clone());
            status.failed_sites = r.failed.clone();
            (!r.failed.is_empty()).then(|| {
                status.last_failure = Some(now);
                status.last_error = Some(format!(
                    "snapshot {} left out: {}",
                    r.id,
                    r.failed
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                (Some(r.id.clone()), r.failed.clone(), None)
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
            if let Some(url) = &ctx.config.backup.on_failure_url {
                let body = serde_json::json!({
                    "host": crate::hook::hostname(),
                    "instance": ctx.config.instance,
                    "snapshot": id,
                    "failed": failed,
                    "error": error,
                });
                crate::hook::call(url, Some(body)).await;
            }
        }
    }
    result
}

/// Takes one snapshot of `specs`, of `kind` (the caller holds the lock). Used by `sp backup`,
/// by `sp site remove` for its final snapshot and by `sp restore --yes` for what it replaces.
pub async fn snapshot_sites(
    ctx: &Ctx,
    specs: &[SiteSpec],
    kind: snapshot::Kind,
) -> Result<BackupReport> {
    take_snapshot(ctx, specs, kind, None).await
}

/// Like [`snapshot_sites`], but a site that fails is left out (and named in the report) rather
/// than failing the snapshot; `failed` are sites already known to fail. A snapshot that leaves
/// any site out is `partial`. Fails only when no site at all could be taken.
async fn snapshot_sites_tolerant(
    ctx: &Ctx,
    specs: &[SiteSpec],
    kind: snapshot::Kind,
    failed: Vec<SiteFailure>,
) -> Result<BackupReport> {
    take_snapshot(ctx, specs, kind, Some(failed)).await
}

async fn take_snapshot(
    ctx: &Ctx,
    specs: &[SiteSpec],
    kind: snapshot::Kind,
    tolerate: Option<Vec<SiteFailure>>,
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
    let result = write_snapshot(ctx, specs, kind, tolerate, &id, now, &tmp, started).await;
    match result {
        Ok(report) => Ok(report),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Removes `.tmp-*` folders: with the lock held, they can only be left by a killed backup.
fn clear_stale(backup_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(backup_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                tracing::info!("removing the unfinished snapshot {}", e.path().display());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
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
        let enc = archive::zstd_file(&host_file, level, 0)?;
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
        let taken = backup_site(
            ctx,
            spec,
            engine.as_ref(),
            db.as_ref(),
            dumper.clone(),
            tmp,
            level,
            threads,
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
    if let (true, Some(engine)) = (ctx.config.backup.keep_images, &engine) {
        for e in &entries {
            if let Some(id) = &e.image_id {
                keep_image(ctx, engine, id, level)
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
    let dir = ctx.config.backup_dir.join(id);
    std::fs::rename(tmp, &dir).map_err(|e| Error::io_path("rename into place", &dir, e))?;
    snapshot::sync_dir(&ctx.config.backup_dir)?;
    Ok(BackupReport {
        id: id.to_string(),
        kind,
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        dir,
        sites,
        failed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn backup_site(
    ctx: &Ctx,
    spec: &SiteSpec,
    engine: Option<&Engine>,
    db: Option<&Db>,
    dumper: Option<std::sync::Arc<crate::db::DumpClient>>,
    tmp: &Path,
    level: i32,
    threads: u32,
) -> Result<(SiteEntry, Vec<FileEntry>, Vec<String>)> {
    let name = spec.name.as_str();
    let state = ctx.deploy_state(name)?;
    let mut running = None;
    if let Some(engine) = engine {
        for mut c in engine
            .list(&ctx.config.instance, Some(name), Some(Role::Web))
            .await?
        {
            // Left paused by a backup that was killed (we hold the lock: no other has it).
            if c.state == "paused" {
                engine.unpause(&c.id).await.step(name, "unpause")?;
                c.state = "running".into();
            }
            if c.running() && running.is_none() {
                running = Some(c);
            }
        }
    }
    if let (Some(engine), false) = (engine, spec.backup.pre_command.is_empty()) {
        let c = running.as_ref().ok_or_else(|| {
            Error::Other(
                "the site's container is not running, so its pre-backup command cannot run".into(),
            )
            .at_step(name, "pre-backup")
        })?;
        let mut out = Vec::new();
        let mut err = Vec::new();
        let limit = crate::config::parse_duration(&ctx.config.backup.pre_command_timeout)
            .map_err(Error::Invalid)?;
        let user = format!("{0}:{0}", spec.uid);
        let run = engine.exec(
            &c.id,
            &spec.backup.pre_command,
            Some(&user),
            &mut out,
            &mut err,
        );
        let code = match tokio::time::timeout(limit, run).await {
            Ok(r) => r.step(name, "pre-backup")?,
            Err(_) => {
                return Err(Error::Other(format!(
                    "pre-backup command still running after {}s (backup.pre_command_timeout)",
                    limit.as_secs()
                ))
                .at_step(name, "pre-backup"))
            }
        };
        if code != 0 {
            let msg = String::from_utf8_lossy(&err);
            return Err(Error::Other(format!(
                "pre-backup command exited with code {code}: {}",
                crate::site::one_line(&msg)
            ))
            .at_step(name, "pre-backup"));
        }
    }
    let tables = match (db, spec.database.enabled) {
        (Some(db), true) => Some(db.tables(name).await.step(name, "database")?),
        _ => None,
    };
    let paused = match (engine, &running, spec.backup.pause) {
        (Some(engine), Some(c), true) => {
            engine.pause(&c.id).await.step(name, "pause")?;
            Some(c.id.clone())
        }
        _ => None,
    };

    let archive_rel = format!("sites/{name}.tar.zst");
    let dump_rel = format!("sites/{name}.sql.zst");
    let root = ctx.paths(name).root;
    let archive_path = tmp.join(&archive_rel);
    let dump_path = tmp.join(&dump_rel);
    let db_name = spec.database.enabled.then(|| name.to_string());
    // Bytes read from the site (files and dump, before compression), for the progress line.
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (c_dump, c_files) = (counter.clone(), counter.clone());
    let work = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let dump = s.spawn(|| -> Result<Option<(u64, String)>> {
                let (Some(dumper), Some(db_name)) = (dumper.as_ref(), db_name.as_ref()) else {
                    return Ok(None);
                };
                // Compressed in this thread: the server's dump rate is the limit, and
                // the file archive gets the zstd workers.
                let enc = archive::zstd_file(&dump_path, level, 0)
                    .map_err(|e| Error::io_path("create", &dump_path, e))?;
                let mut buf =
                    archive::Counting::new(std::io::BufWriter::with_capacity(1 << 20, enc), c_dump);
                dumper.dump(db_name, &mut buf)?;
                let enc = buf
                    .into_inner()
                    .into_inner()
                    .map_err(|e| Error::io_path("write", &dump_path, e.into_error()))?;
                let done = archive::finish_zstd_file(enc)
                    .map_err(|e| Error::io_path("write", &dump_path, e))?;
                Ok(Some(done))
            });
            let files = (|| -> std::io::Result<((u64, String), Vec<String>)> {
                let enc = archive::zstd_file(&archive_path, level, threads)?;
                // tar writes 512-byte headers and 8 KiB chunks; zstd wants big ones.
                let buf = archive::Counting::new(
                    std::io::BufWriter::with_capacity(1 << 20, enc),
                    c_files,
                );
                let (buf, skipped) =
                    snapshot::walk::write_tree(&root, &["tmp", ".sp-restore"], buf)?;
                let enc = buf.into_inner().into_inner().map_err(|e| e.into_error())?;
                Ok((archive::finish_zstd_file(enc)?, skipped))
            })()
            .map_err(|e| Error::io(format!("archive {}", root.display()), e));
            let dump = dump
                .join()
                .unwrap_or_else(|_| Err(Error::Other("the dump thread panicked".into())));
            (files, dump)
        })
    });
    tokio::pin!(work);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    let work = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => ctx.progress(name, counter.load(std::sync::atomic::Ordering::Relaxed), false),
            _ = crate::interrupt::wait() => {
                // Never leave the site frozen: the snapshot is abandoned, the site runs on.
                if let (Some(engine), Some(id)) = (engine, &paused) {
                    engine.unpause(id).await.step(name, "unpause")?;
                }
                return Err(Error::Interrupted(
                    "interrupted; the unfinished snapshot was discarded".into(),
                )
                .at_step(name, "files"));
            }
        }
    };
    ctx.progress(
        name,
        counter.load(std::sync::atomic::Ordering::Relaxed),
        true,
    );
    if let (Some(engine), Some(id)) = (engine, &paused) {
        engine.unpause(id).await.step(name, "unpause")?;
    }
    let (files, dump) =
        work.map_err(|e| Error::Other(format!("backup task failed: {e}")).at_step(name, "files"))?;
    let ((files_size, files_sha), skipped) = files.step(name, "files")?;
    let dump = dump.step(name, "database dump")?;
    let mut out = vec![FileEntry {
        path: archive_rel.clone(),
        size: files_size,
        sha256: files_sha,
    }];
    let database = match (dump, tables) {
        (Some((size, sha)), Some(tables)) => {
            out.push(FileEntry {
                path: dump_rel.clone(),
                size,
                sha256: sha,
            });
            Some(DatabaseEntry {
                name: name.to_string(),
                dump: dump_rel,
                tables: tables
                    .into_iter()
                    .map(|(name, kind)| TableEntry { name, kind })
                    .collect(),
            })
        }
        _ => None,
    };
    Ok((
        SiteEntry {
            name: name.to_string(),
            image: state.current,
            image_id: state.current_id,
            uid: spec.uid,
            archive: archive_rel,
            database,
        },
        out,
        skipped,
    ))
}

/// Saves an image into `backup_dir/images` unless it is there already.
async fn keep_image(ctx: &Ctx, engine: &Engine, id: &str, level: i32) -> Result<()> {
    let path = super::provision::image_archive(ctx, id);
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
