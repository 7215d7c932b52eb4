//! `sp drill [ID|latest] [--from NAME|URL|DIR] [--identity FILE]`: prove a snapshot restores,
//! without touching the live sites.
//!
//! 0. from a destination, fetch (and decrypt) the snapshot into a staging folder first, as
//!    `sp restore` does (see [`super::restore::fetch`]);
//! 1. verify the manifest and the dumps' checksums (as `sp restore` does; each site archive is
//!    proven as it unpacks, see [`snapshot::stage`]);
//! 2. restore each site into a scratch namespace with `sp restore`'s own code (the same
//!    unpack, load, user, image and container steps, so a drill cannot pass where a restore
//!    fails): temporary names (`drillTAGn`) restored as clones (own uid and password, no
//!    domains), databases, users and directories (`STATE_DIR/drill-TAG`), containers labelled
//!    with a drill instance on networks of their own (one per site, as always), each started
//!    and health-checked as a restore does;
//! 3. check that each table and view the manifest lists is there and readable;
//! 4. record the result (`sp status` shows it as the last verified restore) and remove every
//!    trace, whether the drill passed or not.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::snapshot::{self, SiteEntry};

use super::{provision, Ctx};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteDrill {
    pub site: String,
    pub tables_checked: usize,
    pub healthy: bool,
    pub faults: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub id: String,
    pub ok: bool,
    pub time: DateTime<Utc>,
    pub seconds: f64,
    pub faults: Vec<String>,
    pub sites: Vec<SiteDrill>,
}

impl std::fmt::Display for DrillReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.sites {
            if s.faults.is_empty() {
                writeln!(
                    f,
                    "{}: ok ({} tables readable, healthy)",
                    s.site, s.tables_checked
                )?;
            } else {
                writeln!(f, "{}: FAILED: {}", s.site, s.faults.join("; "))?;
            }
        }
        for x in &self.faults {
            writeln!(f, "FAULT {x}")?;
        }
        write!(
            f,
            "drill of snapshot {}: {} in {:.1}s; scratch namespace removed",
            self.id,
            if self.ok { "passed" } else { "FAILED" },
            self.seconds
        )
    }
}

/// Where the last drill's result is kept.
pub fn status_path(ctx: &Ctx) -> PathBuf {
    ctx.config.state_dir.join("drill-status.json")
}

