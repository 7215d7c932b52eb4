//! Tenants are untrusted: nothing a site controls reaches another site or the host. Sites on
//! networks of their own, confined containers, uids and domains never shared (secrets: see
//! `secrets.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{rig, Host};

/// The id of a site's web container.
fn web_container(host: &Host, site: &str) -> String {
    let out = Command::new("docker")
        .args(["ps", "-q"])
        .args(["--filter", &format!("label=sp.instance={}", host.instance)])
        .args(["--filter", &format!("label=sp.site={site}")])
        .args(["--filter", "label=sp.role=web"])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 1, "{site}: web containers {ids:?}");
    ids[0].clone()
}

fn inspect(id: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("docker inspect");
    assert!(out.status.success(), "inspect {id}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    v[0].clone()
}

/// The container's (only) network name and its IP on it.
fn network_and_ip(id: &str) -> (String, String) {
    let v = inspect(id);
    let nets = v["NetworkSettings"]["Networks"]
        .as_object()
        .expect("networks")
        .clone();
    assert_eq!(nets.len(), 1, "{id} is on {:?}", nets.keys());
    let (name, n) = nets.into_iter().next().expect("one network");
    (
        name,
        n["IPAddress"].as_str().unwrap_or_default().to_string(),
    )
}

/// From inside `site`'s container: an HTTP GET to IP:PORT, bounded to a few seconds.
fn probe(host: &Host, site: &str, ip: &str, port: u16) -> String {
    let script =
        format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 6 nc -w 3 {ip} {port} 2>&1; true");
    let out = host.exec_sh(site, &script);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The uid in a site's spec.
fn uid_of(host: &Host, site: &str) -> u32 {
    let spec =
        std::fs::read_to_string(host.sites_dir().join(site).join("site.toml")).expect("spec");
    spec.lines()
        .find_map(|l| l.strip_prefix("uid = "))
        .and_then(|u| u.trim().parse().ok())
        .unwrap_or_else(|| panic!("{site}: no uid in {spec}"))
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

pub fn add(host: &Host, name: &str, extra: &[&str]) {
    let image = host.rig.image("v1");
    let mut args = vec!["site", "add", name, "--image", &image, "--health-path", "/"];
    args.extend_from_slice(extra);
    host.sp_ok(&args);
}

#[test]
fn sites_cannot_reach_each_other_but_reach_their_database() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let (a, b) = (host.site_name("na"), host.site_name("nb"));
    add(&host, &a, &[]);
    // b serves other content, so a reply from b can never be mistaken for a's own.
    host.sp_ok(&[
        "site",
        "add",
        &b,
        "--image",
        &rig.image("v2"),
        "--health-path",
        "/",
    ]);
    let (ca, cb) = (web_container(&host, &a), web_container(&host, &b));
    let (net_a, ip_a) = network_and_ip(&ca);
    let (net_b, ip_b) = network_and_ip(&cb);
    assert_ne!(ip_a, ip_b, "{net_a} and {net_b} overlap");
    assert_eq!(net_a, format!("sp-{}-{a}", host.instance));
    assert_eq!(net_b, format!("sp-{}-{b}", host.instance));
    let labels = Command::new("docker")
        .args(["network", "inspect", "-f", "{{json .Labels}}", &net_a])
        .output()
        .unwrap();
    let labels: serde_json::Value = serde_json::from_slice(&labels.stdout).unwrap();
    assert_eq!(labels["sp.instance"], host.instance.as_str());
    assert_eq!(labels["sp.site"], a.as_str());

    // The probe works (a reaches itself), but not across sites, and it gives up in time.
    assert!(
        probe(&host, &a, &ip_a, 8080).contains("site v1"),
        "the probe does not work"
    );
    assert!(probe(&host, &b, &ip_b, 8080).contains("site v2"));
    let t = Instant::now();
    let across = probe(&host, &a, &ip_b, 8080);
    assert!(
        !across.contains("site v2"),
        "{a} ({ip_a}) reached {b} ({ip_b}): {across}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    let across = probe(&host, &b, &ip_a, 8080);
    assert!(
        !across.contains("site v1"),
        "{b} ({ip_b}) reached {a} ({ip_a}): {across}"
    );

    // Docker rewrites its own isolation rules whenever a network comes or goes, and for a
    // moment lets connections through; sp's nftables table holds meanwhile.
    for (net, site) in [(&net_a, &a), (&net_b, &b)] {
        let id = Command::new("docker")
            .args(["network", "inspect", "-f", "{{.Id}}", net])
            .output()
            .unwrap();
        let bridge = format!("br-{}", &String::from_utf8_lossy(&id.stdout)[..12]);
        let set = Command::new("nft")
            .args(["list", "set", "inet", "sp_isolation", "site_bridges"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&set.stdout).contains(&bridge),
            "{site}'s bridge {bridge} is not behind sp's table"
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, instance) = (stop.clone(), host.instance.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let name = format!("sp-{instance}-churn{n}");
                let _ = Command::new("docker")
                    .args(["network", "create", "--label"])
                    .arg(format!("sp.instance={instance}"))
                    .arg(&name)
                    .output();
                let _ = Command::new("docker")
                    .args(["network", "rm", &name])
                    .output();
                n += 1;
            }
        })
    };
    let script = format!(
        "for i in $(seq 1 15); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 1 nc -w 1 {ip_b} 8080 2>/dev/null; done; true"
    );
    let out = host.exec_sh(&a, &script);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    churn.join().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.contains("site v2"),
        "{a} reached {b} while networks changed: {out}"
    );

    // Nor through the host: b's published port (127.0.0.1 only) is not open to containers.
    let across = probe(&host, &a, "host.docker.internal", host.port(&b));
    assert!(
        !across.contains("site v2"),
        "{a} reached {b}'s port: {across}"
    );

    // Each still reaches the shared MariaDB, and serves through its published port.
    for (s, page) in [(&a, "site v1\n"), (&b, "site v2\n")] {
        let out = host.exec_sh(
            s,
            "nc -w 3 \"$DATABASE_HOST\" \"$DATABASE_PORT\" </dev/null",
        );
        let greeting = String::from_utf8_lossy(&out.stdout);
        assert!(
            greeting.contains("MariaDB"),
            "{s}: no greeting: {greeting:?}"
        );
        let out = host.exec_sh(
            s,
            "nc -w 3 host.docker.internal \"$DATABASE_PORT\" </dev/null",
        );
        let greeting = String::from_utf8_lossy(&out.stdout);
        assert!(
            greeting.contains("MariaDB"),
            "{s}: nothing at host.docker.internal: {greeting:?}"
        );
        assert_eq!(host.get(s, "/").as_deref(), Some(page));
    }
    // A redeploy stays on the site's network.
    host.sp_ok(&["site", "deploy", &a, "--image", &rig.image("v2")]);
    assert_eq!(network_and_ip(&web_container(&host, &a)).0, net_a);
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v2\n"));

    // The network goes with the site.
    host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
    host.sp_ok(&["site", "remove", &b]);
    assert!(host.networks().is_empty(), "left: {:?}", host.networks());
    host.sp_ok(&["site", "remove", &b, "--purge", "--yes"]);
}

