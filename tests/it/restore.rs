//! Disaster recovery on the real rig: the full cattle cycle (with the registry serving the
//! images, and with it unable to), single-site restore, `--as` clones, a killed restore run
//! again, a hostile archive refused, and `sp drill` passing and failing without a trace.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{eventually, http_get, rig, Host};

/// What a site looks like from outside, to compare before and after.
#[derive(Debug, PartialEq)]
pub(crate) struct Seen {
    index: Option<String>,
    file: Option<String>,
    checksum: String,
    image_id: String,
    pub(crate) digest: String,
}

pub(crate) fn seen(host: &Host, site: &str) -> Seen {
    let show = host.json(&["site", "show", site]);
    let container = show["containers"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Image}}", &container])
        .output()
        .unwrap();
    Seen {
        index: host.get(site, "/"),
        file: host.get(site, "/data/note.txt"),
        checksum: host
            .root_sql(&format!("CHECKSUM TABLE `{site}`.`items` EXTENDED"))
            .split_whitespace()
            .last()
            .unwrap_or("")
            .to_string(),
        image_id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        digest: show["digest"].as_str().unwrap_or_default().to_string(),
    }
}

/// A site on the test's own image, with a data file and DB rows.
pub(crate) fn populated_site(host: &Host, name: &str, image: &str) {
    host.sp_ok(&["site", "add", name, "--image", image, "--health-path", "/"]);
    let data = host.sites_dir().join(name).join("data");
    std::fs::write(data.join("note.txt"), format!("notes of {name}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("note.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    host.root_sql(&format!(
        "CREATE TABLE `{name}`.items (id INT PRIMARY KEY, label VARCHAR(50), payload BLOB);
         INSERT INTO `{name}`.items VALUES (1, 'één', UNHEX('00FF')), (2, NULL, NULL), (3, '{name}', REPEAT('x', 1000));"
    ));
}

/// A logged-in host of its own with a populated site (see [`populated_site`]) on the rig's v1
/// image per label; None without the rig.
pub(crate) fn host_with_sites<const N: usize>(labels: [&str; N]) -> Option<(Host, [String; N])> {
    let rig = rig()?;
    let host = Host::new(&rig);
    host.login();
    let names = labels.map(|l| host.site_name(l));
    for n in &names {
        populated_site(&host, n, &rig.image("v1"));
    }
    Some((host, names))
}

/// Where [`destroy_host`] keeps the host's snapshot key off the host: (secret, public).
pub(crate) fn offhost_keys(host: &Host) -> (std::path::PathBuf, std::path::PathBuf) {
    let d = host.dir.path().join("offhost");
    (d.join("snapshot.key"), d.join("snapshot.pub"))
}

/// Destroys everything of the host except the snapshots: containers, the test's images,
/// databases, users, site dirs, config, stored credentials and sp's state (the snapshot key
/// included — first exported off the host, see [`offhost_keys`], as the runbook says).
pub(crate) fn destroy_host(host: &Host, sites: &[&str], images: &[&str]) {
    let (secret, public) = offhost_keys(host);
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, host.sp_ok(&["key", "export"])).unwrap();
    std::fs::write(&public, host.sp_ok(&["key", "export", "--public"])).unwrap();
    for id in host.containers() {
        Command::new("docker")
            .args(["rm", "-f", &id])
            .output()
            .unwrap();
    }
    for i in images {
        Command::new("docker")
            .args(["rmi", "-f", i])
            .output()
            .unwrap();
    }
    for s in sites {
        host.root_sql(&format!(
            "DROP DATABASE IF EXISTS `{s}`; DROP USER IF EXISTS '{s}'@'%';"
        ));
        let id = Command::new("docker")
            .args([
                "images",
                "-q",
                "--filter",
                &format!("label=sp.test={}", host.instance),
            ])
            .output()
            .unwrap();
        for i in String::from_utf8_lossy(&id.stdout).split_whitespace() {
            Command::new("docker")
                .args(["rmi", "-f", i])
                .output()
                .unwrap();
        }
    }
    std::fs::remove_dir_all(host.sites_dir()).unwrap();
    std::fs::remove_dir_all(host.state_dir()).ok();
    std::fs::remove_file(host.config.parent().unwrap().join("registries.toml")).unwrap();
    // A minimal config: where the database server and the snapshots are (plus the test's own
    // isolation: instance, directories, ports).
    let text = std::fs::read_to_string(&host.config).unwrap();
    let keep = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{k} = ")))
            .unwrap()
            .to_string()
    };
    let minimal = format!(
        "{}\n{}\n{}\n{}\n[mysql]\n{}\n{}\n[docker]\n{}\n",
        keep("instance"),
        keep("sites_dir"),
        keep("backup_dir"),
        keep("state_dir"),
        keep("url"),
        keep("host_for_containers"),
        keep("port_range")
    );
    std::fs::write(&host.config, minimal).unwrap();
}

