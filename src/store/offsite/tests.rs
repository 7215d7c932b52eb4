//! Unit tests of the off-host format on the memory store.

use std::path::{Path, PathBuf};

use chrono::Utc;

use super::*;
use crate::crypt::{Identity, Recipients};
use crate::key::{HostKey, Keyring};
use crate::snapshot::Manifest;
use crate::store::mem::MemStore;

fn snapshot_dir(key: &HostKey) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("20261201T000000Z");
    std::fs::create_dir_all(dir.join("sites")).unwrap();
    let mut files = Vec::new();
    let mut tar = tar::Builder::new(Vec::new());
    let body = b"host-MARKER".repeat(100);
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "etc/config.toml", &body[..])
        .unwrap();
    let tar = zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap();
    let mut dump = b"INSERT INTO t VALUES ('dump-MARKER');\n".repeat(50_000);
    dump.extend_from_slice(b"-- Dump completed on 2026-12-01\n");
    let dump = zstd::encode_all(&dump[..], 1).unwrap();
    for (p, content) in [("host.tar.zst", tar), ("sites/blog.sql.zst", dump)] {
        std::fs::write(dir.join(p), &content).unwrap();
        files.push(snapshot::FileEntry {
            path: p.into(),
            size: content.len() as u64,
            sha256: snapshot::sha256_hex(&content),
        });
    }
    let m = Manifest {
        format: 1,
        id: "20261201T000000Z".into(),
        kind: Kind::Full,
        sp_version: "test".into(),
        host: "h".into(),
        instance: "t".into(),
        created: Utc::now(),
        duration_ms: 1,
        sites: Vec::new(),
        files,
        failed: Vec::new(),
        proxy_image_id: None,
    };
    snapshot::write_manifest(&dir, &m, key).unwrap();
    (t, dir)
}

fn identity() -> (tempfile::TempDir, Identity, Recipients) {
    let (secret, public) = crate::crypt::generate();
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("id"), secret).unwrap();
    let id = Identity::load(&t.path().join("id")).unwrap();
    (t, id, Recipients::parse(&[public]).unwrap())
}

/// A signed snapshot folder, an age identity and its recipients, the key and the keyring
/// that trusts it (the temp dirs live as long as the fixture's bindings).
struct Fixture {
    key: HostKey,
    ring: Keyring,
    dir: PathBuf,
    id: Identity,
    rcpt: Recipients,
    _t: tempfile::TempDir,
    _i: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let key = HostKey::generate();
    let ring = Keyring {
        keys: vec![key.public()],
    };
    let (_t, dir) = snapshot_dir(&key);
    let (_i, id, rcpt) = identity();
    Fixture {
        key,
        ring,
        dir,
        id,
        rcpt,
        _t,
        _i,
    }
}

/// Uploads the fixture's snapshot to `store` (no image archives); returns its index.
fn upload(store: &dyn Store, rcpt: &Recipients, key: &HostKey, dir: &Path) -> Index {
    let none = |_: &str, _: u64, _: u64, _: bool| {};
    finish(store, rcpt, key, dir, Path::new("/x"), Vec::new(), &none).unwrap()
}

#[test]
fn upload_is_ciphertext_verifies_and_fetches_back() {
    let Fixture {
        key,
        ring,
        dir,
        id,
        rcpt,
        _t,
        _i,
    } = fixture();
    let store = MemStore::new();
    let none = |_: &str, _: u64, _: u64, _: bool| {};
    let index = upload(&store, &rcpt, &key, &dir);
    assert!(index.encrypted);
    assert_eq!(index.format, 1, "no segments: readable by an older sp");
    assert_eq!(ids(&store).unwrap(), vec!["20261201T000000Z".to_string()]);
    for (k, v) in store.objects() {
        if k.ends_with(".age") {
            assert!(v.starts_with(crate::crypt::MAGIC), "{k}");
            assert!(
                memchr::memmem::find(&v, b"MARKER").is_none(),
                "{k} holds plaintext"
            );
        }
    }
    let v = verify(&store, "20261201T000000Z", &ring, None).unwrap();
    assert!(v.faults.is_empty() && !v.full, "{:?}", v.faults);
    let v = verify(&store, "20261201T000000Z", &ring, Some(&id)).unwrap();
    assert!(v.faults.is_empty() && v.full, "{:?}", v.faults);

    let out = tempfile::tempdir().unwrap();
    let got = fetch(
        &store,
        "20261201T000000Z",
        &ring,
        Some(&id),
        out.path(),
        &none,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(got.join("sites/blog.sql.zst")).unwrap(),
        std::fs::read(dir.join("sites/blog.sql.zst")).unwrap()
    );
    snapshot::authenticate(&got, &ring).unwrap();
    let err = fetch(&store, "20261201T000000Z", &ring, None, out.path(), &none).unwrap_err();
    assert!(err.to_string().contains("--identity"), "{err}");
}

