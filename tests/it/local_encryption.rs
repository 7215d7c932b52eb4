//! `[encryption] local = true` on the real rig: `backup_dir` holds only age ciphertext after a
//! backup (and after `sp site remove`'s final snapshot and a restore's pre-restore one); the
//! default source reads it — listed, verified without and with the identity, a changed byte
//! named; the cattle cycle from `backup_dir` alone needs `--identity` and restores the same
//! data, the image coming from the encrypted image archive; an altered or unsigned index is
//! refused with nothing restored; prune works on it by `[retention]`.

use std::path::{Path, PathBuf};

use crate::harness::{rig, Host};
use crate::restore::{destroy_host, offhost_keys, populated_site, seen};

const AGE: &[u8] = b"age-encryption.org/v1\n";
const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Makes an age identity off the host and turns local encryption on: the identity file.
fn encrypt_locally(host: &Host) -> String {
    let id_file = host.dir.path().join("offhost/identity.age");
    std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
    let identity = id_file.to_string_lossy().to_string();
    let made = host.json(&["key", "generate", "--output", &identity]);
    let recipient = made["recipient"].as_str().unwrap().to_string();
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    text.push_str(&format!(
        "\n[encryption]\nrecipients = [\"{recipient}\"]\nlocal = true\n"
    ));
    std::fs::write(&host.config, text).unwrap();
    identity
}

/// Every file under `dir`, with its bytes (dot-files too: nothing may hide there).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = p.symlink_metadata().unwrap();
            if meta.is_dir() {
                todo.push(p);
            } else {
                let body = std::fs::read(&p).unwrap();
                out.push((p, body));
            }
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Only ciphertext and plaintext metadata in `backup_dir`: no marker of a site's files or
/// rows, no zstd frame (a plaintext archive or dump), every data object age, no working copy.
fn assert_only_ciphertext(host: &Host, markers: &[&str]) -> usize {
    let meta = [
        "manifest.json",
        "manifest.json.sha256",
        "manifest.json.sig",
        "index.json",
        "index.json.sig",
        ".pinned",
        ".verified",
    ];
    let mut data = 0;
    for (p, body) in files(&host.backup_dir()) {
        let rel = p.strip_prefix(host.backup_dir()).unwrap().to_string_lossy();
        assert!(!rel.starts_with(".tmp-"), "{rel}: the working copy is left");
        for m in markers {
            assert!(!contains(&body, m.as_bytes()), "{rel} holds plaintext {m}");
        }
        assert!(!body.starts_with(&ZSTD), "{rel} is a plaintext zstd stream");
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if meta.contains(&name.as_str()) || name.ends_with(".age.json") {
            continue;
        }
        assert!(name.ends_with(".age"), "{rel} is not an encrypted object");
        assert!(body.starts_with(AGE), "{rel} is not age ciphertext");
        data += 1;
    }
    data
}

/// A logged-in host with local encryption and one populated site carrying markers in a data
/// file and a row: (host, site, markers, identity).
fn encrypted_host(label: &str) -> Option<(Host, String, Vec<String>, String)> {
    let rig = rig()?;
    let host = Host::new(&rig);
    host.login();
    let site = host.site_name(label);
    populated_site(&host, &site, &rig.image("v1"));
    let file_marker = format!("FILE-MARKER-{}", host.instance);
    let row_marker = format!("ROW-MARKER-{}", host.instance);
    std::fs::write(
        host.sites_dir().join(&site).join("data/secret.txt"),
        &file_marker,
    )
    .unwrap();
    host.root_sql(&format!(
        "INSERT INTO `{site}`.items VALUES (9, '{row_marker}', NULL)"
    ));
    let identity = encrypt_locally(&host);
    Some((host, site, vec![file_marker, row_marker], identity))
}

