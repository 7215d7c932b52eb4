//! A tenant's database is hostile input: what its rows, triggers, routines and comments
//! hold — and what a crafted dump holds — may change nothing beyond that one site, through
//! backup, drill, restore or a `--as` clone.

use crate::harness::Host;
use crate::restore::{host_with_sites, read_dump, replace_dump};

fn q(host: &Host, sql: &str) -> String {
    host.root_sql(sql).trim().to_string()
}

fn grants(host: &Host, user: &str) -> String {
    q(host, &format!("SHOW GRANTS FOR '{user}'@'%'"))
}

fn trigger_body(host: &Host, db: &str) -> String {
    q(
        host,
        &format!(
            "SELECT CONCAT(TRIGGER_NAME, ':', ACTION_STATEMENT) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}'"
        ),
    )
}

/// The trigger: a body whose comment imitates dump syntax (a `DELIMITER ;` line,
/// then statements that would reach another site and make the tenant a global admin).
#[test]
fn a_trigger_that_imitates_dump_syntax_changes_nothing_outside_its_site() {
    let Some((host, [a, other])) = host_with_sites(["ta", "tb"]) else {
        return;
    };
    let made = host.sql_as_site(
        &a,
        &format!(
            "DELIMITER $$\nCREATE TRIGGER tr2 BEFORE INSERT ON items FOR EACH ROW BEGIN\n/*\nDELIMITER ;\nINSERT INTO `items` VALUES (101,\"x\",NULL); CREATE TABLE `{other}`.`pwned`(x int); GRANT ALL PRIVILEGES ON *.* TO `{a}`@`%` WITH GRANT OPTION;\n*/\nSET NEW.label=NEW.label; END$$\nDELIMITER ;\n"
        ),
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let body = trigger_body(&host, &a);
    assert!(body.contains("DELIMITER ;"), "the comment was kept: {body}");
    let grants_before = grants(&host, &a);
    let rows = |db: &str| q(&host, &format!("SELECT id FROM `{db}`.items ORDER BY id"));
    let rows_before = rows(&a);
    let pwned = || {
        q(
            &host,
            "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_NAME = 'pwned'",
        )
    };

    host.sp_ok(&["backup"]);
    let drill = host.json(&["drill", "latest"]);
    let sites = drill["sites"].as_array().unwrap();
    assert!(sites.iter().all(|s| s["healthy"] == true), "{drill}");
    let clone = host.site_name("tc");
    host.sp_ok(&["restore", "latest", "--site", &a, "--as", &clone]);

    assert_eq!(
        grants(&host, &a),
        grants_before,
        "the tenant's grants changed"
    );
    assert_eq!(pwned(), "", "an object appeared in another database");
    let clone_grants = grants(&host, &clone);
    assert!(
        !clone_grants.contains("PRIVILEGES ON *.*") && !clone_grants.contains(&other),
        "{clone_grants}"
    );
    assert_eq!(
        trigger_body(&host, &clone),
        body,
        "the clone's trigger differs"
    );
    assert_eq!(rows(&clone), rows_before);
    assert_eq!(rows(&a), rows_before);
    assert_eq!(q(&host, &format!("SHOW TABLES FROM `{other}`")), "items");
}

/// A crafted dump (signed like sp's own) that drops the sandbox line and asks the client to
/// run a shell command, or tries to reach another database: nothing runs on the host and no
/// other database changes, whatever the restore then reports.
#[test]
fn a_crafted_dump_runs_nothing_on_the_host_and_reaches_no_other_database() {
    let Some((host, [a, other])) = host_with_sites(["ca", "cb"]) else {
        return;
    };
    let report = host.json(&["backup", "--site", &a]);
    let id = report["id"].as_str().unwrap().to_string();
    let marker = host.dir.path().join("ran-as-root");
    let text = read_dump(&host, &id, &a);
    let body = text
        .lines()
        .filter(|l| !l.contains("enable the sandbox mode"))
        .collect::<Vec<_>>()
        .join("\n");
    let cut = body.rfind("-- Dump completed").unwrap();
    let crafted = format!(
        "\\! id > {m}\nsystem id > {m}\n{}\nCREATE TABLE `{other}`.`pwned` (x int);\nGRANT ALL PRIVILEGES ON *.* TO `{a}`@`%`;\nDROP DATABASE `{other}`;\n{}",
        &body[..cut],
        &body[cut..],
        m = marker.display()
    );
    replace_dump(&host, &id, &a, &crafted);
    let grants_before = grants(&host, &a);
    let clone = host.site_name("cc");
    let _ = host.sp(&["restore", &id, "--site", &a, "--as", &clone]);
    let _ = host.sp(&["drill", &id]);
    assert!(!marker.exists(), "a command in the dump ran on the host");
    assert!(
        host.database_exists(&other),
        "another site's database was dropped"
    );
    assert_eq!(q(&host, &format!("SHOW TABLES FROM `{other}`")), "items");
    assert_eq!(grants(&host, &a), grants_before);
}

/// Checksums anyone can recompute authenticate nothing: a dump with a client command and a
/// manifest edited to match, or a manifest without its signature, are refused before anything
/// is read or written — by verify, restore and drill.
#[test]
fn a_snapshot_changed_without_the_hosts_key_is_refused() {
    let Some((host, [a])) = host_with_sites(["ua"]) else {
        return;
    };
    // Installed, so only what the test does can make `sp status` fail.
    host.install_schedule();
    let report = host.json(&["backup", "--site", &a]);
    let id = report["id"].as_str().unwrap().to_string();
    let snap = host.backup_dir().join(&id);
    let marker = host.dir.path().join("ran-as-root");
    let text = read_dump(&host, &id, &a).replace(
        "/*M!999999\\- enable the sandbox mode */",
        &format!("\\! id > {}", marker.display()),
    );
    // The dump swapped and the manifest's sums recomputed, as an attacker can.
    let signature = std::fs::read(snap.join("manifest.json.sig")).unwrap();
    replace_dump(&host, &id, &a, &text);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap.join("manifest.json")).unwrap()).unwrap();
    crate::harness::unsigned_manifest(&snap, &m);
    std::fs::write(snap.join("manifest.json.sig"), &signature).unwrap();

    let clone = host.site_name("uc");
    let refused = |args: &[&str], code: i32| {
        let (got, err) = host.sp_fail(args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains("does not match its signature"), "{err}");
        let errors = err.lines().filter(|l| l.starts_with("sp: error")).count();
        assert_eq!(errors, 1, "{err}");
    };
    refused(&["restore", &id, "--site", &a, "--as", &clone], 5);
    // A drill of it fails, and is recorded as a failed drill.
    let d = host.sp(&["drill", &id]);
    assert_eq!(d.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&d.stdout).contains("does not match its signature"));
    assert_eq!(host.sp(&["status"]).status.code(), Some(1));
    let v = host.sp(&["--json", "verify", &id]);
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stdout).contains("does not match its signature"));
    assert!(!marker.exists());
    assert!(!host.sites_dir().join(&clone).exists());
    assert!(!host.database_exists(&clone));

    // Without any signature: refused, naming why.
    std::fs::remove_file(snap.join("manifest.json.sig")).unwrap();
    let (code, err) = host.sp_fail(&["restore", &id, "--site", &a, "--as", &clone]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("is not signed"), "{err}");

    // Signed by another host's key: refused until that key is given.
    let other = sp::key::HostKey::generate();
    let bytes = std::fs::read(snap.join("manifest.json")).unwrap();
    std::fs::write(snap.join("manifest.json.sig"), other.sign(&bytes)).unwrap();
    let (code, err) = host.sp_fail(&["verify", &id]);
    assert_eq!(code, 1, "{err}");
    let pubfile = host.dir.path().join("other.pub");
    std::fs::write(&pubfile, format!("{}\n", other.public())).unwrap();
    let v = host.sp(&["--json", "verify", &id, "--key", &pubfile.to_string_lossy()]);
    // The signature now holds; the file list still matches the (recomputed) sums.
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

