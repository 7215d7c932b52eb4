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
    for s in [&good, &broken, &failing] {
        host.sp_ok(&[
            "site",
            "add",
            s,
            "--image",
            &rig.image("v1"),
            "--health-path",
            "/",
        ]);
    }
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
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
