//! Verifying a snapshot on disk: the signed manifest, then every file's size and sha256 and,
//! as deep as asked, that each archive and dump reads back whole (see [`Depth`]).

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use super::{archive, authenticate, unpack, FileEntry, Manifest, MANIFEST};
use crate::error::Result;

/// A fault found by [`verify`], naming the file.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub file: String,
    pub problem: String,
}

/// How far [`verify`] looks into the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every file is hashed, every archive decompressed and walked member by member
    /// (refusing what `sp restore` may not unpack, see [`unpack::Guard`]), every dump
    /// decompressed to its completion trailer (`sp verify`).
    Full,
    /// What a restore checks before it changes anything: the dumps (and the host archive)
    /// are hashed only, because the caller loads each dump next and checks its trailer as
    /// it reads it (a backup records a dump only once it has seen the trailer, and the
    /// checksum ties the file to that record). Site archives are not read here at all:
    /// [`stage::stage`] hashes each one and checks its members while unpacking it into a
    /// staging directory, and only a proven tree is put in place — one decompression
    /// instead of two.
    BeforeRestore,
}

/// [`verify_sites`] of every site.
pub fn verify(
    dir: &Path,
    depth: Depth,
    keyring: &crate::key::Keyring,
) -> Result<(Manifest, Vec<Fault>)> {
    verify_sites(dir, depth, &[], &[], keyring)
}

/// Authenticates the manifest (see [`authenticate`]), then checks the snapshot as deep as
/// `depth` says — in one read per file, on all cores — plus the manifest's own names. With
/// `only` non-empty, the files of other sites are not looked at (a damaged archive of one
/// site does not stand in the way of restoring another). The archives of the sites in `whole`
/// are walked even at [`Depth::BeforeRestore`]: a site that replaces a live one is proven
/// before the live one goes. Returns the faults (empty when the snapshot is sound).
pub fn verify_sites(
    dir: &Path,
    depth: Depth,
    only: &[String],
    whole: &[String],
    keyring: &crate::key::Keyring,
) -> Result<(Manifest, Vec<Fault>)> {
    verify_sites_counted(dir, depth, only, whole, keyring, &Default::default())
}

/// Bytes checked so far and in all, for a progress line.
#[derive(Debug, Default)]
pub struct Checked {
    pub done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub total: std::sync::atomic::AtomicU64,
}

/// [`verify_sites`], counting the bytes of the files it has checked into `checked`.
pub fn verify_sites_counted(
    dir: &Path,
    depth: Depth,
    only: &[String],
    whole: &[String],
    keyring: &crate::key::Keyring,
    checked: &Checked,
) -> Result<(Manifest, Vec<Fault>)> {
    let m = authenticate(dir, keyring)?;
    let mut faults = Vec::new();
    let dumps: Vec<&str> = m
        .sites
        .iter()
        .filter_map(|s| s.database.as_ref().map(|d| d.dump.as_str()))
        .collect();
    let archives: Vec<&str> = m
        .sites
        .iter()
        .filter(|s| !whole.contains(&s.name))
        .map(|s| s.archive.as_str())
        .collect();
    let skipped: Vec<&str> = m
        .sites
        .iter()
        .filter(|s| !only.is_empty() && !only.contains(&s.name))
        .flat_map(|s| {
            std::iter::once(s.archive.as_str()).chain(s.database.as_ref().map(|d| d.dump.as_str()))
        })
        .collect();
    let wanted =
        |p: &str| !(skipped.contains(&p) || depth == Depth::BeforeRestore && archives.contains(&p));
    checked.total.store(
        m.files
            .iter()
            .filter(|f| wanted(&f.path))
            .map(|f| f.size)
            .sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    // Files are checked on all cores at once (each check is one sequential read).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new(Vec::new());
    let workers = crate::cores().min(m.files.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(f) = m.files.get(i) else { break };
                if !wanted(&f.path) {
                    continue;
                }
                let problem = if f.path.contains("..") || f.path.starts_with('/') {
                    Some("unsafe path in manifest".to_string())
                } else {
                    let check_dump = depth == Depth::Full && dumps.contains(&f.path.as_str());
                    verify_file(&dir.join(&f.path), f, check_dump, &checked.done).err()
                };
                if let (Some(problem), Ok(mut v)) = (problem, found.lock()) {
                    v.push((
                        i,
                        Fault {
                            file: f.path.clone(),
                            problem,
                        },
                    ));
                }
            });
        }
    });
    let mut found = found.into_inner().unwrap_or_default();
    found.sort_by_key(|(i, _)| *i);
    faults.extend(found.into_iter().map(|(_, f)| f));
    for s in &m.sites {
        // Even a signed manifest is checked like input: its names become paths and databases.
        let mut bad = Vec::new();
        if crate::site::validate_name(&s.name).is_err() {
            bad.push(format!("site name {:?} is not a valid site name", s.name));
        }
        if s.archive != format!("sites/{}.tar.zst", s.name) {
            bad.push(format!(
                "{}: archive {:?} is not sites/NAME.tar.zst",
                s.name, s.archive
            ));
        }
        if let Some(d) = &s.database {
            if d.name != s.name || d.dump != format!("sites/{}.sql.zst", s.name) {
                bad.push(format!(
                    "{}: database entry does not match the site",
                    s.name
                ));
            }
        }
        if let Some(id) = &s.image_id {
            let hex = id.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                bad.push(format!("{}: image id {id:?} is not sha256:HEX", s.name));
            }
        }
        faults.extend(bad.into_iter().map(|problem| Fault {
            file: MANIFEST.into(),
            problem,
        }));
        let mut needed = vec![s.archive.as_str()];
        if let Some(d) = &s.database {
            needed.push(d.dump.as_str());
        }
        for n in needed {
            if !m.files.iter().any(|f| f.path == n) {
                faults.push(Fault {
                    file: n.to_string(),
                    problem: "listed for a site but missing from the file list".into(),
                });
            }
        }
    }
    Ok((m, faults))
}

fn verify_file(
    path: &Path,
    f: &FileEntry,
    check_dump: bool,
    read: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::result::Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let file = archive::Counting::new(file, read.clone());
    let mut r = archive::HashingReader::new(std::io::BufReader::with_capacity(1 << 20, file));
    let content = if f.path.ends_with(".tar.zst") {
        match unpack::scan_tar_zstd(&mut r) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(why)) => Err(format!("unsafe archive member {why}")),
            Err(e) => Err(format!("archive is damaged: {e}")),
        }
    } else if check_dump {
        match archive::check_dump_zstd(&mut r) {
            Ok(true) => Ok(()),
            Ok(false) => Err("dump has no completion trailer (truncated?)".to_string()),
            Err(e) => Err(format!("dump is damaged: {e}")),
        }
    } else {
        Ok(())
    };
    let (size, sha) = r.finish().map_err(|e| format!("read failed: {e}"))?;
    if size != f.size {
        return Err(format!(
            "size {size} differs from the manifest's {}",
            f.size
        ));
    }
    if sha != f.sha256 {
        return Err("sha256 differs from the manifest (file corrupted)".to_string());
    }
    content
}
