//! Building blocks shared by `site add`, `deploy` and `apply`: a site's directories, its
//! database and user, its uid and host port, pulling its image, and the container plan.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::split_host_port;
use crate::db::{generate_password, Db};
use crate::engine::{ContainerPlan, Engine, Role};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::site::{parse_memory, Claim, ImageRef, SitePaths, SiteSpec};

use super::Ctx;

/// Where the database password appears inside the container.
pub const PASSWORD_IN_CONTAINER: &str = "/run/secrets/db_password";

/// Mode of `site.toml`: its `[env]` holds the app's secrets.
pub const SPEC_MODE: u32 = 0o600;

/// Writes a site's spec (root-only, 0600).
pub fn write_spec(paths: &SitePaths, spec: &SiteSpec) -> Result<()> {
    fsutil::write_atomic(&paths.spec(), spec.to_toml().as_bytes(), SPEC_MODE)
}

/// Every site's claim on a uid and domains: the specs under `sites_dir`, and the retired
/// specs of sites removed with their files kept.
pub fn claims(ctx: &Ctx) -> Result<Vec<Claim>> {
    claims_except(ctx, &[])
}

/// [`claims`] of every site but those named in `skip` (whose specs are not even read: a
/// restore resuming may find them half written).
pub fn claims_except(ctx: &Ctx, skip: &[String]) -> Result<Vec<Claim>> {
    let dir = &ctx.config.sites_dir;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io_path("read", dir, e)),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if skip.contains(&name) {
            continue;
        }
        let paths = ctx.paths(&name);
        for (path, removed) in [(paths.spec(), false), (paths.removed_spec(), true)] {
            if path.is_file() {
                let spec = SiteSpec::load(&path)?;
                let mut claim = Claim::of(&spec, removed);
                // The directory is what names a site on this host.
                claim.site = name.clone();
                out.push(claim);
            }
        }
    }
    out.sort_by(|a, b| a.site.cmp(&b.site));
    Ok(out)
}

/// Refuses a spec whose uid or a domain another site (on disk) already has.
pub fn check_unique(ctx: &Ctx, spec: &SiteSpec) -> Result<()> {
    crate::site::check_unique(spec, &claims(ctx)?)
}

/// Refuses `uid` for site `name` when another site holds it (a restore's plan, from the
/// manifest, before anything is written).
pub fn check_uid_free(claims: &[Claim], name: &str, uid: u32) -> Result<()> {
    match claims.iter().find(|c| c.uid == uid && c.site != name) {
        Some(c) => Err(Error::Conflict(format!(
            "{name}: uid {uid} already belongs to site {}{}; restore it under another name with --as, or remove that site first — nothing was restored",
            c.site,
            if c.removed { " (removed, its files kept)" } else { "" }
        ))),
        None => Ok(()),
    }
}

/// Uids of the host's own accounts (`/etc/passwd`), which a site must never run as.
fn host_uids() -> HashSet<u32> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

/// Adds the owner and group of everything under `root` (not following links) to `used`.
fn owners_under(root: &Path, used: &mut HashSet<u32>) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        used.insert(meta.uid());
        used.insert(meta.gid());
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
}

/// The lowest uid from `first_uid` that nothing uses: no spec (removed ones too), no file
/// or directory under `sites_dir` (by owner or group), no account of the host.
pub fn next_uid(ctx: &Ctx) -> Result<u32> {
    // Every spec on disk counts, even one whose name does not match its directory yet
    // (a clone being made).
    let mut used: HashSet<u32> = claims(ctx)?.iter().map(|c| c.uid).collect();
    owners_under(&ctx.config.sites_dir, &mut used);
    used.extend(host_uids());
    let mut uid = ctx.config.docker.first_uid;
    while used.contains(&uid) {
        uid = uid
            .checked_add(1)
            .ok_or_else(|| Error::Other("no free uid left above docker.first_uid".into()))?;
    }
    Ok(uid)
}