/// Replaces one member of a site's archive in a snapshot and re-signs the manifest: a snapshot
/// that authenticates and is hostile all the same.
fn rewrite_member(host: &Host, id: &str, site: &str, member: &str, text: &str) {
    use std::process::Command;
    let snap = host.backup_dir().join(id);
    let rel = format!("sites/{site}.tar.zst");
    let script = "import tarfile, io, sys, subprocess\n\
        src, member, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()\n\
        raw = subprocess.run(['zstd', '-dc', src], check=True, capture_output=True).stdout\n\
        old = tarfile.open(fileobj=io.BytesIO(raw))\n\
        out = io.BytesIO()\n\
        new = tarfile.open(fileobj=out, mode='w', format=tarfile.GNU_FORMAT)\n\
        for m in old.getmembers():\n\
        \x20   f = old.extractfile(m) if m.isfile() else None\n\
        \x20   if m.name == member:\n\
        \x20       m.size = len(body); f = io.BytesIO(body)\n\
        \x20   new.addfile(m, f)\n\
        new.close()\n\
        subprocess.run(['zstd', '-q', '-f', '-o', src], input=out.getvalue(), check=True)\n";
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(snap.join(&rel))
        .args([member, text])
        .status()
        .unwrap();
    assert!(st.success(), "python");
    crate::harness::resign_file(&snap, &rel);
}

/// A signed snapshot is still input: an entry whose site.toml names another site (here the
/// live neighbour) restores nothing, under either name, and leaves the neighbour alone.
#[test]
fn a_snapshot_whose_spec_names_another_site_is_refused() {
    let Some((host, [a, b])) = host_with_sites(["na", "nb"]) else {
        return;
    };
    let report = host.json(&["backup", "--site", &a]);
    let id = report["id"].as_str().unwrap().to_string();
    let spec = std::fs::read_to_string(host.sites_dir().join(&a).join("site.toml")).unwrap();
    let hostile = spec.replace(&format!("name = \"{a}\""), &format!("name = \"{b}\""));
    assert_ne!(hostile, spec);
    rewrite_member(&host, &id, &a, "site.toml", &hostile);
    let b_spec = std::fs::read(host.sites_dir().join(&b).join("site.toml")).unwrap();
    let b_containers = host.json(&["site", "show", &b])["containers"].clone();

    let clone = host.site_name("nc");
    let (code, err) = host.sp_fail(&["restore", &id, "--site", &a, "--as", &clone]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("holds a site.toml for \"{b}\"")),
        "{err}"
    );
    assert!(!host.sites_dir().join(&clone).exists());
    assert!(!host.database_exists(&clone));
    assert!(!host.user_exists(&clone));

    // On a host without a: refused the same way, and b is untouched.
    host.sp_ok(&["site", "remove", &a, "--purge", "--yes"]);
    let (code, err) = host.sp_fail(&["restore", &id, "--site", &a]);
    assert_eq!(code, 2, "{err}");
    assert!(!host.sites_dir().join(&a).exists());
    assert!(!host.database_exists(&a));
    assert_eq!(
        std::fs::read(host.sites_dir().join(&b).join("site.toml")).unwrap(),
        b_spec
    );
    assert_eq!(host.json(&["site", "show", &b])["containers"], b_containers);
    assert_eq!(host.get(&b, "/").as_deref(), Some("site v1\n"));
}
