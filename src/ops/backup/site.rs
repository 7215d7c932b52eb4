//! One site into a snapshot: its pre-backup command, a pause if asked, then its files (walked
//! through open directory descriptors) and its database dump at the same time, each straight
//! into zstd (and from there to the uploads following them, see [`Tee`]).

use std::path::Path;

use crate::db::Db;
use crate::engine::{Engine, Role};
use crate::error::{Error, Result, StepExt};
use crate::site::SiteSpec;
use crate::snapshot::follow::Tee;
use crate::snapshot::{archive, DatabaseEntry, FileEntry, SiteEntry, TableEntry};

use super::super::Ctx;

#[allow(clippy::too_many_arguments)]
pub(super) async fn backup_site(
    ctx: &Ctx,
    spec: &SiteSpec,
    engine: Option<&Engine>,
    db: Option<&Db>,
    dumper: Option<std::sync::Arc<crate::db::DumpClient>>,
    tmp: &Path,
    level: i32,
    threads: u32,
    (files_tee, dump_tee): (Tee, Tee),
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
    // What the progress bar expects: the tree as tar makes it, and the server's size of the data.
    let db_bytes = match (db, &tables) {
        (Some(db), Some(_)) => db.data_bytes(name).await.unwrap_or(0),
        _ => 0,
    };
    let tree = crate::fsutil::tree_bytes(&ctx.paths(name).root, &["tmp", ".sp-restore"]);
    ctx.progress_total(name, tree.unwrap_or(0) + db_bytes);
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
                let enc = archive::zstd_file(&dump_path, level, 0, dump_tee)
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
                let enc = archive::zstd_file(&archive_path, level, threads, files_tee)?;
                // tar writes 512-byte headers and 8 KiB chunks; zstd wants big ones.
                let buf = archive::Counting::new(
                    std::io::BufWriter::with_capacity(1 << 20, enc),
                    c_files,
                );
                let (buf, skipped) =
                    crate::snapshot::walk::write_tree(&root, &["tmp", ".sp-restore"], buf)?;
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