/// A free host port in the configured range: not recorded for any site, not published by any
/// of this instance's containers, and bindable on 127.0.0.1 right now.
/// Ports handed out by [`allocate_port`] in this process whose containers may not hold them yet.
static LEASED: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A host port reserved within this process until dropped (by then its container holds it).
#[derive(Debug)]
pub struct PortLease(pub u16);

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut l) = LEASED.lock() {
            l.remove(&self.0);
        }
    }
}

pub async fn allocate_port(ctx: &Ctx, engine: &Engine) -> Result<PortLease> {
    let (first, last) = ctx.config.port_range().map_err(Error::Invalid)?;
    let mut used: HashSet<u16> = HashSet::new();
    for name in ctx.site_names()? {
        if let Some(p) = ctx.deploy_state(&name)?.host_port {
            used.insert(p);
        }
    }
    for c in engine.list(&ctx.config.instance, None, None).await? {
        if let Some(p) = c.host_port {
            used.insert(p);
        }
    }
    // Sites rolled out side by side (a restore) must not pick the same free port.
    let mut leased = LEASED
        .lock()
        .map_err(|_| Error::Other("port lease lock poisoned".into()))?;
    let port = (first..=last)
        .find(|p| {
            !used.contains(p) && !leased.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok()
        })
        .ok_or_else(|| {
            Error::Other(format!(
                "no free host port left in docker.port_range {first}-{last}"
            ))
        })?;
    leased.insert(port);
    Ok(PortLease(port))
}

/// Creates the site's directories with the right owners and modes (the tree is root's and
/// private: 0700; `data/` and `tmp/` belong to the site's uid), and makes the spec 0600;
/// returns what it changed.
pub fn ensure_dirs(paths: &SitePaths, uid: u32) -> Result<Vec<String>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut done = Vec::new();
    for (dir, owner, mode) in [
        (paths.root.clone(), 0, 0o700),
        (paths.data(), uid, 0o750),
        (paths.secrets(), 0, 0o700),
        (paths.tmp(), uid, 0o750),
    ] {
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("create", &dir, e))?;
            fsutil::chmod(&dir, mode)?;
            done.push(format!("created {}", dir.display()));
        }
        let meta = std::fs::metadata(&dir).map_err(|e| Error::io_path("stat", &dir, e))?;
        if meta.uid() != owner {
            fsutil::chown(&dir, owner, owner)?;
            done.push(format!("owner of {} set to {owner}", dir.display()));
        }
        // The root and secrets/ hold secrets: nobody else may look in.
        if owner == 0 && meta.permissions().mode() & 0o077 != 0 {
            fsutil::chmod(&dir, mode)?;
            done.push(format!("mode of {} set to {mode:04o}", dir.display()));
        }
    }
    for spec in [paths.spec(), paths.removed_spec()] {
        if let Ok(meta) = std::fs::symlink_metadata(&spec) {
            if meta.is_file() && meta.permissions().mode() & 0o777 != SPEC_MODE {
                fsutil::chmod(&spec, SPEC_MODE)?;
                done.push(format!("mode of {} set to {SPEC_MODE:04o}", spec.display()));
            }
        }
    }
    Ok(done)
}

/// Reads the site's database password, if it has one on disk.
pub fn read_password(paths: &SitePaths) -> Result<Option<String>> {
    let p = paths.db_password();
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim_end_matches(['\n', '\r']).to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_path("read", &p, e)),
    }
}

/// Writes the password file: owned by the site's uid (the container reads it), mode 0400.
pub fn write_password(paths: &SitePaths, uid: u32, password: &str) -> Result<()> {
    let p = paths.db_password();
    fsutil::write_atomic(&p, password.as_bytes(), 0o400)?;
    fsutil::chown(&p, uid, uid)
}

