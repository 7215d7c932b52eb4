//! Off-host snapshots against the rig's S3 server (moto): every uploaded object is age
//! ciphertext, `verify --from` names a changed object, a cut-off upload is never listed and
//! the next backup completes it, the full cattle cycle from the bucket alone, and prune per
//! destination (planted snapshots neither counted nor deleted). Each test has a bucket of its own, emptied and removed on drop. The same
//! for SFTP against the rig's sshd (a directory of each test's own, removed on drop), and a
//! server whose host key known_hosts does not hold is refused before anything is sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::harness::{rig, Host, Rig};
use crate::restore::{destroy_host, offhost_keys, populated_site, seen, Seen};

/// A bucket of the test's own on the rig's S3 server.
struct Bucket {
    endpoint: String,
    name: String,
}

impl Bucket {
    fn new(rig: &Rig, host: &Host) -> Option<Bucket> {
        let endpoint = rig_var(rig, "SP_RIG_S3_ENDPOINT")?;
        let b = Bucket {
            endpoint,
            name: format!("sp-{}", host.instance.to_lowercase()),
        };
        let out = curl(&["-X", "PUT", &b.url("")]);
        assert!(out.0, "create bucket: {}", out.1);
        Some(b)
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{}/{key}", self.endpoint, self.name)
    }

    /// Every object key (and its bytes).
    fn objects(&self) -> Vec<(String, Vec<u8>)> {
        self.keys()
            .into_iter()
            .map(|k| {
                let body = get(&self.url(&k));
                (k, body)
            })
            .collect()
    }

    fn keys(&self) -> Vec<String> {
        let (ok, xml) = curl(&[&format!("{}?list-type=2&max-keys=1000", self.url(""))]);
        assert!(ok, "list: {xml}");
        xml.split("<Key>")
            .skip(1)
            .filter_map(|p| p.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    fn put(&self, key: &str, body: &[u8]) {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), body).unwrap();
        // Not curl's default form type: moto would parse the body as a form and store nothing.
        let (ok, e) = curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", t.path().display()),
            &self.url(key),
        ]);
        assert!(ok, "put {key}: {e}");
    }

    fn delete(&self, key: &str) {
        let _ = curl(&["-X", "DELETE", &self.url(key)]);
    }

    /// The `[[destination]]` table for this bucket, through `endpoint` (default: the server).
    fn destination(&self, name: &str, endpoint: Option<&str>, extra: &str) -> String {
        format!(
            "\n[[destination]]\nname = \"{name}\"\nurl = \"s3://{}/host\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\naccess_key_id = \"sp-test\"\nsecret_access_key = \"sp-test-secret\"\n{extra}",
            self.name,
            endpoint.unwrap_or(&self.endpoint)
        )
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        if std::env::var_os("SP_TEST_KEEP").is_some() {
            return;
        }
        for k in self.keys() {
            self.delete(&k);
        }
        let _ = curl(&["-X", "DELETE", &self.url("")]);
    }
}

/// A rig.env value that older rigs lack (the S3 server came later).
fn rig_var(_rig: &Rig, k: &str) -> Option<String> {
    let path = std::env::var("SP_RIG_ENV").unwrap_or_else(|_| "/var/lib/sp-rig/rig.env".into());
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(key, _)| key.trim() == k)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Runs sp, insists on failure; returns (exit code, stdout + stderr).
fn fails(host: &Host, args: &[&str]) -> (i32, String) {
    let out = host.sp(args);
    assert!(!out.status.success(), "sp {args:?} should have failed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Requests are signed (moto answers unsigned reads of objects with 403).
const SIGN: [&str; 4] = [
    "--aws-sigv4",
    "aws:amz:us-east-1:s3",
    "--user",
    "sp-test:sp-test-secret",
];

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "-f"])
        .args(SIGN)
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn get(url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "-f"])
        .args(SIGN)
        .arg(url)
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {url}");
    out.stdout
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A host with one populated site carrying `marker` in a data file and a row, an age
/// identity made by `sp key generate`, and the bucket as destination `s3` (through
/// `endpoint` when given), encrypted to the identity.
fn offsite_host(
    label: &str,
    endpoint: Option<&str>,
    extra: &str,
) -> Option<(Host, Bucket, String, String, String)> {
    let rig = rig()?;
    let host = Host::new(&rig);
    let Some(bucket) = Bucket::new(&rig, &host) else {
        eprintln!("SKIP: no SP_RIG_S3_ENDPOINT in rig.env (run `bash scripts/rig.sh s3`)");
        return None;
    };
    let (site, marker, identity, recipient) = prepared(&rig, &host, label);
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    text.push_str(&bucket.destination("s3", endpoint, extra));
    text.push_str(&format!("\n[encryption]\nrecipients = [\"{recipient}\"]\n"));
    std::fs::write(&host.config, text).unwrap();
    Some((host, bucket, site, marker, identity))
}