/// The last recorded drill, if any.
pub fn last(ctx: &Ctx) -> Option<DrillReport> {
    std::fs::read(status_path(ctx))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Options of `sp drill`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillOpts {
    /// Snapshot id, or `latest`.
    #[arg(default_value = "latest")]
    pub id: String,
    #[command(flatten)]
    pub source: super::source::SourceOpts,
}

/// What a drill needs before it starts: the snapshot staged and resolved, the lock held.
struct Prepared {
    _staged: super::restore::fetch::Staged,
    from: PathBuf,
    id: String,
    dir: PathBuf,
    _lock: crate::lock::HostLock,
    keyring: crate::key::Keyring,
}

async fn prepare(ctx: &Ctx, opts: &DrillOpts) -> Result<Prepared> {
    let (id, keys) = (opts.id.as_str(), &opts.source.keys);
    let staged = super::restore::fetch::stage(ctx, &opts.source, id, snapshot::Pick::Host).await?;
    let from = staged.dir.clone();
    let (id, dir) = snapshot::resolve(
        &from,
        staged.id.as_deref().unwrap_or(id),
        snapshot::Pick::Host,
    )?;
    let lock = ctx.lock(&format!("drill {id}"))?;
    let keyring = ctx.keyring(keys)?;
    Ok(Prepared {
        _staged: staged,
        from,
        id,
        dir,
        _lock: lock,
        keyring,
    })
}

/// Records a drill that could not even start (no identity for an encrypted `backup_dir`, no
/// such snapshot, a source out of reach) as a failed one: `sp status` and the failure hook
/// see it rather than an older drill that passed.
async fn record(ctx: &Ctx, report: &DrillReport) -> Result<()> {
    if let Ok(bytes) = serde_json::to_vec_pretty(report) {
        crate::fsutil::write_atomic(&status_path(ctx), &bytes, 0o644)?;
    }
    if !report.ok {
        ctx.report_failure(serde_json::json!({
            "drill": report.id,
            "faults": report.faults,
            "sites": report.sites.iter().filter(|s| !s.faults.is_empty()).map(|s| serde_json::json!({"site": s.site, "faults": s.faults})).collect::<Vec<_>>(),
        }))
        .await;
    }
    Ok(())
}

/// `sp drill`. A drill that fails before it starts is recorded as failed too (and its error
/// returned).
pub async fn run(ctx: &Ctx, opts: &DrillOpts) -> Result<DrillReport> {
    let started = Instant::now();
    let p = match prepare(ctx, opts).await {
        Ok(p) => p,
        Err(e) => {
            let report = DrillReport {
                id: opts.id.clone(),
                ok: false,
                time: Utc::now(),
                seconds: started.elapsed().as_secs_f64(),
                faults: vec![e.to_string()],
                sites: Vec::new(),
            };
            if let Err(w) = record(ctx, &report).await {
                tracing::warn!("cannot record the failed drill: {w}");
            }
            return Err(e);
        }
    };
    let (from, id, dir, keyring) = (
        p.from.clone(),
        p.id.clone(),
        p.dir.clone(),
        p.keyring.clone(),
    );
    let d = dir.clone();
    let verified = tokio::task::spawn_blocking(move || {
        snapshot::verify(&d, snapshot::Depth::BeforeRestore, &keyring)
    })
    .await
    .map_err(|e| Error::Other(format!("verify task failed: {e}")))?;
    let mut report = DrillReport {
        id: id.clone(),
        ok: false,
        time: Utc::now(),
        seconds: 0.0,
        faults: Vec::new(),
        sites: Vec::new(),
    };
    let manifest = match verified {
        Ok((m, faults)) => {
            report.faults = faults
                .iter()
                .map(|f| format!("{}: {}", f.file, f.problem))
                .collect();
            Some(m)
        }
        // A snapshot that does not authenticate is a failed drill too, recorded as one.
        Err(e) => {
            report.faults.push(e.to_string());
            None
        }
    };
    if let (true, Some(manifest)) = (report.faults.is_empty(), &manifest) {
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let scratch = ctx.config.state_dir.join(format!("drill-{tag}"));
        let mut cfg = ctx.config.clone();
        cfg.instance = format!("{}-drill-{tag}", ctx.config.instance);
        cfg.sites_dir = scratch.join("sites");
        cfg.backup_dir = from.clone();
        let dctx = ctx.with_config(cfg);
        let engine = ctx.engine().await?;
        let db = ctx.db()?;
        let names: Vec<String> = (0..manifest.sites.len())
            .map(|i| format!("drill{tag}{i}"))
            .collect();
        let result = drill_sites(&dctx, &engine, &db, &dir, manifest, &names).await;
        // Every trace goes, pass or fail.
        let cleanup = cleanup(&dctx, &engine, &db, &names, &scratch).await;
        db.close().await;
        match result {
            Ok(sites) => report.sites = sites,
            Err(e) => report.faults.push(e.to_string()),
        }
        if let Err(e) = cleanup {
            report.faults.push(format!("cleanup: {e}"));
        }
    }
    report.ok = report.faults.is_empty() && report.sites.iter().all(|s| s.faults.is_empty());
    report.seconds = started.elapsed().as_secs_f64();
    record(ctx, &report).await?;
    drop(p);
    Ok(report)
}

/// Restores every site into the scratch namespace `ctx` through `sp restore`'s own code,
/// then checks that each table and view the manifest lists is there and readable. The
/// container has passed its health check when the restore returns.
async fn drill_sites(
    ctx: &Ctx,
    engine: &Engine,
    db: &Db,
    dir: &Path,
    manifest: &snapshot::Manifest,
    names: &[String],
) -> Result<Vec<SiteDrill>> {
    let sites: Vec<(&SiteEntry, String)> =
        manifest.sites.iter().zip(names.iter().cloned()).collect();
    for (e, name) in &sites {
        ctx.note(&format!("drill: {} as {name}", e.name));
    }
    let restored = super::restore::restore_into(ctx, engine, db, manifest, dir, &sites).await?;
    let mut out = Vec::new();
    for ((e, name), r) in sites.iter().zip(restored) {
        let mut s = SiteDrill {
            site: e.name.clone(),
            tables_checked: 0,
            healthy: false,
            faults: Vec::new(),
        };
        match r {
            Err(err) => s.faults.push(format!("it does not restore: {err}")),
            Ok(r) => {
                // A site sp keeps stopped has no container to check.
                s.healthy = r.phases.iter().any(|p| p.name == "start");
                if let Some(dbe) = &e.database {
                    check_tables(db, name, dbe, &mut s).await?;
                }
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// Every table and view the manifest lists is in database `name` and can be read through.
async fn check_tables(
    db: &Db,
    name: &str,
    dbe: &snapshot::DatabaseEntry,
    s: &mut SiteDrill,
) -> Result<()> {
    let present: Vec<String> = db.tables(name).await?.into_iter().map(|(t, _)| t).collect();
    for t in &dbe.tables {
        if !present.contains(&t.name) {
            s.faults
                .push(format!("table {} is missing after the load", t.name));
            continue;
        }
        match db.count_rows(name, &t.name).await {
            Ok(_) => s.tables_checked += 1,
            Err(err) => s
                .faults
                .push(format!("table {} is not readable: {err}", t.name)),
        }
    }
    Ok(())
}

async fn cleanup(
    ctx: &Ctx,
    engine: &Engine,
    db: &Db,
    names: &[String],
    scratch: &Path,
) -> Result<()> {
    // Every step runs whatever failed before it; the failures are reported together.
    let mut failed: Vec<String> = Vec::new();
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            failed.push(e.to_string());
        }
    };
    let all = provision::Teardown {
        database: true,
        files: true,
    };
    for n in names {
        note(
            provision::teardown_site(ctx, engine, Some(db), n, all)
                .await
                .map(|_| ()),
        );
    }
    // Anything else the scratch instance holds (a container whose site is not known).
    match engine.list(&ctx.config.instance, None, None).await {
        Ok(list) => {
            for c in list {
                note(engine.remove(&c.id).await);
            }
        }
        Err(e) => note(Err(e)),
    }
    note(engine.remove_networks(&ctx.config.instance, None).await);
    if scratch.exists() {
        note(std::fs::remove_dir_all(scratch).map_err(|e| Error::io_path("delete", scratch, e)));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Other(failed.join("; ")))
    }
}
