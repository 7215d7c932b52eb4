//! `sp restore [ID|latest] [--site NAME]... [--as NEWNAME] [--from DIR] [--yes]`: bring sites
//! back from a snapshot — on a bare host, or next to the originals as a clone.
//!
//! 1. find the snapshot (in `--from DIR` or `backup_dir`); take the host lock;
//! 2. plan from the signed manifest (see [`crate::key`]) and what is on the host, reading
//!    no data: conflicts are refused here (`--dry-run` prints the plan and stops);
//!    then verify the checksums of the dumps to load, **before changing anything** (each
//!    dump's trailer is checked as it loads; each site archive is hashed and checked member
//!    by member as it unpacks into a staging directory, see [`snapshot::Depth`] and
//!    [`snapshot::stage`]);
//! 3. plan: refuse sites, databases or containers that already exist unless `--yes` (then
//!    their current state is snapshotted first), and a site whose uid another site on the
//!    host holds (a domain another site has is refused once the spec is unpacked, before the
//!    user and the container); a site this very snapshot was already
//!    restored to is skipped, one whose restore was interrupted is resumed;
//! 4. on a whole-host restore, put back the host config (settings in the local config win)
//!    and merge the registry credentials;
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

use crate::db::{generate_password, Db};
use crate::engine::Engine;
use crate::error::{Error, Result, StepExt};
use crate::site::{validate_name, DeployState, SitePaths, SiteSpec};
use crate::snapshot::{self, SiteEntry};

