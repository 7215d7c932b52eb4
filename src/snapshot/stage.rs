//! Unpacking a site archive into a private staging directory, proven before it is used.
//!
//! [`stage`] reads the archive file once: the bytes are hashed as they are read, decompressed
//! and unpacked member by member. Each member passes the [`super::unpack::Guard`] first (see
//! [`super::unpack`]) and is created relative to an already-open directory descriptor that
//! was itself opened without following links (`mkdirat`, `openat(O_CREAT|O_EXCL|O_NOFOLLOW)`,
//! `symlinkat`; owner, mode and time set on the descriptor or with `AT_SYMLINK_NOFOLLOW`), so
//! no symlink — from the archive or already on disk — can redirect a write. Everything lands
//! in `PARENT/.sp-staging-NAME-RANDOM` (mode 0700, beside the target, same file system).
//! Only when the archive ended cleanly and its size and sha256 match the manifest does
//! [`stage`] return the [`Staged`] directory, which [`Staged::commit`] renames into place.
//! On any failure — and whenever a [`Staged`] is dropped uncommitted — the staging
//! directory is removed, so nothing visible has changed.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};

use super::archive::HashingReader;
use super::members::Writer;

const PREFIX: &str = ".sp-staging-";

/// A site tree unpacked and proven, waiting in its staging directory.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    /// Members unpacked.
    pub members: u64,
    done: bool,
}

impl Staged {
    /// The staging directory (to add files before [`Staged::commit`]).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Puts the tree at `target` (mode 0755). A `target` that exists — a previous,
    /// interrupted restore of the same snapshot, as the caller has established — is
    /// swapped out atomically and then deleted.
    pub fn commit(mut self, target: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))?;
        if std::fs::symlink_metadata(target).is_ok() {
            rfs::renameat_with(
                rfs::CWD,
                &self.dir,
                rfs::CWD,
                target,
                rfs::RenameFlags::EXCHANGE,
            )?;
            // self.dir now holds the old tree; Drop removes it.
            self.done = false;
            return Ok(());
        }
        std::fs::rename(&self.dir, target)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What the manifest says the archive file is.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub size: u64,
    pub sha256: &'a str,
}

