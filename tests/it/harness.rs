//! The rig harness: every test gets its own host — config (SP_CONFIG), temp dirs, instance
//! label, port range and unique site names — on the real components that `scripts/rig.sh up`
//! provisions (Docker, MariaDB, an authenticated registry with the busybox site image).
//! Everything a host created is torn down on drop unless SP_TEST_KEEP is set.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The provisioned rig, read from rig.env.
#[derive(Clone, Debug)]
pub struct Rig {
    vars: HashMap<String, String>,
}

impl Rig {
    pub fn var(&self, k: &str) -> &str {
        self.vars
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("rig.env lacks {k}"))
    }
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.var("SP_RIG_IMAGE"))
    }
    pub fn registry(&self) -> &str {
        self.var("SP_RIG_REGISTRY")
    }
    /// The admin URL without its password, and the password (sp init takes it on stdin).
    pub fn mysql_admin(&self) -> (String, String) {
        split_password(self.var("SP_RIG_MYSQL_URL"))
    }
}

/// `mysql://USER:PASSWORD@REST` → (`mysql://USER@REST`, PASSWORD).
pub fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("URL with a scheme");
    let (userinfo, host) = rest.rsplit_once('@').expect("URL with user@host");
    let (user, pw) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (format!("{scheme}://{user}@{host}"), pw.to_string())
}

/// The rig, or None (with a loud message) when it is not provisioned outside CI.
/// Under CI a missing rig is a failure, never a skip.
pub fn rig() -> Option<Rig> {
    let path = std::env::var("SP_RIG_ENV").unwrap_or_else(|_| "/var/lib/sp-rig/rig.env".into());
    let docker_ok = Path::new("/var/run/docker.sock").exists();
    let text = std::fs::read_to_string(&path).ok().filter(|_| docker_ok);
    let Some(text) = text else {
        let msg = format!("the real-service rig is not provisioned ({path} missing or no Docker socket): run `sudo scripts/rig.sh up`");
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {msg}\n");
        return None;
    };
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Rig { vars })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for this process and call.
fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let r: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{n}{:03x}", pid % 0xfff, r % 0xfff)
}

/// One test's sp host.
pub struct Host {
    pub rig: Rig,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub instance: String,
    sites: std::sync::Mutex<Vec<String>>,
    images: std::sync::Mutex<Vec<String>>,
}

impl Host {
    /// A fresh host with its own config, written by `sp init`.
    pub fn new(rig: &Rig) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("sp-it-")
            .tempdir()
            .expect("tempdir");
        let instance = format!("it{}", unique());
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Each host gets 20 ports of its own, so parallel tests never race for one.
        // Above the kernel's ephemeral range (32768-60999): a port in it can be any outgoing
        // connection's local port at the moment a container publishes it.
        let port_first = 61000 + ((std::process::id() % 4) * 50 + n % 50) as u16 * 20;
        let config = dir.path().join("etc/config.toml");
        let host = Host {
            rig: rig.clone(),
            config,
            instance,
            sites: Default::default(),
            images: Default::default(),
            dir,
        };
        let d = host.dir.path();
        let (url, password) = rig.mysql_admin();
        let out = host.sp_in(
            &[
                "init",
                "--instance",
                &host.instance,
                "--sites-dir",
                &d.join("sites").to_string_lossy(),
                "--backup-dir",
                &d.join("backups").to_string_lossy(),
                "--state-dir",
                &d.join("state").to_string_lossy(),
                "--mysql-url",
                &url,
                "--mysql-password-stdin",
                "--mysql-host-for-containers",
                &format!(
                    "{}:{}",
                    rig.var("SP_RIG_GATEWAY"),
                    rig.var("SP_RIG_MYSQL_PORT")
                ),
                "--port-range",
                &format!("{}-{}", port_first, port_first + 19),
            ],
            &format!("{password}\n"),
        );
        assert!(
            out.status.success(),
            "sp init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Sites publish their own 127.0.0.1 ports; tests of the proxy turn it on
        // ([`Host::with_proxy`]).
        host.config_replace("mode = \"caddy\"", "mode = \"none\"");
        host
    }