#[test]
fn uids_and_domains_are_never_shared() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("ua");
    let dom_a = format!("{a}.example.test");
    add(&host, &a, &["--no-db", "--domain", &dom_a]);
    let uid_a = uid_of(&host, &a);

    // A hand-written spec with a's uid, then with a's domain: refused, nothing changed.
    let b = host.site_name("ub");
    let b_dir = host.sites_dir().join(&b);
    std::fs::create_dir_all(&b_dir).unwrap();
    let spec_b = |uid: u32, domain: &str| {
        format!(
            "name = \"{b}\"\nimage = \"{}\"\nuid = {uid}\nport = 8080\ndomains = [\"{domain}\"]\n\n[database]\nenabled = false\n",
            rig.image("v1")
        )
    };
    for (uid, domain, what) in [
        (uid_a, format!("{b}.example.test"), format!("uid {uid_a}")),
        (uid_a + 77, dom_a.clone(), format!("domain {dom_a}")),
    ] {
        std::fs::write(b_dir.join("site.toml"), spec_b(uid, &domain)).unwrap();
        for args in [vec!["apply", b.as_str()], vec!["apply"]] {
            let (code, err) = host.sp_fail(&args);
            assert_eq!(code, 4, "{args:?}: {err}");
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "not one line: {err}");
            // The one refused names the other (`sp apply` checks the sites in name order).
            let names_other = err.contains(&format!("{b}: ")) && err.contains(&format!("site {a}"))
                || err.contains(&format!("{a}: ")) && err.contains(&format!("site {b}"));
            assert!(err.contains(&what) && names_other, "{args:?}: {err}");
        }
        let entries: Vec<_> = std::fs::read_dir(&b_dir).unwrap().flatten().collect();
        assert_eq!(entries.len(), 1, "apply changed {}", b_dir.display());
        let web = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=sp.site={b}")])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&web.stdout).trim().is_empty());
    }
    std::fs::remove_dir_all(&b_dir).unwrap();

    // site add refuses a's domain, and creates nothing.
    let c = host.site_name("uc");
    let (code, err) = host.sp_fail(&[
        "site",
        "add",
        &c,
        "--image",
        &rig.image("v1"),
        "--no-db",
        "--domain",
        &dom_a,
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&format!("site {a}")), "{err}");
    assert!(!host.sites_dir().join(&c).exists());

    // A removed site (files kept) keeps its uid: the next site gets another one.
    host.sp_ok(&["site", "remove", &a]);
    let d = host.site_name("ud");
    add(&host, &d, &["--no-db", "--domain", &dom_a]);
    let uid_d = uid_of(&host, &d);
    assert_ne!(uid_d, uid_a, "{d} got the uid of removed {a}");
    // Nor any uid that owns a file under sites_dir.
    let e = host.site_name("ue");
    let next = uid_d.max(uid_a) + 1;
    let f = host.sites_dir().join(&d).join("data/owned-by-next");
    std::fs::write(&f, "x").unwrap();
    std::os::unix::fs::chown(&f, Some(next), Some(next)).unwrap();
    add(&host, &e, &["--no-db"]);
    let uid_e = uid_of(&host, &e);
    assert!(
        ![uid_a, uid_d, next].contains(&uid_e),
        "{e} got a taken uid {uid_e}"
    );
    for s in [&d, &e] {
        host.sp_ok(&["site", "remove", s, "--purge", "--yes"]);
    }
    host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
}

