//! `sp restore [ID|latest] [--site NAME]... [--as NEWNAME] [--from DIR] [--yes]`: bring sites
//! back from a snapshot — on a bare host, or next to the originals as a clone.
//!
//! 1. find the snapshot (in `--from DIR` or `backup_dir`); take the host lock;
//! 2. verify the manifest and the checksums of the dumps to load, **before changing
//!    anything** (each dump's trailer is checked as it loads; each site archive is hashed and
//!    checked member by member as it unpacks into a staging directory, see
//!    [`snapshot::Depth`] and [`snapshot::stage`]);
//! 3. plan: refuse sites, databases or containers that already exist unless `--yes` (then
//!    their current state is snapshotted first); a site this very snapshot was already
//!    restored to is skipped, one whose restore was interrupted is resumed;
//! 4. merge the registry credentials; on a whole-host restore, plan the host config
//!    (settings in the local config win), written once the first site's files are proven;
//! 5. per site, all sites at once: the files (unpacked into `SITES_DIR/.sp-staging-NAME-*`,
//!    renamed into place only once proven) ‖ the database (created and loaded), then the
//!    user with its original password, the image by its recorded digest (or from the image
//!    archive), and the container through the same code as `sp apply`. A site whose archive
//!    is refused or damaged leaves nothing behind (its database is dropped again), and the
//!    host config is written only once some site's files are proven.
//!
//! While a restore is under way each site directory carries a `.sp-restore` marker
//! (`ID running` / `ID done`) — before its files are in place, `SITES_DIR/.sp-restore-NAME`
//! stands in for it — which is what makes a killed restore safe to run again; the markers go
//! when the whole restore has succeeded.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::db::{generate_password, Db, DumpClient};
use crate::engine::Engine;
use crate::error::{Error, Result, StepExt};
use crate::site::{validate_name, DeployState, SitePaths, SiteSpec};
use crate::snapshot::{self, SiteEntry};

use super::{apply, provision, Ctx};

const MARKER: &str = ".sp-restore";

/// Connections that load one site's dump at once (a site's tables load side by side).
pub const LOAD_CONNECTIONS: usize = 2;

#[derive(Debug, Clone, Default)]
pub struct RestoreOpts {
    /// Snapshot id or `latest`.
    pub id: String,
    /// Only these sites (all by default).
    pub sites: Vec<String>,
    /// Restore the one site under this name, database and user.
    pub as_name: Option<String>,
    /// Where the snapshots are (default: backup_dir).
    pub from: Option<PathBuf>,
    /// Replace what exists (after snapshotting it).
    pub yes: bool,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct SiteRestore {
    pub site: String,
    /// The site's name in the snapshot (differs with --as).
    pub from_site: String,
    /// Already restored from this snapshot by an earlier run.
    pub skipped: bool,
    pub phases: Vec<Phase>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub id: String,
    pub from: PathBuf,
    pub verify_seconds: f64,
    pub host_config: bool,
    /// Snapshot taken of what --yes replaced.
    pub safety_snapshot: Option<String>,
    pub sites: Vec<SiteRestore>,
    /// Wall time of the whole restore: the measured RTO.
    pub seconds: f64,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "snapshot {} from {}", self.id, self.from.display())?;
        writeln!(
            f,
            "checked the manifest and the dumps' checksums in {:.1}s (each archive was checked as it unpacked)",
            self.verify_seconds
        )?;
        if let Some(s) = &self.safety_snapshot {
            writeln!(f, "snapshot of the replaced state: {s}")?;
        }
        if self.host_config {
            writeln!(f, "host config and registry credentials restored")?;
        }
        for s in &self.sites {
            let from = if s.from_site != s.site {
                format!(" (from {})", s.from_site)
            } else {
                String::new()
            };
            if s.skipped {
                writeln!(f, "{}{from}: already restored from this snapshot", s.site)?;
                continue;
            }
            let phases: Vec<String> = s
                .phases
                .iter()
                .map(|p| format!("{} {:.1}s", p.name, p.seconds))
                .collect();
            writeln!(
                f,
                "{}{from}: {:.1}s ({})",
                s.site,
                s.seconds,
                phases.join(", ")
            )?;
        }
        write!(
            f,
            "restored {} site(s) in {:.1}s",
            self.sites.len(),
            self.seconds
        )
    }
}