#[test]
fn a_changed_byte_is_named_and_an_unsigned_index_refused() {
    let Fixture {
        key,
        ring,
        dir,
        id,
        rcpt,
        _t,
        _i,
    } = fixture();
    let store = MemStore::new();
    let none = |_: &str, _: u64, _: u64, _: bool| {};
    upload(&store, &rcpt, &key, &dir);
    let obj = "20261201T000000Z/sites/blog.sql.zst.age";
    let mut b = store.objects()[obj].clone();
    let n = b.len() / 2;
    b[n] ^= 1;
    store.put(obj, b);
    let v = verify(&store, "20261201T000000Z", &ring, None).unwrap();
    assert_eq!(v.faults.len(), 1);
    assert_eq!(v.faults[0].file, obj);
    let out = tempfile::tempdir().unwrap();
    assert!(fetch(
        &store,
        "20261201T000000Z",
        &ring,
        Some(&id),
        out.path(),
        &none
    )
    .is_err());
    assert!(!out.path().join("20261201T000000Z").exists());

    // An index pointing outside the snapshot, re-signed by a key nobody trusts.
    let (bytes, mut index) = read_index(&store, "20261201T000000Z").unwrap();
    let _ = bytes;
    index.files[0].object = "../../etc/passwd".into();
    let bytes = serde_json::to_vec(&index).unwrap();
    store.put("20261201T000000Z/index.json", bytes.clone());
    let err = authenticate(&store, "20261201T000000Z", &ring).unwrap_err();
    assert!(matches!(err, Error::Unauthentic(_)), "{err}");
    store.put(
        "20261201T000000Z/index.json.sig",
        key.sign(&bytes).into_bytes(),
    );
    let err = authenticate(&store, "20261201T000000Z", &ring).unwrap_err();
    assert!(
        err.to_string().contains("not a plain relative path"),
        "{err}"
    );
}

#[test]
fn a_replayed_snapshot_or_a_longer_object_is_refused() {
    let Fixture {
        key,
        ring,
        dir,
        id,
        rcpt,
        _t,
        _i,
    } = fixture();
    let store = MemStore::new();
    let none = |_: &str, _: u64, _: u64, _: bool| {};
    upload(&store, &rcpt, &key, &dir);
    // The same signed snapshot copied under a newer name is not that snapshot.
    for (k, v) in store.objects() {
        store.put(&k.replace("20261201T000000Z", "20261202T000000Z"), v);
    }
    let err = authenticate(&store, "20261202T000000Z", &ring).unwrap_err();
    assert!(err.to_string().contains("names snapshot"), "{err}");
    // An object that goes on past its recorded size is a fault, and never fetched.
    let obj = "20261201T000000Z/host.tar.zst.age";
    let mut b = store.objects()[obj].clone();
    b.extend_from_slice(&[0u8; 4096]);
    store.put(obj, b);
    let v = verify(&store, "20261201T000000Z", &ring, Some(&id)).unwrap();
    assert_eq!(v.faults.len(), 1, "{:?}", v.faults);
    assert!(v.faults[0].problem.contains("size"), "{:?}", v.faults);
    let out = tempfile::tempdir().unwrap();
    assert!(fetch(
        &store,
        "20261201T000000Z",
        &ring,
        Some(&id),
        out.path(),
        &none
    )
    .is_err());
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing left behind"
    );
}

