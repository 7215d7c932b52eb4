//! Snapshots on the real rig: contents, verify, recovery by hand with tar/zstd/mysql,
//! corruption, a killed backup, MySQL dying mid-run, retention, schedule, status, jobs.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{eventually, rig, Host, ScratchMariadb};

const TABLES_SQL: &str = "
CREATE TABLE t (
  id INT PRIMARY KEY AUTO_INCREMENT,
  b BLOB, j JSON, d DATETIME(6), n VARCHAR(10) NULL,
  txt TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci
);
CREATE TABLE audit (id INT, note VARCHAR(20));
CREATE TRIGGER t_ins AFTER INSERT ON t FOR EACH ROW INSERT INTO audit VALUES (NEW.id, 'inserted');
CREATE VIEW v AS SELECT id, n, txt FROM t;
INSERT INTO t (b, j, d, n, txt) VALUES
  (UNHEX('00FF10270A0D5C'), '{\"k\": [1, 2, {\"x\": null}]}', '2026-11-21 10:00:00.123456', NULL, 'héllo 🙂 wörld'),
  (NULL, NULL, NULL, 'set', ''),
  (REPEAT(UNHEX('AB'), 60000), '[]', '1999-12-31 23:59:59.000001', 'x', REPEAT('ü', 5000));
";

fn add_site(host: &Host, name: &str) {
    host.sp_ok(&[
        "site",
        "add",
        name,
        "--image",
        &host.rig.image("v1"),
        "--health-path",
        "/",
    ]);
}