/// Makes the site's database and user exist, with the password from its file (a new one is
/// generated and set when the file is missing). Returns what it changed.
pub async fn ensure_database(ctx: &Ctx, db: &Db, spec: &SiteSpec) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let paths = ctx.paths(&spec.name);
    let host = &ctx.config.mysql.user_host;
    let (password, fresh) = match read_password(&paths)? {
        Some(p) => (p, false),
        None => {
            let p = generate_password();
            write_password(&paths, spec.uid, &p)?;
            done.push("generated a database password".to_string());
            (p, true)
        }
    };
    if db.ensure_database(&spec.name).await? {
        done.push(format!("created database {}", spec.name));
    }
    if db
        .ensure_user(&spec.name, &spec.name, host, &password)
        .await?
    {
        done.push(format!("created database user {}@{host}", spec.name));
    } else if fresh {
        db.set_password(&spec.name, host, &password).await?;
        done.push(format!("reset the password of {}@{host}", spec.name));
    }
    Ok(done)
}

/// What [`teardown_site`] takes away besides the site's containers and network.
#[derive(Debug, Clone, Copy, Default)]
pub struct Teardown {
    /// Its database and database user.
    pub database: bool,
    /// Its directory `SITES_DIR/NAME`.
    pub files: bool,
}

/// Takes a site down: its containers and network, then (as `what` says) its database and
/// user and its directory. Every step runs even when one before it failed; the failures come
/// back together, each naming its step. The one routine behind a failed add's rollback,
/// `site remove [--purge]`, what `restore --yes` replaces, and a drill's cleanup.
pub async fn teardown_site(
    ctx: &Ctx,
    engine: &Engine,
    db: Option<&Db>,
    name: &str,
    what: Teardown,
) -> Result<usize> {
    let mut failed: Vec<String> = Vec::new();
    let mut removed = 0;
    match engine.list(&ctx.config.instance, Some(name), None).await {
        Ok(list) => {
            for c in list {
                match engine.remove(&c.id).await {
                    Ok(()) => removed += 1,
                    Err(e) => failed.push(format!("remove container: {e}")),
                }
            }
        }
        Err(e) => failed.push(format!("list containers: {e}")),
    }
    if let Err(e) = engine
        .remove_networks(&ctx.config.instance, Some(name))
        .await
    {
        failed.push(format!("remove network: {e}"));
    }
    if let (true, Some(db)) = (what.database, db) {
        if let Err(e) = db.drop_user(name, &ctx.config.mysql.user_host).await {
            failed.push(format!("drop user: {e}"));
        }
        if let Err(e) = db.drop_database(name).await {
            failed.push(format!("drop database: {e}"));
        }
    }
    let root = ctx.paths(name).root;
    if what.files && root.exists() {
        if let Err(e) = std::fs::remove_dir_all(&root) {
            failed.push(format!("delete {}: {e}", root.display()));
        }
    }
    if failed.is_empty() {
        Ok(removed)
    } else {
        Err(Error::Other(failed.join("; ")).at_step(name, "teardown"))
    }
}

/// Loads a site's dump into a fresh database `name`, logged in as the site's own user — never
/// as the admin, so a hostile dump can change nothing but that database. The user is made
/// to exist with a throwaway password for the load; the caller then sets the real one (it
/// comes with the site's files). Every definer becomes that user (see [`Definer`]).
///
/// [`Definer`]: crate::db::split::Definer
pub async fn load_database(ctx: &Ctx, db: &Db, name: &str, dump: &std::path::Path) -> Result<()> {
    let host = &ctx.config.mysql.user_host;
    let definer = crate::db::split::Definer::new(name, host);
    db.drop_database(name).await?;
    db.ensure_database(name).await?;
    let account = crate::db::Account {
        user: name.to_string(),
        password: generate_password(),
    };
    db.ensure_user(name, name, host, &account.password).await?;
    db.set_password(name, host, &account.password).await?;
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = std::sync::atomic::AtomicU64::new(std::fs::metadata(dump).map_or(0, |m| m.len()));
    let load = db.load_dump_counted(
        &account,
        name,
        dump,
        super::restore::LOAD_CONNECTIONS,
        Some(definer),
        read.clone(),
    );
    ctx.with_progress(&format!("{name} database"), &read, &total, load)
        .await
}

