//! One bad site never stops the others' backup, and never fails silently: a spec that no
//! longer parses and a failing pre-backup command leave those sites out of a `partial`
//! snapshot, and the failure hook, `sp backup`'s exit code and `sp status` name both.

use std::io::{Read, Write};
use std::net::TcpListener;

use crate::harness::{rig, Host};

/// A one-shot HTTP listener on 127.0.0.1 that answers 200 and hands back the first request.
fn listener() -> (u16, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .ok();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as much body as Content-Length says.
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(h) = text.find("\r\n\r\n") {
                    let len = text[..h]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got.len() >= h + 4 + len {
                        break;
                    }
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
        }
    });
    (port, rx)
}

/// The report of `sp --json backup` that left a site out (and so exited 1).
fn left_out(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_broken_spec_and_a_failing_pre_command_leave_only_those_sites_out() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let (port, got) = listener();
    host.config_replace(
        "# on_failure_url = \"https://hc-ping.com/UUID/fail\"",
        &format!("on_failure_url = \"http://127.0.0.1:{port}/fail\""),
    );
    let [good, broken, failing] = ["pg", "pb", "pf"].map(|p| host.site_name(p));
    crate::harness::add_sites(&host, &[&good, &broken, &failing]);
    host.install_schedule();
    let spec = host.sites_dir().join(&broken).join("site.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let port_line = text
        .lines()
        .find(|l| l.starts_with("port = "))
        .unwrap()
        .to_string();
    std::fs::write(&spec, text.replace(&port_line, "port = \"eighty\"")).unwrap();
    host.spec_append(
        &failing,
        "[backup]\npre_command = [\"sh\", \"-c\", \"exit 3\"]\n",
    );

    let out = host.sp(&["--json", "backup"]);
    let r = left_out(&out);
    assert_eq!(r["kind"], "partial", "{r}");
    let failed: Vec<(String, String)> = r["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["site"].as_str().unwrap().into(),
                f["step"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(failed.contains(&(broken.clone(), "spec".into())), "{r}");
    assert!(
        failed.contains(&(failing.clone(), "pre-backup".into())),
        "{r}"
    );
    let snaps = host.json(&["snapshots"]);
    assert_eq!(
        snaps["snapshots"][0]["sites"],
        serde_json::json!([good]),
        "{snaps}"
    );
    assert_eq!(snaps["snapshots"][0]["kind"], "partial");

    let call = got
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the failure hook was called");
    assert!(call.starts_with("POST /fail"), "{call}");
    assert!(call.contains(&broken) && call.contains(&failing), "{call}");
    assert!(!call.contains(&format!("\"site\":\"{good}\"")), "{call}");

    let status = host.sp(&["status"]);
    assert_eq!(status.status.code(), Some(1));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&broken) && text.contains(&failing), "{text}");
    assert!(text.contains("FAILED"), "{text}");

    // Fixed, the next backup is full again and status is happy.
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("port = \"eighty\"", &port_line),
    )
    .unwrap();
    let t = std::fs::read_to_string(host.sites_dir().join(&failing).join("site.toml")).unwrap();
    std::fs::write(
        host.sites_dir().join(&failing).join("site.toml"),
        t.replace("exit 3", "exit 0"),
    )
    .unwrap();
    let r = host.json(&["backup"]);
    assert_eq!(r["kind"], "full", "{r}");
    host.sp_ok(&["status"]);
}

/// Runs `sp` with a bound on its wall time (so a hang fails the test instead of CI): the
/// output, or None when it had to be killed.
fn bounded(host: &Host, args: &[&str], secs: u64) -> Option<std::process::Output> {
    let mut child = host
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let done = crate::harness::eventually(secs, || child.try_wait().ok().flatten());
    if done.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    Some(child.wait_with_output().unwrap())
}

/// A frozen server (SIGSTOP: it keeps its socket and answers nothing) fails the backup on its
/// own, within `mysql.timeout`, naming the site and the step.
#[test]
fn a_frozen_database_server_fails_the_backup_instead_of_hanging_it() {
    let Some(rig) = rig() else { return };
    let db = crate::harness::ScratchMariadb::start();
    let host = Host::new(&rig);
    host.use_mysql(&db.url());
    host.config_replace("timeout = \"30s\"", "timeout = \"3s\"");
    host.login();
    let site = host.site_name("fz");
    host.sp_ok(&[
        "site",
        "add",
        &site,
        "--image",
        &rig.image("v1"),
        "--health-path",
        "/",
    ]);
    db.signal("-STOP");
    let out = bounded(&host, &["backup"], 90);
    db.signal("-CONT");
    let out = out.expect("sp backup hung on a frozen server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&site) && err.contains("step 'database"),
        "{err}"
    );
    assert!(err.contains("mysql.timeout"), "{err}");
}

