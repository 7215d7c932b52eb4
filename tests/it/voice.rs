//! One voice: every read command's `--json` is an object with a `schema`, times to the second,
//! errors as JSON too; a closed pipe is a quiet exit; the audit log names who changed what;
//! `sp status` fails when the schedule is not installed; a schedule that can never fire is
//! refused where it is written.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::harness::{add_sites, rig, Host};

/// Every string in `v` that is an RFC 3339 time with fractions of a second.
fn fractional_times(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => {
            let b = s.as_bytes();
            if b.len() > 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' {
                out.push(s.clone());
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| fractional_times(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| fractional_times(x, out)),
        _ => {}
    }
}

/// Runs `sp --json ARGS` whatever its exit code; its stdout as JSON.
fn json_any(host: &Host, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = host.sp(&a);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "sp {args:?}: not JSON ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn every_read_command_answers_one_json_object_with_a_schema() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    // Before `registry login`: the refused pull says what to do next, in text and in JSON.
    let early = host.site_name("jn");
    let (code, err) = host.sp_fail(&["site", "add", &early, "--image", &rig.image("v1")]);
    assert_eq!(code, 1, "{err}");
    let login = format!("sp registry login {}", rig.registry());
    assert!(err.contains(&login), "{err}");
    let out = host.sp(&["--json", "site", "add", &early, "--image", &rig.image("v1")]);
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(e["hint"].as_str().unwrap_or("").contains(&login), "{e}");
    host.login();
    let a = host.site_name("ja");
    add_sites(&host, &[&a]);
    host.sp_ok(&["backup"]);
    host.sp_ok(&["verify", "latest"]);

    let reads: [&[&str]; 15] = [
        &["key", "export", "--public"],
        &["site", "list"],
        &["site", "show", &a],
        &["site", "history", &a],
        &["site", "env", &a, "list"],
        &["proxy", "status"],
        &["snapshots"],
        &["status"],
        &["schedule", "show"],
        &["key", "show"],
        &["doctor"],
        &["log"],
        &["verify", "latest"],
        &["verify", "all"],
        &["prune", "--dry-run"],
    ];
    for args in reads {
        let v = json_any(&host, args);
        assert!(v.is_object(), "sp {args:?}: {v}");
        assert_eq!(v["schema"], 1, "sp {args:?}: {v}");
        let mut frac = Vec::new();
        fractional_times(&v, &mut frac);
        assert!(
            frac.is_empty(),
            "sp {args:?}: times with fractions: {frac:?}"
        );
    }
    // One name per field: a site is `site`, ports say which side they are on.
    let list = host.json(&["site", "list"]);
    let s = &list["sites"][0];
    assert_eq!(s["site"], a.as_str(), "{list}");
    assert!(s["host_port"].as_u64().is_some(), "{list}");
    assert_eq!(s["container_port"], 8080, "{list}");
    assert!(s.get("name").is_none() && s.get("port").is_none(), "{list}");

    // The secret key is never JSON.
    let (code, err) = host.sp_fail(&["--json", "key", "export"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        !err.contains("sp-ed25519-secret") && err.contains("without --json"),
        "{err}"
    );

    // An error with --json is JSON on stderr too, with its exit code.
    let out = host.sp(&["--json", "site", "show", "nosuchsite"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
        panic!(
            "stderr not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(e["schema"], 1);
    assert_eq!(e["exit_code"], 3);
    assert!(e["error"].as_str().unwrap().contains("nosuchsite"), "{e}");
}

#[test]
fn a_closed_pipe_is_a_quiet_exit_and_man_writes_a_page_per_command() {
    // The reader is gone before sp writes a byte: every write meets a closed pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sp"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sp");
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(err.is_empty(), "{err}");
    // As a person types it.
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} completions bash | head -1 >/dev/null; echo $?",
            env!("CARGO_BIN_EXE_sp")
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sh.stdout).trim(), "0");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sp"))
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "sp.1",
        "sp-site.1",
        "sp-site-add.1",
        "sp-log.1",
        "sp-schedule-install.1",
    ] {
        assert!(dir.path().join(page).is_file(), "no {page}");
    }
}