    pub fn sites_dir(&self) -> PathBuf {
        self.dir.path().join("sites")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A unique site name, remembered for teardown.
    pub fn site_name(&self, prefix: &str) -> String {
        let name = format!("{prefix}{}", unique());
        self.sites.lock().expect("sites").push(name.clone());
        name
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sp"));
        c.args(args)
            .env("SP_CONFIG", &self.config)
            .env_remove("SP_LOG");
        c
    }

    /// Runs sp with `input` on stdin.
    pub fn sp_in(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sp");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait sp")
    }

    pub fn sp(&self, args: &[&str]) -> Output {
        self.sp_in(args, "")
    }

    /// Runs sp and insists on success; returns stdout.
    pub fn sp_ok(&self, args: &[&str]) -> String {
        let out = self.sp(args);
        assert!(
            out.status.success(),
            "sp {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs sp and insists on failure; returns (exit code, stderr).
    pub fn sp_fail(&self, args: &[&str]) -> (i32, String) {
        let out = self.sp(args);
        assert!(
            !out.status.success(),
            "sp {args:?} should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The names in `backup_dir` that start with `prefix` (`.tmp-`, `.fetch-`, `.`: what a
    /// backup or restore must not leave behind).
    pub fn backup_dir_names(&self, prefix: &str) -> Vec<String> {
        std::fs::read_dir(self.backup_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ids `sp snapshots EXTRA…` lists, oldest first.
    pub fn snapshot_ids(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["snapshots"];
        args.extend_from_slice(extra);
        self.json(&args)["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .map(|s| s["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.sp_ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("sp {args:?}: not JSON ({e}): {out}"))
    }

    pub fn login(&self) {
        let out = self.sp_in(
            &[
                "registry",
                "login",
                self.rig.registry(),
                "--username",
                self.rig.var("SP_RIG_REGISTRY_USER"),
                "--password-stdin",
            ],
            &format!("{}\n", self.rig.var("SP_RIG_REGISTRY_PASSWORD")),
        );
        assert!(
            out.status.success(),
            "login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The site's current host port.
    pub fn port(&self, site: &str) -> u16 {
        let v = self.json(&["site", "show", site]);
        v["host_port"]
            .as_u64()
            .unwrap_or_else(|| panic!("{site} has no port: {v}")) as u16
    }

    /// GET a path of a site; the body, or None when nothing answered 2xx.
    pub fn get(&self, site: &str, path: &str) -> Option<String> {
        http_get(self.port(site), path)
    }

    /// Containers of this host's instance (docker CLI, independent of sp).
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=sp.instance={}", self.instance),
            ])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    /// Networks of this host's instance (docker CLI, independent of sp).
    pub fn networks(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "network",
                "ls",
                "-q",
                "--filter",
                &format!("label=sp.instance={}", self.instance),
            ])
            .output()
            .expect("docker network ls");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    /// Runs SQL as the rig's root over the socket; returns tab-separated output.
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args([
                "--socket",
                self.rig.var("SP_RIG_MYSQL_SOCKET"),
                "-uroot",
                "--default-character-set=utf8mb4",
                "-N",
                "-B",
                "-e",
                sql,
            ])
            .output()
            .expect("mariadb");
        assert!(
            out.status.success(),
            "root sql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn database_exists(&self, db: &str) -> bool {
        !self
            .root_sql(&format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'"
            ))
            .trim()
            .is_empty()
    }

    pub fn user_exists(&self, user: &str) -> bool {
        !self
            .root_sql(&format!(
                "SELECT User FROM mysql.user WHERE User = '{user}'"
            ))
            .trim()
            .is_empty()
    }

    /// Runs SQL over TCP as `user` with `password` (through a private option file, not argv).
    pub fn sql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> Output {
        let opt = self.dir.path().join(format!("client-{}.cnf", unique()));
        std::fs::write(&opt, format!("[client]\npassword=\"{password}\"\n")).expect("option file");
        let out = Command::new("mariadb")
            .arg(format!("--defaults-extra-file={}", opt.display()))
            .args([
                "-h127.0.0.1",
                "-P",
                self.rig.var("SP_RIG_MYSQL_PORT"),
                "-u",
                user,
                "--comments",
                "-N",
                "-B",
                db,
                "-e",
                sql,
            ])
            .output()
            .expect("mariadb");
        let _ = std::fs::remove_file(&opt);
        out
    }

    /// Runs SQL as a site's own user, with its password on file, on its own database.
    pub fn sql_as_site(&self, site: &str, sql: &str) -> Output {
        self.sql_as(site, &self.password(site), site, sql)
    }

    /// Runs a shell script inside the site's running container (`sp site exec`).
    pub fn exec_sh(&self, site: &str, script: &str) -> Output {
        self.sp(&["site", "exec", site, "--", "sh", "-c", script])
    }

    pub fn password(&self, site: &str) -> String {
        std::fs::read_to_string(self.sites_dir().join(site).join("secrets/db_password"))
            .expect("password file")
            .trim()
            .to_string()
    }
}

/// GET http://127.0.0.1:PORT/PATH with curl; the body on 2xx, None otherwise.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Retries `f` for up to `secs` seconds (for things that settle asynchronously).
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::env::var_os("SP_TEST_KEEP").is_some() {
            eprintln!(
                "SP_TEST_KEEP: leaving {} (instance {})",
                self.dir.path().display(),
                self.instance
            );
            if let Ok(placeholder) = tempfile::tempdir() {
                let _ = std::mem::replace(&mut self.dir, placeholder).keep();
            }
            return;
        }
        for id in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        for net in self.networks() {
            let _ = Command::new("docker")
                .args(["network", "rm", &net])
                .output();
            // sp's firewall entry for the network's bridge (br- and the id's first 12).
            if let Some(hex) = net.get(..12) {
                let b = format!("br-{hex}");
                let script = format!(
                    "delete element inet sp_isolation site_bridges {{ \"{b}\" }}\ndelete element inet sp_isolation same_bridge {{ \"{b}\" . \"{b}\" }}\n"
                );
                if let Ok(mut child) = Command::new("nft")
                    .args(["-f", "-"])
                    .stdin(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                {
                    if let Some(mut stdin) = child.stdin.take() {
                        let _ = stdin.write_all(script.as_bytes());
                    }
                    let _ = child.wait();
                }
            }
        }
        let images = self.images.lock().map(|s| s.clone()).unwrap_or_default();
        for i in images {
            let _ = Command::new("docker").args(["rmi", "-f", &i]).output();
        }
        let sites = self.sites.lock().map(|s| s.clone()).unwrap_or_default();
        for s in sites {
            let _ = Command::new("mariadb")
                .args([
                    "--socket",
                    self.rig.var("SP_RIG_MYSQL_SOCKET"),
                    "-uroot",
                    "-e",
                ])
                .arg(format!(
                    "DROP DATABASE IF EXISTS `{s}`; DROP USER IF EXISTS '{s}'@'%';"
                ))
                .output();
        }
    }
}

impl Host {
    /// Replaces text in the config file (e.g. a key's default line).
    pub fn config_replace(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        assert!(text.contains(from), "config has no {from:?}");
        std::fs::write(&self.config, text.replacen(from, to, 1)).expect("write config");
    }

    /// Points the config at another admin connection (no password file).
    pub fn use_mysql(&self, url: &str) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("url = ") {
                    format!("url = \"{url}\"\n")
                } else if l.starts_with("password_file = ") {
                    String::new()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Appends TOML (tables) to a site's spec.
    pub fn spec_append(&self, site: &str, toml: &str) {
        let p = self.sites_dir().join(site).join("site.toml");
        let mut text = std::fs::read_to_string(&p).expect("spec");
        text.push('\n');
        text.push_str(toml);
        std::fs::write(&p, text).expect("write spec");
    }

    /// Remembers a scratch database to drop on teardown.
    pub fn track_db(&self, name: &str) {
        self.sites.lock().expect("sites").push(name.to_string());
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }
}

/// A throwaway MariaDB server of one test's own (socket only), for tests that stop the server.
pub struct ScratchMariadb {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<std::process::Child>,
}

impl ScratchMariadb {
    pub fn start() -> ScratchMariadb {
        let dir = tempfile::Builder::new()
            .prefix("sp-db-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let socket = dir.path().join("sock");
        let st = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db");
        assert!(
            st.status.success(),
            "install-db: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=root",
                "--skip-networking",
                "--innodb-buffer-pool-size=32M",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("err.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        let db = ScratchMariadb {
            _dir: dir,
            socket,
            child: Some(child),
        };
        let up = eventually(30, || {
            let o = Command::new("mariadb")
                .arg(format!("--socket={}", db.socket.display()))
                .args(["-uroot", "-e", "SELECT 1"])
                .output()
                .ok()?;
            o.status.success().then_some(())
        });
        assert!(up.is_some(), "scratch MariaDB did not start");
        db
    }

    pub fn url(&self) -> String {
        format!("mysql://root@localhost?socket={}", self.socket.display())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: it keeps its sockets and answers nothing.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let st = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .expect("kill");
            assert!(st.success());
        }
    }

    /// Kills the server at once (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ScratchMariadb {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Host {
    /// An image of this test's own, `REGISTRY/sp-test/INSTANCE:TAG`, made from the rig's
    /// rootfs for `base` (v1, v2) and pushed, so the test may delete it without disturbing others.
    pub fn private_image(&self, base: &str, tag: &str) -> String {
        let rig_dir = PathBuf::from(self.rig.var("SP_RIG_DIR"));
        let reference = format!("{}/sp-test/{}:{tag}", self.rig.registry(), self.instance);
        let out = Command::new("docker")
            .args([
                "import",
                "--change",
                "CMD [\"/bin/httpd\",\"-f\",\"-p\",\"8080\",\"-h\",\"/www\"]",
            ])
            .args(["--change", "EXPOSE 8080", "--change", "ENV PATH=/bin"])
            .args(["--change", &format!("LABEL sp.test={}", self.instance)])
            .arg(rig_dir.join(format!("rootfs-{base}.tar")))
            .arg(&reference)
            .output()
            .expect("docker import");
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("docker")
            .env("DOCKER_CONFIG", rig_dir.join("docker-config"))
            .args(["push", "-q", &reference])
            .output()
            .expect("docker push");
        assert!(
            out.status.success(),
            "push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.images.lock().expect("images").push(reference.clone());
        reference
    }

    /// Deletes a pushed image's manifest from the registry (as a GitLab cleanup policy would).
    pub fn delete_from_registry(&self, reference_with_digest: &str) {
        let (name, digest) = reference_with_digest
            .split_once('@')
            .expect("pinned reference");
        let path = name.split_once('/').expect("registry/path").1;
        let out = Command::new("curl")
            .args(["-sf", "-X", "DELETE", "-u"])
            .arg(format!(
                "{}:{}",
                self.rig.var("SP_RIG_REGISTRY_USER"),
                self.rig.var("SP_RIG_REGISTRY_PASSWORD")
            ))
            .arg(format!(
                "http://{}/v2/{path}/manifests/{digest}",
                self.rig.registry()
            ))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "registry DELETE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// After a test changed the file `rel` of a snapshot: its size and sha256 in the manifest made
/// to match, and the manifest re-signed with the host's key ([`sign_manifest`]).
pub fn resign_file(snap: &Path, rel: &str) {
    use sha2::Digest;
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap.join("manifest.json")).expect("manifest"))
            .expect("manifest json");
    let bytes = std::fs::read(snap.join(rel)).expect("snapshot file");
    for f in m["files"].as_array_mut().expect("files") {
        if f["path"] == rel {
            f["size"] = bytes.len().into();
            f["sha256"] = hex::encode(sha2::Sha256::digest(&bytes)).into();
        }
    }
    sign_manifest(snap, &m);
}

/// Adds sites on the rig's v1 image with a health path, one after the other.
pub fn add_sites(host: &Host, names: &[&String]) {
    for s in names {
        host.sp_ok(&[
            "site",
            "add",
            s,
            "--image",
            &host.rig.image("v1"),
            "--health-path",
            "/",
        ]);
    }
}

/// Writes `manifest.json`, its checksum file and its signature by the host's own key into a
/// snapshot folder somewhere inside the test host's dir (whose `state/` holds the key): a
/// snapshot as sp itself would have written it, so only what the test changed inside can tell.
pub fn sign_manifest(snap: &Path, manifest: &serde_json::Value) {
    let state = snap
        .ancestors()
        .map(|d| d.join("state"))
        .find(|s| s.join("keys").is_dir())
        .expect("a host state dir with a key above the snapshot");
    let key = sp::key::HostKey::load(&state)
        .expect("read the host key")
        .expect("the host has a snapshot key");
    let bytes = unsigned_manifest(snap, manifest);
    std::fs::write(snap.join("manifest.json.sig"), key.sign(&bytes)).expect("write signature");
}

/// Writes `manifest.json` and a matching checksum file — what anybody can do without the
/// host's key; the old signature stays (and no longer matches). Returns the manifest bytes.
pub fn unsigned_manifest(snap: &Path, manifest: &serde_json::Value) -> Vec<u8> {
    use sha2::Digest;
    let bytes = serde_json::to_vec_pretty(manifest).expect("manifest json");
    std::fs::write(snap.join("manifest.json"), &bytes).expect("write manifest");
    let sum = hex::encode(sha2::Sha256::digest(&bytes));
    std::fs::write(
        snap.join("manifest.json.sha256"),
        format!("{sum}  manifest.json\n"),
    )
    .expect("write sum");
    bytes
}

impl Host {
    /// Deletes `REGISTRY/PATH:TAG` from the registry (best effort, never panics): what a test
    /// pushed with [`Host::private_image`] and must not leave behind.
    pub fn delete_tag_from_registry(&self, reference: &str) {
        let Some((name, tag)) = reference.rsplit_once(':') else {
            return;
        };
        let Some((_, path)) = name.split_once('/') else {
            return;
        };
        let auth = format!(
            "{}:{}",
            self.rig.var("SP_RIG_REGISTRY_USER"),
            self.rig.var("SP_RIG_REGISTRY_PASSWORD")
        );
        let base = format!("http://{}/v2/{path}/manifests", self.rig.registry());
        let Ok(head) = Command::new("curl")
            .args(["-sfI", "-u", &auth, "-H"])
            .arg("Accept: application/vnd.docker.distribution.manifest.v2+json")
            .arg(format!("{base}/{tag}"))
            .output()
        else {
            return;
        };
        let headers = String::from_utf8_lossy(&head.stdout).to_string();
        let digest = headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        });
        if let Some(d) = digest {
            let _ = Command::new("curl")
                .args(["-sf", "-X", "DELETE", "-u", &auth])
                .arg(format!("{base}/{d}"))
                .output();
        }
    }

    /// Installs the schedule into this host's own cron file (never /etc/cron.d), so that
    /// `sp status` fails only for what a test does; returns the file.
    pub fn install_schedule(&self) -> PathBuf {
        let cron = self.dir.path().join("cron.d/simple-paas");
        self.sp_ok(&[
            "schedule",
            "install",
            "--cron-file",
            &cron.to_string_lossy(),
        ]);
        cron
    }

    /// The audit log as `sp log --json` shows it (optionally for one site).
    pub fn audit(&self, site: Option<&str>) -> Vec<serde_json::Value> {
        let mut args = vec!["log"];
        if let Some(s) = site {
            args.extend(["--site", s]);
        }
        let v = self.json(&args);
        assert_eq!(v["schema"], 1, "{v}");
        v["entries"].as_array().expect("entries").clone()
    }
}