/// What to do for one site.
struct Target<'a> {
    entry: &'a SiteEntry,
    name: String,
    skip: bool,
}

/// `sp restore`.
pub async fn run(ctx: &Ctx, opts: &RestoreOpts) -> Result<RestoreReport> {
    let started = Instant::now();
    let from = opts
        .from
        .clone()
        .unwrap_or_else(|| ctx.config.backup_dir.clone());
    let id = if opts.id.is_empty() {
        "latest"
    } else {
        opts.id.as_str()
    };
    let (id, dir) = snapshot::resolve(&from, id)?;
    if let Some(n) = &opts.as_name {
        validate_name(n)?;
        if opts.sites.len() != 1 {
            return Err(Error::Invalid(
                "--as restores one site: name it with --site".into(),
            ));
        }
    }
    for s in &opts.sites {
        validate_name(s)?;
    }
    let mut wanted = opts.sites.clone();
    wanted.sort();
    wanted.dedup();
    let _lock = ctx.lock(&format!("restore {id}"))?;

    // 2. Verify before anything changes.
    ctx.note(&format!("verifying snapshot {id}"));
    let t = Instant::now();
    let d = dir.clone();
    let only = wanted.clone();
    let (manifest, faults) = tokio::task::spawn_blocking(move || {
        snapshot::verify_sites(&d, snapshot::Depth::BeforeRestore, &only)
    })
    .await
    .map_err(|e| Error::Other(format!("verify task failed: {e}")))??;
    if !faults.is_empty() {
        let list: Vec<String> = faults
            .iter()
            .map(|f| format!("{}: {}", f.file, f.problem))
            .collect();
        return Err(Error::Other(format!(
            "snapshot {id} failed verification; nothing was restored: {}",
            list.join("; ")
        )));
    }
    let verify_seconds = t.elapsed().as_secs_f64();

    // 3. Plan.
    let entries: Vec<&SiteEntry> = if opts.sites.is_empty() {
        manifest.sites.iter().collect()
    } else {
        wanted
            .iter()
            .map(|n| {
                manifest
                    .sites
                    .iter()
                    .find(|s| &s.name == n)
                    .ok_or_else(|| Error::NotFound(format!("snapshot {id} has no site {n:?}")))
            })
            .collect::<Result<_>>()?
    };
    let whole_host = opts.sites.is_empty() && opts.as_name.is_none();

    // 4. The host config decides where sites live: plan with it, write it only once the
    // plan holds.
    let mut host = plan_host(ctx, &dir, whole_host)?;
    let ctx = match &host.config {
        Some((_, cfg)) => ctx.with_config(cfg.clone()),
        None => ctx.reload()?,
    };
    let engine = ctx.engine().await?;
    let db = ctx.db()?;
    let mut targets = Vec::new();
    let mut conflicts = Vec::new();
    for e in &entries {
        let name = opts.as_name.clone().unwrap_or_else(|| e.name.clone());
        let paths = ctx.paths(&name);
        let marker = read_marker(&paths);
        let ours = marker.as_ref().map(|(m, _)| m == &id).unwrap_or(false);
        let done = ours && marker.as_ref().map(|(_, s)| s == "done").unwrap_or(false);
        if !ours {
            if paths.root.exists() {
                conflicts.push((name.clone(), format!("{} exists", paths.root.display())));
            }
            if e.database.is_some() && db.database_exists(&name).await? {
                conflicts.push((name.clone(), format!("database {name} exists")));
            }
            if !engine
                .list(&ctx.config.instance, Some(&name), None)
                .await?
                .is_empty()
            {
                conflicts.push((name.clone(), "its containers exist".into()));
            }
        }
        targets.push(Target {
            entry: e,
            name,
            skip: done,
        });
    }
    let mut safety_snapshot = None;
    if !conflicts.is_empty() {
        if !opts.yes {
            let list: Vec<String> = conflicts.iter().map(|(n, w)| format!("{n}: {w}")).collect();
            return Err(Error::Conflict(format!(
                "restoring would replace existing state ({}); nothing was restored — pass --yes to replace it (its current state is snapshotted first)",
                list.join("; ")
            )));
        }
        let mut names: Vec<String> = conflicts.iter().map(|(n, _)| n.clone()).collect();
        names.dedup();
        // Only what can be snapshotted first may be replaced.
        let mut specs = Vec::new();
        for n in &names {
            match ctx.site(n) {
                Ok(spec) => specs.push(spec),
                Err(e) => {
                    return Err(Error::Conflict(format!(
                        "{n} exists but cannot be snapshotted before it is replaced ({e}); nothing was restored — purge or move it first"
                    )))
                }
            }
        }
        if !specs.is_empty() {
            let r = super::backup::snapshot_sites(&ctx, &specs)
                .await
                .step(&names.join(","), "snapshot before replacing")?;
            ctx.note(&format!("snapshot of the current state: {}", r.id));
            safety_snapshot = Some(r.id);
        }
        for n in &names {
            for c in engine.list(&ctx.config.instance, Some(n), None).await? {
                engine.remove(&c.id).await.step(n, "remove container")?;
            }
            let root = ctx.paths(n).root;
            if root.exists() {
                std::fs::remove_dir_all(&root)
                    .map_err(|e| Error::io_path("delete", &root, e))
                    .step(n, "replace")?;
            }
        }
    }

    // Pulls need the credentials while the files unpack; the config waits for proven files.
    host.apply_credentials(&ctx)?;
    let config_text = host.config.take().map(|(text, _)| text);

    // 5. The sites' files and data, about one site per core at a time, in order (each loads
    // its rows over several connections already); a site whose data is in starts its
    // container while the next ones load, rather than every site starting at the very end.
    let client = std::sync::Arc::new(db.dump_client(&ctx.config.state_dir)?);
    // Image archives live beside the snapshots we restore from.
    let mut rcfg = ctx.config.clone();
    rcfg.backup_dir = from.clone();
    let rctx = ctx.with_config(rcfg);
    let run = Run {
        ctx: &rctx,
        engine: &engine,
        db: &db,
        client,
        data_slots: tokio::sync::Semaphore::new(crate::cores()),
        id: &id,
        dir: &dir,
        files: &manifest.files,
        config: std::sync::Mutex::new(config_text),
        config_written: std::sync::atomic::AtomicBool::new(false),
        files_failed: std::sync::atomic::AtomicBool::new(false),
    };
    let results =
        futures_util::future::join_all(targets.iter().map(|t| restore_site(&run, t))).await;
    if !run.files_failed.load(std::sync::atomic::Ordering::SeqCst) {
        run.publish_config()?;
    }
    let host_config = run.config_written.load(std::sync::atomic::Ordering::SeqCst);
    drop(run);
    db.close().await;
    let mut sites = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => sites.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        // Done: the markers only ever mean "a restore of this snapshot is under way".
        for t in &targets {
            let paths = rctx.paths(&t.name);
            let _ = std::fs::remove_file(paths.root.join(MARKER));
            let _ = std::fs::remove_file(pending_marker(&paths));
        }
    } else {
        return Err(Error::Other(format!(
            "restore of {} site(s) failed (run the same command again to resume): {}",
            errors.len(),
            errors.join("; ")
        )));
    }
    Ok(RestoreReport {
        id,
        from,
        verify_seconds,
        host_config,
        safety_snapshot,
        sites,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn read_marker(paths: &SitePaths) -> Option<(String, String)> {
    let text = std::fs::read_to_string(paths.root.join(MARKER))
        .or_else(|_| std::fs::read_to_string(pending_marker(paths)))
        .ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.to_string(), it.next().unwrap_or("").to_string()))
}