/// Pulls `image` with the stored credential for its registry; returns it pinned by digest.
pub async fn pull(ctx: &Ctx, engine: &Engine, image: &str) -> Result<String> {
    let r = ImageRef::parse(image)?;
    let creds = ctx.credentials()?;
    ctx.note(&format!("pulling {r}"));
    let label = format!(
        "pull {}",
        r.repository().rsplit('/').next().unwrap_or_default()
    );
    let mut announced = 0;
    let pulled = engine
        .pull(&r, creds.get(&r.registry), &mut |done, total| {
            if total != announced {
                ctx.progress_total(&label, total);
                announced = total;
            }
            ctx.progress(&label, done, false);
        })
        .await;
    ctx.progress(&label, 0, true);
    pulled
}

/// Where the image archive of an image id lives (`backup_dir/images/HEX.tar.zst`).
pub fn image_archive(ctx: &Ctx, id: &str) -> std::path::PathBuf {
    ctx.config
        .backup_dir
        .join("images")
        .join(format!("{}.tar.zst", id.trim_start_matches("sha256:")))
}

/// Makes a pinned image present locally and returns its local id: already there, else pulled
/// (with the stored credential), else — when the registry cannot serve it — loaded from the
/// image archive kept beside the snapshots.
pub async fn ensure_image(
    ctx: &Ctx,
    engine: &Engine,
    pinned: &str,
    known_id: Option<&str>,
) -> Result<String> {
    if let Some(id) = known_id {
        if engine.has_image(id).await {
            return Ok(id.to_string());
        }
    }
    if engine.has_image(pinned).await {
        return engine.image_id(pinned).await;
    }
    let pull_err = match pull(ctx, engine, pinned).await {
        Ok(p) => return engine.image_id(&p).await,
        Err(e) => e,
    };
    let Some(id) = known_id else {
        return Err(pull_err);
    };
    let archive = image_archive(ctx, id);
    if !archive.exists() {
        return Err(pull_err);
    }
    ctx.note(&format!(
        "registry could not serve {pinned}; loading {}",
        archive.display()
    ));
    check_image_archive(&archive)?;
    engine.load_image(&archive).await?;
    if !engine.has_image(id).await {
        return Err(Error::Other(format!(
            "{} did not contain image {id}",
            archive.display()
        )));
    }
    // Loaded images carry no name; give it one so `docker image prune` leaves it alone.
    let r = ImageRef::parse(pinned)?;
    let hex = id.trim_start_matches("sha256:");
    let short = hex.get(..12).unwrap_or(hex);
    engine
        .tag(id, &r.repository(), &format!("sp-{short}"))
        .await?;
    Ok(id.to_string())
}

/// Checks an image archive against the sha256 written beside it.
fn check_image_archive(path: &std::path::Path) -> Result<()> {
    let want = std::fs::read_to_string(path.with_extension("zst.sha256")).unwrap_or_default();
    let file = std::fs::File::open(path).map_err(|e| Error::io_path("open", path, e))?;
    let (_, got) = crate::snapshot::archive::HashingReader::new(std::io::BufReader::new(file))
        .finish()
        .map_err(|e| Error::io_path("read", path, e))?;
    if want.trim() != got {
        return Err(Error::Other(format!(
            "{}: checksum mismatch; the image archive is damaged",
            path.display()
        )));
    }
    Ok(())
}