#[test]
fn without_an_index_nothing_is_listed_and_delete_takes_everything() {
    let key = HostKey::generate();
    let (_t, dir) = snapshot_dir(&key);
    let store = MemStore::new();
    let none = |_: &str, _: u64, _: u64, _: bool| {};
    let rcpt = Recipients::parse(&[]).unwrap();
    let f = std::fs::File::open(dir.join("host.tar.zst")).unwrap();
    put_file(
        &store,
        &rcpt,
        "20261201T000000Z",
        "host.tar.zst",
        hashed(f),
        0,
        &none,
    )
    .unwrap();
    assert!(
        ids(&store).unwrap().is_empty(),
        "a partial upload is no snapshot"
    );
    upload(&store, &rcpt, &key, &dir);
    let (l, bad) = list(&store).unwrap();
    assert_eq!(l.len(), 1);
    assert!(bad.is_empty());
    delete(&store, "20261201T000000Z").unwrap();
    assert!(store.objects().is_empty());
}

#[test]
fn copy_is_verbatim_index_last_and_refuses_a_changed_object() {
    let Fixture {
        key,
        ring,
        dir,
        id,
        rcpt,
        _t,
        _i,
    } = fixture();
    let (from, to) = (MemStore::new(), MemStore::new());
    let none = |_: &str, _: u64, _: u64, _: bool| {};
    let sid = "20261201T000000Z";
    upload(&from, &rcpt, &key, &dir);
    copy(&from, &to, sid, &ring, &key, &none).unwrap();
    assert_eq!(
        from.objects(),
        to.objects(),
        "the same bytes, ciphertext as it is"
    );
    assert!(verify(&to, sid, &ring, Some(&id))
        .unwrap()
        .faults
        .is_empty());

    // A changed object is refused and nothing of the snapshot counts on the other side.
    let other = MemStore::new();
    let object = format!("{sid}/sites/blog.sql.zst.age");
    let mut body = get_bytes(&from, &object, 1 << 30).unwrap();
    let n = body.len() / 2;
    body[n] ^= 1;
    put_bytes(&from, &object, &body).unwrap();
    let e = copy(&from, &other, sid, &ring, &key, &none).unwrap_err();
    assert!(e.to_string().contains("blog.sql.zst.age"), "{e}");
    assert!(ids(&other).unwrap().is_empty());
}

#[test]
fn split_files_round_trip_and_a_changed_segment_is_named() {
    let Fixture {
        key,
        ring,
        dir,
        id,
        rcpt,
        _t,
        _i,
    } = fixture();
    // Segments of 100 bytes: the dump's ciphertext is several of them.
    let store = MemStore::segmented(100);
    let none = |_: &str, _: u64, _: u64, _: bool| {};
    let index = upload(&store, &rcpt, &key, &dir);
    let dump = index
        .files
        .iter()
        .find(|f| f.path == "sites/blog.sql.zst")
        .unwrap();
    assert!(dump.segments.len() >= 2, "{dump:?}");
    assert_eq!(index.format, 2);
    assert_eq!(
        dump.segments.iter().map(|s| s.size).sum::<u64>(),
        dump.stored_size
    );
    let objects = store.objects();
    assert!(!objects.contains_key("20261201T000000Z/sites/blog.sql.zst.age"));
    for n in 0..dump.segments.len() {
        let o = format!("20261201T000000Z/sites/blog.sql.zst.age.{n:04}");
        assert!(objects[&o].len() <= 100, "{o}");
    }
    assert!(
        objects["20261201T000000Z/sites/blog.sql.zst.age.0000"].starts_with(crate::crypt::MAGIC)
    );
    let v = verify(&store, "20261201T000000Z", &ring, Some(&id)).unwrap();
    assert!(v.faults.is_empty() && v.full, "{:?}", v.faults);
    let out = tempfile::tempdir().unwrap();
    let got = fetch(
        &store,
        "20261201T000000Z",
        &ring,
        Some(&id),
        out.path(),
        &none,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(got.join("sites/blog.sql.zst")).unwrap(),
        std::fs::read(dir.join("sites/blog.sql.zst")).unwrap()
    );

    // One byte of the second segment changed: the fault names that segment.
    let obj = "20261201T000000Z/sites/blog.sql.zst.age.0001";
    let mut b = objects[obj].clone();
    b[10] ^= 1;
    store.put(obj, b);
    let v = verify(&store, "20261201T000000Z", &ring, None).unwrap();
    assert_eq!(v.faults.len(), 1, "{:?}", v.faults);
    assert!(v.faults[0].problem.contains(obj), "{:?}", v.faults);

    // A signed index whose segments do not add up to the stored size is refused.
    let (_, mut index) = read_index(&store, "20261201T000000Z").unwrap();
    let f = index
        .files
        .iter_mut()
        .find(|f| f.path == "sites/blog.sql.zst")
        .unwrap();
    f.segments[0].size += 1;
    let bytes = serde_json::to_vec(&index).unwrap();
    store.put("20261201T000000Z/index.json", bytes.clone());
    store.put(
        "20261201T000000Z/index.json.sig",
        key.sign(&bytes).into_bytes(),
    );
    let err = authenticate(&store, "20261201T000000Z", &ring).unwrap_err();
    assert!(err.to_string().contains("do not add up"), "{err}");

    // A format this sp does not know is named, not misread.
    index.format = FORMAT + 1;
    store.put(
        "20261201T000000Z/index.json",
        serde_json::to_vec(&index).unwrap(),
    );
    let err = read_index(&store, "20261201T000000Z").unwrap_err();
    assert!(err.to_string().contains("upgrade sp"), "{err}");
}