#[test]
fn containers_are_confined_and_the_spec_can_say_otherwise() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("ca");
    add(&host, &a, &["--no-db"]);
    let hc = inspect(&web_container(&host, &a))["HostConfig"].clone();
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]), "{hc}");
    assert!(hc["CapAdd"].is_null(), "{hc}");
    assert_eq!(hc["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
    assert_eq!(hc["PidsLimit"], 512);
    assert_eq!(hc["LogConfig"]["Type"], "json-file");
    assert_eq!(
        hc["LogConfig"]["Config"],
        serde_json::json!({"max-size": "10m", "max-file": "3"})
    );
    // What the kernel says inside: no capabilities at all, no new privileges.
    let status = host.exec_sh(&a, "cat /proc/1/status");
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");

    // The spec loosens and tightens it; apply recreates the container, which still serves.
    host.spec_append(
        &a,
        "[container]\ncap_add = [\"NET_BIND_SERVICE\"]\nno_new_privileges = false\npids_limit = 100\nlog_max_size = \"1m\"\nlog_max_files = 2\n",
    );
    let out = host.json(&["apply", &a]);
    assert!(out.to_string().contains("spec changed"), "{out}");
    let hc = inspect(&web_container(&host, &a))["HostConfig"].clone();
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(hc["CapAdd"], serde_json::json!(["NET_BIND_SERVICE"]));
    assert!(
        hc["SecurityOpt"].is_null() || hc["SecurityOpt"] == serde_json::json!([]),
        "{hc}"
    );
    assert_eq!(hc["PidsLimit"], 100);
    assert_eq!(
        hc["LogConfig"]["Config"],
        serde_json::json!({"max-size": "1m", "max-file": "2"})
    );
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));

    // A capability name sp does not know is refused with one line, before anything changes.
    let spec = host.sites_dir().join(&a).join("site.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("NET_BIND_SERVICE", "EVERYTHING")).unwrap();
    let (code, err) = host.sp_fail(&["apply", &a]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("container.cap_add \"EVERYTHING\""), "{err}");
    std::fs::write(&spec, text).unwrap();
    host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
}

#[test]
fn a_restore_may_not_take_another_sites_uid_or_domain() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("ra");
    let dom = format!("{a}.example.test");
    add(&host, &a, &["--no-db", "--domain", &dom]);
    let uid_a = uid_of(&host, &a);
    let id = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
    let no_containers_of = |site: &str| {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=sp.site={site}")])
            .args(["--filter", &format!("label=sp.instance={}", host.instance)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };

    // b now holds a's old uid: restoring a is refused before anything is written.
    let b = host.site_name("rb");
    add(&host, &b, &["--no-db"]);
    assert_eq!(uid_of(&host, &b), uid_a);
    let (code, err) = host.sp_fail(&["restore", &id, "--site", &a]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("uid {uid_a} already belongs to site {b}")),
        "{err}"
    );
    assert!(!host.sites_dir().join(&a).exists());
    assert!(no_containers_of(&a));
    // --as restores it as a copy with a uid of its own.
    let copy = host.site_name("rc");
    host.sp_ok(&["restore", &id, "--site", &a, "--as", &copy]);
    assert_ne!(uid_of(&host, &copy), uid_a);
    host.sp_ok(&["site", "remove", &copy, "--purge", "--yes"]);
    host.sp_ok(&["site", "remove", &b, "--purge", "--yes"]);

    // d holds a's domain (and a uid far from a's): the restore of a is refused, its
    // container never starts.
    let d = host.site_name("rd");
    let d_dir = host.sites_dir().join(&d);
    std::fs::create_dir_all(&d_dir).unwrap();
    std::fs::write(
        d_dir.join("site.toml"),
        format!(
            "name = \"{d}\"\nimage = \"{}\"\nuid = {}\nport = 8080\ndomains = [\"{dom}\"]\n\n[health]\npath = \"/\"\n\n[database]\nenabled = false\n",
            rig.image("v1"),
            uid_a + 500
        ),
    )
    .unwrap();
    host.sp_ok(&["apply", &d]);
    let (code, err) = host.sp_fail(&["restore", &id, "--site", &a]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("domain {dom} already belongs to site {d}")),
        "{err}"
    );
    assert!(no_containers_of(&a));
    assert_eq!(host.get(&d, "/").as_deref(), Some("site v1\n"));
    host.sp_ok(&["site", "remove", &d, "--purge", "--yes"]);
    let _ = std::fs::remove_dir_all(host.sites_dir().join(&a));
}