fn write_marker(paths: &SitePaths, id: &str, state: &str) -> Result<()> {
    write_marker_in(&paths.root, id, state)
}

fn write_marker_in(dir: &Path, id: &str, state: &str) -> Result<()> {
    crate::fsutil::write_atomic(
        &dir.join(MARKER),
        format!("{id} {state}\n").as_bytes(),
        0o644,
    )
}

/// Where a site's marker waits until its files are in place: `SITES_DIR/.sp-restore-NAME`.
fn pending_marker(paths: &SitePaths) -> PathBuf {
    let name = paths
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    paths.root.with_file_name(format!("{MARKER}-{name}"))
}

/// What a restore puts back of the host, computed before anything is written.
struct HostPlan {
    /// The merged config text and its parsed form (whole-host restores only).
    config: Option<(String, crate::config::Config)>,
    /// Local credentials with the snapshot's added (local entries win).
    credentials: Option<crate::registry::Credentials>,
}

impl HostPlan {
    /// Writes the planned registry credentials (the config is written by
    /// [`Run::publish_config`]).
    fn apply_credentials(&mut self, ctx: &Ctx) -> Result<()> {
        if let Some(c) = self.credentials.take() {
            c.save(&ctx.credentials_path())?;
        }
        Ok(())
    }
}