#[test]
fn backup_dir_holds_only_ciphertext_and_verifies_without_and_with_the_identity() {
    let Some((host, site, markers, identity)) = encrypted_host("le") else {
        return;
    };
    let markers: Vec<&str> = markers.iter().map(String::as_str).collect();
    let backup = host.json(&["backup"]);
    let id = backup["id"].as_str().unwrap().to_string();
    let snap = host.backup_dir().join(&id);
    assert_eq!(PathBuf::from(backup["dir"].as_str().unwrap()), snap);
    assert!(snap.join("index.json").is_file(), "{backup}");
    assert!(snap.join(format!("sites/{site}.tar.zst.age")).is_file());
    assert!(snap.join(format!("sites/{site}.sql.zst.age")).is_file());
    // Host archive, the site's files and dump, its image archive.
    assert!(assert_only_ciphertext(&host, &markers) >= 4);
    let images: Vec<String> = std::fs::read_dir(host.backup_dir().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        images.iter().any(|n| n.ends_with(".tar.zst.age")),
        "{images:?}"
    );
    assert!(
        images.iter().all(|n| n.contains(".age")),
        "a plaintext image archive is left: {images:?}"
    );

    // Listed; `sp status` reads it as the site's newest snapshot.
    assert_eq!(host.snapshot_ids(&[]), vec![id.clone()]);
    // (It exits 1 here only because no schedule is installed.)
    let out = host.sp(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = status["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == site.as_str())
        .unwrap();
    assert_eq!(s["last_snapshot"], id.as_str(), "{status}");

    // Verify: the ciphertext without the identity, everything with it.
    let v = host.json(&["verify"]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["ciphertext_only"], true, "{v}");
    let v = host.json(&["verify", "latest", "--identity", &identity]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");
    assert!(v.get("ciphertext_only").is_none(), "{v}");

    // `sp prune --dry-run` plans and changes nothing.
    let before = files(&host.backup_dir()).len();
    let out = host.sp_ok(&["prune", "--dry-run"]);
    assert!(out.contains(&format!("keep   {id}")), "{out}");
    assert_eq!(files(&host.backup_dir()).len(), before);

    // One byte of a local object changed: verify fails naming it, with or without the identity.
    let object = snap.join(format!("sites/{site}.sql.zst.age"));
    let mut body = std::fs::read(&object).unwrap();
    let n = body.len() / 2;
    body[n] ^= 0x01;
    std::fs::write(&object, &body).unwrap();
    for args in [vec!["verify"], vec!["verify", "--identity", &identity]] {
        let out = host.sp(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains(&format!("{id}/sites/{site}.sql.zst.age")),
            "{text}"
        );
    }
}

/// The whole host from `backup_dir` alone: everything else wiped (config down to a minimal
/// one that does not even say the snapshots are encrypted), the registry unable to serve the
/// image — so it comes from the encrypted image archive.
#[test]
fn cattle_cycle_from_the_encrypted_backup_dir() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let image = host.private_image("v1", "v1");
    let (a, b) = (host.site_name("la"), host.site_name("lb"));
    populated_site(&host, &a, &image);
    populated_site(&host, &b, &image);
    let identity = encrypt_locally(&host);
    let before_a = seen(&host, &a);
    let before_b = seen(&host, &b);
    let backup = host.json(&["backup"]);
    assert!(host
        .backup_dir()
        .join(backup["id"].as_str().unwrap())
        .join("index.json")
        .is_file());
    assert_only_ciphertext(&host, &[&format!("notes of {a}")]);
    let pinned = format!("{}@{}", image.rsplit_once(':').unwrap().0, before_a.digest);

    destroy_host(&host, &[&a, &b], &[&image]);
    host.delete_from_registry(&pinned);
    let listing_before = files(&host.backup_dir());

    let (_, public) = offhost_keys(&host);
    let key = public.to_string_lossy().to_string();
    // Without the identity: one line naming --identity, nothing changed.
    let (code, err) = host.sp_fail(&["restore", "latest", "--key", &key]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--identity"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!host.sites_dir().join(&a).exists());
    assert!(!host.database_exists(&a));
    assert_eq!(files(&host.backup_dir()), listing_before);

    let report = host.json(&["restore", "latest", "--identity", &identity, "--key", &key]);
    assert_eq!(report["sites"].as_array().unwrap().len(), 2, "{report}");
    assert!(report["host_config"].as_bool().unwrap());
    assert_eq!(seen(&host, &a), before_a);
    assert_eq!(seen(&host, &b), before_b);
    // The decrypted staging folder is gone: backup_dir holds ciphertext only again.
    assert_only_ciphertext(&host, &[&format!("notes of {a}")]);
}

/// `sp site remove` leaves an encrypted final snapshot; `sp prune` deletes encrypted
/// snapshots by `[retention]`.
#[test]
fn site_remove_leaves_an_encrypted_final_snapshot_and_prune_works_on_them() {
    let Some((host, site, markers, _identity)) = encrypted_host("lr") else {
        return;
    };
    let markers: Vec<&str> = markers.iter().map(String::as_str).collect();
    let first = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    host.sp_ok(&["site", "remove", &site, "--yes"]);
    let finals = host.snapshot_ids(&["--kind", "final"]);
    assert_eq!(finals.len(), 1, "{finals:?}");
    let snap = host.backup_dir().join(&finals[0]);
    assert!(snap.join("index.json").is_file());
    assert!(snap.join(format!("sites/{site}.tar.zst.age")).is_file());
    assert!(!snap.join(format!("sites/{site}.tar.zst")).exists());
    assert_only_ciphertext(&host, &markers);

    // keep_last = 1: the older backup goes, its index first, then its objects.
    host.config_replace("keep_last = 3", "keep_last = 1");
    host.config_replace("keep_daily = 7", "keep_daily = 0");
    host.config_replace("keep_weekly = 4", "keep_weekly = 0");
    host.config_replace("keep_monthly = 6", "keep_monthly = 0");
    let out = host.sp_ok(&["prune"]);
    assert!(out.contains(&format!("delete {first}")), "{out}");
    assert!(!host.backup_dir().join(&first).exists());
    assert_eq!(host.snapshot_ids(&[]), finals);
}

/// Snapshots in backup_dir are hostile input like any other: an altered or unsigned index is
/// refused and nothing is restored. A restore that replaces a live site snapshots it first —
/// encrypted too.
#[test]
fn an_altered_or_unsigned_local_index_is_refused_and_pre_restore_snapshots_are_encrypted() {
    let Some((host, site, markers, identity)) = encrypted_host("lh") else {
        return;
    };
    let markers: Vec<&str> = markers.iter().map(String::as_str).collect();
    let id = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    let index = host.backup_dir().join(&id).join("index.json");
    let sig = host.backup_dir().join(&id).join("index.json.sig");
    let good = std::fs::read(&index).unwrap();
    let clone = host.site_name("lc");
    let restore = [
        "restore",
        id.as_str(),
        "--site",
        site.as_str(),
        "--as",
        clone.as_str(),
        "--identity",
        identity.as_str(),
    ];

    // Altered: the site's archive said to be another size.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    for f in v["files"].as_array_mut().unwrap() {
        if f["path"].as_str().unwrap().ends_with(".tar.zst") {
            f["size"] = serde_json::json!(f["size"].as_u64().unwrap() + 1);
        }
    }
    std::fs::write(&index, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let (code, err) = host.sp_fail(&restore);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("signature"), "{err}");
    assert!(!host.sites_dir().join(&clone).exists());
    assert!(!host.database_exists(&clone));

    // Unsigned: the signature gone.
    std::fs::write(&index, &good).unwrap();
    let kept_sig = std::fs::read(&sig).unwrap();
    std::fs::remove_file(&sig).unwrap();
    let (code, err) = host.sp_fail(&restore);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("index.json.sig"), "{err}");
    assert!(!host.sites_dir().join(&clone).exists());
    assert!(!host.database_exists(&clone));
    assert!(host.backup_dir_names(".").is_empty(), "staging left behind");

    // Restored, the index signed again, over the live site: its state is snapshotted first,
    // encrypted.
    std::fs::write(&sig, kept_sig).unwrap();
    let report = host.json(&[
        "restore",
        &id,
        "--site",
        &site,
        "--yes",
        "--identity",
        &identity,
    ]);
    let safety = report["safety_snapshot"].as_str().unwrap().to_string();
    assert_eq!(
        host.snapshot_ids(&["--kind", "pre-restore"]),
        vec![safety.clone()]
    );
    assert!(host.backup_dir().join(&safety).join("index.json").is_file());
    assert_only_ciphertext(&host, &markers);
}

/// A destination that missed a snapshot is caught up from the encrypted `backup_dir` by
/// copying its objects as they are (the same ciphertext, byte for byte), index last; an image
/// archive the destination already holds is kept, so every snapshot there still verifies.
#[test]
fn a_destination_is_caught_up_with_the_local_ciphertext_as_it_is() {
    let Some((host, _site, _markers, identity)) = encrypted_host("lu") else {
        return;
    };
    let dest = host.dir.path().join("usb");
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    text.push_str(&format!(
        "\n[[destination]]\nname = \"usb\"\nurl = \"{}\"\n",
        dest.display()
    ));
    std::fs::write(&host.config, text).unwrap();
    let first = host.json(&["backup"]);
    assert_eq!(first["uploads"][0]["ok"], true, "{first}");

    // The destination unreachable (a file where its directory was): the upload fails, the
    // encrypted local snapshot is kept.
    let away = host.dir.path().join("usb-away");
    std::fs::rename(&dest, &away).unwrap();
    std::fs::write(&dest, b"not a directory").unwrap();
    let out = host.sp(&["--json", "backup"]);
    assert_eq!(out.status.code(), Some(1));
    let missed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missed = missed["id"].as_str().unwrap().to_string();
    assert!(host.backup_dir().join(&missed).join("index.json").is_file());
    std::fs::remove_file(&dest).unwrap();
    std::fs::rename(&away, &dest).unwrap();

    let third = host.json(&["backup"]);
    assert_eq!(third["uploads"][0]["ok"], true, "{third}");
    assert_eq!(
        third["uploads"][0]["caught_up"],
        serde_json::json!([missed.clone()]),
        "{third}"
    );
    let local = files(&host.backup_dir().join(&missed));
    let copied = files(&dest.join(&missed));
    // Byte for byte but the signed index: it names the image archive the destination
    // already held (never replaced: its older snapshots are signed over it).
    let strip = |v: Vec<(PathBuf, Vec<u8>)>, root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        v.into_iter()
            .filter(|(p, _)| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                !name.starts_with('.') && name != "index.json" && name != "index.json.sig"
            })
            .map(|(p, b)| (p.strip_prefix(root).unwrap().to_path_buf(), b))
            .collect()
    };
    assert_eq!(
        strip(copied, &dest.join(&missed)),
        strip(local, &host.backup_dir().join(&missed)),
        "the destination's copy differs from the local ciphertext"
    );
    let index = |root: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join(&missed).join("index.json")).unwrap())
            .unwrap()
    };
    assert_eq!(
        index(&dest)["files"],
        index(&host.backup_dir())["files"],
        "the copied index names other files"
    );
    // Every snapshot on the destination still verifies, the ones from before the catch-up too.
    let on_dest = host.snapshot_ids(&["--from", "usb"]);
    assert_eq!(on_dest.len(), 3, "{on_dest:?}");
    for id in &on_dest {
        let v = host.json(&["verify", id, "--from", "usb", "--identity", &identity]);
        assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{id}: {v}");
    }
}