/// Logs `host` in, makes one populated site carrying a marker in a data file and a row, and
/// an age identity: (site, marker, identity file, recipient).
fn prepared(rig: &Rig, host: &Host, label: &str) -> (String, String, String, String) {
    host.login();
    let site = host.site_name(label);
    populated_site(host, &site, &rig.image("v1"));
    let marker = format!("PLAINTEXT-MARKER-{}", host.instance);
    std::fs::write(
        host.sites_dir().join(&site).join("data/secret.txt"),
        marker.repeat(50),
    )
    .unwrap();
    host.root_sql(&format!(
        "INSERT INTO `{site}`.items VALUES (9, '{marker}', NULL)"
    ));
    let id_file = host.dir.path().join("offhost/identity.age");
    std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
    let made = host.json(&["key", "generate", "--output", &id_file.to_string_lossy()]);
    let recipient = made["recipient"].as_str().unwrap().to_string();
    assert!(recipient.starts_with("age1"), "{made}");
    (
        site,
        marker,
        id_file.to_string_lossy().to_string(),
        recipient,
    )
}

#[test]
fn upload_is_age_ciphertext_and_verify_names_a_changed_object() {
    // Segments of 1 MiB: the site's files (3 MiB that do not compress) go up as several
    // objects.
    let Some((host, bucket, site, marker, identity)) =
        offsite_host("os", None, "segment_mib = 1\n")
    else {
        return;
    };
    let mut noise = vec![0u8; 3 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut noise)
        .unwrap();
    std::fs::write(host.sites_dir().join(&site).join("data/noise.bin"), noise).unwrap();
    let backup = host.json(&["backup"]);
    let id = backup["id"].as_str().unwrap().to_string();
    assert_eq!(backup["uploads"][0]["ok"], true, "{backup}");
    assert!(host.backup_dir().join(&id).join("manifest.json").is_file());

    let objects = bucket.objects();
    let plain_meta = [
        "manifest.json",
        "manifest.json.sha256",
        "manifest.json.sig",
        "index.json",
        "index.json.sig",
    ];
    let mut data = 0;
    for (k, body) in &objects {
        assert!(!contains(body, &marker), "{k} holds the site's plaintext");
        let meta = plain_meta.iter().any(|m| k.ends_with(&format!("/{m}"))) || k.ends_with(".json");
        if !meta {
            let first = k.ends_with(".age.0000");
            assert!(
                k.ends_with(".age") || first || k.contains(".age.000"),
                "{k} is not encrypted"
            );
            // A split file's first segment starts the age stream; the rest continue it.
            if first || k.ends_with(".age") {
                assert!(
                    body.starts_with(b"age-encryption.org/v1\n"),
                    "{k} is not age"
                );
            }
            data += 1;
        }
    }
    let segments: Vec<_> = objects
        .iter()
        .filter(|o| o.0.contains(&format!("/sites/{site}.tar.zst.age.")))
        .map(|o| o.1.len())
        .collect();
    assert!(segments.len() >= 3, "{segments:?}");
    assert!(segments.iter().all(|n| *n <= 1 << 20), "{segments:?}");
    // host archive, the site's files and dump, and its image archive.
    assert!(
        data >= 4,
        "{objects:?}",
        objects = objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    assert_eq!(host.snapshot_ids(&["--from", "s3"]), vec![id.clone()]);

    let v = host.json(&["verify", "--from", "s3"]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["ciphertext_only"], true, "{v}");
    let v = host.json(&["verify", "latest", "--from", "s3", "--identity", &identity]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");
    assert!(v.get("ciphertext_only").is_none(), "{v}");

    // The split file comes back whole: a drill restores it from the bucket.
    let out = host.sp(&["drill", "--from", "s3", "--identity", &identity]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One byte changed in the bucket: verify fails naming the object, with or without the identity.
    let key = format!("host/{id}/sites/{site}.tar.zst.age.0001");
    let mut body = get(&bucket.url(&key));
    let n = body.len() / 2;
    body[n] ^= 0x01;
    bucket.put(&key, &body);
    for args in [
        vec!["verify", "--from", "s3"],
        vec!["verify", "--from", "s3", "--identity", &identity],
    ] {
        let (code, out) = fails(&host, &args);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!("{id}/sites/{site}.tar.zst.age.0001")),
            "{out}"
        );
    }
    // A restore from it refuses before changing anything.
    let (code, out) = fails(&host, &["drill", "--from", "s3", "--identity", &identity]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!("sites/{site}.tar.zst.age.0001")),
        "{out}"
    );
    assert!(
        host.backup_dir_names(".fetch-").is_empty(),
        "staging left behind"
    );
}