use super::restore_plan::{self as plan, RestorePlan};
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
    /// Public (or secret) key files of other hosts whose snapshots to accept.
    pub keys: Vec<PathBuf>,
    /// Print the plan; change nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
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
    /// Only the plan was made (`--dry-run`): nothing changed.
    pub dry_run: bool,
    pub plan: RestorePlan,
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
        if self.dry_run {
            return write!(f, "{}", self.plan);
        }
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
    let pick = if wanted.is_empty() {
        snapshot::Pick::Host
    } else {
        snapshot::Pick::Sites(&wanted)
    };
    let (id, dir) = snapshot::resolve(&from, id, pick)?;
    let keyring = ctx.keyring(&opts.keys)?;
    let _lock = ctx.lock(&format!("restore {id}"))?;

    // 2. Plan, from the signed manifest and what is on the host; no data is read yet.
    let manifest = snapshot::authenticate(&dir, &keyring)?;
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
    // The host config decides where sites live: plan with it, write it only once the plan
    // holds.
    let mut host = plan_host(ctx, &dir, whole_host)?;
    let ctx = match &host.config {
        Some((_, cfg)) => ctx.with_config(cfg.clone()),
        None => ctx.reload()?,
    };
    let engine = ctx.engine().await?;
    let db = ctx.db()?;
    // Image archives live beside the snapshots we restore from.
    let mut rcfg = ctx.config.clone();
    rcfg.backup_dir = from.clone();
    let rctx = ctx.with_config(rcfg);
    // Uids and domains the host's other sites hold: a restored site may not take them.
    let names: Vec<String> = entries
        .iter()
        .map(|e| opts.as_name.clone().unwrap_or_else(|| e.name.clone()))
        .collect();
    let claims = provision::claims_except(&ctx, &names)?;
    let mut targets = Vec::new();
    let mut sites = Vec::new();
    for (e, name) in entries.iter().zip(&names) {
        if opts.as_name.is_none() {
            provision::check_uid_free(&claims, name, e.uid)?;
        }
        let paths = ctx.paths(name);
        let seen = plan::Observed {
            marker: read_marker(&paths),
            dir: paths.root.exists().then(|| paths.root.clone()),
            database: e.database.is_some() && db.database_exists(name).await?,
            containers: engine
                .list(&ctx.config.instance, Some(name), None)
                .await?
                .len(),
            image_local: match &e.image_id {
                Some(i) => engine.has_image(i).await,
                None => false,
            },
            image_archive: e
                .image_id
                .as_ref()
                .is_some_and(|i| provision::image_archive(&rctx, i).exists()),
        };
        let size: u64 = manifest
            .files
            .iter()
            .filter(|f| {
                f.path == e.archive || e.database.as_ref().is_some_and(|d| d.dump == f.path)
            })
            .map(|f| f.size)
            .sum();
        let sp = plan::site_plan(&id, e, name, &seen, size);
        targets.push(Target {
            entry: e,
            name: name.clone(),
            skip: sp.action == plan::Action::Skip,
        });
        sites.push(sp);
    }
    let replaced: Vec<String> = sites
        .iter()
        .filter(|s| !s.replaces.is_empty())
        .map(|s| s.site.clone())
        .collect();
    // Only what can be snapshotted first may be replaced.
    let mut specs = Vec::new();
    for n in &replaced {
        match ctx.site(n) {
            Ok(spec) => specs.push(spec),
            Err(e) => {
                return Err(Error::Conflict(format!(
                    "{n} exists but cannot be snapshotted before it is replaced ({e}); nothing was restored from snapshot {id} — purge or move it first"
                )))
            }
        }
    }
    let plan = RestorePlan {
        id: id.clone(),
        kind: manifest.kind,
        from: from.clone(),
        whole_host,
        host_config: host.config.is_some(),
        bytes: sites.iter().map(|s| s.bytes).sum(),
        sites,
        safety_snapshot_of: specs.iter().map(|s| s.name.clone()).collect(),
    };
    if !replaced.is_empty() && !opts.yes && !opts.dry_run {
        return Err(Error::Conflict(format!(
            "restoring snapshot {id} would replace existing state ({}); nothing was restored — pass --yes to replace it (its current state is snapshotted first), or --dry-run to see the whole plan",
            plan.conflicts().join("; ")
        )));
    }
    if opts.dry_run {
        return Ok(RestoreReport {
            id,
            from,
            dry_run: true,
            plan,
            verify_seconds: 0.0,
            host_config: false,
            safety_snapshot: None,
            sites: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    // 3. Verify before anything changes.
    ctx.note(&format!("verifying snapshot {id}"));
    let t = Instant::now();
    let d = dir.clone();
    let only = wanted.clone();
    // A site that replaces a live one is proven whole first (its archive decompressed and
    // checked too): its old state goes before its files could be checked while unpacking.
    let replacing: Vec<String> = plan
        .sites
        .iter()
        .filter(|s| !s.replaces.is_empty())
        .map(|s| s.from_site.clone())
        .collect();
    let (_, faults) = tokio::task::spawn_blocking(move || {
        let (m, mut faults) =
            snapshot::verify_sites(&d, snapshot::Depth::BeforeRestore, &only, &keyring)?;
        if faults.is_empty() && !replacing.is_empty() {
            faults = snapshot::verify_sites(&d, snapshot::Depth::Full, &replacing, &keyring)?.1;
        }
        Ok::<_, Error>((m, faults))
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

    // 4. What --yes replaces: snapshotted first, then removed.
    let mut safety_snapshot = None;
    if !specs.is_empty() {
        let r = super::backup::snapshot_sites(&ctx, &specs, snapshot::Kind::PreRestore)
            .await
            .step(&replaced.join(","), "snapshot before replacing")?;
        ctx.note(&format!("snapshot of the current state: {}", r.id));
        safety_snapshot = Some(r.id);
    }
    for n in &replaced {
        // Its database is replaced as the dump loads; its user keeps its grants meanwhile.
        let what = provision::Teardown {
            database: false,
            files: true,
        };
        provision::teardown_site(&ctx, &engine, Some(&db), n, what).await?;
    }

    // Pulls need the credentials while the files unpack; the config waits for proven files.
    host.apply_credentials(&ctx)?;
    let config_text = host.config.take().map(|(text, _)| text);

    // 5. The sites' files and data, about one site per core at a time, in order (each loads
    // its rows over several connections already); a site whose data is in starts its
    // container while the next ones load, rather than every site starting at the very end.
    let run = Run {
        ctx: &rctx,
        engine: &engine,
        db: &db,
        data_slots: tokio::sync::Semaphore::new(crate::cores()),
        id: &id,
        dir: &dir,
        claims,
        files: &manifest.files,
        config: std::sync::Mutex::new(config_text),
        config_written: std::sync::atomic::AtomicBool::new(false),
        files_failed: std::sync::atomic::AtomicBool::new(false),
    };
    let all = futures_util::future::join_all(targets.iter().map(|t| restore_site(&run, t)));
    let results = tokio::select! {
        r = all => r,
        // The markers say where it stopped; the same command goes on from there.
        _ = crate::interrupt::wait() => {
            return Err(Error::Interrupted(format!(
                "restore of snapshot {id} interrupted — to resume, run `{}`",
                resume_command(opts, &id)
            )));
        }
    };
    if !run.files_failed.load(std::sync::atomic::Ordering::SeqCst) {
        run.publish_config()?;
    }
    let host_config = run.config_written.load(std::sync::atomic::Ordering::SeqCst);
    db.close().await;
    let mut sites = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => sites.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        // Done: the markers only ever mean "a restore of this snapshot is under way".
        for t in &targets {
            let paths = rctx.paths(&t.name);
            let _ = std::fs::remove_file(paths.root.join(MARKER));
            let _ = std::fs::remove_file(pending_marker(&paths));
        }
    } else if errors.len() == 1 && errors[0].exit_code() != 1 {
        // Refused (bad input, a conflict): running it again would not help.
        return Err(errors.remove(0));
    } else {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        return Err(Error::Other(format!(
            "restore of {} site(s) from snapshot {id} failed: {} — to resume, run `{}`",
            list.len(),
            list.join("; "),
            resume_command(opts, &id)
        )));
    }
    Ok(RestoreReport {
        id,
        from,
        dry_run: false,
        plan,
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
    /// Sites whose files and data load at the same time.
    data_slots: tokio::sync::Semaphore,
    id: &'a str,
    dir: &'a Path,
    /// The other sites' uids and domains, read before anything was restored.
    claims: Vec<crate::site::Claim>,
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
        // The spec is checked like user input (a snapshot is hostile input even when it is
        // signed) while the files are still out of sight.
        let spec = SiteSpec::load(&staged.path().join("site.toml"))
            .and_then(|spec| check_restored_spec(ctx, id, t.entry, &name, spec))?;
        write_marker_in(staged.path(), id, "running")?;
        run.publish_config()?;
        staged
            .commit(&root)
            .map_err(|e| Error::io_path("put the unpacked files in place at", &root, e))?;
        let _ = std::fs::remove_file(pending_marker(&paths));
        Ok::<(f64, SiteSpec), Error>((t0.elapsed().as_secs_f64(), spec))
    };
    let database = async {
        let Some(dbe) = &t.entry.database else {
            return Ok::<Option<f64>, Error>(None);
        };
        let t0 = Instant::now();
        provision::load_database(ctx, db, &name, &dir.join(&dbe.dump)).await?;
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
            let _ = db.drop_user(&name, &ctx.config.mysql.user_host).await;
        }
        if !paths.root.exists() {
            let _ = std::fs::remove_file(pending_marker(&paths));
        }
    }
    let (seconds, mut spec) = files.step(&name, "files")?;
    phases.push(Phase {
        name: "files".into(),
        seconds,
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

    // The spec (checked above), adjusted for a clone.
    if name != from_site {
        make_clone(ctx, &mut spec, &name).step(&name, "clone")?;
    }
    crate::site::check_unique(&spec, &run.claims).step(&name, "check")?;
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

/// Restores `sites` (snapshot entry, target name) of the authenticated snapshot `manifest` in
/// `dir` with exactly the code `sp restore` runs — files, database, user, image, container,
/// health check — for `sp drill`, whose `ctx` is a scratch namespace and whose targets are
/// scratch names (so every site goes through the clone path: its own uid and password, no
/// domains). One result per site, in order.
pub(super) async fn restore_into(
    ctx: &Ctx,
    engine: &Engine,
    db: &Db,
    manifest: &snapshot::Manifest,
    dir: &Path,
    sites: &[(&SiteEntry, String)],
) -> Result<Vec<Result<SiteRestore>>> {
    let names: Vec<String> = sites.iter().map(|(_, n)| n.clone()).collect();
    let run = Run {
        ctx,
        engine,
        db,
        data_slots: tokio::sync::Semaphore::new(crate::cores()),
        id: &manifest.id,
        dir,
        claims: provision::claims_except(ctx, &names)?,
        files: &manifest.files,
        config: std::sync::Mutex::new(None),
        config_written: std::sync::atomic::AtomicBool::new(false),
        files_failed: std::sync::atomic::AtomicBool::new(false),
    };
    let targets: Vec<Target> = sites
        .iter()
        .map(|(entry, name)| Target {
            entry,
            name: name.clone(),
            skip: false,
        })
        .collect();
    Ok(futures_util::future::join_all(targets.iter().map(|t| restore_site(&run, t))).await)
}

/// The command that resumes this restore: the same one, with the snapshot named by its id (so
/// a newer snapshot taken meanwhile can never be picked up instead).
pub fn resume_command(opts: &RestoreOpts, id: &str) -> String {
    let q = |p: &Path| {
        let t = p.display().to_string();
        if t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
        {
            t
        } else {
            format!("'{}'", t.replace('\'', "'\\''"))
        }
    };
    let mut c = format!("sp restore {id}");
    for s in &opts.sites {
        c.push_str(&format!(" --site {s}"));
    }
    if let Some(a) = &opts.as_name {
        c.push_str(&format!(" --as {a}"));
    }
    if let Some(f) = &opts.from {
        c.push_str(&format!(" --from {}", q(f)));
    }
    for k in &opts.keys {
        c.push_str(&format!(" --key {}", q(k)));
    }
    if opts.yes {
        c.push_str(" --yes");
    }
    c
}

/// A restored spec must be the one its snapshot entry names: the same site name and uid, a
/// uid no other site on this host has (a clone gets a new one later), and valid everywhere
/// (`SiteSpec::load` checked image, mounts and the rest).
fn check_restored_spec(
    ctx: &Ctx,
    id: &str,
    entry: &SiteEntry,
    target: &str,
    spec: SiteSpec,
) -> Result<SiteSpec> {
    let refuse = |why: String| {
        Err(Error::Invalid(format!(
            "snapshot {id}: {why}; nothing of {} was restored",
            entry.name
        )))
    };
    if spec.name != entry.name {
        return refuse(format!(
            "{} holds a site.toml for {:?}",
            entry.archive, spec.name
        ));
    }
    if spec.uid != entry.uid {
        return refuse(format!(
            "{}'s site.toml has uid {} where the manifest says {}",
            entry.name, spec.uid, entry.uid
        ));
    }
    if target == entry.name {
        for other in ctx.site_names()? {
            if other == target {
                continue;
            }
            if let Ok(o) = SiteSpec::load(&ctx.paths(&other).spec()) {
                if o.uid == spec.uid {
                    return Err(Error::Conflict(format!(
                        "snapshot {id}: {} has uid {}, which site {other} already has on this host; nothing of {} was restored — restore it under another name with --as",
                        entry.name, spec.uid, entry.name
                    )));
                }
            }
        }
    }
    Ok(spec)
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
    provision::write_spec(&paths, spec)
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
    fn the_resume_command_names_the_snapshot_by_its_id() {
        let opts = RestoreOpts {
            id: "latest".into(),
            sites: vec!["blog".into()],
            as_name: Some("copy".into()),
            from: Some("/mnt/my backups".into()),
            yes: true,
            keys: vec!["/root/old.pub".into()],
            dry_run: false,
        };
        assert_eq!(
            resume_command(&opts, "20261201T031700Z"),
            "sp restore 20261201T031700Z --site blog --as copy --from '/mnt/my backups' --key /root/old.pub --yes"
        );
    }

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