/// A `backup_dir` with plaintext snapshots from before local encryption beside the encrypted
/// ones, read with a config that does not mention `[encryption]` (the runbook's minimal one):
/// the newest kind — the encrypted snapshots — is read by default, never an old plaintext one;
/// `sp snapshots` still names the plaintext ones.
#[test]
fn a_mixed_backup_dir_is_read_as_its_newest_kind() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let site = host.site_name("lm");
    populated_site(&host, &site, &rig.image("v1"));
    let plain = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    let minimal = std::fs::read_to_string(&host.config).unwrap();
    let identity = encrypt_locally(&host);
    let enc = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    assert!(enc > plain, "{enc} {plain}");
    std::fs::write(&host.config, minimal).unwrap();

    let list = host.json(&["snapshots"]);
    assert_eq!(host.snapshot_ids(&[]), vec![enc.clone()], "{list}");
    assert_eq!(list["plaintext"][0]["id"], plain.as_str(), "{list}");

    // The encrypted snapshot is the one restored: without the identity, refused naming it.
    let clone = host.site_name("lm2");
    let args = ["restore", "latest", "--site", &site, "--as", &clone];
    let (code, err) = host.sp_fail(&args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--identity"), "{err}");
    assert!(!host.sites_dir().join(&clone).exists());
    let mut args = args.to_vec();
    args.extend(["--identity", identity.as_str()]);
    let report = host.json(&args);
    assert_eq!(report["id"], enc.as_str(), "{report}");

    // A plaintext backup after it (local encryption off again): the plaintext snapshots are
    // read by default, the encrypted one named.
    let newer = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    let list = host.json(&["snapshots"]);
    assert_eq!(host.snapshot_ids(&[]), vec![plain, newer], "{list}");
    assert_eq!(list["encrypted"], serde_json::json!([enc]), "{list}");
}