/// The whole host from the bucket: the host, its backup dir and its image cache wiped, the
/// registry unable to serve the image; a minimal config naming the bucket, the identity and
/// the snapshot key kept off the host.
#[test]
fn cattle_cycle_from_s3() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    let Some(bucket) = Bucket::new(&rig, &host) else {
        return;
    };
    host.login();
    let image = host.private_image("v1", "v1");
    let (a, b) = (host.site_name("sa"), host.site_name("sb"));
    populated_site(&host, &a, &image);
    populated_site(&host, &b, &image);
    let id_file = host.dir.path().join("offhost/identity.age");
    std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
    let identity = id_file.to_string_lossy().to_string();
    let made = host.json(&["key", "generate", "--output", &identity]);
    let recipient = made["recipient"].as_str().unwrap().to_string();
    let dest = bucket.destination("offsite", None, "");
    let enc = format!("\n[encryption]\nrecipients = [\"{recipient}\"]\n");
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    text.push_str(&dest);
    text.push_str(&enc);
    std::fs::write(&host.config, text).unwrap();
    let before_a = seen(&host, &a);
    let before_b = seen(&host, &b);
    let backup = host.json(&["backup"]);
    assert_eq!(backup["uploads"][0]["ok"], true, "{backup}");
    let pinned = format!("{}@{}", image.rsplit_once(':').unwrap().0, before_a.digest);

    destroy_host(&host, &[&a, &b], &[&image]);
    host.delete_from_registry(&pinned);
    std::fs::remove_dir_all(host.backup_dir()).unwrap();
    let mut minimal = std::fs::read_to_string(&host.config).unwrap();
    minimal.push_str(&dest);
    std::fs::write(&host.config, minimal).unwrap();

    let (_, public) = offhost_keys(&host);
    let key = public.to_string_lossy().to_string();
    // Without the identity: refused, nothing changed.
    let (code, err) = host.sp_fail(&["restore", "latest", "--from", "offsite", "--key", &key]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--identity"), "{err}");
    assert!(!host.sites_dir().join(&a).exists());

    restore_from_offsite(&host, &identity, &key, [(&a, before_a), (&b, before_b)]);
}

/// A TCP forwarder to the S3 server that the test can cut (the server "stops" for sp) and
/// bring back, without stopping the shared server.
struct Cut {
    port: u16,
    target: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Pace the bytes (about 12 MiB/s each way), so a cut lands mid-upload.
    slow: Arc<AtomicBool>,
}

impl Cut {
    fn new(target: &str) -> Cut {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Cut {
            port,
            target: target.to_string(),
            up: Arc::new(AtomicBool::new(false)),
            conns: Default::default(),
            slow: Default::default(),
        };
        c.start();
        c
    }