/// A dump that stops sending (its table locked away by another session) is stopped after
/// `mysql.timeout` of silence; that site is left out, the others are backed up.
#[test]
fn a_dump_that_makes_no_progress_is_stopped_and_only_its_site_left_out() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.config_replace("timeout = \"30s\"", "timeout = \"3s\"");
    host.login();
    let (stuck, fine) = (host.site_name("ds"), host.site_name("df"));
    crate::harness::add_sites(&host, &[&stuck, &fine]);
    host.root_sql(&format!(
        "CREATE TABLE `{stuck}`.t (id INT); INSERT INTO `{stuck}`.t VALUES (1);"
    ));
    let mut locker = std::process::Command::new("mariadb")
        .args(["--socket", rig.var("SP_RIG_MYSQL_SOCKET"), "-uroot", "-e"])
        .arg(format!("LOCK TABLES `{stuck}`.t WRITE; SELECT SLEEP(60);"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = bounded(&host, &["--json", "backup"], 90);
    let _ = locker.kill();
    let _ = locker.wait();
    let out = out.expect("sp backup hung on a dump that made no progress");
    let r = left_out(&out);
    assert_eq!(r["failed"][0]["site"], stuck.as_str(), "{r}");
    assert!(
        r["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("sent nothing"),
        "{r}"
    );
    assert_eq!(r["sites"][0]["site"], fine.as_str(), "{r}");
}

fn paused(container: &str) -> bool {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Paused}}", container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

/// A `pause = true` site is never left frozen: SIGTERM during the archive step unpauses it
/// before sp exits; after a SIGKILL (which nothing can catch) `sp apply` unpauses it.
#[test]
fn a_backup_interrupted_during_the_archive_step_leaves_no_site_paused() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let site = host.site_name("ps");
    host.sp_ok(&[
        "site",
        "add",
        &site,
        "--image",
        &rig.image("v1"),
        "--health-path",
        "/",
        "--no-db",
    ]);
    host.spec_append(&site, "[backup]\npause = true\n");
    // Enough incompressible data that archiving takes a while.
    let data = host.sites_dir().join(&site).join("data");
    let st = std::process::Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=400", "status=none"])
        .arg(format!("of={}", data.join("big.bin").display()))
        .status()
        .unwrap();
    assert!(st.success());
    let container = host.json(&["site", "show", &site])["containers"][0]
        .as_str()
        .unwrap()
        .to_string();

    for signal in ["-TERM", "-KILL"] {
        let child = host
            .cmd(&["backup"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let frozen = crate::harness::eventually(30, || paused(&container).then_some(()));
        assert!(frozen.is_some(), "the backup never paused the site");
        let st = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        if signal == "-TERM" {
            assert_eq!(
                out.status.code(),
                Some(130),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!paused(&container), "SIGTERM left the site paused");
        } else {
            assert!(
                paused(&container),
                "SIGKILL cannot be caught: the site is still paused"
            );
            host.sp_ok(&["apply"]);
            assert!(!paused(&container), "sp apply did not unpause the site");
        }
        assert_eq!(host.get(&site, "/").as_deref(), Some("site v1\n"));
        let snaps = host.json(&["snapshots"]);
        assert!(snaps["snapshots"].as_array().unwrap().is_empty(), "{snaps}");
    }
}

/// A drill that fails reaches the failure hook and `sp status`, like a failed backup.
#[test]
fn a_failed_drill_calls_the_failure_hook_and_fails_status() {
    let Some((host, [a])) = crate::restore::host_with_sites(["dh"]) else {
        return;
    };
    host.install_schedule();
    let (port, got) = listener();
    host.config_replace(
        "# on_failure_url = \"https://hc-ping.com/UUID/fail\"",
        &format!("on_failure_url = \"http://127.0.0.1:{port}/fail\""),
    );
    let id = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    host.sp_ok(&["status"]);
    let text = crate::restore::read_dump(&host, &id, &a);
    let cut = text.rfind("-- Dump completed").unwrap();
    let broken = format!(
        "{}INSERT INTO gone VALUES (1);\n{}",
        &text[..cut],
        &text[cut..]
    );
    crate::restore::replace_dump(&host, &id, &a, &broken);
    let d = host.sp(&["drill", &id]);
    assert_eq!(d.status.code(), Some(1));
    let call = got
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the failure hook was called");
    assert!(call.starts_with("POST /fail"), "{call}");
    assert!(
        call.contains("\"drill\"") && call.contains(&id) && call.contains("gone"),
        "{call}"
    );
    assert_eq!(host.sp(&["status"]).status.code(), Some(1));
}