/// The environment sp gives a site: its database coordinates, then the spec's own env.
pub fn site_env(ctx: &Ctx, spec: &SiteSpec) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if spec.database.enabled {
        let hfc = &ctx.config.mysql.host_for_containers;
        let (host, port) = split_host_port(hfc).unwrap_or((hfc.as_str(), 3306));
        let n = &spec.name;
        env.insert("DATABASE_HOST".into(), host.to_string());
        env.insert("DATABASE_PORT".into(), port.to_string());
        env.insert("DATABASE_NAME".into(), n.clone());
        env.insert("DATABASE_USER".into(), n.clone());
        env.insert(
            "DATABASE_PASSWORD_FILE".into(),
            PASSWORD_IN_CONTAINER.into(),
        );
        // No password in the URL: apps read DATABASE_PASSWORD_FILE, so `docker inspect` shows no secret.
        env.insert(
            "DATABASE_URL".into(),
            format!("mysql://{n}@{host}:{port}/{n}"),
        );
    }
    env.extend(spec.all_env().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Whether a site's web container publishes a 127.0.0.1 host port: always without the proxy,
/// and with it only when the spec asks (`publish = true`, for debugging).
pub fn publishes(ctx: &Ctx, spec: &SiteSpec) -> bool {
    !ctx.config.proxy.enabled() || spec.publish
}

/// The container plan for a site: web (published on `host_port`) or release (`cmd`).
pub fn container_plan(
    ctx: &Ctx,
    spec: &SiteSpec,
    image: &str,
    image_ref: &str,
    role: Role,
    host_port: Option<u16>,
    cmd: Option<Vec<String>>,
) -> Result<ContainerPlan> {
    let paths = ctx.paths(&spec.name);
    let mut binds = vec![format!("{}:{}", paths.data().display(), spec.data_mount)];
    if spec.database.enabled {
        binds.push(format!(
            "{}:{PASSWORD_IN_CONTAINER}:ro",
            paths.db_password().display()
        ));
    }
    Ok(ContainerPlan {
        instance: ctx.config.instance.clone(),
        site: spec.name.clone(),
        role,
        image: image.to_string(),
        image_ref: image_ref.to_string(),
        user: format!("{0}:{0}", spec.uid),
        env: site_env(ctx, spec),
        binds,
        network: crate::engine::site_network(&ctx.config.instance, &spec.name),
        publish: host_port.map(|h| (spec.port, h)),
        memory: spec.memory.as_deref().map(parse_memory).transpose()?,
        cmd,
        confinement: spec.container.confinement(),
    })
}

/// A fresh container name: `sp-INSTANCE-SITE-ROLE-RANDOM`.
pub fn container_name(ctx: &Ctx, site: &str, role: Role) -> String {
    let suffix: u32 = rand::random();
    format!(
        "sp-{}-{site}-{}-{suffix:08x}",
        ctx.config.instance,
        role.as_str()
    )
}

/// Waits until a new container is healthy: its HTTP health path answers 2xx/3xx at `addr`
/// (`127.0.0.1:HOSTPORT`, or the container's own IP and port), or (with no path) it keeps
/// running for the grace period. Fails fast when it exits or restarts.
pub async fn wait_healthy(engine: &Engine, id: &str, spec: &SiteSpec, addr: &str) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(spec.health.timeout_secs());
    let grace = Duration::from_secs(spec.health.grace_secs());
    // Ask soon and often at first (most servers listen within tens of milliseconds), then
    // every quarter second.
    let mut pause = Duration::from_millis(20);
    loop {
        let st = engine.status(id).await?;
        if !st.running || st.restarting || st.restart_count > 0 {
            let logs = engine.tail_logs(id, 5).await;
            let logs = if logs.is_empty() {
                String::new()
            } else {
                format!("; last output: {}", crate::site::one_line(&logs))
            };
            let what = if st.restart_count > 0 || st.restarting {
                format!(
                    "keeps exiting (restarted {} times)",
                    st.restart_count.max(1)
                )
            } else {
                format!(
                    "exited with code {}",
                    st.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "?".into())
                )
            };
            return Err(Error::Other(format!("the new container {what}{logs}")));
        }
        match &spec.health.path {
            Some(path) => {
                let url = format!("http://{addr}{path}");
                if let Some(code) = http_status(&url).await {
                    if code < 400 {
                        return Ok(());
                    }
                }
                if Instant::now() >= deadline {
                    return Err(Error::Other(format!(
                        "no healthy answer from {url} within {}s",
                        spec.health.timeout_secs()
                    )));
                }
            }
            None => {
                if started.elapsed() >= grace {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The HTTP status of a GET, or None when nothing answered.
pub async fn http_status(url: &str) -> Option<u16> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(3)))
            .http_status_as_error(false)
            .build()
            .into();
        agent.get(&url).call().ok().map(|r| r.status().as_u16())
    })
    .await
    .ok()
    .flatten()
}

