//! Day-2 operations on the real rig: env and secrets reach the running container and stay out
//! of argv, output and JSON unless revealed; exec with stdin and a TTY; apply rolls out a
//! changed image; deploy history, rollback --to and no toggling; logs --previous and --since.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{rig, Host};

fn add(host: &Host, name: &str, image: &str) {
    host.sp_ok(&["site", "add", name, "--image", image, "--health-path", "/"]);
}

/// Prints `$KEY` from inside the site's container.
fn env_in_container(host: &Host, site: &str, key: &str) -> String {
    let out = host.exec_sh(site, &format!("printf %s \"${key}\""));
    assert!(out.status.success(), "exec: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn env_set_and_secrets_reach_the_container_and_stay_hidden() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let s = host.site_name("env");
    add(&host, &s, &rig.image("v1"));
    let spec_path = host.sites_dir().join(&s).join("site.toml");

    // A plain value on the command line lands in site.toml and in the container.
    let out = host.sp_ok(&["site", "env", &s, "set", "GREETING=hello world"]);
    assert!(out.contains("GREETING"), "{out}");
    assert_eq!(env_in_container(&host, &s, "GREETING"), "hello world");
    assert!(std::fs::read_to_string(&spec_path)
        .unwrap()
        .contains("GREETING"));
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v1\n"));

    // A secret comes on stdin only: one value for one key, then KEY=VALUE lines.
    let secret = "S3cr3t-tok=en";
    let out = host.sp_in(
        &["-vv", "site", "env", &s, "set", "--stdin", "API_TOKEN"],
        &format!("{secret}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains(secret),
        "secret in sp's output: {printed}"
    );
    let out = host.sp_in(
        &["--json", "site", "env", &s, "set", "--stdin"],
        "OTHER=second-secret\n# a comment\nTHIRD=x=y\n",
    );
    assert!(out.status.success(), "{out:?}");
    let change: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(change["changed"], serde_json::json!(["OTHER", "THIRD"]));
    assert!(!out.stdout.windows(13).any(|w| w == b"second-secret"));
    assert_eq!(env_in_container(&host, &s, "API_TOKEN"), secret);
    assert_eq!(env_in_container(&host, &s, "OTHER"), "second-secret");
    assert_eq!(env_in_container(&host, &s, "THIRD"), "x=y");

    // Kept in secrets/env (0600), never in site.toml.
    let secrets = host.sites_dir().join(&s).join("secrets/env");
    assert_eq!(
        std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&secrets).unwrap().contains(secret));
    assert!(!std::fs::read_to_string(&spec_path)
        .unwrap()
        .contains(secret));

    // Masked in list, show, history and JSON unless --reveal.
    for args in [
        vec!["site", "env", &s, "list"],
        vec!["site", "env", &s],
        vec!["site", "show", &s],
        vec!["site", "history", &s],
        vec!["--json", "site", "env", &s, "list"],
        vec!["--json", "site", "show", &s],
        vec!["--json", "site", "history", &s],
        vec!["--json", "site", "list"],
    ] {
        let out = host.sp_ok(&args);
        assert!(!out.contains(secret), "sp {args:?} shows the secret: {out}");
        assert!(!out.contains("second-secret"), "sp {args:?}: {out}");
    }
    let list = host.sp_ok(&["site", "env", &s, "list"]);
    assert!(list.contains("GREETING=hello world"), "{list}");
    assert!(list.contains("API_TOKEN=********"), "{list}");
    let revealed = host.json(&["site", "env", &s, "list", "--reveal"]);
    let token = revealed["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "API_TOKEN")
        .expect("API_TOKEN listed");
    assert_eq!(token["value"], secret);
    assert_eq!(token["secret"], true);
    let show = host.json(&["site", "show", &s, "--reveal"]);
    assert!(show.to_string().contains(secret));
    // Docker holds the value (the container's environment), sp passed it through the API.
    assert!(
        host.containers().len() == 1,
        "one container after the roll-outs"
    );

    // Every change rolled out through the deploy path and is in the history.
    let history = host.json(&["site", "history", &s]);
    let reasons: Vec<&str> = history["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["add", "env", "env", "env"], "{history}");

    // Bad keys: one line, nothing changed, nothing rolled out.
    let spec_before = std::fs::read(&spec_path).unwrap();
    let secrets_before = std::fs::read(&secrets).unwrap();
    for args in [
        vec!["site", "env", &s, "set", "1BAD=x"],
        vec!["site", "env", &s, "set", "BAD-KEY=x"],
        vec!["site", "env", &s, "set", "DATABASE_URL=mysql://x"],
        vec!["site", "env", &s, "set", "GOOD=1", "NOEQUALS"],
        vec!["site", "env", &s, "unset", "bad key"],
    ] {
        let (code, err) = host.sp_fail(&args);
        assert_eq!(code, 2, "sp {args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "sp {args:?}: {err}");
    }
    let out = host.sp_in(
        &["site", "env", &s, "set", "--stdin"],
        "DATABASE_PASSWORD_FILE=S3CRET-leak\n",
    );
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("S3CRET-leak"));
    assert_eq!(std::fs::read(&spec_path).unwrap(), spec_before);
    assert_eq!(std::fs::read(&secrets).unwrap(), secrets_before);
    assert_eq!(
        host.json(&["site", "history", &s])["deploys"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // unset removes from wherever the key lives; the container loses it.
    host.sp_ok(&["site", "env", &s, "unset", "GREETING", "API_TOKEN"]);
    assert_eq!(env_in_container(&host, &s, "GREETING"), "");
    assert_eq!(env_in_container(&host, &s, "API_TOKEN"), "");
    assert_eq!(env_in_container(&host, &s, "OTHER"), "second-secret");

    // A backup carries the secrets; a restore under another name brings them back.
    host.sp_ok(&["backup", "--site", &s]);
    let clone = host.site_name("envc");
    host.sp_ok(&["restore", "--site", &s, "--as", &clone]);
    assert_eq!(env_in_container(&host, &clone, "OTHER"), "second-secret");

    // Hostile: a snapshot could put a link where secrets/env is; sp refuses to follow it.
    let data_file = host.sites_dir().join(&s).join("data/evil.toml");
    std::fs::write(&data_file, "EVIL = \"from the tenant\"\n").unwrap();
    std::fs::remove_file(&secrets).unwrap();
    std::os::unix::fs::symlink(&data_file, &secrets).unwrap();
    let (_, err) = host.sp_fail(&["site", "env", &s, "list"]);
    assert!(err.contains("is a link"), "{err}");
    assert!(!err.contains("from the tenant"), "{err}");
}

#[test]
fn exec_passes_stdin_and_gives_a_tty() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let s = host.site_name("ex");
    add(&host, &s, &rig.image("v1"));

    // stdin not a terminal: -i by default.
    let out = host.sp_in(&["site", "exec", &s, "--", "sh", "-c", "cat"], "print(1)\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "print(1)\n");
    // A larger input arrives whole, and the exit code still passes through.
    let big: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    let out = host.sp_in(
        &["site", "exec", &s, "--", "sh", "-c", "wc -l; exit 3"],
        &big,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "20000");
    // stderr stays apart from stdout.
    let out = host.sp_in(
        &[
            "site",
            "exec",
            &s,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2",
        ],
        "",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // On a terminal (script gives sp one): a TTY by default, and input typed reaches it.
    let sp = env!("CARGO_BIN_EXE_sp");
    let script = |cmdline: &str, input: &str| {
        let mut child = std::process::Command::new("script")
            .args(["-qec", cmdline, "/dev/null"])
            .env("SP_CONFIG", &host.config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script");
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        let out = std::thread::spawn(move || child.wait_with_output().expect("script"));
        std::thread::sleep(std::time::Duration::from_secs(3));
        drop(stdin);
        out.join().unwrap()
    };
    let out = script(
        &format!("{sp} site exec {s} -- sh -c 'test -t 0 && test -t 1 && echo TTY-YES; tty'"),
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TTY-YES"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let out = script(
        &format!("{sp} site exec {s} -- sh -c 'read line; echo got:$line; exit 5'"),
        "typed\r",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("got:typed"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
    // -i alone on a terminal: stdin attached, no TTY.
    let out = script(
        &format!("{sp} site exec -i {s} -- sh -c 'test -t 0 || echo NO-TTY'"),
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NO-TTY"), "{text}");
}

#[test]
fn apply_rolls_out_an_edited_image() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let s = host.site_name("ap");
    add(&host, &s, &rig.image("v1"));
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v1\n"));
    let spec = host.sites_dir().join(&s).join("site.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace(&rig.image("v1"), &rig.image("v2"))).unwrap();

    let out = host.sp_ok(&["apply", &s]);
    assert!(out.contains("image changed"), "{out}");
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v2\n"));
    assert_eq!(host.containers().len(), 1);
    // Converged: a second apply changes nothing.
    let out = host.sp_ok(&["apply", &s]);
    assert!(out.contains("up to date"), "{out}");
    let h = host.json(&["site", "history", &s]);
    let last = h["deploys"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "apply");
    assert_eq!(last["image"], rig.image("v2"));
    assert_eq!(last["result"], "ok");
    // A rollback is not undone by the next apply.
    host.sp_ok(&["site", "rollback", &s]);
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v1\n"));
    let out = host.sp_ok(&["apply", &s]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v1\n"));
}

/// Deletes a pushed test image's tag from the registry when dropped (the test passed or not).
struct RegistryTag<'a>(&'a Host, String);

impl Drop for RegistryTag<'_> {
    fn drop(&mut self) {
        self.0.delete_tag_from_registry(&self.1);
    }
}

/// Writes a line into the site's container output (its PID 1's stdout, as the site's uid).
fn say(host: &Host, site: &str, line: &str) {
    let out = host.exec_sh(site, &format!("echo {line} > /proc/1/fd/1"));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn history_rollback_to_and_previous_logs() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let s = host.site_name("hi");
    let third = host.private_image("v2", "third");
    let _tag = RegistryTag(&host, third.clone());
    add(&host, &s, &rig.image("v1"));
    let (code, err) = host.sp_fail(&["site", "logs", &s, "--previous"]);
    assert_eq!(code, 3, "{err}");
    say(&host, &s, "from-v1");
    host.sp_ok(&["site", "deploy", &s, "--image", &rig.image("v2")]);
    // The v1 container's output was kept when the deploy replaced it.
    let prev = host.sp_ok(&["site", "logs", &s, "--previous"]);
    assert_eq!(prev, "from-v1\n");
    say(&host, &s, "from-v2");
    host.sp_ok(&["site", "deploy", &s, "--image", &third]);
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v2\n"));
    let prev = host.sp_ok(&["site", "logs", &s, "--previous"]);
    assert_eq!(prev, "from-v2\n");
    assert_eq!(host.sp_ok(&["site", "logs", &s]), "");
    let h = host.json(&["site", "history", &s]);
    let d = h["deploys"].as_array().unwrap().clone();
    assert_eq!(d.len(), 3, "{h}");
    for (i, e) in d.iter().enumerate() {
        assert_eq!(e["n"], i as u64 + 1);
        assert_eq!(e["result"], "ok");
        assert!(e["actor"].as_str().is_some_and(|a| !a.is_empty()));
        assert!(e["pinned"].as_str().unwrap().contains("@sha256:"));
        let t = e["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.len() == 20, "{t}");
    }
    assert_eq!(d[2]["image"], third);
    let digest = |e: &serde_json::Value| {
        e["pinned"]
            .as_str()
            .unwrap()
            .split_once('@')
            .unwrap()
            .1
            .to_string()
    };
    let running = || host.json(&["site", "show", &s])["digest"].clone();

    // --dry-run changes nothing.
    let plan = host.json(&["site", "rollback", &s, "--to", "1", "--dry-run"]);
    assert_eq!(plan["plan"]["entry"], 1);
    assert_eq!(running(), digest(&d[2]));

    // Three deploys, then --to 1 serves the first image.
    host.sp_ok(&["site", "rollback", &s, "--to", "1"]);
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v1\n"));
    assert_eq!(running(), digest(&d[0]));
    // Back to the third by digest prefix, then two plain rollbacks walk back, not toggle.
    let hex = digest(&d[2]).trim_start_matches("sha256:")[..12].to_string();
    host.sp_ok(&["site", "rollback", &s, "--to", &hex]);
    assert_eq!(running(), digest(&d[2]));
    host.sp_ok(&["site", "rollback", &s]);
    assert_eq!(running(), digest(&d[1]));
    host.sp_ok(&["site", "rollback", &s]);
    assert_eq!(running(), digest(&d[0]));
    let (code, err) = host.sp_fail(&["site", "rollback", &s]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no earlier successful deploy"), "{err}");

    // A failed deploy is recorded as one, and is no rollback target.
    host.sp_fail(&["site", "deploy", &s, "--image", &rig.image("broken")]);
    let h = host.json(&["site", "history", &s]);
    let last = h["deploys"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["result"], "failed");
    assert!(last["error"].as_str().unwrap().contains("health"), "{last}");
    let n = last["n"].to_string();
    let (_, err) = host.sp_fail(&["site", "rollback", &s, "--to", &n]);
    assert!(err.contains("failed"), "{err}");
    for bad in ["99", "zzz", "../../etc", "abc"] {
        let (_, err) = host.sp_fail(&["site", "rollback", &s, "--to", bad]);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v1\n"));
    let text = host.sp_ok(&["site", "history", &s]);
    assert!(
        text.contains("FAILED") && text.contains("rollback→1"),
        "{text}"
    );
    // A rollback's entry names the image it went back to, not the spec's.
    let rb = h["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["rollback_to"] == 1)
        .unwrap()
        .clone();
    assert_eq!(rb["image"], rig.image("v1"), "{rb}");
    assert_eq!(rb["pinned"], d[0]["pinned"]);

    // --since: everything of the last hour, nothing from the future.
    say(&host, &s, "recent");
    let recent = host.sp_ok(&["site", "logs", &s, "--since", "1h"]);
    assert!(recent.contains("recent"), "{recent}");
    let none = host.sp_ok(&["site", "logs", &s, "--since", "2099-01-01T00:00:00Z"]);
    assert!(!none.contains("recent"), "{none}");
    let (code, _) = host.sp_fail(&["site", "logs", &s, "--since", "yesterday"]);
    assert_eq!(code, 2);
    // --previous is the container the last roll-out replaced: after one more deploy, the
    // request just made is in it.
    host.sp_ok(&["site", "deploy", &s, "--image", &rig.image("v2")]);
    let prev = host.sp_ok(&["site", "logs", &s, "--previous"]);
    assert!(prev.contains("recent"), "{prev}");
    let log = host.sites_dir().join(&s).join("previous.log");
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Hostile: a link in its place (from a snapshot) is refused, not followed.
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &log).unwrap();
    let out = host.sp(&["site", "logs", &s, "--previous"]);
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("root:"));

    // An image neither the host, the registry nor an image archive has (a digest the registry
    // never saw: one it deleted may linger in its cache): a clear error, nothing changed.
    let before = running();
    let missing = format!("sha256:{}", "0".repeat(64));
    let (code, err) = host.sp_fail(&["site", "rollback", &s, "--to", &missing]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot roll back"), "{err}");
    let line = err.lines().find(|l| l.starts_with("sp: error")).unwrap();
    assert!(
        line.contains("keep_images") && line.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(running(), before);
    assert_eq!(host.get(&s, "/").as_deref(), Some("site v2\n"));
}