    fn start(&self) {
        let l = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        l.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, target) = (self.up.clone(), self.conns.clone(), self.target.clone());
        let slow = self.slow.clone();
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&target) else {
                            continue;
                        };
                        conns.lock().unwrap().push(client.try_clone().unwrap());
                        conns.lock().unwrap().push(server.try_clone().unwrap());
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let slow = slow.clone();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 65536];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                    if slow.load(Ordering::SeqCst) {
                                        std::thread::sleep(std::time::Duration::from_millis(5));
                                    }
                                }
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
            // The listener closes here: new connections are refused.
        });
    }

    /// Refuses new connections and breaks the open ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_cut_off_upload_is_never_listed_and_the_next_backup_completes_it() {
    let Some(rig) = rig() else { return };
    let Some(endpoint) = rig_var(&rig, "SP_RIG_S3_ENDPOINT") else {
        eprintln!("SKIP: no SP_RIG_S3_ENDPOINT");
        return;
    };
    let target = endpoint.trim_start_matches("http://").to_string();
    let cut = Cut::new(&target);
    let via = format!("http://127.0.0.1:{}", cut.port);
    let Some((host, bucket, site, _, _)) = offsite_host("cut", Some(&via), "") else {
        return;
    };
    let first = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    assert_eq!(host.snapshot_ids(&["--from", "s3"]), vec![first.clone()]);

    // Enough incompressible data that the upload is still under way when the server goes.
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(host.sites_dir().join(&site).join("data/big.bin"), big).unwrap();
    let child = host
        .cmd(&["--json", "backup"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Cut as soon as the second snapshot's first object is in the bucket.
    let started = std::time::Instant::now();
    loop {
        let keys = bucket.keys();
        if keys.iter().any(|k| {
            k.starts_with("host/")
                && !k.starts_with(&format!("host/{first}/"))
                && !k.starts_with("host/images/")
        }) {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the upload never began: {keys:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cut.cut();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let second = report["id"].as_str().unwrap().to_string();
    assert_eq!(report["uploads"][0]["ok"], false, "{report}");
    assert!(
        host.backup_dir()
            .join(&second)
            .join("manifest.json")
            .is_file(),
        "local copy kept"
    );
    let status = std::fs::read_to_string(host.state_dir().join("backup-status.json")).unwrap();
    assert!(status.contains("upload to s3"), "{status}");

    // The server is back: the second snapshot is not listed until the next backup uploads it.
    cut.start();
    assert_eq!(host.snapshot_ids(&["--from", "s3"]), vec![first.clone()]);
    next_backup_catches_up(&host, "s3", first, second);
    cut.cut();
}

/// A snapshot whose upload failed is caught up by the next backup even when whoever can write to
/// the bucket has planted a "newer snapshot" there: only a signed index counts as the newest.
#[test]
fn a_planted_newer_index_does_not_stop_the_catch_up() {
    let Some((host, bucket, _site, _, _)) = offsite_host("pc", None, "") else {
        return;
    };
    let first = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    // The next upload fails (the bucket is out of reach): kept locally only.
    let good = std::fs::read_to_string(&host.config).unwrap();
    let gone = good.replace(
        &format!("s3://{}/", bucket.name),
        &format!("s3://{}-gone/", bucket.name),
    );
    assert_ne!(good, gone);
    std::fs::write(&host.config, gone).unwrap();
    let out = host.sp(&["--json", "backup"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missed = report["id"].as_str().unwrap().to_string();
    std::fs::write(&host.config, good).unwrap();

    let (_, real) = bucket
        .objects()
        .into_iter()
        .find(|(k, _)| k == &format!("host/{first}/index.json"))
        .unwrap();
    let fake = "29980101T000000Z";
    let mut index: serde_json::Value = serde_json::from_slice(&real).unwrap();
    index["id"] = fake.into();
    bucket.put(
        &format!("host/{fake}/index.json"),
        &serde_json::to_vec(&index).unwrap(),
    );
    bucket.put(&format!("host/{fake}/index.json.sig"), b"not a signature");

    let third = host.json(&["backup"]);
    assert_eq!(
        third["uploads"][0]["caught_up"],
        serde_json::json!([missed]),
        "{third}"
    );
    let ids = host.snapshot_ids(&["--from", "s3"]);
    assert!(ids.contains(&missed), "{ids:?}");
}

/// Each destination keeps exactly its own policy's set; snapshots planted in the bucket (an
/// unsigned index) are neither counted nor deleted, and `restore latest` passes over them;
/// the objects of an upload that never completed go once a newer snapshot is complete.
#[test]
fn prune_keeps_each_destinations_own_policy() {
    let Some((host, bucket, _site, _, identity)) =
        offsite_host("pr", None, "[destination.retention]\nkeep_last = 2\n")
    else {
        return;
    };
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(host.json(&["backup"])["id"].as_str().unwrap().to_string());
    }
    assert_eq!(host.snapshot_ids(&["--from", "s3"]), ids);
    // What an upload cut off for good leaves (its snapshot pruned locally before the next
    // backup could complete it): segments, no index. One older than the newest snapshot is
    // left over; one newer may still be completed by the next backup.
    let stale = "20200101T000000Z";
    let pending = "29990101T000000Z";
    for id in [stale, pending] {
        bucket.put(&format!("host/{id}/sites/x.tar.zst.age.0000"), b"age");
    }
    // Whoever can write to the bucket plants two "newer snapshots" (a real index, renamed, its
    // signature not theirs to make): were they counted, keep_last = 2 would delete every real one.
    let (_, real) = bucket
        .objects()
        .into_iter()
        .find(|(k, _)| k == &format!("host/{}/index.json", ids[3]))
        .unwrap();
    let fakes = ["29980101T000000Z", "29980102T000000Z"];
    for fake in fakes {
        let mut index: serde_json::Value = serde_json::from_slice(&real).unwrap();
        index["id"] = fake.into();
        index["created"] = "2998-01-01T00:00:00Z".into();
        bucket.put(
            &format!("host/{fake}/index.json"),
            &serde_json::to_vec(&index).unwrap(),
        );
        bucket.put(&format!("host/{fake}/index.json.sig"), b"not a signature");
    }
    // `latest` is the newest snapshot a trusted key signed: the planted ones are skipped, named.
    let out = host.sp(&[
        "restore",
        "latest",
        "--from",
        "s3",
        "--identity",
        &identity,
        "--dry-run",
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("snapshot {}", ids[3])), "{text}");
    assert!(text.contains(&format!("skipped {}", fakes[1])), "{text}");
    let before = bucket.keys();
    let dry = host.json(&["prune", "--dry-run"]);
    assert_eq!(dry["destinations"][0]["destination"], "s3", "{dry}");
    let unauthentic: Vec<&str> = dry["destinations"][0]["unauthentic"]
        .as_array()
        .unwrap_or_else(|| panic!("{dry}"))
        .iter()
        .filter_map(|u| u.as_str()?.split(':').next())
        .collect();
    assert_eq!(unauthentic, fakes, "{dry}");
    assert_eq!(
        dry["destinations"][0]["unfinished"],
        serde_json::json!([stale]),
        "{dry}"
    );
    assert_eq!(bucket.keys(), before, "dry run changed the bucket");

    let text = host.sp_ok(&["prune"]);
    assert!(
        text.contains(&format!("upload(s) that never completed: {stale}")),
        "{text}"
    );
    let keys = bucket.keys();
    assert!(!keys.iter().any(|k| k.contains(stale)), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains(pending)), "{keys:?}");
    // Neither counted nor deleted (a snapshot signed by a key not in the keyring is still
    // someone's data): named, left alone.
    assert!(text.contains("not signed by a trusted key"), "{text}");
    for fake in fakes {
        assert!(keys.iter().any(|k| k.contains(fake)), "{fake} was deleted");
        for k in keys.iter().filter(|k| k.contains(fake)) {
            bucket.delete(k);
        }
    }
    // Locally keep_last = 3 (and one a day); on the bucket keep_last = 2.
    let local: Vec<String> = host.json(&["snapshots"])["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(local, ids[1..].to_vec());
    assert_eq!(host.snapshot_ids(&["--from", "s3"]), ids[2..].to_vec());
    for k in bucket.keys() {
        assert!(
            !(k.starts_with(&format!("host/{}/", ids[0]))
                || k.starts_with(&format!("host/{}/", ids[1]))),
            "{k} of a pruned snapshot is left"
        );
    }
    // The image archive stays: the kept snapshots need it.
    assert!(bucket.keys().iter().any(|k| k.starts_with("host/images/")));
}

/// An upload that is dropped unfinished (a file that failed or was left out midway) is
/// aborted: the bucket holds no parts of it, where before it kept them until a lifecycle
/// rule expired them (and a provider billed them).
#[test]
fn an_unfinished_multipart_upload_is_aborted() {
    let Some(rig) = rig() else { return };
    let host = Host::new(&rig);
    let Some(bucket) = Bucket::new(&rig, &host) else {
        return;
    };
    let uploads = || {
        let (ok, xml) = curl(&[&format!("{}?uploads", bucket.url(""))]);
        assert!(ok, "list uploads: {xml}");
        xml.matches("<UploadId>").count()
    };
    let cfg = sp::config::DestinationConfig {
        name: "s3".into(),
        url: format!("s3://{}/host", bucket.name),
        endpoint: Some(bucket.endpoint.clone()),
        path_style: true,
        access_key_id: Some("sp-test".into()),
        secret_access_key: Some("sp-test-secret".into()),
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = rt.enter();
    let store = sp::store::remote::s3(&cfg, &bucket.name, "host").unwrap();
    use sp::store::Store;
    let mut up = store.write("snap/sites/big.tar.zst").unwrap();
    // Three parts' worth: at least two parts are on the server.
    up.write_all(&vec![7u8; 3 * sp::store::remote::PART])
        .unwrap();
    assert_eq!(uploads(), 1, "the multipart upload should be in progress");
    drop(up);
    assert_eq!(
        uploads(),
        0,
        "the dropped upload's parts are still in the bucket"
    );
    assert!(bucket.keys().is_empty(), "{:?}", bucket.keys());

    // A committed one completes, and leaves no upload behind either.
    let mut up = store.write("snap/sites/ok.tar.zst").unwrap();
    up.write_all(&vec![8u8; sp::store::remote::PART + 5])
        .unwrap();
    up.commit().unwrap();
    assert_eq!(uploads(), 0);
    assert_eq!(
        bucket.keys(),
        vec!["host/snap/sites/ok.tar.zst".to_string()]
    );
}

/// A directory of the test's own on the rig's sshd (which runs on this machine, so the test
/// reads what the server stored straight from the disk), removed on drop.
struct SftpDir {
    dir: tempfile::TempDir,
    base: String,
    key: String,
    known_hosts: String,
}

impl SftpDir {
    fn new(rig: &Rig) -> Option<SftpDir> {
        let (Some(base), Some(key), Some(known_hosts)) = (
            rig_var(rig, "SP_RIG_SFTP_URL_BASE"),
            rig_var(rig, "SP_RIG_SFTP_KEY"),
            rig_var(rig, "SP_RIG_SFTP_KNOWN_HOSTS"),
        ) else {
            eprintln!("SKIP: no SP_RIG_SFTP_* in rig.env (run `bash scripts/rig.sh up`)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("sp-it-sftp-")
            .tempdir()
            .expect("tempdir");
        Some(SftpDir {
            dir,
            base,
            key,
            known_hosts,
        })
    }

    /// The `[[destination]]` table for this directory (`known_hosts` overrides the rig's).
    fn destination(&self, name: &str, known_hosts: Option<&str>) -> String {
        format!(
            "\n[[destination]]\nname = \"{name}\"\nurl = \"{}{}/host\"\nkey_file = \"{}\"\nknown_hosts = \"{}\"\n",
            self.base,
            self.dir.path().display(),
            self.key,
            known_hosts.unwrap_or(&self.known_hosts)
        )
    }

    /// How known_hosts names the rig's server (`[HOST]:PORT`).
    fn known_hosts_name(&self) -> String {
        let hostport = self
            .base
            .rsplit_once('@')
            .map(|x| x.1)
            .unwrap_or(&self.base);
        let (h, p) = hostport.split_once(':').unwrap_or((hostport, "22"));
        if p == "22" {
            h.to_string()
        } else {
            format!("[{h}]:{p}")
        }
    }

    /// Every file the server holds (relative path, bytes), links and all, in path order.
    fn files(&self) -> Vec<(String, Vec<u8>)> {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                let meta = p.symlink_metadata().unwrap();
                if meta.is_dir() {
                    walk(root, &p, out);
                } else if meta.is_file() {
                    out.push((rel, std::fs::read(&p).unwrap()));
                } else {
                    out.push((rel, Vec::new()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }
}

/// A host like [`offsite_host`]'s, its destination `sftp` a directory on the rig's sshd.
fn sftp_host(label: &str) -> Option<(Host, SftpDir, String, String, String)> {
    let rig = rig()?;
    let server = SftpDir::new(&rig)?;
    let host = Host::new(&rig);
    let (site, marker, identity, recipient) = prepared(&rig, &host, label);
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    text.push_str(&server.destination("sftp", None));
    text.push_str(&format!("\n[encryption]\nrecipients = [\"{recipient}\"]\n"));
    std::fs::write(&host.config, text).unwrap();
    Some((host, server, site, marker, identity))
}

#[test]
fn sftp_upload_is_age_ciphertext_and_verifies() {
    let Some((host, server, _site, marker, identity)) = sftp_host("sf") else {
        return;
    };
    let backup = host.json(&["backup"]);
    let id = backup["id"].as_str().unwrap().to_string();
    assert_eq!(backup["uploads"][0]["ok"], true, "{backup}");

    let files = server.files();
    let mut data = 0;
    for (k, body) in &files {
        assert!(k.starts_with("host/"), "{k} outside the destination's path");
        assert!(!k.contains("/.part-"), "{k}: a part file was left");
        assert!(!contains(body, &marker), "{k} holds the site's plaintext");
        if !k.ends_with(".json") && !k.ends_with(".sig") && !k.ends_with(".sha256") {
            assert!(k.ends_with(".age"), "{k} is not encrypted");
            assert!(
                body.starts_with(b"age-encryption.org/v1\n"),
                "{k} is not age"
            );
            data += 1;
        }
    }
    assert!(
        data >= 4,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert_eq!(host.snapshot_ids(&["--from", "sftp"]), vec![id.clone()]);
    let v = host.json(&["verify", "--from", "sftp"]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["ciphertext_only"], true, "{v}");
    let v = host.json(&[
        "verify",
        "latest",
        "--from",
        "sftp",
        "--identity",
        &identity,
    ]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");

    // A link on the server is never followed: a snapshot-named link to the real snapshot is
    // not listed, and a left-over part file is not either.
    let root = server.dir.path().join("host");
    std::os::unix::fs::symlink(root.join(&id), root.join("20990101T000000Z")).unwrap();
    std::fs::write(root.join(&id).join(".part-0123456789abcdef"), b"half").unwrap();
    assert_eq!(host.snapshot_ids(&["--from", "sftp"]), vec![id.clone()]);
    let v = host.json(&["verify", "--from", "sftp"]);
    assert_eq!(v["faults"].as_array().unwrap().len(), 0, "{v}");

    // doctor reaches it.
    let out = host.sp(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("destination sftp") && l.contains("1 snapshot(s)")),
        "{text}"
    );
}

/// The whole host from the SFTP server alone, as [`cattle_cycle_from_s3`].
#[test]
fn cattle_cycle_from_sftp() {
    let Some(rig) = rig() else { return };
    let Some(server) = SftpDir::new(&rig) else {
        return;
    };
    let host = Host::new(&rig);
    host.login();
    let image = host.private_image("v1", "v1");
    let (a, b) = (host.site_name("fa"), host.site_name("fb"));
    populated_site(&host, &a, &image);
    populated_site(&host, &b, &image);
    let id_file = host.dir.path().join("offhost/identity.age");
    std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
    let identity = id_file.to_string_lossy().to_string();
    let made = host.json(&["key", "generate", "--output", &identity]);
    let recipient = made["recipient"].as_str().unwrap().to_string();
    let dest = server.destination("offsite", None);
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    text.push_str(&dest);
    text.push_str(&format!("\n[encryption]\nrecipients = [\"{recipient}\"]\n"));
    std::fs::write(&host.config, text).unwrap();
    let before_a = seen(&host, &a);
    let before_b = seen(&host, &b);
    let backup = host.json(&["backup"]);
    assert_eq!(backup["uploads"][0]["ok"], true, "{backup}");
    let pinned = format!("{}@{}", image.rsplit_once(':').unwrap().0, before_a.digest);

    destroy_host(&host, &[&a, &b], &[&image]);
    host.delete_from_registry(&pinned);
    std::fs::remove_dir_all(host.backup_dir()).unwrap();
    let mut minimal = std::fs::read_to_string(&host.config).unwrap();
    minimal.push_str(&dest);
    std::fs::write(&host.config, minimal).unwrap();

    let (_, public) = offhost_keys(&host);
    let key = public.to_string_lossy().to_string();
    restore_from_offsite(&host, &identity, &key, [(&a, before_a), (&b, before_b)]);
}

/// Another server's key (same algorithm) under the rig's name, and no line at all: both
/// refused with one line naming the server, and nothing reaches it.
#[test]
fn sftp_refuses_a_host_key_not_in_known_hosts() {
    let Some(rig) = rig() else { return };
    let Some(server) = SftpDir::new(&rig) else {
        return;
    };
    let host = Host::new(&rig);
    host.login();
    let site = host.site_name("fk");
    populated_site(&host, &site, &rig.image("v1"));
    let name = server.known_hosts_name();
    let other = host.dir.path().join("other_known_hosts");
    std::fs::write(
        &other,
        format!(
            "{name} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n"
        ),
    )
    .unwrap();
    let empty = host.dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let base = std::fs::read_to_string(&host.config).unwrap();
    for (kh, says) in [
        (&other, "does not match line 1"),
        (&empty, "is not in known_hosts"),
    ] {
        let mut text = base.clone();
        text.push_str(&server.destination("sftp", Some(&kh.to_string_lossy())));
        std::fs::write(&host.config, text).unwrap();
        let out = host.sp(&["--json", "backup"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["uploads"][0]["ok"], false, "{report}");
        let (code, err) = host.sp_fail(&["snapshots", "--from", "sftp"]);
        assert_eq!(code, 5, "{err}");
        let line = err
            .lines()
            .find(|l| l.contains(says))
            .unwrap_or_else(|| panic!("no refusal saying {says:?}: {err}"));
        assert!(line.contains(&name), "{line}");
        assert!(line.contains("SHA256:"), "{line}");
        let left: Vec<_> = std::fs::read_dir(server.dir.path())
            .unwrap()
            .flatten()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// An SFTP upload cut off midway (the connection broken under it) leaves nothing listed; the
/// next backup connects again and uploads what is missing.
#[test]
fn a_cut_off_sftp_upload_is_never_listed_and_the_next_backup_completes_it() {
    let Some(rig) = rig() else { return };
    let Some(server) = SftpDir::new(&rig) else {
        return;
    };
    let hostport = server
        .base
        .rsplit_once('@')
        .map(|x| x.1.to_string())
        .unwrap();
    let cut = Cut::new(&hostport);
    let host = Host::new(&rig);
    let (site, _, _, recipient) = prepared(&rig, &host, "fc");
    // The rig's host key under the forwarder's address.
    let rig_kh = std::fs::read_to_string(&server.known_hosts).unwrap();
    let key = rig_kh.split_once(' ').unwrap().1.trim();
    let kh = host.dir.path().join("cut_known_hosts");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {key}\n", cut.port)).unwrap();
    let mut text = std::fs::read_to_string(&host.config).unwrap();
    text.push_str(
        &server
            .destination("sftp", Some(&kh.to_string_lossy()))
            .replace(&hostport, &format!("127.0.0.1:{}", cut.port)),
    );
    text.push_str(&format!("\n[encryption]\nrecipients = [\"{recipient}\"]\n"));
    std::fs::write(&host.config, text).unwrap();
    let first = host.json(&["backup"])["id"].as_str().unwrap().to_string();
    assert_eq!(host.snapshot_ids(&["--from", "sftp"]), vec![first.clone()]);

    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(host.sites_dir().join(&site).join("data/big.bin"), big).unwrap();
    cut.slow.store(true, Ordering::SeqCst);
    let child = host
        .cmd(&["--json", "backup"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Cut once the second snapshot's site archive is on its way (as a part file).
    let started = std::time::Instant::now();
    loop {
        let files = server.files();
        if files.iter().any(|(k, body)| {
            k.starts_with("host/")
                && !k.starts_with(&format!("host/{first}/"))
                && !k.starts_with("host/images/")
                && k.contains("/.part-")
                && body.len() > 1 << 20
        }) {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the upload never began: {:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cut.cut();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let second = report["id"].as_str().unwrap().to_string();
    assert_eq!(report["uploads"][0]["ok"], false, "{report}");

    cut.slow.store(false, Ordering::SeqCst);
    cut.start();
    assert_eq!(host.snapshot_ids(&["--from", "sftp"]), vec![first.clone()]);
    next_backup_catches_up(&host, "sftp", first, second);
    cut.cut();
}

/// After a cut-off upload of `second`: the next backup uploads it too, the destination lists
/// all three, and every one verifies there.
fn next_backup_catches_up(host: &Host, dest: &str, first: String, second: String) {
    let third = host.json(&["backup"]);
    assert_eq!(third["uploads"][0]["ok"], true, "{third}");
    assert_eq!(
        third["uploads"][0]["caught_up"][0],
        second.as_str(),
        "{third}"
    );
    let third = third["id"].as_str().unwrap().to_string();
    assert_eq!(
        host.snapshot_ids(&["--from", dest]),
        vec![first, second, third]
    );
    let v = host.json(&["verify", "all", "--from", dest]);
    assert!(
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["faults"].as_array().unwrap().is_empty()),
        "{v}"
    );
}

/// `sp restore latest --from offsite` with the identity and the old host's key: both sites
/// come back as they were seen before, and no fetch staging folder stays in backup_dir.
fn restore_from_offsite(host: &Host, identity: &str, key: &str, sites: [(&String, Seen); 2]) {
    let report = host.json(&[
        "restore",
        "latest",
        "--from",
        "offsite",
        "--identity",
        identity,
        "--key",
        key,
    ]);
    assert_eq!(report["sites"].as_array().unwrap().len(), 2, "{report}");
    for (site, before) in sites {
        assert_eq!(seen(host, site), before);
    }
    assert!(host.backup_dir_names(".").is_empty(), "staging left behind");
}
