//! Archiving a site's tree without letting the tenant redirect the walk.
//!
//! A site's files belong to its tenant, who may change them while a backup runs — for
//! instance swap a file and a symlink to a root-only host file with
//! `renameat2(RENAME_EXCHANGE)` between a backup's `lstat` and its `open`. So every name is
//! opened relative to its already-open directory, once, without following links
//! (`openat(O_PATH|O_NOFOLLOW)`), and everything after that works on the opened file
//! descriptor: `fstat` decides the type and fills the tar header, a directory is listed
//! through its own descriptor, a regular file is re-opened for reading through
//! `/proc/self/fd` (the same inode, no new lookup), a symlink's target is read with
//! `readlinkat(fd, "")`. Links are stored as links and never followed. A name that vanishes
//! or changes mid-walk is a warning, not a failed backup.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use tar::EntryType;

/// Writes the tree under `root` as a tar stream into `out`, skipping the top-level names in
/// `exclude`. Entries are relative (`data/x`), sorted by name, with owners, modes and mtimes;
/// symlinks are kept as links. Returns warnings: special files (sockets, FIFOs, devices)
/// skipped, names that vanished or changed while being archived, and members `sp restore`
/// will refuse (setuid/setgid bits, a symlink where sp keeps its own files).
pub fn write_tree<W: Write>(root: &Path, exclude: &[&str], out: W) -> io::Result<(W, Vec<String>)> {
    let dir = rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| with_path(e.into(), "open", root))?;
    let mut w = Walker {
        b: tar::Builder::new(out),
        warnings: Vec::new(),
        guard: super::unpack::Guard::default(),
    };
    w.dir(&dir, Path::new(""), exclude)?;
    Ok((w.b.into_inner()?, w.warnings))
}

