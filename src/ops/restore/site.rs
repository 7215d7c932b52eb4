//! One site's part of a restore: its files, database, image, user and container, side by
//! side where they can be — for `sp restore` and, in a scratch namespace, `sp drill`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::db::{generate_password, Db};
use crate::engine::Engine;
use crate::error::{Error, Result, StepExt};
use crate::site::{DeployState, SitePaths, SiteSpec};
use crate::snapshot::{self, SiteEntry};

use super::super::deploy::Why;
use super::super::{apply, provision, Ctx};
use super::{Phase, SiteRestore};

pub(super) const MARKER: &str = ".sp-restore";

/// What to do for one site.
pub(super) struct Target<'a> {
    pub entry: &'a SiteEntry,
    pub name: String,
    pub skip: bool,
}

pub(super) fn read_marker(paths: &SitePaths) -> Option<(String, String)> {
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
pub(super) fn pending_marker(paths: &SitePaths) -> PathBuf {
    let name = paths
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    paths.root.with_file_name(format!("{MARKER}-{name}"))
}
/// What every site's restore shares.
pub(super) struct Run<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) engine: &'a Engine,
    pub(super) db: &'a Db,
    /// Sites whose files and data load at the same time.
    pub(super) data_slots: tokio::sync::Semaphore,
    pub(super) id: &'a str,
    pub(super) dir: &'a Path,
    /// The other sites' uids and domains, read before anything was restored.
    pub(super) claims: Vec<crate::site::Claim>,
    /// The manifest's file list (sizes and checksums of the archives).
    pub(super) files: &'a [snapshot::FileEntry],
    /// The planned host config (whole-host restores), written before the first site's files
    /// are put in place — not before any archive is proven.
    pub(super) config: std::sync::Mutex<Option<String>>,
    pub(super) config_written: std::sync::atomic::AtomicBool,
    /// Some site's archive was refused or could not be unpacked.
    pub(super) files_failed: std::sync::atomic::AtomicBool,
}

impl Run<'_> {
    /// Writes the planned host config, once.
    pub(super) fn publish_config(&self) -> Result<()> {
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

pub(super) async fn restore_site(run: &Run<'_>, t: &Target<'_>) -> Result<SiteRestore> {
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
        let label = format!("{name} files");
        let staged = provision::stage_site(ctx, &label, archive, expect, root.clone()).await?;
        // The spec is checked like user input (a snapshot is hostile input even when it is
        // signed) while the files are still out of sight.
        let spec = SiteSpec::load(&staged.path().join("site.toml"))
            .and_then(|spec| check_restored_spec(id, t.entry, spec))?;
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
        apply::converge_container(ctx, engine, &spec, Why::because("restore")).await?;
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
pub(in crate::ops) async fn restore_into(
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
/// A restored spec must be the one its snapshot entry names: the same site name and uid
/// (`SiteSpec::load` checked image, mounts and the rest). That no other site holds the uid
/// the plan checked against the host's claims; a clone gets a new uid later.
fn check_restored_spec(id: &str, entry: &SiteEntry, spec: SiteSpec) -> Result<SiteSpec> {
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