#[test]
fn the_audit_log_names_who_changed_what() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("la");
    let as_alice = |args: &[&str]| {
        host.cmd(args)
            .env("SUDO_USER", "alice-ops")
            .stdin(Stdio::null())
            .output()
            .expect("sp")
    };
    let image = rig.image("v1");
    // -v: each note once, and no colour into a pipe.
    let add = as_alice(&[
        "-v",
        "site",
        "add",
        &a,
        "--image",
        &image,
        "--env",
        "API_TOKEN=hunter2-secret",
    ]);
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let err = String::from_utf8_lossy(&add.stderr);
    assert_eq!(err.matches("pulling").count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "colour into a pipe: {err:?}");
    assert!(as_alice(&["site", "stop", &a]).status.success());
    // Exec into a stopped site: its own exit code, and a hint.
    let exec = as_alice(&["site", "exec", &a, "--", "true"]);
    assert_eq!(exec.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&exec.stderr).contains("sp site start"));
    assert!(as_alice(&["site", "start", &a]).status.success());
    assert_eq!(
        as_alice(&["site", "add", &a, "--image", &image])
            .status
            .code(),
        Some(4)
    );
    host.sp_ok(&["site", "list"]);
    host.sp(&["status"]);

    let log = host.audit(None);
    let commands: Vec<String> = log
        .iter()
        .map(|e| e["command"].as_str().unwrap().to_string())
        .collect();
    // init and registry login (by the harness), then alice's five; reads are not audited.
    assert_eq!(log.len(), 7, "{commands:#?}");
    assert!(commands[0].contains(" init "), "{commands:#?}");
    assert!(commands[1].contains(" registry login "), "{commands:#?}");
    let alice: Vec<&serde_json::Value> = log.iter().filter(|e| e["actor"] == "alice-ops").collect();
    assert_eq!(alice.len(), 5, "{log:#?}");
    for (e, (verb, code)) in alice.iter().zip([
        ("site add", 0),
        ("site stop", 0),
        ("site exec", 6),
        ("site start", 0),
        ("site add", 4),
    ]) {
        let cmd = e["command"].as_str().unwrap();
        assert!(cmd.contains(verb), "{cmd} is not {verb}");
        assert_eq!(e["exit_code"], code, "{e}");
        assert_eq!(e["result"], if code == 0 { "ok" } else { "failed" }, "{e}");
        assert_eq!(e["sites"], serde_json::json!([a]), "{e}");
        assert!(!e["time"].as_str().unwrap().contains('.'), "{e}");
        assert!(e["duration_seconds"].as_f64().is_some(), "{e}");
    }
    assert!(
        alice[4]["error"].as_str().unwrap().contains("exists"),
        "{:?}",
        alice[4]
    );
    // The value given in argv is not kept, the key is.
    let raw = std::fs::read_to_string(host.state_dir().join("audit.log")).unwrap();
    assert!(!raw.contains("hunter2"), "{raw}");
    assert!(raw.contains("API_TOKEN=<redacted>"), "{raw}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(host.state_dir().join("audit.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // --site keeps the commands that acted on that site.
    assert_eq!(host.audit(Some(&a)).len(), 5);
    let text = host.sp_ok(&["log", "--site", &a]);
    assert!(
        text.contains("alice-ops") && text.contains("site stop"),
        "{text}"
    );
}

#[test]
fn status_fails_until_the_schedule_is_installed_and_matches() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("sa");
    add_sites(&host, &[&a]);
    host.sp_ok(&["backup"]);

    let out = host.sp(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not installed") && text.contains("sp schedule install"),
        "{text}"
    );
    assert!(
        !text.contains("next backup: 20"),
        "promises a backup nothing runs: {text}"
    );
    let v = json_any(&host, &["status"]);
    assert_eq!(v["schedule"]["installed"], false, "{v}");
    assert!(v["next_backup"].is_null(), "{v}");

    let cron = host.install_schedule();
    let v = host.json(&["status"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["schedule"]["kind"], "cron", "{v}");
    assert_eq!(v["schedule"]["location"], cron.to_string_lossy().as_ref());
    assert!(v["next_backup"].is_string(), "{v}");

    // The config's schedule changed and nobody re-installed: status says so.
    host.config_replace("schedule = \"17 3 * * *\"", "schedule = \"19 3 * * *\"");
    let out = host.sp(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("differs") && text.contains("--cron-file"),
        "{text}"
    );
    host.install_schedule();
    host.sp_ok(&["status"]);
    // The cron file gone: not installed.
    std::fs::remove_file(&cron).unwrap();
    assert_eq!(host.sp(&["status"]).status.code(), Some(1));
}

#[test]
fn a_schedule_that_never_fires_is_refused_where_it_is_written() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("na");
    add_sites(&host, &[&a]);
    let port = host.port(&a);
    let spec = host.sites_dir().join(&a).join("site.toml");
    let before = std::fs::read_to_string(&spec).unwrap();
    host.spec_append(
        &a,
        "[[jobs]]\nname = \"feb31\"\nschedule = \"0 0 31 2 *\"\ncommand = [\"true\"]\n",
    );
    for args in [vec!["apply"], vec!["apply", a.as_str()]] {
        let (code, err) = host.sp_fail(&args);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&a) && err.contains("feb31") && err.contains("never fires"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let (code, err) = host.sp_fail(&["schedule", "show"]);
    assert_eq!(code, 2);
    assert!(err.contains(&a) && err.contains("feb31"), "{err}");
    // Nothing changed: the site still serves.
    assert_eq!(
        crate::harness::http_get(port, "/").as_deref(),
        Some("site v1\n")
    );
    std::fs::write(&spec, before).unwrap();
    host.sp_ok(&["apply"]);

    // In the host config: refused on load, naming the key.
    host.config_replace("schedule = \"17 3 * * *\"", "schedule = \"0 0 30 2 *\"");
    let (code, err) = host.sp_fail(&["status"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("backup.schedule") && err.contains("never fires"),
        "{err}"
    );
}

#[test]
fn progress_shows_percent_and_eta_on_a_terminal_and_nothing_in_a_pipe() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("pa");
    add_sites(&host, &[&a]);
    // Enough data that the work outlasts a progress tick.
    let junk: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(host.sites_dir().join(&a).join("data/junk.bin"), junk).unwrap();
    let on_tty = |args: &str| {
        let out = Command::new("script")
            .args(["-qec"])
            .arg(format!("{} {args}", env!("CARGO_BIN_EXE_sp")))
            .arg("/dev/null")
            .env("SP_CONFIG", &host.config)
            .stdin(Stdio::null())
            .output()
            .expect("script");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let steps = [
        ("backup", a.clone()),
        ("verify latest", "verify ".to_string()),
        // A drill runs restore's code: the archive unpacked into the scratch copy.
        ("drill latest", " files".to_string()),
    ];
    for (args, label) in steps {
        let seen = on_tty(args);
        assert!(
            seen.contains(&label) && seen.contains("ETA") && seen.contains('%'),
            "sp {args} on a terminal showed no bar: {seen:?}"
        );
    }
    // Under cron (a pipe, no terminal): no bar, no control characters.
    let out = host.sp(&["backup"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("ETA") && !err.contains('\u{1b}'), "{err:?}");
}