/// Plans the host config (local keys win) for a whole-host restore, and the registry
/// credentials (local entries win) always. Writes nothing.
fn plan_host(ctx: &Ctx, dir: &Path, whole_host: bool) -> Result<HostPlan> {
    let path = dir.join(snapshot::HOST_ARCHIVE);
    let file = std::fs::File::open(&path).map_err(|e| Error::io_path("open", &path, e))?;
    let mut plan = HostPlan {
        config: None,
        credentials: None,
    };
    let mut config_text = None;
    let mut creds_text = None;
    let mut ar =
        tar::Archive::new(zstd::Decoder::new(file).map_err(|e| Error::io_path("read", &path, e))?);
    for entry in ar.entries().map_err(|e| Error::io_path("read", &path, e))? {
        let mut entry = entry.map_err(|e| Error::io_path("read", &path, e))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut text = String::new();
        if name == "etc/config.toml" || name == "etc/registries.toml" {
            std::io::Read::read_to_string(&mut entry, &mut text)
                .map_err(|e| Error::io_path("read", &path, e))?;
        }
        match name.as_str() {
            "etc/config.toml" => config_text = Some(text),
            "etc/registries.toml" => creds_text = Some(text),
            _ => {}
        }
    }
    if let Some(text) = creds_text {
        let restored: crate::registry::Credentials = toml::from_str(&text).map_err(|e| {
            Error::Other(format!(
                "host.tar.zst: registries.toml: {}",
                crate::site::toml_error(&text, &e)
            ))
        })?;
        let mut local = ctx.credentials()?;
        for (host, c) in restored.registries {
            local.registries.entry(host).or_insert(c);
        }
        plan.credentials = Some(local);
    }
    let (true, Some(text)) = (whole_host, config_text) else {
        return Ok(plan);
    };
    let mut merged: toml::Table = toml::from_str(&text).map_err(|e| {
        Error::Other(format!(
            "host.tar.zst: config.toml: {}",
            crate::site::toml_error(&text, &e)
        ))
    })?;
    let local_text = std::fs::read_to_string(&ctx.config_path)
        .map_err(|e| Error::io_path("read", &ctx.config_path, e))?;
    let local: toml::Table = toml::from_str(&local_text).map_err(|e| Error::Config {
        path: ctx.config_path.display().to_string(),
        message: crate::site::toml_error(&local_text, &e),
    })?;
    merge(&mut merged, local);
    let out = format!(
        "# Restored by `sp restore` from the snapshot's host config; settings of the local config won.\n{}",
        toml::to_string_pretty(&merged).map_err(|e| Error::Other(format!("encode config: {e}")))?
    );
    // Refuse a merged config sp cannot load, before it replaces the local one.
    let config = crate::config::Config::parse(&out, Path::new("the restored config"))?;
    plan.config = Some((out, config));
    Ok(plan)
}

/// Deep-merges `over` into `base`; `over` wins.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// What every site's restore shares.
struct Run<'a> {
    ctx: &'a Ctx,
    engine: &'a Engine,
    db: &'a Db,
    client: std::sync::Arc<DumpClient>,
    /// Sites whose files and data load at the same time.
    data_slots: tokio::sync::Semaphore,
    id: &'a str,
    dir: &'a Path,
    /// The manifest's file list (sizes and checksums of the archives).
    files: &'a [snapshot::FileEntry],
    /// The planned host config (whole-host restores), written before the first site's files
    /// are put in place — not before any archive is proven.
    config: std::sync::Mutex<Option<String>>,
    config_written: std::sync::atomic::AtomicBool,
    /// Some site's archive was refused or could not be unpacked.
    files_failed: std::sync::atomic::AtomicBool,
}

