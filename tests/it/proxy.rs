//! The HTTPS front door on the real rig: a Caddy container (the image the rig builds from
//! Debian's caddy) in front of the sites, certificates from a pebble of the test's own
//! (Let's Encrypt's ACME test server), clients on 127.0.0.1 resolving the test domains there.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{eventually, rig, Host, Rig};

/// A pebble of one test's own, on the Docker bridge gateway (where the proxy container reaches
/// it), with the rig's API certificate; killed on drop. Its issuing root is fetched once.
pub struct Pebble {
    child: Option<Child>,
    pub dir: String,
    /// Where clients find the CA that issued the sites' certificates.
    pub root: PathBuf,
    _tmp: tempfile::TempDir,
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Pebble {
    pub fn start(rig: &Rig) -> Pebble {
        let gw = rig.var("SP_RIG_GATEWAY");
        let pdir = Path::new(rig.var("SP_RIG_PEBBLE_DIR"));
        let tmp = tempfile::tempdir().expect("tempdir");
        let (port, mgmt) = (free_port(gw), free_port(gw));
        let config = tmp.path().join("pebble.json");
        let cfg = serde_json::json!({"pebble": {
            "listenAddress": format!("{gw}:{port}"),
            "managementListenAddress": format!("{gw}:{mgmt}"),
            "certificate": pdir.join("cert.pem"),
            "privateKey": pdir.join("key.pem"),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        std::fs::write(&config, cfg.to_string()).expect("pebble config");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .env("PEBBLE_VA_ALWAYS_VALID", "1")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let root = tmp.path().join("root.pem");
        let ca = rig.var("SP_RIG_PEBBLE_CA").to_string();
        let got = eventually(20, || {
            let out = Command::new("curl")
                .args(["-sf", "--cacert", &ca])
                .arg(format!("https://{gw}:{mgmt}/roots/0"))
                .output()
                .ok()?;
            (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
        })
        .expect("pebble answers");
        std::fs::write(&root, got).expect("root");
        Pebble {
            child: Some(child),
            dir: format!("https://{gw}:{port}/dir"),
            root,
            _tmp: tmp,
        }
    }

    /// Stops it: from now on no certificate can be issued.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A host whose proxy is on, certificates from `pebble`, ports 80/443 of its own on 127.0.0.1.
pub struct ProxyHost {
    pub host: Host,
    pub pebble: Pebble,
    pub https: u16,
    pub http: u16,
}

impl ProxyHost {
    pub fn new(rig: &Rig) -> ProxyHost {
        let host = Host::new(rig);
        host.login();
        let pebble = Pebble::start(rig);
        let text = std::fs::read_to_string(&host.config).expect("config");
        // The last two ports of the host's own range (its sites publish none): Docker holds
        // published ports without listening on them, so a port picked by the kernel could be
        // one another test's host is about to publish.
        let last: u16 = text
            .lines()
            .find_map(|l| l.strip_prefix("port_range = \""))
            .and_then(|r| r.trim_end_matches('"').split_once('-'))
            .and_then(|(_, b)| b.parse().ok())
            .expect("port_range in the config");
        let (http, https) = (last - 1, last);
        let (head, _) = text.split_once("[proxy]").expect("[proxy] section");
        let proxy = format!(
            "[proxy]\nmode = \"caddy\"\nimage = \"{}\"\nlisten = \"127.0.0.1\"\n\
             email = \"ops@example.com\"\nacme_ca = \"{}\"\nacme_ca_root = \"{}\"\n\
             http_port = {http}\nhttps_port = {https}\ndrain = \"1s\"\n",
            rig.var("SP_RIG_CADDY_IMAGE"),
            pebble.dir,
            rig.var("SP_RIG_PEBBLE_CA"),
        );
        std::fs::write(&host.config, format!("{head}{proxy}")).expect("write config");
        ProxyHost {
            host,
            pebble,
            https,
            http,
        }
    }

    /// `curl` against the proxy for `url` (`https://a.test/`), resolving its host to 127.0.0.1
    /// on the proxy's port and trusting only pebble's root.
    pub fn curl(&self, url: &str, extra: &[&str]) -> std::process::Output {
        curl_via(self.https, self.http, &self.pebble.root, url, extra)
    }

    /// The body of `https://DOMAIN/`, or None when it did not answer 2xx.
    pub fn get(&self, domain: &str) -> Option<String> {
        let out = self.curl(&format!("https://{domain}/"), &["-f"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The serial number of the certificate the proxy presents for `domain`.
    pub fn served_serial(&self, domain: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect 127.0.0.1:{} -servername {domain} </dev/null 2>/dev/null | openssl x509 -noout -serial",
                self.https
            ))
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .strip_prefix("serial=")
            .unwrap_or_else(|| panic!("no certificate served for {domain}: {text:?}"))
            .to_ascii_lowercase()
    }

    /// Adds a site on `tag` of the rig image with a health path, at `domain`.
    pub fn add(&self, name: &str, tag: &str, domain: &str) {
        self.host.sp_ok(&[
            "site",
            "add",
            name,
            "--image",
            &self.host.rig.image(tag),
            "--port",
            "8080",
            "--health-path",
            "/",
            "--domain",
            domain,
        ]);
    }
}

fn curl_via(https: u16, http: u16, root: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("url host");
    let port = if url.starts_with("https") {
        https
    } else {
        http
    };
    let target = url.replacen(host, &format!("{host}:{port}"), 1);
    Command::new("curl")
        .args(["-sS", "--max-time", "5", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(root)
        .args(extra)
        .arg(target)
        .output()
        .expect("curl")
}

/// Requests `https://DOMAIN/` about 20 times a second from another thread until stopped, each
/// on a new connection; counts answers that were not 2xx (or did not come). HTTP/1.1: over
/// HTTP/2 a connection the old config's server accepted just before a reload can get a GOAWAY
/// before its first request, which browsers retry and curl does not (seen once in 188).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU32>,
    failed: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(p: &ProxyHost, domain: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU32::new(0));
        let failed = Arc::new(AtomicU32::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let (https, http, root) = (p.https, p.http, p.pebble.root.clone());
        let url = format!("https://{domain}/");
        let thread = std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let t = std::time::Instant::now();
                let out = curl_via(https, http, &root, &url, &["-f", "--http1.1"]);
                if out.status.success() {
                    o.fetch_add(1, Ordering::SeqCst);
                } else {
                    f.fetch_add(1, Ordering::SeqCst);
                    errors.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
                }
                if let Some(rest) = Duration::from_millis(50).checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            errors
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the loop: (answered, failed, the failures' messages).
    fn finish(mut self) -> (u32, u32, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self
            .thread
            .take()
            .map(|t| t.join().expect("load thread"))
            .unwrap_or_default();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

/// Runs `change` while [`Load`] requests `https://DOMAIN/` (from half a second before to half
/// a second after) and asserts that no request failed.
fn without_a_failed_request(p: &ProxyHost, domain: &str, change: impl FnOnce()) {
    let load = Load::start(p, domain);
    std::thread::sleep(Duration::from_millis(500));
    change();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, errors) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {errors:?}",
        ok + failed
    );
    assert!(ok >= 10, "only {ok} requests ran");
}

/// Host ports a site's containers publish (docker CLI).
fn published_ports(host: &Host, site: &str) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=sp.instance={}", host.instance),
            "--filter",
            &format!("label=sp.site={site}"),
        ])
        .output()
        .expect("docker ps");
    let ids = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!ids.trim().is_empty(), "{site} has no running container");
    let mut ports = String::new();
    for id in ids.split_whitespace() {
        let out = Command::new("docker")
            .args(["port", id])
            .output()
            .expect("docker port");
        ports.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    ports
}

#[test]
fn sites_are_served_over_https_by_domain_and_only_through_the_proxy() {
    let Some(rig) = rig() else { return };
    let p = ProxyHost::new(&rig);
    let (a, b) = (p.host.site_name("pa"), p.host.site_name("pb"));
    p.add(&a, "v1", "a.test");
    p.add(&b, "v2", "b.test");

    // Both at once, each at its own domain, with a certificate pebble issued (curl trusts only
    // pebble's root).
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));
    assert_eq!(p.get("b.test").as_deref(), Some("site v2\n"));
    // Plain HTTP redirects to HTTPS.
    let out = p.curl(
        "http://a.test/",
        &["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "308 https://a.test/",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The site containers publish no host port.
    assert_eq!(published_ports(&p.host, &a), "");
    assert_eq!(published_ports(&p.host, &b), "");

    // Status: each domain with its site, upstream, issuer and expiry.
    let st = p.host.json(&["proxy", "status"]);
    assert_eq!(st["running"], true, "{st}");
    let domains = st["domains"].as_array().expect("domains");
    let find = |d: &str| {
        domains
            .iter()
            .find(|x| x["domain"] == d)
            .unwrap_or_else(|| panic!("{d} missing: {st}"))
            .clone()
    };
    let da = find("a.test");
    assert_eq!(da["site"], a.as_str());
    assert!(
        da["upstream"]
            .as_str()
            .unwrap()
            .starts_with(&format!("sp-{}-{a}-web-", p.host.instance)),
        "{da}"
    );
    assert!(da["issuer"].as_str().unwrap().contains("Pebble"), "{da}");
    assert!(da["expires"].as_str().unwrap().ends_with('Z'), "{da}");
    assert_eq!(da["serial"].as_str().unwrap(), p.served_serial("a.test"));
    assert_eq!(find("b.test")["site"], b.as_str());

    // A second site may not claim a.test; nothing of it is left.
    let c = p.host.site_name("pc");
    let (code, err) = p.host.sp_fail(&[
        "site",
        "add",
        &c,
        "--image",
        &rig.image("v1"),
        "--domain",
        "a.test",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("a.test"), "{err}");
    assert!(!p.host.sites_dir().join(&c).exists());
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));

    // Removing a site removes its route; the other keeps serving.
    p.host.sp_ok(&["site", "remove", &b]);
    assert_eq!(p.get("b.test"), None);
    let st = p.host.json(&["proxy", "status"]);
    assert!(
        st["domains"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["domain"] != "b.test"),
        "{st}"
    );
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));
}

#[test]
fn deploy_and_rollback_under_load_drop_no_request() {
    let Some(rig) = rig() else { return };
    let p = ProxyHost::new(&rig);
    let a = p.host.site_name("pd");
    p.add(&a, "v1", "a.test");
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));

    without_a_failed_request(&p, "a.test", || {
        p.host
            .sp_ok(&["site", "deploy", &a, "--image", &rig.image("v2")]);
    });
    assert_eq!(p.get("a.test").as_deref(), Some("site v2\n"));
    without_a_failed_request(&p, "a.test", || {
        p.host.sp_ok(&["site", "rollback", &a]);
    });
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));