/// Runs `cmd` in a one-off container of `pinned` with the site's env, mounts and uid; returns
/// its exit code and the last lines of its output. The container is removed either way.
pub async fn run_oneoff(
    ctx: &Ctx,
    engine: &Engine,
    spec: &SiteSpec,
    image_id: &str,
    pinned: &str,
    role: Role,
    cmd: &[String],
) -> Result<(i64, String)> {
    let plan = container_plan(ctx, spec, image_id, pinned, role, None, Some(cmd.to_vec()))?;
    let name = container_name(ctx, &spec.name, role);
    let id = engine.create(&name, &plan).await?;
    let result = async {
        engine.start(&id).await?;
        let code = engine.wait(&id).await?;
        Ok((code, engine.tail_logs(&id, 20).await))
    }
    .await;
    let _ = engine.remove(&id).await;
    result
}

/// Unpacks a site archive into a private staging directory beside `target` (in its parent,
/// named after it), off the async threads, checking every member and the archive's size and
/// sha256 against `expect` as it streams (see [`crate::snapshot::stage`]). Nothing is in
/// place until the caller commits the returned tree.
pub async fn stage_site(
    ctx: &Ctx,
    label: &str,
    archive: std::path::PathBuf,
    expect: Option<crate::snapshot::FileEntry>,
    target: std::path::PathBuf,
) -> Result<crate::snapshot::stage::Staged> {
    use crate::snapshot::stage::{self, Expect, StageError};
    let shown = archive
        .file_name()
        .map(|n| format!("sites/{}", n.to_string_lossy()))
        .unwrap_or_else(|| archive.display().to_string());
    let expect = expect.ok_or_else(|| {
        Error::Other(format!(
            "{shown} is not in the snapshot's file list; nothing of this site was restored"
        ))
    })?;
    let (parent, name) = match (target.parent(), target.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => {
            return Err(Error::Invalid(format!(
                "bad site directory {}",
                target.display()
            )))
        }
    };
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = std::sync::atomic::AtomicU64::new(expect.size);
    let counter = read.clone();
    let work = tokio::task::spawn_blocking(move || {
        stage::stage_counted(
            &archive,
            Expect {
                size: expect.size,
                sha256: &expect.sha256,
            },
            &parent,
            &name,
            counter,
        )
    });
    let done = ctx
        .with_progress(label, &read, &total, work)
        .await
        .map_err(|e| Error::Other(format!("unpack task: {e}")))?;
    done.map_err(|e| match e {
        StageError::Refused(_) => Error::Other(format!(
            "{shown}: {e}; nothing of this site was restored — sp will not unpack this archive (inspect it by hand with `zstd -dc {shown} | tar -tv`, or restore another snapshot)"
        )),
        StageError::Damaged(_) => Error::Other(format!(
            "{shown}: {e}; nothing of this site was restored — restore another snapshot, or a copy of this one from elsewhere"
        )),
        StageError::Io(_) => Error::Other(format!(
            "{shown}: unpacking failed: {e}; nothing of this site was restored — fix the cause (disk space?) and run the same command again"
        )),
    })
}