/// Why staging failed.
#[derive(Debug)]
pub enum StageError {
    /// A member the rules refuse (one line, naming the member).
    Refused(String),
    /// The file is not what the manifest says (size or sha256), or not a complete archive.
    Damaged(String),
    /// Reading the archive or writing the staging directory failed.
    Io(io::Error),
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageError::Refused(why) => write!(f, "unsafe archive member {why}"),
            StageError::Damaged(why) => write!(f, "{why}"),
            StageError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for StageError {
    fn from(e: io::Error) -> Self {
        StageError::Io(e)
    }
}

impl From<rustix::io::Errno> for StageError {
    fn from(e: rustix::io::Errno) -> Self {
        StageError::Io(e.into())
    }
}

/// Removes staging directories of `name` left in `parent` by a killed run (the caller holds
/// the host lock, so none is in use).
pub fn clear_stale(parent: &Path, name: &str) {
    let prefix = format!("{PREFIX}{name}-");
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Unpacks the site archive at `archive` into a new staging directory in `parent` for site
/// `name`, proving it on the way (see the module docs).
pub fn stage(
    archive: &Path,
    expect: Expect<'_>,
    parent: &Path,
    name: &str,
) -> Result<Staged, StageError> {
    stage_counted(archive, expect, parent, name, Default::default())
}

/// [`stage`], adding the archive bytes read so far to `read` (for a progress line).
pub fn stage_counted(
    archive: &Path,
    expect: Expect<'_>,
    parent: &Path,
    name: &str,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<Staged, StageError> {
    std::fs::create_dir_all(parent)?;
    clear_stale(parent, name);
    let dir = parent.join(format!("{PREFIX}{name}-{:08x}", rand::random::<u32>()));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    }
    let mut staged = Staged {
        dir,
        members: 0,
        done: false,
    };
    let root = rfs::open(
        &staged.dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = super::archive::Counting::new(std::fs::File::open(archive)?, read);
    let mut hashed = HashingReader::new(file);
    let unpacked = unpack_stream(&mut hashed, &root);
    // The rest of the file counts too (and a refused member stops reading at once).
    let members = unpacked?;
    let (size, sha) = hashed.finish()?;
    if size != expect.size {
        return Err(StageError::Damaged(format!(
            "size {size} differs from the manifest's {} (file truncated or replaced)",
            expect.size
        )));
    }
    if sha != expect.sha256 {
        return Err(StageError::Damaged(
            "sha256 differs from the manifest (file corrupted or replaced)".into(),
        ));
    }
    staged.members = members;
    Ok(staged)
}

/// Decompresses and unpacks a tar+zstd stream under `root`; the member count.
fn unpack_stream<R: Read>(input: R, root: &OwnedFd) -> Result<u64, StageError> {
    let damaged = |e: io::Error| StageError::Damaged(format!("archive is damaged: {e}"));
    let dec = zstd::Decoder::new(input).map_err(damaged)?;
    let mut ar = tar::Archive::new(dec);
    let mut w = Writer::new(root, running_as_root());
    let mut n = 0;
    for entry in ar.entries().map_err(damaged)? {
        let mut e = entry.map_err(damaged)?;
        w.member(&mut e)?;
        n += 1;
    }
    // The tar end marker is not the end of the zstd stream: read to the end, so a
    // damaged frame (checksum) or trailing garbage is noticed.
    let mut dec = ar.into_inner();
    io::copy(&mut dec, &mut io::sink()).map_err(damaged)?;
    w.finish_dirs()?;
    Ok(n)
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use tar::EntryType;

    /// A tar.zst of `members` written by hand (the tar crate, no checks), and its expectation.
    fn archive(
        dir: &Path,
        build: impl FnOnce(&mut tar::Builder<Vec<u8>>),
    ) -> (PathBuf, u64, String) {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let tar = b.into_inner().unwrap();
        let z = zstd::encode_all(&tar[..], 3).unwrap();
        let p = dir.join("a.tar.zst");
        std::fs::write(&p, &z).unwrap();
        (p, z.len() as u64, super::super::sha256_hex(&z))
    }

    fn header(kind: EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Appends a member under a raw name (the tar crate's setters refuse `..` and `/`).
    fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, mut h: tar::Header, data: &[u8]) {
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn leftovers(parent: &Path) -> Vec<String> {
        std::fs::read_dir(parent)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "a.tar.zst")
            .collect()
    }

    #[test]
    fn a_walked_tree_comes_back_exactly_and_commits() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        std::fs::create_dir_all(root.join("data/sub/empty")).unwrap();
        std::fs::write(root.join("data/sub/f.txt"), b"content").unwrap();
        std::fs::set_permissions(
            root.join("data/sub/f.txt"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("/data/release-1.txt", root.join("data/current")).unwrap();
        std::os::unix::fs::symlink("../x", root.join("data/up")).unwrap();
        std::fs::write(root.join("site.toml"), b"name = 'x'").unwrap();
        std::fs::create_dir_all(root.join("data/shared")).unwrap();
        std::fs::set_permissions(
            root.join("data/shared"),
            std::fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("a.tar.zst");
        let enc = super::super::archive::zstd_file(&file, 3, 0, Default::default()).unwrap();
        let (enc, warnings) = super::super::walk::write_tree(root, &[], enc).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (size, sha) = super::super::archive::finish_zstd_file(enc).unwrap();

        let sites = work.path().join("sites");
        let staged = stage(&file, Expect { size, sha256: &sha }, &sites, "s").unwrap();
        assert_eq!(staged.members, 8);
        assert_eq!(
            std::fs::metadata(staged.path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let target = sites.join("s");
        staged.commit(&target).unwrap();
        assert_eq!(leftovers(&sites), vec!["s".to_string()]);
        let d = &target;
        assert_eq!(
            std::fs::read_link(d.join("data/current")).unwrap(),
            Path::new("/data/release-1.txt")
        );
        assert_eq!(
            std::fs::read_link(d.join("data/up")).unwrap(),
            Path::new("../x")
        );
        assert_eq!(std::fs::read(d.join("data/sub/f.txt")).unwrap(), b"content");
        let m = std::fs::metadata(d.join("data/sub/f.txt")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!(
            m.mtime(),
            std::fs::metadata(root.join("data/sub/f.txt"))
                .unwrap()
                .mtime()
        );
        assert_eq!(
            std::fs::metadata(d.join("data/sub")).unwrap().mtime(),
            std::fs::metadata(root.join("data/sub")).unwrap().mtime()
        );
        assert!(d.join("data/sub/empty").is_dir());
        assert_eq!(
            std::fs::metadata(d.join("data/shared"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o1777
        );
        assert_eq!(
            std::fs::metadata(d).unwrap().permissions().mode() & 0o777,
            0o755
        );

        // Committing over an existing tree (an interrupted restore) replaces it.
        let again = stage(&file, Expect { size, sha256: &sha }, &sites, "s").unwrap();
        std::fs::write(target.join("stale"), b"x").unwrap();
        again.commit(&target).unwrap();
        assert!(!target.join("stale").exists());
        assert_eq!(leftovers(&sites), vec!["s".to_string()]);
    }

    #[test]
    fn hostile_members_are_refused_and_nothing_stays() {
        let work = tempfile::tempdir().unwrap();
        let outside = work.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let out = outside.to_string_lossy().into_owned();
        type Build = Box<dyn FnOnce(&mut tar::Builder<Vec<u8>>)>;
        let cases: Vec<(&str, &str, Build)> = vec![
            (
                "dotdot",
                "../escape",
                Box::new(|b| raw(b, "../escape", header(EntryType::Regular, 0o644, 1), b"x")),
            ),
            (
                "absolute",
                "/tmp/abs",
                Box::new(|b| raw(b, "/tmp/abs", header(EntryType::Regular, 0o644, 1), b"x")),
            ),
            (
                "device",
                "data/dev",
                Box::new(|b| raw(b, "data/dev", header(EntryType::Char, 0o644, 0), b"")),
            ),
            (
                "fifo",
                "data/fifo",
                Box::new(|b| raw(b, "data/fifo", header(EntryType::Fifo, 0o644, 0), b"")),
            ),
            (
                "setuid",
                "data/suid",
                Box::new(|b| raw(b, "data/suid", header(EntryType::Regular, 0o4755, 1), b"x")),
            ),
            (
                "hardlink",
                "data/hard",
                Box::new(|b| {
                    let mut h = header(EntryType::Link, 0o644, 0);
                    b.append_link(&mut h, "data/hard", "data/ok").unwrap();
                }),
            ),
            (
                "through a link",
                "link/pwned",
                Box::new(move |b| {
                    let mut h = header(EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, "link", &out).unwrap();
                    raw(b, "link/pwned", header(EntryType::Regular, 0o644, 1), b"x");
                }),
            ),
            (
                "link at sp's path",
                "data",
                Box::new(|b| {
                    let mut h = header(EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, "data", "/etc").unwrap();
                }),
            ),
        ];
        for (label, member, build) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (file, size, sha) = archive(dir.path(), |b| {
                let mut h = header(EntryType::Regular, 0o644, 2);
                b.append_data(&mut h, "data/ok", &b"ok"[..]).unwrap();
                build(b);
            });
            let err = stage(&file, Expect { size, sha256: &sha }, dir.path(), "s").unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StageError::Refused(_)), "{label}: {msg}");
            assert!(
                msg.starts_with(&format!("unsafe archive member {member}")),
                "{label}: {msg}"
            );
            assert!(!msg.contains('\n'), "{label}: {msg}");
            assert!(
                leftovers(dir.path()).is_empty(),
                "{label}: {:?}",
                leftovers(dir.path())
            );
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{label}");
        }
    }

    #[test]
    fn a_mismatch_or_a_cut_archive_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (file, size, sha) = archive(dir.path(), |b| {
            let mut h = header(EntryType::Regular, 0o644, 2);
            b.append_data(&mut h, "data/ok", &b"ok"[..]).unwrap();
        });
        let err = stage(
            &file,
            Expect {
                size,
                sha256: &"0".repeat(64),
            },
            dir.path(),
            "s",
        )
        .unwrap_err();
        assert!(matches!(err, StageError::Damaged(_)), "{err}");
        assert!(leftovers(dir.path()).is_empty());
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 6]).unwrap();
        let err = stage(&file, Expect { size, sha256: &sha }, dir.path(), "s").unwrap_err();
        assert!(matches!(err, StageError::Damaged(_)), "{err}");
        assert!(leftovers(dir.path()).is_empty());
    }
}