    // An env change rolls out the same way: plain and secret (stdin) values.
    without_a_failed_request(&p, "a.test", || {
        p.host.sp_ok(&["site", "env", &a, "set", "GREETING=hello"]);
        let out = p.host.sp_in(
            &["site", "env", &a, "set", "--stdin", "API_TOKEN"],
            "s3cr3t-t0ken",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let seen = p.host.exec_sh(&a, "echo $GREETING $API_TOKEN");
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout).trim(),
        "hello s3cr3t-t0ken"
    );
    // One web container remains.
    let ids = p.host.containers();
    assert_eq!(ids.len(), 2, "site + proxy: {ids:?}");
}

#[test]
fn a_config_caddy_rejects_changes_nothing() {
    let Some(rig) = rig() else { return };
    let p = ProxyHost::new(&rig);
    let a = p.host.site_name("pr");
    p.add(&a, "v1", "a.test");
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));
    let live = p.host.state_dir().join("proxy/etc/Caddyfile");
    let before = std::fs::read_to_string(&live).expect("live config");

    // The host's own fragment (proxy.extra), written with a directive Caddy does not know.
    let extra = p.host.dir.path().join("etc/Caddyfile.extra");
    std::fs::write(&extra, "c.test {\n\tbogus_directive on\n}\n").unwrap();
    let mut cfg = std::fs::read_to_string(&p.host.config).unwrap();
    cfg.push_str(&format!("extra = \"{}\"\n", extra.display()));
    std::fs::write(&p.host.config, cfg).unwrap();

    let (code, err) = p.host.sp_fail(&["proxy", "reload"]);
    assert_ne!(code, 0);
    assert!(err.contains("Caddy refused"), "{err}");
    assert!(err.contains("bogus_directive"), "{err}");
    assert_eq!(std::fs::read_to_string(&live).unwrap(), before);
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));

    // A deploy whose switch Caddy refuses leaves the old container serving.
    let (code, err) = p
        .host
        .sp_fail(&["site", "deploy", &a, "--image", &rig.image("v2")]);
    assert_ne!(code, 0);
    assert!(err.contains("bogus_directive"), "{err}");
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));
    assert_eq!(
        p.host.containers().len(),
        2,
        "the new container was removed"
    );

    // Fixed, the reload goes through.
    std::fs::write(&extra, "c.test {\n\trespond \"extra\"\n}\n").unwrap();
    p.host.sp_ok(&["proxy", "reload"]);
    assert!(std::fs::read_to_string(&live)
        .unwrap()
        .contains("respond \"extra\""));
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));
}