fn cattle_cycle(registry_can_serve: bool) {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let image = host.private_image("v1", "v1");
    let (a, b) = (host.site_name("ca"), host.site_name("cb"));
    populated_site(&host, &a, &image);
    populated_site(&host, &b, &image);
    // More than one table, a trigger and a view: the dump loads over parallel connections.
    host.root_sql(&format!(
        "USE `{a}`; CREATE TABLE audit (id INT, what VARCHAR(20));
         CREATE TRIGGER items_ins AFTER INSERT ON items FOR EACH ROW INSERT INTO audit VALUES (NEW.id, 'added');
         CREATE VIEW labelled AS SELECT id, label FROM items WHERE label IS NOT NULL;
         INSERT INTO items VALUES (4, 'four', NULL);"
    ));
    let before_a = seen(&host, &a);
    let before_b = seen(&host, &b);
    assert_eq!(
        before_a.file.as_deref(),
        Some(format!("notes of {a}\n").as_str())
    );
    let (pw_a, pw_b) = (host.password(&a), host.password(&b));
    host.sp_ok(&["backup"]);
    let pinned = format!("{}@{}", image.rsplit_once(':').unwrap().0, before_a.digest);
    let backups = host.backup_dir();

    destroy_host(&host, &[&a, &b], &[&image]);
    if !registry_can_serve {
        host.delete_from_registry(&pinned);
    }

    // The new host has no key of its own yet: the old host's snapshots are refused…
    let from = backups.to_string_lossy().to_string();
    let (code, err) = host.sp_fail(&["restore", "latest", "--from", &from]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("does not trust"), "{err}");
    assert!(!host.sites_dir().join(&a).exists());
    // …until the key kept off the host is given.
    let (_, public) = offhost_keys(&host);
    let key = public.to_string_lossy().to_string();
    let report = host.json(&["restore", "latest", "--from", &from, "--key", &key]);
    assert_eq!(report["sites"].as_array().unwrap().len(), 2, "{report}");
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
    assert!(report["host_config"].as_bool().unwrap());
    let after_a = seen(&host, &a);
    let after_b = seen(&host, &b);
    assert_eq!(after_a, before_a);
    assert_eq!(after_b, before_b);
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{a}`.labelled"))
            .trim(),
        "3"
    );
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{a}`.audit"))
            .trim(),
        "1"
    );
    host.root_sql(&format!("INSERT INTO `{a}`.items VALUES (5, 'five', NULL)"));
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{a}`.audit"))
            .trim(),
        "2",
        "trigger lost"
    );
    // The site users log in with their original passwords.
    assert_eq!(host.password(&a), pw_a);
    assert!(host
        .sql_as(&a, &pw_a, &a, "SELECT COUNT(*) FROM items")
        .status
        .success());
    assert!(host
        .sql_as(&b, &pw_b, &b, "SELECT COUNT(*) FROM items")
        .status
        .success());
    // Credentials came back, and sp considers the host converged.
    assert!(host
        .config
        .parent()
        .unwrap()
        .join("registries.toml")
        .exists());
    let apply = host.json(&["apply"]);
    assert!(
        apply["sites"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["changes"].as_array().unwrap().is_empty()),
        "{apply}"
    );
    // Running it again after it finished refuses to overwrite what is now live.
    let (code, err) = host.sp_fail(&["restore", "latest", "--from", &from, "--key", &key]);
    assert_eq!(code, 4, "{err}");
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{a}`.items"))
            .trim(),
        "5"
    );
}