#[test]
fn segments_double_in_size_with_each_run_of_a_thousand() {
    assert_eq!(segment_limit(8, 0), 8);
    assert_eq!(segment_limit(8, 999), 8);
    assert_eq!(segment_limit(8, 1000), 16);
    assert_eq!(segment_limit(8, 2500), 32);
    assert_eq!(segment_limit(8, 9999), 8 << 9);
    assert_eq!(segment_limit(8, 50_000), 8 << 10);
    assert_eq!(segment_limit(u64::MAX, 5000), u64::MAX);

    // 2,500 bytes in 1-byte segments: a thousand of 1 byte, then 750 of 2, read back whole.
    let store = MemStore::segmented(1);
    let none = |_: &str, _: u64, _: u64, _: bool| {};
    let rcpt = Recipients::parse(&[]).unwrap();
    let body: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let f = put_file(&store, &rcpt, "s", "f.bin", hashed(&body[..]), 2500, &none).unwrap();
    let sizes: Vec<u64> = f.segments.iter().map(|s| s.size).collect();
    assert_eq!(sizes.len(), 1750);
    assert!(sizes[..1000].iter().all(|&s| s == 1) && sizes[1000..].iter().all(|&s| s == 2));
    let objects = store.objects();
    assert_eq!(objects["s/f.bin.1749"], body[2498..].to_vec());
    let mut back = Vec::new();
    segments::open_stored(&store, "s", &f)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, body);
}

#[test]
fn unfinished_uploads_are_the_index_less_folders_older_than_the_newest_snapshot() {
    assert!(snapshot::is_id("20261201T000000Z") && snapshot::is_id("20261201T000000Z-2"));
    for not in [
        "images",
        "20261301T000000Z",
        "20261201T000000Z-",
        "20261201T000000",
        ".tmp-x",
    ] {
        assert!(!snapshot::is_id(not), "{not}");
    }
    let store = MemStore::default();
    assert!(folders(&store)
        .unwrap()
        .unfinished("20261201T000000Z")
        .is_empty());
    let put = |p: &str| store.put(p, b"x".to_vec());
    put("20261101T000000Z/sites/a.tar.zst.age.0000");
    put("20261101T000000Z/sites/a.tar.zst.age.0001");
    put("20261110T000000Z/index.json");
    put("20261105T000000Z/sites/b.sql.zst.age");
    put("20261201T000000Z/index.json");
    put("20261202T000000Z/host.tar.zst.age");
    put("images/abc.tar.zst.age");
    put("notes/20261101.txt");
    assert_eq!(
        folders(&store).unwrap().unfinished("20261201T000000Z"),
        vec![
            "20261101T000000Z".to_string(),
            "20261105T000000Z".to_string()
        ]
    );
    // Older than the newest authenticated snapshot only (not a planted newer index).
    assert_eq!(
        folders(&store).unwrap().unfinished("20261102T000000Z"),
        vec!["20261101T000000Z".to_string()]
    );
}