struct Walker<W: Write> {
    b: tar::Builder<W>,
    warnings: Vec<String>,
    guard: super::unpack::Guard,
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The names in a directory, sorted, without `.` and `..`.
fn names(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    out.sort();
    Ok(out)
}

impl<W: Write> Walker<W> {
    fn dir(&mut self, dir: &OwnedFd, rel: &Path, exclude: &[&str]) -> io::Result<()> {
        let list = names(dir).map_err(|e| with_path(e, "list", rel))?;
        for name in list {
            let name = OsStr::from_bytes(&name);
            if rel.as_os_str().is_empty() && exclude.iter().any(|x| name == OsStr::new(x)) {
                continue;
            }
            let rel_path = rel.join(name);
            self.entry(dir, name, &rel_path)?;
        }
        Ok(())
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    /// Archives one name of `dir`. Only I/O errors writing the archive, or a directory that
    /// cannot be read at all, fail the backup.
    fn entry(&mut self, dir: &OwnedFd, name: &OsStr, rel: &Path) -> io::Result<()> {
        let fd = match rfs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                self.warn(format!("{} vanished while being archived", rel.display()));
                return Ok(());
            }
            Err(e) => return Err(with_path(e.into(), "open", rel)),
        };
        let st = rfs::fstat(&fd).map_err(|e| with_path(e.into(), "stat", rel))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let mode = st.st_mode & 0o7777;
        let kind = match ft {
            FileType::Directory => EntryType::Directory,
            FileType::RegularFile => EntryType::Regular,
            FileType::Symlink => EntryType::Symlink,
            _ => {
                self.warn(format!("skipped special file {}", rel.display()));
                return Ok(());
            }
        };
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(st.st_uid.into());
        h.set_gid(st.st_gid.into());
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        let target = match kind {
            EntryType::Symlink => match rfs::readlinkat(&fd, c"", Vec::new()) {
                Ok(t) => Some(PathBuf::from(OsStr::from_bytes(t.as_bytes()))),
                Err(e) => {
                    self.warn(format!(
                        "{}: symlink could not be read ({e}); left out",
                        rel.display()
                    ));
                    return Ok(());
                }
            },
            _ => None,
        };
        if let Err(why) = self.guard.check(rel, kind, target.as_deref(), mode) {
            self.warn(format!("sp restore will refuse this snapshot: {why}"));
        }
        match kind {
            EntryType::Symlink => {
                let target = target.unwrap_or_default();
                self.b.append_link(&mut h, rel, &target)
            }
            EntryType::Directory => {
                let sub = match rfs::openat(
                    &fd,
                    c".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(d) => d,
                    Err(e) => return Err(with_path(e.into(), "open", rel)),
                };
                // One descriptor per level while descending.
                drop(fd);
                self.b.append_data(&mut h, rel, io::empty())?;
                self.dir(&sub, rel, &[])
            }
            _ => {
                let file = match reopen(dir, name, &fd) {
                    Ok(f) => f,
                    Err(why) => {
                        self.warn(format!("{} {why}; left out", rel.display()));
                        return Ok(());
                    }
                };
                let size = st.st_size.max(0) as u64;
                h.set_size(size);
                let mut data = Exact {
                    inner: file,
                    left: size,
                    short: false,
                };
                self.b.append_data(&mut h, rel, &mut data)?;
                if data.short {
                    self.warn(format!(
                        "{} shrank while being archived (the rest is stored as zeros)",
                        rel.display()
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Opens the file behind an `O_PATH` descriptor for reading: through `/proc/self/fd` (the
/// same inode, no new name lookup), or — without `/proc` — by name again, checked to be the
/// same inode. Err says why the file was left out.
fn reopen(dir: &OwnedFd, name: &OsStr, fd: &OwnedFd) -> Result<std::fs::File, String> {
    let via_proc = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    match std::fs::File::open(&via_proc) {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(format!("could not be opened ({e})"))
        }
        Err(_) => {}
    }
    let want = rfs::fstat(fd).map_err(|e| format!("could not be checked ({e})"))?;
    let f = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("changed while being archived ({e})"))?;
    let got = rfs::fstat(&f).map_err(|e| format!("could not be checked ({e})"))?;
    if (got.st_dev, got.st_ino) != (want.st_dev, want.st_ino) {
        return Err("was replaced while being archived".into());
    }
    Ok(std::fs::File::from(f))
}

/// Reads exactly `left` bytes from `inner`: a file that shrinks mid-read is padded with
/// zeros (and flagged), one that grows is cut at the size its header promised.
struct Exact<R: Read> {
    inner: R,
    left: u64,
    short: bool,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = if self.short {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tree_round_trips_links_modes_empty_dirs_and_odd_names() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        std::fs::create_dir_all(root.join("data/empty")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/junk"), b"x").unwrap();
        std::fs::write(root.join("data/a.txt"), b"hello").unwrap();
        std::fs::set_permissions(
            root.join("data/a.txt"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("data/link")).unwrap();
        std::os::unix::fs::symlink("../x", root.join("data/up")).unwrap();
        let odd = OsStr::from_bytes(b"data/caf\xe9.bin");
        std::fs::write(root.join(odd), b"bytes").unwrap();
        let long = format!("data/{}", "n".repeat(150));
        std::fs::write(root.join(&long), b"long").unwrap();
        std::os::unix::fs::symlink("s".repeat(200), root.join("data/longlink")).unwrap();

        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("t.tar.zst");
        let enc = super::super::archive::zstd_file(&file, 3, 2, Default::default()).unwrap();
        let (enc, warnings) = write_tree(root, &["tmp"], enc).unwrap();
        // Links are data: nothing to warn about.
        assert!(warnings.is_empty(), "{warnings:?}");
        let (size, sha) = super::super::archive::finish_zstd_file(enc).unwrap();
        assert_eq!(size, std::fs::metadata(&file).unwrap().len());

        let mut r = super::super::archive::HashingReader::new(std::fs::File::open(&file).unwrap());
        assert_eq!(
            super::super::unpack::scan_tar_zstd(&mut r).unwrap(),
            Ok(8),
            "members"
        );
        assert_eq!(r.finish().unwrap(), (size, sha));

        let dest = tempfile::tempdir().unwrap();
        let mut ar =
            tar::Archive::new(zstd::Decoder::new(std::fs::File::open(&file).unwrap()).unwrap());
        ar.set_preserve_permissions(true);
        ar.unpack(dest.path()).unwrap();
        let d = dest.path();
        assert_eq!(
            std::fs::read_link(d.join("data/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::read_link(d.join("data/up")).unwrap(),
            Path::new("../x")
        );
        assert_eq!(
            std::fs::read_link(d.join("data/longlink")).unwrap(),
            Path::new(&"s".repeat(200))
        );
        assert!(d.join("data/empty").is_dir());
        assert!(!d.join("tmp").exists());
        assert_eq!(std::fs::read(d.join(odd)).unwrap(), b"bytes");
        assert_eq!(std::fs::read(d.join(&long)).unwrap(), b"long");
        let mode = std::fs::metadata(d.join("data/a.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn refused_members_and_special_files_are_warned_about() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/suid"), b"x").unwrap();
        std::fs::set_permissions(root.join("d/suid"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::os::unix::fs::symlink("/etc", root.join("secrets")).unwrap();
        let fifo = std::ffi::CString::new(root.join("d/fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let (_, warnings) = write_tree(root, &[], Vec::new()).unwrap();
        let all = warnings.join("\n");
        assert_eq!(warnings.len(), 3, "{all}");
        assert!(all.contains("skipped special file d/fifo"), "{all}");
        assert!(all.contains("d/suid: setuid"), "{all}");
        assert!(all.contains("secrets: sp's own path"), "{all}");
    }

    #[test]
    fn a_shrinking_file_is_padded() {
        let mut e = Exact {
            inner: &b"abc"[..],
            left: 5,
            short: false,
        };
        let mut out = Vec::new();
        e.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert!(e.short);
    }
}