impl Run<'_> {
    /// Writes the planned host config, once.
    fn publish_config(&self) -> Result<()> {
        let text = self
            .config
            .lock()
            .map_err(|_| Error::Other("restore config lock poisoned".into()))?
            .take();
        if let Some(text) = text {
            crate::fsutil::write_private(&self.ctx.config_path, text.as_bytes())?;
            self.config_written
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

async fn restore_site(run: &Run<'_>, t: &Target<'_>) -> Result<SiteRestore> {
    let Run {
        ctx,
        engine,
        db,
        id,
        dir,
        ..
    } = *run;
    let name = t.name.clone();
    let from_site = t.entry.name.clone();
    if t.skip {
        return Ok(SiteRestore {
            site: name,
            from_site,
            skipped: true,
            phases: Vec::new(),
            seconds: 0.0,
        });
    }
    // A site's time counts from when its turn comes.
    let slot = run
        .data_slots
        .acquire()
        .await
        .map_err(|e| Error::Other(format!("restore slots: {e}")))?;
    let started = Instant::now();
    let paths = ctx.paths(&name);
    // The marker waits beside the site directory until the files are proven and in place.
    crate::fsutil::write_atomic(
        &pending_marker(&paths),
        format!("{id} running\n").as_bytes(),
        0o644,
    )
    .step(&name, "files")?;
    if paths.root.exists() {
        // An interrupted restore of this snapshot got this far: its files are replaced as a
        // whole, so a container it started would keep the old tree mounted. It goes, and
        // is started afresh below.
        for c in engine
            .list(&ctx.config.instance, Some(&name), None)
            .await
            .step(&name, "files")?
        {
            engine.remove(&c.id).await.step(&name, "files")?;
        }
    }
    let mut phases = Vec::new();

    // Files, database and image at the same time (a pull waits on the network, the rest on
    // the disk and the server's CPU).
    let archive = dir.join(&t.entry.archive);
    let expect = run
        .files
        .iter()
        .find(|f| f.path == t.entry.archive)
        .cloned();
    let root = paths.root.clone();
    let files = async {
        let t0 = Instant::now();
        let staged = provision::stage_site(archive, expect, root.clone()).await?;
        write_marker_in(staged.path(), id, "running")?;
        run.publish_config()?;
        staged
            .commit(&root)
            .map_err(|e| Error::io_path("put the unpacked files in place at", &root, e))?;
        let _ = std::fs::remove_file(pending_marker(&paths));
        Ok::<f64, Error>(t0.elapsed().as_secs_f64())
    };
    let database = async {
        let Some(dbe) = &t.entry.database else {
            return Ok::<Option<f64>, Error>(None);
        };
        let t0 = Instant::now();
        db.drop_database(&name).await?;
        db.ensure_database(&name).await?;
        let definer =
            (name != from_site).then(|| crate::db::split::Definer::new(&from_site, &name));
        let dump = dir.join(&dbe.dump);
        db.load_dump(run.client.clone(), &name, &dump, LOAD_CONNECTIONS, definer)
            .await?;
        Ok(Some(t0.elapsed().as_secs_f64()))
    };
    let image = async {
        let Some(pinned) = &t.entry.image else {
            return Ok::<Option<f64>, Error>(None);
        };
        let t0 = Instant::now();
        provision::ensure_image(ctx, engine, pinned, t.entry.image_id.as_deref()).await?;
        Ok(Some(t0.elapsed().as_secs_f64()))
    };
    let (files, database, image) = tokio::join!(files, database, image);
    drop(slot);
    if files.is_err() {
        // Nothing of the site stays: not its database either.
        run.files_failed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if t.entry.database.is_some() && !paths.root.exists() {
            let _ = db.drop_database(&name).await;
        }
        if !paths.root.exists() {
            let _ = std::fs::remove_file(pending_marker(&paths));
        }
    }
    phases.push(Phase {
        name: "files".into(),
        seconds: files.step(&name, "files")?,
    });
    if let Some(s) = database.step(&name, "database")? {
        phases.push(Phase {
            name: "database".into(),
            seconds: s,
        });
    }
    if let Some(s) = image.step(&name, "image")? {
        phases.push(Phase {
            name: "image".into(),
            seconds: s,
        });
    }

    // The spec, adjusted for a clone.
    let mut spec = SiteSpec::load(&paths.spec()).step(&name, "files")?;
    if name != from_site {
        make_clone(ctx, &mut spec, &name).step(&name, "clone")?;
    }
    // The directories a backup leaves out (tmp/).
    provision::ensure_dirs(&paths, spec.uid).step(&name, "files")?;

    // The database user, with its original password (a new one for a clone).
    if t.entry.database.is_some() {
        let t0 = Instant::now();
        let password = provision::read_password(&paths)?
            .ok_or_else(|| Error::Other("the snapshot has no secrets/db_password".into()))
            .step(&name, "user")?;
        let host = &ctx.config.mysql.user_host;
        db.ensure_user(&name, &name, host, &password)
            .await
            .step(&name, "user")?;
        db.set_password(&name, host, &password)
            .await
            .step(&name, "user")?;
        phases.push(Phase {
            name: "user".into(),
            seconds: t0.elapsed().as_secs_f64(),
        });
    }

    // The container as `sp apply` would start it, on the image the site's deploy state names
    // (the manifest's, fetched above, unless the two disagree).
    let state = DeployState::load(&paths.deploy())?;
    if let Some(pinned) = state
        .current
        .as_ref()
        .filter(|p| t.entry.image.as_ref() != Some(*p))
    {
        provision::ensure_image(ctx, engine, pinned, state.current_id.as_deref())
            .await
            .step(&name, "image")?;
    }
    if !state.stopped {
        let t0 = Instant::now();
        apply::converge_container(ctx, engine, &spec).await?;
        phases.push(Phase {
            name: "start".into(),
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    write_marker(&paths, id, "done").step(&name, "finish")?;
    Ok(SiteRestore {
        site: name,
        from_site,
        skipped: false,
        phases,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Turns a restored copy into an independent site: new name, uid and password; no domains,
/// no recorded port.
fn make_clone(ctx: &Ctx, spec: &mut SiteSpec, name: &str) -> Result<()> {
    let paths = ctx.paths(name);
    let old_uid = spec.uid;
    let new_uid = provision::next_uid(ctx)?;
    spec.name = name.to_string();
    spec.uid = new_uid;
    spec.domains.clear();
    chown_tree(&paths.root, old_uid, new_uid)?;
    if spec.database.enabled {
        provision::write_password(&paths, new_uid, &generate_password())?;
    }
    let mut state = DeployState::load(&paths.deploy())?;
    state.host_port = None;
    ctx.save_deploy_state(name, &state)?;
    crate::fsutil::write_atomic(&paths.spec(), spec.to_toml().as_bytes(), 0o644)
}

/// Gives everything owned by `from` (uid and gid) to `to`.
fn chown_tree(root: &Path, from: u32, to: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(root).map_err(|e| Error::io_path("stat", root, e))?;
    let uid = if meta.uid() == from { Some(to) } else { None };
    let gid = if meta.gid() == from { Some(to) } else { None };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(root, uid, gid).map_err(|e| Error::io_path("chown", root, e))?;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(root)
            .map_err(|e| Error::io_path("read", root, e))?
            .flatten()
        {
            chown_tree(&e.path(), from, to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_config_wins_in_the_merge() {
        let mut restored: toml::Table = toml::from_str(
            "instance = \"prod\"\nsites_dir = \"/sites\"\n[mysql]\nurl = \"mysql://old@10.0.0.1\"\nuser_host = \"172.17.%\"\n",
        )
        .unwrap();
        let local: toml::Table =
            toml::from_str("[mysql]\nurl = \"mysql://new@127.0.0.1\"\n").unwrap();
        merge(&mut restored, local);
        assert_eq!(restored["instance"].as_str(), Some("prod"));
        assert_eq!(
            restored["mysql"]["url"].as_str(),
            Some("mysql://new@127.0.0.1")
        );
        assert_eq!(restored["mysql"]["user_host"].as_str(), Some("172.17.%"));
    }
}