/// `sp prune --from BACKUP_DIR` on an encrypted `backup_dir` is the local prune: a pinned
/// snapshot is kept. Another directory that is no destination is refused.
#[test]
fn prune_from_the_encrypted_backup_dir_honours_pins() {
    let Some((host, _site, _markers, _identity)) = encrypted_host("lp") else {
        return;
    };
    let first = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    let second = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    host.sp_ok(&["snapshot", "pin", &first]);
    host.config_replace("keep_last = 3", "keep_last = 1");
    host.config_replace("keep_daily = 7", "keep_daily = 0");
    host.config_replace("keep_weekly = 4", "keep_weekly = 0");
    host.config_replace("keep_monthly = 6", "keep_monthly = 0");
    let backup_dir = host.backup_dir().to_string_lossy().to_string();
    let out = host.sp_ok(&["prune", "--from", &backup_dir]);
    assert!(out.contains(&format!("keep   {first}")), "{out}");
    assert_eq!(host.snapshot_ids(&[]), vec![first.clone(), second.clone()]);
    assert!(host.backup_dir().join(&first).join("index.json").is_file());

    let elsewhere = host.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let (code, err) = host.sp_fail(&["prune", "--from", &elsewhere.to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("[[destination]]"), "{err}");
}

/// The encrypted local write fails (its image archive cannot be put in place: a directory
/// where it goes) while the snapshot itself is complete: the plaintext snapshot is kept, the
/// backup fails naming both, and the destination's upload is still done and reported.
#[test]
fn a_failed_local_encrypted_write_keeps_the_plaintext_snapshot() {
    let Some((host, site, _markers, _identity)) = encrypted_host("lf") else {
        return;
    };
    let rig = rig().unwrap();
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &rig.image("v1")])
        .output()
        .unwrap();
    let image_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let hex = image_id.trim_start_matches("sha256:");
    assert_eq!(hex.len(), 64, "{image_id}");
    let blocker = host.backup_dir().join(format!("images/{hex}.tar.zst.age"));
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let dest = host.dir.path().join("usb");
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    text.push_str(&format!(
        "\n[[destination]]\nname = \"usb\"\nurl = \"{}\"\n",
        dest.display()
    ));
    std::fs::write(&host.config, text).unwrap();

    let out = host.sp(&["--json", "backup"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = report["id"].as_str().unwrap().to_string();
    let err = report["local_error"].as_str().unwrap();
    assert!(err.contains("local encrypted copy"), "{err}");
    assert!(err.contains("plaintext snapshot was kept"), "{err}");
    assert_eq!(report["uploads"][0]["ok"], true, "{report}");
    // Kept in plaintext, sound; no working copy left.
    let snap = host.backup_dir().join(&id);
    assert!(snap.join(format!("sites/{site}.tar.zst")).is_file());
    assert!(!snap.join("index.json").exists());
    assert!(host
        .backup_dir()
        .join(format!("images/{hex}.tar.zst"))
        .is_file());
    let backup_dir = host.backup_dir().to_string_lossy().to_string();
    let v = host.json(&["verify", &id, "--from", &backup_dir]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");
    assert!(
        host.backup_dir_names(".tmp-").is_empty(),
        "the working copy is left"
    );
}

/// The scheduled drill (`sp -q drill`, no identity) cannot read an encrypted `backup_dir`: it
/// is recorded as a failed drill, so `sp status` stops showing the older one that passed;
/// `sp doctor` warns about the drill schedule.
#[test]
fn a_drill_that_cannot_start_is_recorded_as_failed() {
    let Some((host, _site, _markers, identity)) = encrypted_host("ld") else {
        return;
    };
    host.json(&["backup"]);
    host.json(&["drill", "latest", "--identity", &identity]);
    // (`sp status` exits 1 here anyway: no schedule is installed.)
    let status = |host: &Host| -> serde_json::Value {
        serde_json::from_slice(&host.sp(&["--json", "status"]).stdout).unwrap()
    };
    assert_eq!(status(&host)["last_drill"]["ok"], true);

    let (code, err) = host.sp_fail(&["-q", "drill"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--identity"), "{err}");
    let status = status(&host);
    assert_eq!(status["last_drill"]["ok"], false, "{status}");

    let doctor: serde_json::Value =
        serde_json::from_slice(&host.sp(&["--json", "doctor"]).stdout).unwrap();
    let check = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "drill schedule")
        .unwrap_or_else(|| panic!("{doctor}"));
    assert!(
        check["detail"].as_str().unwrap().contains("WARNING"),
        "{check}"
    );
}

/// An image archive's `.json` left without its archive (a prune cut off between the two, or
/// the archive lost) does not count as the archive: the next backup makes it again and its
/// index names it, where before the snapshot was signed without any image archive.
#[test]
fn an_image_entry_without_its_archive_is_made_again() {
    let Some((host, _site, _markers, _identity)) = encrypted_host("li") else {
        return;
    };
    let first = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    let images = host.backup_dir().join("images");
    let archives: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst.age"))
        .collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    std::fs::remove_file(&archives[0]).unwrap();
    assert!(images
        .join(format!(
            "{}.json",
            archives[0].file_name().unwrap().to_string_lossy()
        ))
        .is_file());

    let second = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(host.backup_dir().join(&second).join("index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(index["images"].as_array().unwrap().len(), 1, "{index}");
    assert!(archives[0].is_file(), "the archive was not made again");
    let v = host.json(&["verify", &second]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");
}

/// A restore or drill killed while it staged a snapshot leaves its decrypted copy in
/// `backup_dir/.fetch-PID-*`: the next backup removes it (its sp is gone), never one a running
/// sp is still using.
#[test]
fn plaintext_staged_by_a_killed_restore_goes_with_the_next_backup() {
    let Some((host, _site, markers, _identity)) = encrypted_host("lk") else {
        return;
    };
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let mut running = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let stale = host.backup_dir().join(format!(".fetch-{dead}-0000abcd"));
    let live = host
        .backup_dir()
        .join(format!(".fetch-{}-0000abcd", running.id()));
    for d in [&stale, &live] {
        std::fs::create_dir_all(d.join("20261201T000000Z/sites")).unwrap();
        std::fs::write(d.join("20261201T000000Z/sites/x.sql"), markers.join("\n")).unwrap();
    }
    host.json(&["backup"]);
    assert!(
        !stale.exists(),
        "the killed restore's plaintext is still there"
    );
    assert!(live.is_dir(), "a running sp's staging folder was removed");
    running.kill().unwrap();
    running.wait().unwrap();
    std::fs::remove_dir_all(&live).unwrap();
    assert_only_ciphertext(
        &host,
        &markers.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}