#[test]
fn cattle_cycle_with_the_registry() {
    cattle_cycle(true);
}

#[test]
fn cattle_cycle_from_the_image_archive_when_the_registry_cannot_serve() {
    cattle_cycle(false);
}

#[test]
fn single_site_restore_clone_and_conflicts() {
    let Some((host, [a, b])) = host_with_sites(["sa", "sb"]) else {
        return;
    };
    let made = host.sql_as_site(&a, "CREATE VIEW named AS SELECT id, label FROM items");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    host.sp_ok(&["backup"]);
    let before_a = seen(&host, &a);

    // Restoring over a site that exists is refused, changing nothing.
    host.root_sql(&format!(
        "INSERT INTO `{a}`.items VALUES (99, 'after backup', NULL)"
    ));
    let (code, err) = host.sp_fail(&["restore", "latest", "--site", &a]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{a}`.items"))
            .trim(),
        "4"
    );

    // --as: a clone under a new name, database and user; the original is untouched.
    let clone = host.site_name("sclone");
    let r = host.json(&["restore", "latest", "--site", &a, "--as", &clone]);
    assert_eq!(r["sites"][0]["site"], clone.as_str());
    assert_eq!(
        host.get(&clone, "/data/note.txt").as_deref(),
        Some(format!("notes of {a}\n").as_str())
    );
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{clone}`.items"))
            .trim(),
        "3"
    );
    assert_ne!(host.password(&clone), host.password(&a));
    assert!(host
        .sql_as(&clone, &host.password(&clone), &clone, "SELECT 1")
        .status
        .success());
    assert!(!host
        .sql_as(&clone, &host.password(&clone), &a, "SELECT 1")
        .status
        .success());
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{a}`.items"))
            .trim(),
        "4"
    );
    assert_eq!(host.get(&a, "/").as_deref(), Some("site v1\n"));
    let view = host.sql_as_site(&clone, "SELECT COUNT(*) FROM named");
    assert!(
        view.status.success(),
        "the clone's view must run as the clone's user: {}",
        String::from_utf8_lossy(&view.stderr)
    );
    let clone_spec =
        std::fs::read_to_string(host.sites_dir().join(&clone).join("site.toml")).unwrap();
    assert!(clone_spec.contains(&format!("name = \"{clone}\"")));

    // --yes replaces the site, after snapshotting its current state.
    let n_before = host.json(&["snapshots"])["snapshots"]
        .as_array()
        .unwrap()
        .len();
    let first = host.json(&["snapshots"])["snapshots"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = host.json(&["restore", &first, "--site", &a, "--yes"]);
    assert!(r["safety_snapshot"].is_string(), "{r}");
    assert_eq!(
        host.json(&["snapshots"])["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        n_before + 1
    );
    assert_eq!(seen(&host, &a).checksum, before_a.checksum);
    assert_eq!(host.get(&a, "/data/note.txt"), before_a.file);

    // Single site on a host where only that site is gone: b is not touched.
    let b_port = host.port(&b);
    for id in host.containers() {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{index .Config.Labels \"sp.site\"}}", &id])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == a {
            Command::new("docker")
                .args(["rm", "-f", &id])
                .output()
                .unwrap();
        }
    }
    host.root_sql(&format!("DROP DATABASE `{a}`; DROP USER '{a}'@'%';"));
    std::fs::remove_dir_all(host.sites_dir().join(&a)).unwrap();
    host.sp_ok(&["restore", &first, "--site", &a]);
    assert_eq!(seen(&host, &a).checksum, before_a.checksum);
    assert_eq!(host.port(&b), b_port);
    assert_eq!(http_get(b_port, "/").as_deref(), Some("site v1\n"));
}

/// Every kind of thing a database holds comes back exactly: odd names, a comment with `;`,
/// a zero AUTO_INCREMENT id, every byte value, newlines and quotes in strings, emoji, JSON,
/// TIMESTAMP under another session time zone, a generated column, a table without a primary
/// key big enough for several INSERT statements, an empty table with a trigger, a trigger
/// that must not fire during the load, a view, a procedure, a function and an event.
#[test]
fn a_database_of_every_kind_restores_exactly() {
    let Some((host, [a])) = host_with_sites(["kinds"]) else {
        return;
    };
    host.root_sql(&format!(
        "USE `{a}`;
         SET time_zone = '+05:30';
         SET sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO');
         CREATE TABLE `odd-name; x` (id INT PRIMARY KEY AUTO_INCREMENT,
           label VARCHAR(100) COMMENT 'a comment; with semicolon', body LONGTEXT, bin LONGBLOB,
           doc JSON, at DATETIME(6), ts TIMESTAMP NULL, n DOUBLE, g INT AS (id * 2) VIRTUAL)
           COMMENT='table; comment';
         INSERT INTO `odd-name; x` (id, label, body, bin, doc, at, ts, n)
           SELECT 0, '🦀 één', CONCAT('line1', CHAR(10), 'it''s \\\\ \"q\";', CHAR(13), CHAR(0), 'end;'),
             UNHEX(GROUP_CONCAT(LPAD(HEX(seq), 2, '0') ORDER BY seq SEPARATOR '')),
             '{{\"a\": [1, \"x;y\"]}}', '2026-01-02 03:04:05.123456', '2026-06-01 12:00:00', -1.5e-300
           FROM seq_0_to_255;
         INSERT INTO `odd-name; x` (label, body) VALUES (NULL, ''), ('INSERT INTO `x` VALUES (1);', NULL);
         CREATE TABLE nopk (a INT, b TEXT);
         INSERT INTO nopk SELECT seq, REPEAT(CONCAT('row ', seq, ';'), 20) FROM seq_1_to_30000;
         CREATE TABLE empty_t (id INT);
         CREATE TRIGGER empty_t_bi BEFORE INSERT ON empty_t FOR EACH ROW SET NEW.id = NEW.id + 1;
         CREATE TABLE audited (id INT PRIMARY KEY);
         CREATE TABLE log (id INT);
         CREATE TRIGGER audited_ai AFTER INSERT ON audited FOR EACH ROW INSERT INTO log VALUES (NEW.id);
         INSERT INTO audited VALUES (1), (2), (3);
         CREATE VIEW v AS SELECT id, label FROM `odd-name; x`;
         CREATE PROCEDURE p() SELECT COUNT(*) FROM audited;
         CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 42;
         CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM log WHERE id < 0;"
    ));
    host.sp_ok(&["backup"]);
    let clone = host.site_name("kindsc");
    host.sp_ok(&["restore", "latest", "--site", &a, "--as", &clone]);

    let tables = ["odd-name; x", "items", "nopk", "empty_t", "audited", "log"];
    for t in tables {
        let sum = |db: &str| {
            host.root_sql(&format!("CHECKSUM TABLE `{db}`.`{t}` EXTENDED"))
                .split('\t')
                .next_back()
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        assert_eq!(sum(&clone), sum(&a), "table {t}");
        assert_ne!(sum(&clone), "NULL", "table {t}");
    }
    let q = |sql: &str| host.root_sql(sql).trim().to_string();
    assert_eq!(
        q(&format!("SELECT COUNT(*) FROM `{clone}`.log")),
        "3",
        "the trigger fired during the load"
    );
    assert_eq!(q(&format!("SELECT COUNT(*) FROM `{clone}`.nopk")), "30000");
    assert_eq!(
        q(&format!(
            "SELECT id FROM `{clone}`.`odd-name; x` WHERE label LIKE '🦀%'"
        )),
        "0"
    );
    assert_eq!(q(&format!("SELECT `{clone}`.f()")), "42");
    assert_eq!(q(&format!("CALL `{clone}`.p()")), "3");
    assert_eq!(q(&format!("SELECT COUNT(*) FROM `{clone}`.v")), "3");
    assert_eq!(
        q(&format!(
            "SET time_zone = '+00:00'; SELECT ts FROM `{clone}`.`odd-name; x` WHERE id = 0"
        )),
        "2026-06-01 06:30:00"
    );
    assert_eq!(
        q(&format!(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{clone}'"
        )),
        "2"
    );
    assert_eq!(
        q(&format!(
            "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{clone}'"
        )),
        "1"
    );
    host.root_sql(&format!("INSERT INTO `{clone}`.empty_t VALUES (1)"));
    assert_eq!(q(&format!("SELECT id FROM `{clone}`.empty_t")), "2");
}

#[test]
fn an_interrupted_restore_finishes_with_the_command_it_prints() {
    let Some((host, [a, b])) = host_with_sites(["ra", "rb"]) else {
        return;
    };
    // Enough rows that the load takes a moment.
    host.root_sql(&format!("USE `{a}`; CREATE TABLE big (id INT PRIMARY KEY, v TEXT); INSERT INTO big SELECT seq, REPEAT('y', 2000) FROM seq_1_to_60000;"));
    let before = (seen(&host, &a), seen(&host, &b));
    let big = host
        .root_sql(&format!("CHECKSUM TABLE `{a}`.big"))
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    host.sp_ok(&["backup"]);
    let backups = host.backup_dir();
    destroy_host(&host, &[&a, &b], &[]);
    // The runbook's way: the old host's key becomes the new host's.
    let (secret, _) = offhost_keys(&host);
    host.sp_ok(&["key", "import", &secret.to_string_lossy()]);

    let child = host
        .cmd(&["restore", "latest", "--from", &backups.to_string_lossy()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let midway = eventually(30, || {
        let sites = host.sites_dir();
        let marker = std::fs::read_to_string(sites.join(&a).join(".sp-restore"))
            .or_else(|_| std::fs::read_to_string(sites.join(format!(".sp-restore-{a}"))))
            .ok()?;
        marker.contains("running").then_some(())
    });
    assert!(midway.is_some(), "restore never got going");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    // It says how to go on: the same restore, naming the snapshot by its id.
    let resume = err
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no resume command in {err}"));
    assert!(resume.starts_with("sp restore 2"), "{resume}");
    let args: Vec<&str> = resume.split_whitespace().skip(1).collect();
    host.sp_ok(&args);
    assert_eq!((seen(&host, &a), seen(&host, &b)), before);
    assert_eq!(
        host.root_sql(&format!("CHECKSUM TABLE `{a}`.big"))
            .split_whitespace()
            .last()
            .unwrap(),
        big
    );
    // Exactly one web container per site.
    assert_eq!(host.containers().len(), 2);
}

/// Builds a snapshot folder by hand from (name, tar bytes) site archives; sums are correct.
fn handmade_snapshot(dir: &Path, id: &str, site: &str, tar_path: &Path) {
    let snap = dir.join(id);
    std::fs::create_dir_all(snap.join("sites")).unwrap();
    let z = |src: &Path, dst: &Path| {
        assert!(Command::new("zstd")
            .args(["-q", "-f"])
            .arg(src)
            .arg("-o")
            .arg(dst)
            .status()
            .unwrap()
            .success());
    };
    z(tar_path, &snap.join(format!("sites/{site}.tar.zst")));
    let empty = dir.join("empty.tar");
    assert!(Command::new("tar")
        .args(["-cf"])
        .arg(&empty)
        .args(["-T", "/dev/null"])
        .status()
        .unwrap()
        .success());
    z(&empty, &snap.join("host.tar.zst"));
    let entry = |p: &str| {
        let bytes = std::fs::read(snap.join(p)).unwrap();
        use sha2::Digest;
        serde_json::json!({"path": p, "size": bytes.len(), "sha256": hex::encode(sha2::Sha256::digest(&bytes))})
    };
    let m = serde_json::json!({
        "format": 1, "id": id, "sp_version": "0", "host": "elsewhere", "instance": "x",
        "created": "2026-01-01T00:00:00Z", "duration_ms": 1,
        "sites": [{"name": site, "image": null, "image_id": null, "uid": 20000, "archive": format!("sites/{site}.tar.zst"), "database": null}],
        "files": [entry("host.tar.zst"), entry(&format!("sites/{site}.tar.zst"))]
    });
    crate::harness::sign_manifest(&snap, &m);
}

#[test]
fn a_hostile_archive_is_refused_with_nothing_written() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    let site = host.site_name("evil");
    let config_before = std::fs::read(&host.config).unwrap();
    let work = host.dir.path().join("hostile");
    std::fs::create_dir_all(&work).unwrap();
    let cases = [
        ("dotdot", "t.addfile(ti('../escape.txt'), io.BytesIO(b'x'))"),
        ("absolute", "t.addfile(ti('/tmp/sp-escape-abs.txt'), io.BytesIO(b'x'))"),
        ("through a symlink", "s = ti('data/link'); s.type = tarfile.SYMTYPE; s.linkname = '/etc'; t.addfile(s); t.addfile(ti('data/link/x'), io.BytesIO(b'x'))"),
        ("device", "d = ti('data/dev'); d.type = tarfile.CHRTYPE; d.devmajor = 1; d.devminor = 3; t.addfile(d)"),
        ("setuid", "f = ti('data/suid'); f.mode = 0o4755; t.addfile(f, io.BytesIO(b'x'))"),
    ];
    for (i, (label, add)) in cases.iter().enumerate() {
        let tar_path = work.join(format!("{label}.tar"));
        let script = format!(
            "import tarfile, io, sys\n\
             def ti(n):\n    x = tarfile.TarInfo(n); x.size = 1 if not n.endswith('link') else 0; return x\n\
             t = tarfile.open(sys.argv[1], 'w', format=tarfile.GNU_FORMAT)\n\
             t.addfile(ti('data/ok.txt'), io.BytesIO(b'x'))\n{add}\nt.close()\n"
        );
        let st = Command::new("python3")
            .args(["-c", &script])
            .arg(&tar_path)
            .status()
            .unwrap();
        assert!(st.success(), "{label}: python");
        let backups = work.join(format!("b{i}"));
        handmade_snapshot(&backups, "20260101T000000Z", &site, &tar_path);
        // The snapshot is intact as bytes: only the restore safety check can catch it.
        let out = host.sp(&["restore", "latest", "--from", &backups.to_string_lossy()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{label}: hostile archive restored");
        assert!(err.contains("unsafe archive member"), "{label}: {err}");
        assert!(
            !host.sites_dir().join(&site).exists(),
            "{label}: site dir written"
        );
        assert!(!work.join("escape.txt").exists() && !host.dir.path().join("escape.txt").exists());
        assert!(!Path::new("/tmp/sp-escape-abs.txt").exists());
        assert!(!host.database_exists(&site));
        assert!(host.containers().is_empty());
        assert_eq!(
            std::fs::read(&host.config).unwrap(),
            config_before,
            "{label}: config changed"
        );
    }
}

/// A site's dump in a snapshot, decompressed.
pub(crate) fn read_dump(host: &Host, id: &str, site: &str) -> String {
    let dump = host
        .backup_dir()
        .join(id)
        .join(format!("sites/{site}.sql.zst"));
    let out = Command::new("zstd").arg("-dc").arg(&dump).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Puts `text` in place of a site's dump in a snapshot and re-signs the manifest, as if sp
/// had written it (so only loading the dump can tell).
pub(crate) fn replace_dump(host: &Host, id: &str, site: &str, text: &str) {
    let snap = host.backup_dir().join(id);
    let path = format!("sites/{site}.sql.zst");
    let raw = host.dir.path().join("replaced.sql");
    std::fs::write(&raw, text).unwrap();
    assert!(Command::new("zstd")
        .args(["-q", "-f"])
        .arg(&raw)
        .arg("-o")
        .arg(snap.join(&path))
        .status()
        .unwrap()
        .success());
    crate::harness::resign_file(&snap, &path);
}

/// MariaDB bulk-loads the first insert into an empty table under a table lock (with the
/// dump's unique and foreign key checks off), and two such inserts at once deadlock: a
/// table's rows must still all arrive when its statements go over parallel connections.
#[test]
fn tables_of_many_statements_load_completely() {
    let Some((host, [a])) = host_with_sites(["stmts"]) else {
        return;
    };
    let id = host.json(&["backup"])["id"].as_str().unwrap().to_string();

    // The real dump's preamble and trailer around 80 tables of 4 statements of 50 rows each.
    let text = read_dump(&host, &id, &a);
    let head = &text[..text.find("--\n-- Table structure").unwrap()];
    let tail = &text[text
        .rfind("/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */")
        .unwrap()..];
    let mut dump = head.to_string();
    for t in 0..80 {
        dump += &format!(
            "--\n-- Table structure for table `t{t}`\n--\n\nCREATE TABLE `t{t}` (\n  `id` int(11) NOT NULL,\n  `v` varchar(20) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;\n\n--\n-- Dumping data for table `t{t}`\n--\n\n"
        );
        for stmt in 0..4 {
            let rows: Vec<String> = (0..50)
                .map(|r| format!("({},'r{r}')", stmt * 50 + r))
                .collect();
            dump += &format!("INSERT INTO `t{t}` VALUES {};\n", rows.join(","));
        }
        dump += "\n";
    }
    dump += tail;
    replace_dump(&host, &id, &a, &dump);

    let clone = host.site_name("stmtsc");
    host.sp_ok(&["restore", &id, "--site", &a, "--as", &clone]);
    let counts: Vec<String> = (0..80)
        .map(|t| format!("SELECT 't{t}', COUNT(*) FROM `{clone}`.`t{t}`"))
        .collect();
    let counts = host.root_sql(&counts.join(" UNION ALL "));
    let lines: Vec<&str> = counts.lines().collect();
    assert_eq!(lines.len(), 80, "{counts}");
    for l in lines {
        assert!(l.ends_with("\t200"), "rows lost: {l}");
    }
}

/// Restore hashes dumps but leaves checking their trailers to the load: a dump cut short
/// (re-signed, so only its content can tell) still fails `sp verify`, and the restore stops
/// before the views, triggers and routines that follow the rows.
#[test]
fn a_dump_cut_short_fails_verify_and_restore() {
    let Some((host, [a])) = host_with_sites(["cut"]) else {
        return;
    };
    host.root_sql(&format!(
        "CREATE VIEW `{a}`.labels AS SELECT label FROM `{a}`.items"
    ));
    let id = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    let text = read_dump(&host, &id, &a);
    // Everything but the trailer: the view's final definition is still there.
    let cut = &text[..text.rfind("-- Dump completed").unwrap()];
    assert!(cut.contains("Final view structure for view `labels`"));
    replace_dump(&host, &id, &a, cut);

    let out = host.sp(&["verify", &id]);
    assert_eq!(out.status.code(), Some(1));
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("completion trailer"), "{said}");

    let clone = host.site_name("cutc");
    let out = host.sp(&["restore", &id, "--site", &a, "--as", &clone]);
    assert!(!out.status.success(), "a dump cut short was restored");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("completion trailer"), "{err}");
    assert_eq!(
        host.root_sql(&format!("SELECT COUNT(*) FROM `{clone}`.items"))
            .trim(),
        "3"
    );
    // The dump's stand-in for the view (`SELECT 1 AS label`) stays; its real definition
    // comes after the rows and must not.
    let real_views = format!(
        "SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{clone}' AND VIEW_DEFINITION LIKE '%items%'"
    );
    assert_eq!(
        host.root_sql(&real_views).trim(),
        "0",
        "the view of a half-loaded database was created"
    );
}

/// Leftovers a drill could leave: containers, networks, databases, scratch dirs.
fn drill_traces(host: &Host) -> Vec<String> {
    let mut t = Vec::new();
    let ps = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=sp.instance"])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&ps.stdout).split_whitespace() {
        let out = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{index .Config.Labels \"sp.instance\"}}",
                id,
            ])
            .output()
            .unwrap();
        let inst = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if inst.starts_with(&format!("{}-drill-", host.instance)) {
            t.push(format!("container {id}"));
        }
    }
    let nets = Command::new("docker")
        .args(["network", "ls", "--format", "{{.Name}} {{.Labels}}"])
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&nets.stdout).lines() {
        if l.contains(&format!("{}-drill-", host.instance)) {
            t.push(format!("network {l}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir(host.state_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("drill-") && e.path().is_dir() {
                t.push(format!("dir {}", e.path().display()));
            }
        }
    }
    t
}

#[test]
fn drill_passes_on_a_good_snapshot_and_catches_a_broken_dump() {
    let Some((host, [a])) = host_with_sites(["da"]) else {
        return;
    };
    host.install_schedule();
    // A view made by the site's own user: its definer must follow the scratch name.
    let made = host.sql_as_site(&a, "CREATE VIEW named AS SELECT id, label FROM items");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let drill_dbs = || host.root_sql("SHOW DATABASES LIKE 'drill%'");
    let report = host.json(&["backup"]);
    let id = report["id"].as_str().unwrap().to_string();

    let good = host.sp(&["--json", "drill", &id]);
    let v: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    assert!(good.status.success(), "{v}");
    assert_eq!(v["sites"][0]["tables_checked"], 2, "{v}");
    assert_eq!(v["sites"][0]["healthy"], true);
    assert!(drill_traces(&host).is_empty(), "{:?}", drill_traces(&host));
    assert_eq!(drill_dbs(), "");
    let status = host.json(&["status"]);
    assert_eq!(status["last_drill"]["ok"], true);
    assert_eq!(
        host.get(&a, "/").as_deref(),
        Some("site v1\n"),
        "the live site was disturbed"
    );

    // A dump with an SQL error before its trailer, manifest re-signed: verify passes, drill fails.
    let text = read_dump(&host, &id, &a);
    let cut = text.rfind("-- Dump completed").unwrap();
    let broken = format!(
        "{}INSERT INTO no_such_table VALUES (1);\n{}",
        &text[..cut],
        &text[cut..]
    );
    replace_dump(&host, &id, &a, &broken);
    host.sp_ok(&["verify", &id]);
    let bad = host.sp(&["--json", "drill", &id]);
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(bad.status.code(), Some(1), "{v}");
    assert!(v.to_string().contains("no_such_table"), "{v}");
    assert!(drill_traces(&host).is_empty(), "{:?}", drill_traces(&host));
    assert_eq!(drill_dbs(), "");
    let status = host.sp(&["--json", "status"]);
    assert_eq!(
        status.status.code(),
        Some(1),
        "a failed drill makes status fail"
    );
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["last_drill"]["ok"], false);
}