#[test]
fn a_restored_host_serves_the_same_certificate_without_asking_the_ca() {
    let Some(rig) = rig() else { return };
    let mut p = ProxyHost::new(&rig);
    let a = p.host.site_name("ps");
    p.add(&a, "v1", "a.test");
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));
    let serial = p.served_serial("a.test");
    p.host.sp_ok(&["backup"]);
    // The proxy's image is archived with the snapshot and kept by prune like a site's.
    let pin: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.host.state_dir().join("proxy/image.json")).expect("image.json"),
    )
    .unwrap();
    let hex = pin["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let archive = p.host.backup_dir().join(format!("images/{hex}.tar.zst"));
    assert!(archive.exists(), "no archive of the proxy image");
    p.host.sp_ok(&["prune"]);
    assert!(archive.exists(), "prune deleted the proxy image's archive");
    let key = p.host.dir.path().join("offhost.pub");
    std::fs::write(&key, p.host.sp_ok(&["key", "export", "--public"])).unwrap();

    // Wipe: containers (the proxy too), the site, its database, sp's state (the proxy's
    // data with it); keep only the snapshots and a minimal config. The CA goes away.
    for id in p.host.containers() {
        Command::new("docker")
            .args(["rm", "-f", &id])
            .output()
            .unwrap();
    }
    p.host.root_sql(&format!(
        "DROP DATABASE IF EXISTS `{a}`; DROP USER IF EXISTS '{a}'@'%';"
    ));
    std::fs::remove_dir_all(p.host.sites_dir()).unwrap();
    std::fs::remove_dir_all(p.host.state_dir()).unwrap();
    let text = std::fs::read_to_string(&p.host.config).unwrap();
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| {
            [
                "instance",
                "sites_dir",
                "backup_dir",
                "state_dir",
                "url",
                "host_for_containers",
            ]
            .iter()
            .any(|k| l.starts_with(&format!("{k} = ")))
        })
        .collect();
    let (top, mysql) = keep.split_at(4);
    std::fs::write(
        &p.host.config,
        format!("{}\n[mysql]\n{}\n", top.join("\n"), mysql.join("\n")),
    )
    .unwrap();
    p.pebble.stop();
    assert_eq!(p.get("a.test"), None, "nothing serves after the wipe");

    let key = key.to_string_lossy().to_string();
    p.host.sp_ok(&["restore", "latest", "--key", &key]);
    // At once, the same certificate: Caddy had it in the restored data.
    assert_eq!(p.get("a.test").as_deref(), Some("site v1\n"));
    assert_eq!(p.served_serial("a.test"), serial);
    // The site's history tells what started it.
    let h = p.host.json(&["site", "history", &a]);
    let reasons: Vec<&str> = h["deploys"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"))
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["add", "restore"], "{h}");
    let st = p.host.json(&["proxy", "status"]);
    assert_eq!(
        st["domains"][0]["serial"].as_str(),
        Some(serial.as_str()),
        "{st}"
    );
}

