//! Tenants are untrusted, and so are snapshots: a site's symlinks are data that comes back as
//! it was, crafted archives are refused naming the member with nothing written, one site's
//! bad archive does not block restoring another, and a tenant swapping a file for a link to
//! a root-only host file during backups never gets that file into a snapshot.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{rig, sign_manifest, Host};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn manifest(snap: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(snap.join("manifest.json")).unwrap()).unwrap()
}

/// Puts `bytes` in place of `rel` in a snapshot and re-signs the manifest with the new size
/// and sha256 (so only the content check can tell).
fn replace_file(snap: &Path, rel: &str, bytes: &[u8]) {
    std::fs::write(snap.join(rel), bytes).unwrap();
    let mut m = manifest(snap);
    use sha2::Digest;
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == rel {
            f["size"] = bytes.len().into();
            f["sha256"] = hex::encode(sha2::Sha256::digest(bytes)).into();
        }
    }
    sign_manifest(snap, &m);
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// Appends a member under a raw name: the tar crate's own setters refuse `..` and `/`.
fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, mut h: tar::Header, data: &[u8]) {
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// A tar.zst made by hand: a harmless file, then whatever `add` appends.
fn crafted(add: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, 0o644, 3);
    b.append_data(&mut h, "data/ok.txt", &b"ok\n"[..]).unwrap();
    add(&mut b);
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

fn add_site(host: &Host, name: &str, extra: &[&str]) {
    let image = host.rig.image("v1");
    let mut args = vec!["site", "add", name, "--image", &image, "--health-path", "/"];
    args.extend_from_slice(extra);
    host.sp_ok(&args);
}

/// Leftovers of an unpack beside the site directories.
fn staging_leftovers(sites: &Path) -> Vec<String> {
    std::fs::read_dir(sites)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".sp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tenant_links_come_back_as_links_and_another_site_s_bad_archive_does_not_block() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let (s, other) = (host.site_name("hl"), host.site_name("ho"));
    add_site(&host, &s, &[]);
    add_site(&host, &other, &["--no-db"]);
    let data = host.sites_dir().join(&s).join("data");
    std::fs::write(data.join("release-1.txt"), "release 1\n").unwrap();
    std::os::unix::fs::symlink("/data/release-1.txt", data.join("current")).unwrap();
    std::os::unix::fs::symlink("../x", data.join("up")).unwrap();
    std::fs::create_dir_all(data.join("deep/er")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc/passwd", data.join("deep/er/far")).unwrap();

    let out = host.sp(&["backup"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).to_lowercase().contains("warning"),
        "backup warned about ordinary links: {}",
        text(&out)
    );
    let id = host.json(&["snapshots"])["snapshots"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = host.backup_dir().join(&id);
    host.sp_ok(&["verify", &id]);

    let links = [
        ("current", "/data/release-1.txt"),
        ("up", "../x"),
        ("deep/er/far", "../../../../../etc/passwd"),
    ];
    let check = |name: &str| {
        let d = host.sites_dir().join(name).join("data");
        for (l, target) in links {
            assert_eq!(
                std::fs::read_link(d.join(l)).unwrap(),
                Path::new(target),
                "{name}: {l}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(d.join("release-1.txt")).unwrap(),
            "release 1\n"
        );
    };
    let copy = host.site_name("hc");
    host.sp_ok(&["restore", &id, "--site", &s, "--as", &copy]);
    check(&copy);

    // Another site's archive with an unsafe member (correctly checksummed): `sp verify`
    // names it, restoring that site is refused, restoring this one still works.
    let bad = crafted(|b| raw(b, "data/dev", header(tar::EntryType::Char, 0o644, 0), b""));
    replace_file(&snap, &format!("sites/{other}.tar.zst"), &bad);
    let out = host.sp(&["verify", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("sites/{other}.tar.zst"))
            && text(&out).contains("unsafe archive member data/dev"),
        "{}",
        text(&out)
    );
    let copy2 = host.site_name("hd");
    let out = host.sp(&["restore", &id, "--site", &s, "--as", &copy2]);
    assert!(out.status.success(), "{}", text(&out));
    check(&copy2);
    let copy3 = host.site_name("he");
    let out = host.sp(&["restore", &id, "--site", &other, "--as", &copy3]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("unsafe archive member data/dev"),
        "{}",
        text(&out)
    );
    assert!(!host.sites_dir().join(&copy3).exists());
    assert!(staging_leftovers(&host.sites_dir()).is_empty());
}

/// A snapshot folder holding one site `site` whose archive is `archive` (host archive empty),
/// signed through the harness.
fn crafted_snapshot(dir: &Path, id: &str, site: &str, archive: &[u8]) {
    let snap = dir.join(id);
    std::fs::create_dir_all(snap.join("sites")).unwrap();
    let host_tar =
        zstd::encode_all(&tar::Builder::new(Vec::new()).into_inner().unwrap()[..], 3).unwrap();
    std::fs::write(snap.join("host.tar.zst"), &host_tar).unwrap();
    let rel = format!("sites/{site}.tar.zst");
    std::fs::write(snap.join(&rel), archive).unwrap();
    let m = serde_json::json!({
        "format": 1, "id": id, "sp_version": "0", "host": "elsewhere", "instance": "x",
        "created": "2026-01-01T00:00:00Z", "duration_ms": 1,
        "sites": [{"name": site, "image": null, "image_id": null, "uid": 20000,
                   "archive": rel, "database": null}],
        "files": [
            {"path": "host.tar.zst", "size": 0, "sha256": ""},
            {"path": rel, "size": 0, "sha256": ""}
        ]
    });
    sign_manifest(&snap, &m);
    replace_file(&snap, "host.tar.zst", &host_tar);
    replace_file(&snap, &rel, archive);
}

#[test]
fn crafted_archives_are_refused_naming_the_member_with_nothing_written() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    let site = host.site_name("hx");
    let config_before = std::fs::read(&host.config).unwrap();
    let work = host.dir.path().join("crafted");
    let outside = host.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let tag = format!("{}-{}", std::process::id(), site);
    let abs = PathBuf::from(format!("/tmp/sp-hostile-{tag}"));
    let escape = host.dir.path().join(format!("escape-{tag}"));
    let out_s = outside.to_string_lossy().into_owned();
    let abs_s = abs.to_string_lossy().into_owned();
    type Add = Box<dyn FnOnce(&mut tar::Builder<Vec<u8>>)>;
    let escape_name = format!("../escape-{tag}");
    let cases: Vec<(&str, String, Add)> = vec![
        (
            "dotdot",
            escape_name.clone(),
            Box::new(move |b| {
                raw(
                    b,
                    &escape_name,
                    header(tar::EntryType::Regular, 0o644, 1),
                    b"x",
                )
            }),
        ),
        (
            "absolute",
            abs_s.clone(),
            Box::new(move |b| raw(b, &abs_s, header(tar::EntryType::Regular, 0o644, 1), b"x")),
        ),
        (
            "char device",
            "data/null".into(),
            Box::new(|b| {
                let mut h = header(tar::EntryType::Char, 0o666, 0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                raw(b, "data/null", h, b"")
            }),
        ),
        (
            "fifo",
            "data/fifo".into(),
            Box::new(|b| raw(b, "data/fifo", header(tar::EntryType::Fifo, 0o644, 0), b"")),
        ),
        (
            "setuid",
            "data/suid".into(),
            Box::new(|b| {
                raw(
                    b,
                    "data/suid",
                    header(tar::EntryType::Regular, 0o4755, 1),
                    b"x",
                )
            }),
        ),
        (
            "through a link",
            "link/pwned".into(),
            Box::new(move |b| {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, "link", &out_s).unwrap();
                raw(
                    b,
                    "link/pwned",
                    header(tar::EntryType::Regular, 0o644, 1),
                    b"x",
                );
            }),
        ),
    ];
    for (i, (label, member, add)) in cases.into_iter().enumerate() {
        let backups = work.join(format!("b{i}"));
        crafted_snapshot(&backups, "20260101T000000Z", &site, &crafted(add));
        for args in [
            vec!["restore", "latest", "--from"],
            vec!["restore", "latest", "--site", &site, "--from"],
        ] {
            let mut args = args.clone();
            let from = backups.to_string_lossy().into_owned();
            args.push(&from);
            let out = host.sp(&args);
            let all = text(&out);
            assert!(!out.status.success(), "{label}: restored: {all}");
            let line = all
                .lines()
                .find(|l| l.contains("unsafe archive member"))
                .unwrap_or_else(|| panic!("{label}: no refusal: {all}"));
            assert!(
                line.contains(&format!("unsafe archive member {member}:")),
                "{label}: the error does not name {member}: {line}"
            );
            assert!(
                !host.sites_dir().join(&site).exists(),
                "{label}: site dir written"
            );
            assert!(
                staging_leftovers(&host.sites_dir()).is_empty(),
                "{label}: {:?}",
                staging_leftovers(&host.sites_dir())
            );
            assert_eq!(
                std::fs::read_dir(&outside).unwrap().count(),
                0,
                "{label}: written outside"
            );
            assert!(!abs.exists() && !escape.exists(), "{label}: escaped");
            assert!(
                !host.sites_dir().join(format!("escape-{tag}")).exists()
                    && !host.dir.path().join(format!("escape-{tag}")).exists(),
                "{label}: escaped"
            );
            assert_eq!(
                std::fs::read(&host.config).unwrap(),
                config_before,
                "{label}: config changed"
            );
        }
    }
}

/// Swaps two names atomically (`renameat2(RENAME_EXCHANGE)`), as a tenant may in its dir.
fn exchange(a: &Path, b: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (a, b) = (
        std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap(),
        std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap(),
    );
    // SAFETY: two valid NUL-terminated paths; the syscall only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    r == 0
}

#[test]
fn a_tenant_swapping_files_for_links_never_gets_a_host_file_into_a_snapshot() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    host.login();
    let s = host.site_name("hr");
    add_site(&host, &s, &["--no-db"]);
    // A root-only file outside the site, holding a marker; the tenant's files are as long.
    let marker = format!("ROOT-ONLY-MARKER-{}-{s}", std::process::id());
    let secret = host.dir.path().join("secret.txt");
    std::fs::write(&secret, format!("{marker:<64}")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data = host.sites_dir().join(&s).join("data");
    let pairs: Vec<(PathBuf, PathBuf)> = (0..8)
        .map(|i| {
            let (f, l) = (data.join(format!("file{i}")), data.join(format!("link{i}")));
            std::fs::write(&f, format!("{:<64}", "ordinary")).unwrap();
            std::os::unix::fs::symlink(&secret, &l).unwrap();
            (f, l)
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (f, l) in &pairs {
                    if exchange(f, l) {
                        n += 1;
                    }
                }
            }
            n
        })
    };
    let started = Instant::now();
    let mut runs = 0;
    let mut result = Ok(());
    while runs < 100 && started.elapsed() < Duration::from_secs(300) {
        let out = host.sp(&["--json", "backup", "--site", &s]);
        if !out.status.success() {
            result = Err(format!("backup {runs} failed: {}", text(&out)));
            break;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let snap = PathBuf::from(v["dir"].as_str().unwrap());
        let bytes = std::fs::read(snap.join(format!("sites/{s}.tar.zst"))).unwrap();
        let tar = zstd::decode_all(&bytes[..]).unwrap();
        if tar.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            result = Err(format!(
                "backup {runs}: the root-only file is in the snapshot"
            ));
            break;
        }
        std::fs::remove_dir_all(&snap).unwrap();
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swapped = swaps.join().unwrap();
    result.unwrap();
    assert!(swapped > 100, "the swap loop hardly ran ({swapped})");
}