fn checksum(host: &Host, db: &str, table: &str) -> String {
    host.root_sql(&format!("CHECKSUM TABLE `{db}`.`{table}` EXTENDED"))
        .split_whitespace()
        .last()
        .unwrap_or("")
        .to_string()
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

#[test]
fn backup_verify_and_recover_by_hand() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let (a, b) = (host.site_name("bk"), host.site_name("bl"));
    add_site(&host, &a);
    add_site(&host, &b);

    // Files that are easy to get wrong.
    let data = host.sites_dir().join(&a).join("data");
    std::fs::create_dir_all(data.join("sub/empty")).unwrap();
    std::fs::write(data.join("sub/file.txt"), "content\n").unwrap();
    std::os::unix::fs::symlink("sub/file.txt", data.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("../site.toml", data.join("up-link")).unwrap();
    std::fs::write(data.join("odd-mode"), "x").unwrap();
    std::fs::set_permissions(
        data.join("odd-mode"),
        std::fs::Permissions::from_mode(0o741),
    )
    .unwrap();
    let odd_name = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.bin");
    std::fs::write(data.join(odd_name), [0u8, 1, 2, 255]).unwrap();
    std::fs::write(
        host.sites_dir().join(&a).join("tmp/scratch"),
        "not backed up",
    )
    .unwrap();
    host.root_sql(&format!("USE `{a}`; {TABLES_SQL}"));
    host.root_sql(&format!(
        "USE `{b}`; CREATE TABLE only_b (id INT); INSERT INTO only_b VALUES (42);"
    ));

    let report = host.json(&["backup"]);
    let id = report["id"].as_str().unwrap().to_string();
    let snap = host.backup_dir().join(&id);
    assert_eq!(report["sites"].as_array().unwrap().len(), 2);

    // The manifest names sp's version, host, the image digest and the dumped tables.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["sp_version"], env!("CARGO_PKG_VERSION"));
    assert!(!m["host"].as_str().unwrap().is_empty());
    let site_a = m["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == a.as_str())
        .unwrap();
    let digest = host.json(&["site", "show", &a])["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(site_a["image"].as_str().unwrap().ends_with(&digest));
    let tables: Vec<(String, String)> = site_a["database"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tables,
        vec![
            ("audit".into(), "BASE TABLE".into()),
            ("t".into(), "BASE TABLE".into()),
            ("v".into(), "VIEW".into())
        ]
    );
    for f in m["files"].as_array().unwrap() {
        let p = snap.join(f["path"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            f["size"].as_u64().unwrap()
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o077,
            0,
            "{} readable by others",
            p.display()
        );
    }
    // The image archives beside the snapshots (and their checksums) are root's only, too.
    let images: Vec<std::path::PathBuf> = std::fs::read_dir(host.backup_dir().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        images
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".sha256")),
        "{images:?}"
    );
    for p in &images {
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} readable by others", p.display());
    }
    assert!(sh(&format!(
        "cd {} && sha256sum -c manifest.json.sha256",
        snap.display()
    ))
    .status
    .success());

    // sp verify passes and marks the snapshot verified.
    let out = host.sp_ok(&["verify", &id]);
    assert!(out.contains(": ok"), "{out}");
    let list = host.json(&["snapshots"]);
    assert!(list["snapshots"][0]["verified"].is_string());

    // Files by hand: zstd + tar.
    let scratch = host.dir.path().join("by-hand");
    std::fs::create_dir_all(&scratch).unwrap();
    let out = sh(&format!(
        "zstd -dc {} | tar -x --numeric-owner -C {}",
        snap.join(format!("sites/{a}.tar.zst")).display(),
        scratch.display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = scratch.join("data");
    assert_eq!(
        std::fs::read_to_string(got.join("sub/file.txt")).unwrap(),
        "content\n"
    );
    assert_eq!(
        std::fs::read_link(got.join("rel-link")).unwrap(),
        Path::new("sub/file.txt")
    );
    assert_eq!(
        std::fs::read_link(got.join("up-link")).unwrap(),
        Path::new("../site.toml")
    );
    assert!(got.join("sub/empty").is_dir());
    assert_eq!(
        std::fs::metadata(got.join("odd-mode"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o741
    );
    assert_eq!(
        std::fs::read(got.join(odd_name)).unwrap(),
        vec![0u8, 1, 2, 255]
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&got).unwrap().uid(),
        std::fs::metadata(&data).unwrap().uid()
    );
    assert!(scratch.join("site.toml").is_file() && scratch.join("secrets/db_password").is_file());
    assert!(!scratch.join("tmp").exists(), "tmp/ must be excluded");

    // The database by hand: zstd + mysql into a scratch database; checksums match.
    let scratch_db = format!("{a}_byhand");
    host.track_db(&scratch_db);
    host.root_sql(&format!("CREATE DATABASE `{scratch_db}`"));
    let out = sh(&format!(
        "zstd -dc {} | mariadb --socket={} -uroot {}",
        snap.join(format!("sites/{a}.sql.zst")).display(),
        rig.var("SP_RIG_MYSQL_SOCKET"),
        scratch_db
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in ["t", "audit"] {
        assert_eq!(
            checksum(&host, &a, table),
            checksum(&host, &scratch_db, table),
            "CHECKSUM TABLE {table}"
        );
    }
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{scratch_db}`.v"))
            .trim(),
        "3"
    );
    assert_eq!(
        host.root_sql(&format!("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{scratch_db}'")).trim(),
        "t_ins"
    );
    // The dump names no database, so it only ever loads where it is aimed.
    let dump = sh(&format!(
        "zstd -dc {}",
        snap.join(format!("sites/{a}.sql.zst")).display()
    ));
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(!text.contains("CREATE DATABASE") && !text.contains(&format!("USE `{a}`")));
    assert!(!String::from_utf8_lossy(
        &sh(&format!(
            "zstd -dc {}",
            snap.join(format!("sites/{b}.sql.zst")).display()
        ))
        .stdout
    )
    .contains("héllo"));

    // A corrupted byte in any file makes verify fail, naming the file.
    let mut files: Vec<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    files.push("manifest.json".into());
    for f in files {
        let p = snap.join(&f);
        let orig = std::fs::read(&p).unwrap();
        let mut bad = orig.clone();
        let i = bad.len() / 2;
        bad[i] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        let out = host.sp(&["verify", &id]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "verify passed with {f} corrupted"
        );
        assert!(text.contains(&f), "verify did not name {f}: {text}");
        std::fs::write(&p, &orig).unwrap();
    }
    host.sp_ok(&["verify", &id]);
}

#[test]
fn killed_backup_leaves_no_snapshot_and_the_next_one_succeeds() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let (a, b) = (host.site_name("ka"), host.site_name("kb"));
    add_site(&host, &a);
    add_site(&host, &b);
    // The second site's pre-backup command keeps the backup busy midway.
    host.spec_append(&b, "[backup]\npre_command = [\"sleep\", \"4\"]\n");
    let first = if a < b { &a } else { &b };
    let mut child = host
        .cmd(&["backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let midway = eventually(20, || {
        let entries = std::fs::read_dir(host.backup_dir()).ok()?;
        entries.flatten().find_map(|e| {
            let tmp = e.path();
            let n = e.file_name().to_string_lossy().into_owned();
            (n.starts_with(".tmp-") && tmp.join(format!("sites/{first}.tar.zst")).exists())
                .then_some(tmp)
        })
    });
    assert!(midway.is_some(), "the backup never got midway");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        host.json(&["snapshots"])["snapshots"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a killed backup counted as a snapshot"
    );
    // The next backup succeeds and clears the leftover.
    host.sp_ok(&["backup"]);
    let names: Vec<String> = std::fs::read_dir(host.backup_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "images")
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(!names[0].starts_with('.'));
    host.sp_ok(&["verify", "latest"]);
}

#[test]
fn mysql_dying_mid_backup_fails_clearly_and_keeps_what_it_could() {
    let Some(rig) = rig() else { return };
    let mut db = ScratchMariadb::start();
    let host = Host::new(&rig);
    host.use_mysql(&db.url());
    host.login();
    let (a, b) = (host.site_name("ma"), host.site_name("mb"));
    add_site(&host, &a);
    add_site(&host, &b);
    host.sp_ok(&["backup"]);
    let second = if a < b { &b } else { &a };
    host.spec_append(second, "[backup]\npre_command = [\"sleep\", \"3\"]\n");
    let child = host
        .cmd(&["backup"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    db.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(second.as_str()) && err.contains("step 'database"),
        "{err}"
    );
    // The site that could be taken is in a partial snapshot; the other is named as missing.
    let snaps = host.json(&["snapshots"]);
    let list = snaps["snapshots"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{snaps}");
    assert_eq!(list[1]["kind"], "partial", "{snaps}");
    let first = if a < b { &a } else { &b };
    assert_eq!(list[1]["sites"], serde_json::json!([first]), "{snaps}");
    assert_eq!(host.backup_dir_names("."), Vec::<String>::new());
    // The failure is recorded for sp status.
    let status = host.sp(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        v["last_backup_error"]
            .as_str()
            .unwrap_or("")
            .contains(second.as_str()),
        "{v}"
    );
}

/// Writes a synthetic snapshot (manifest only) with the given time.
fn fake_snapshot(dir: &Path, id: &str, time: &str) {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap();
    let m = serde_json::json!({
        "format": 1, "id": id, "sp_version": "0", "host": "h", "instance": "i",
        "created": time, "duration_ms": 0, "sites": [], "files": []
    });
    crate::harness::sign_manifest(&d, &m);
}

#[test]
fn prune_keeps_exactly_what_the_policy_says() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    let dir = host.backup_dir();
    // Four a day (00, 06, 12, 18h) for 20 days from 2026-03-01 (a Sunday).
    let mut ids = Vec::new();
    for day in 0..20 {
        for h in [0, 6, 12, 18] {
            let t = chrono_like(2026, 3, 1 + day, h);
            let id = format!("202603{:02}T{h:02}0000Z", 1 + day);
            fake_snapshot(&dir, &id, &t);
            ids.push(id);
        }
    }
    let text = std::fs::read_to_string(&host.config).unwrap();
    let start = text.find("[retention]").unwrap();
    let mut text = text[..start].to_string();
    text.push_str("[retention]\nkeep_last = 2\nkeep_daily = 3\nkeep_weekly = 2\n");
    std::fs::write(&host.config, text).unwrap();
    // Pinned and newest-verified snapshots survive whatever the policy says.
    host.sp_ok(&["snapshot", "pin", "20260302T060000Z"]);
    std::fs::write(
        dir.join("20260305T000000Z/.verified"),
        "2026-03-06T00:00:00Z",
    )
    .unwrap();

    let dry = host.json(&["prune", "--dry-run"]);
    assert!(dry["deleted"].as_array().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        80,
        "dry run deleted something"
    );
    host.sp_ok(&["prune"]);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // last 2: 20th 18h, 20th 12h; daily 3: 20th, 19th, 18th (18h each); weekly 2: ISO week of
    // Mon 16th–Fri 20th → 20th 18h, week of 9th–15th → 15th 18h; pinned 2nd 06h; verified 5th 00h.
    let want = [
        "20260302T060000Z",
        "20260305T000000Z",
        "20260315T180000Z",
        "20260318T180000Z",
        "20260319T180000Z",
        "20260320T120000Z",
        "20260320T180000Z",
    ];
    assert_eq!(left, want);
    assert_eq!(ids.len(), 80);
}

fn chrono_like(y: i32, m: u32, d: u32, h: u32) -> String {
    format!("{y:04}-{m:02}-{d:02}T{h:02}:00:00Z")
}

#[test]
fn schedule_status_jobs_and_hooks() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let a = host.site_name("sj");
    add_site(&host, &a);
    host.spec_append(&a, "[[jobs]]\nname = \"touch\"\nschedule = \"0 4 * * 0\"\ncommand = [\"sh\", \"-c\", \"echo ran as $(id -u) > /data/job.txt\"]\n");
    host.config_replace("schedule = \"17 3 * * *\"", "schedule = \"17 * * * *\"");

    // A job runs in the site's image with its mounts and uid.
    host.sp_ok(&["site", "job", &a, "touch"]);
    let uid = host.json(&["site", "show", &a])["uid"].as_u64().unwrap();
    let got = std::fs::read_to_string(host.sites_dir().join(&a).join("data/job.txt")).unwrap();
    assert_eq!(got.trim(), format!("ran as {uid}"));
    let (code, _) = host.sp_fail(&["site", "job", &a, "nope"]);
    assert_eq!(code, 3);

    // schedule show / install.
    let show = host.json(&["schedule", "show"]);
    let jobs = show["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "backup".to_string(),
            "drill".to_string(),
            format!("{a}/touch")
        ]
    );
    assert_eq!(jobs[0]["schedule"], "17 * * * *");
    assert_eq!(jobs[0]["next"].as_array().unwrap().len(), 3);
    let cron = host.dir.path().join("cron.d/simple-paas");
    let units = host.dir.path().join("systemd");
    std::fs::create_dir_all(&units).unwrap();
    host.sp_ok(&[
        "schedule",
        "install",
        "--cron-file",
        &cron.to_string_lossy(),
    ]);
    let text = std::fs::read_to_string(&cron).unwrap();
    let sp = env!("CARGO_BIN_EXE_sp");
    assert!(
        text.contains(&format!("17 * * * * root {sp} -q backup && {sp} -q prune")),
        "{text}"
    );
    assert!(
        text.contains(&format!("0 4 * * 0 root {sp} -q site job {a} touch")),
        "{text}"
    );
    assert!(
        text.contains(&format!("43 4 * * 0 root {sp} -q drill")),
        "{text}"
    );
    assert!(text.contains("SP_CONFIG="));
    assert!(
        text.contains(&format!("@reboot root {sp} -q apply\n")),
        "{text}"
    );
    // --systemd writes timers instead of the cron file, never both (or every backup runs
    // twice); back to cron, the timers go.
    host.sp_ok(&[
        "schedule",
        "install",
        "--systemd",
        "--systemd-dir",
        &units.to_string_lossy(),
    ]);
    assert!(units.join("simple-paas-backup.timer").exists());
    assert!(units.join("simple-paas-boot.service").exists());
    assert!(!cron.exists(), "--systemd left the cron file in place");
    // Units on disk run nothing until enabled: status says so, then no more once they are
    // linked as `systemctl enable` links them.
    let problem = || {
        let out = host.sp(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        v["schedule"]["problem"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(problem().contains("not enabled"), "{}", problem());
    for e in std::fs::read_dir(&units).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let wants = if name.ends_with(".timer") {
            "timers.target.wants"
        } else if name == "simple-paas-boot.service" {
            "multi-user.target.wants"
        } else {
            continue;
        };
        std::fs::create_dir_all(units.join(wants)).unwrap();
        std::os::unix::fs::symlink(e.path(), units.join(wants).join(&name)).unwrap();
    }
    assert!(!problem().contains("not enabled"), "{}", problem());
    host.sp_ok(&[
        "schedule",
        "install",
        "--cron-file",
        &cron.to_string_lossy(),
    ]);
    assert!(cron.exists());
    assert!(!units.join("simple-paas-backup.timer").exists());
    assert!(
        std::fs::symlink_metadata(units.join("timers.target.wants/simple-paas-backup.timer"))
            .is_err()
    );
    // An invalid schedule in a site's spec is refused with a clear error.
    host.spec_append(
        &a,
        "[[jobs]]\nname = \"bad\"\nschedule = \"0 0 * * * *\"\ncommand = [\"true\"]\n",
    );
    let (code, err) = host.sp_fail(&["schedule", "show"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("5 fields") && err.contains(&format!("{a}: job bad")),
        "{err}"
    );
    let spec = host.sites_dir().join(&a).join("site.toml");
    let t = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, &t[..t.find("[[jobs]]\nname = \"bad\"").unwrap()]).unwrap();

    // status: no snapshot yet → non-zero; after a backup → zero; too old → non-zero.
    let (code, _) = host.sp_fail(&["status"]);
    assert_eq!(code, 1);
    // A success hook is pinged after the backup.
    let port = 33950 + (std::process::id() % 40) as u16;
    let mut hook = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(host.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(10, || crate::harness::http_get(port, "/").map(|_| ()));
    host.config_replace(
        "# on_success_url = \"https://hc-ping.com/UUID\"",
        &format!("on_success_url = \"http://127.0.0.1:{port}/hook-ok\""),
    );
    // Under cron (-q) a good backup prints nothing at all; the site is paused while its files
    // are archived, and runs on afterwards.
    host.spec_append(&a, "[backup]\npause = true\n");
    let quiet = host.sp(&["-q", "backup"]);
    assert!(
        quiet.status.success(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert!(
        quiet.stdout.is_empty() && quiet.stderr.is_empty(),
        "-q backup printed something"
    );
    assert_eq!(host.json(&["site", "show", &a])["state"], "running");
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));
    host.sp_ok(&["status"]);
    let v = host.json(&["status"]);
    assert_eq!(v["sites"][0]["fresh"], true);
    hook.kill().unwrap();
    let out = hook.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GET /hook-ok"),
        "hook not pinged"
    );
    host.config_replace("max_age = \"26h\"", "max_age = \"1s\"");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, _) = host.sp_fail(&["status"]);
    assert_eq!(code, 1);
}