#[test]
fn a_snapshot_whose_proxy_data_holds_a_link_is_refused() {
    let Some(rig) = rig() else { return };
    let p = ProxyHost::new(&rig);
    let a = p.host.site_name("pl");
    p.add(&a, "v1", "a.test");
    let id = p.host.json(&["backup"])["id"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    let snap = p.host.backup_dir().join(&id);

    // The hostile part: Caddy's data with a link to a host directory.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("data")).unwrap();
    std::os::unix::fs::symlink("/etc", work.path().join("data/caddy")).unwrap();
    let tar = work.path().join("p.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(work.path())
        .args(["-cf"])
        .arg(&tar)
        .arg("data")
        .output()
        .unwrap();
    assert!(out.status.success());
    let zst = snap.join("proxy.tar.zst");
    let out = Command::new("zstd")
        .args(["-qf", "-o"])
        .arg(&zst)
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::harness::resign_file(&snap, "proxy.tar.zst");

    // A host without the site and without proxy data restores that snapshot.
    p.host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
    for id in p.host.containers() {
        Command::new("docker")
            .args(["rm", "-f", &id])
            .output()
            .unwrap();
    }
    std::fs::remove_dir_all(p.host.state_dir().join("proxy")).unwrap();
    let (code, err) = p.host.sp_fail(&["restore", &id]);
    assert_ne!(code, 0);
    assert!(
        err.contains("proxy.tar.zst") && err.contains("symlink"),
        "{err}"
    );
    assert!(!p.host.state_dir().join("proxy/data").exists());
    assert!(
        !p.host.sites_dir().join(&a).exists(),
        "no site was restored"
    );
}
