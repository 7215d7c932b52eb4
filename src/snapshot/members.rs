//! Creating archive members below an open directory without ever following a link: the
//! writing half of [`super::stage`]. Each member passes the [`Guard`] first; its parent
//! directories are opened one by one from the staging root with `O_DIRECTORY|O_NOFOLLOW`
//! (missing ones created root-owned 0755); files are created with `O_CREAT|O_EXCL|
//! O_NOFOLLOW`, directories with `mkdirat`, links with `symlinkat`; owner, mode and mtime are
//! set on the descriptor (or with `AT_SYMLINK_NOFOLLOW`), directory times last.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};
use tar::EntryType;

use super::stage::StageError;
use super::unpack::Guard;

/// Writes the members of one archive below `root`.
pub(super) struct Writer<'a> {
    root: &'a OwnedFd,
    guard: Guard,
    /// The directory the last member went into (most members share their parent).
    parent: Option<(PathBuf, OwnedFd)>,
    /// Directories whose times are set once everything inside them is written.
    dirs: Vec<(PathBuf, i64)>,
    as_root: bool,
    /// The copy buffer, reused.
    buf: Vec<u8>,
}

/// The normal components of a member path (the [`Guard`] has refused anything else).
fn parts(path: &Path) -> Vec<&OsStr> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn at(path: &Path, e: impl std::fmt::Display) -> StageError {
    StageError::Io(io::Error::other(format!("{}: {e}", path.display())))
}

impl<'a> Writer<'a> {
    /// A writer below `root`; owners are kept only `as_root`.
    pub(super) fn new(root: &'a OwnedFd, as_root: bool) -> Self {
        Writer {
            root,
            guard: Guard::default(),
            parent: None,
            dirs: Vec::new(),
            as_root,
            buf: Vec::new(),
        }
    }

    /// Checks and creates one member.
    pub(super) fn member<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), StageError> {
        let damaged = |e: io::Error| StageError::Damaged(format!("archive is damaged: {e}"));
        let path = e.path().map_err(damaged)?.into_owned();
        let link = e.link_name().map_err(damaged)?.map(|l| l.into_owned());
        let h = e.header();
        let kind = h.entry_type();
        let mode = h.mode().map_err(damaged)?;
        let uid = h.uid().map_err(damaged)? as u32;
        let gid = h.gid().map_err(damaged)? as u32;
        let mtime = h.mtime().map_err(damaged)? as i64;
        self.guard
            .check(&path, kind, link.as_deref(), mode)
            .map_err(StageError::Refused)?;
        let comps = parts(&path);
        let Some((name, dirs)) = comps.split_last() else {
            // `./`: the staging root itself keeps sp's owner and mode.
            return Ok(());
        };
        let parent_path: PathBuf = dirs.iter().collect();
        let parent = self.open_parent(&parent_path)?;
        // The sticky bit stays; setuid/setgid the guard has refused.
        let mode = Mode::from_raw_mode(mode & 0o1777);
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        match kind {
            EntryType::Directory => {
                match rfs::mkdirat(&parent, *name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(err) => return Err(at(&path, err)),
                }
                let d = rfs::openat(
                    &parent,
                    *name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|err| at(&path, format!("not a directory where one belongs ({err})")))?;
                self.own(&d, uid, gid).map_err(|err| at(&path, err))?;
                rfs::fchmod(&d, mode).map_err(|err| at(&path, err))?;
                self.dirs.push((path, mtime));
            }
            EntryType::Regular => {
                let fd = rfs::openat(
                    &parent,
                    *name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|err| {
                    at(
                        &path,
                        format!("cannot be created ({err}); duplicate member?"),
                    )
                })?;
                let mut f = std::fs::File::from(fd);
                self.copy(e, &mut f, &path)?;
                self.own(&f, uid, gid).map_err(|err| at(&path, err))?;
                rfs::fchmod(&f, mode).map_err(|err| at(&path, err))?;
                rfs::futimens(&f, &times).map_err(|err| at(&path, err))?;
            }
            EntryType::Symlink => {
                let target = link.unwrap_or_default();
                rfs::symlinkat(target.as_os_str(), &parent, *name).map_err(|err| {
                    at(
                        &path,
                        format!("cannot be created ({err}); duplicate member?"),
                    )
                })?;
                if self.as_root {
                    rfs::chownat(
                        &parent,
                        *name,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|err| at(&path, err))?;
                }
                rfs::utimensat(&parent, *name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| at(&path, err))?;
            }
            // The guard lets nothing else through.
            other => {
                return Err(StageError::Refused(format!(
                    "{}: {other:?} entries are not allowed",
                    path.display()
                )))
            }
        }
        self.parent = Some((parent_path, parent));
        Ok(())
    }

    /// Copies a member's data in large writes (the tar reader hands out small pieces).
    fn copy(
        &mut self,
        from: &mut impl Read,
        to: &mut std::fs::File,
        path: &Path,
    ) -> Result<(), StageError> {
        use std::io::Write;
        if self.buf.is_empty() {
            self.buf = vec![0; 256 << 10];
        }
        loop {
            let mut filled = 0;
            while filled < self.buf.len() {
                match from.read(&mut self.buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(StageError::Damaged(format!(
                            "archive is damaged at {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
            if filled == 0 {
                return Ok(());
            }
            to.write_all(&self.buf[..filled]).map_err(|e| at(path, e))?;
        }
    }

    fn own(&self, fd: &impl std::os::fd::AsFd, uid: u32, gid: u32) -> rustix::io::Result<()> {
        if !self.as_root {
            return Ok(());
        }
        rfs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
    }

    /// Opens (creating missing ones, root-owned 0755) the directories of `parent` one by one
    /// from the root, never following a link.
    fn open_parent(&mut self, parent: &Path) -> Result<OwnedFd, StageError> {
        if let Some((p, fd)) = self.parent.take() {
            if p == parent {
                return Ok(fd);
            }
        }
        let mut cur = self.root.try_clone()?;
        for c in parts(parent) {
            match rfs::mkdirat(&cur, c, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(err) => return Err(at(parent, err)),
            }
            cur = rfs::openat(
                &cur,
                c,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| {
                StageError::Refused(format!(
                    "{}: not a directory (a member may not be written through a link or file: {err})",
                    parent.display()
                ))
            })?;
        }
        Ok(cur)
    }

    /// Sets directory times last (writing inside a directory changes its mtime), deepest
    /// first.
    pub(super) fn finish_dirs(&mut self) -> Result<(), StageError> {
        self.parent = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (path, mtime) in dirs.iter().rev() {
            let comps = parts(path);
            let Some((name, up)) = comps.split_last() else {
                continue;
            };
            let parent_path: PathBuf = up.iter().collect();
            let parent = self.open_parent(&parent_path)?;
            let t = Timespec {
                tv_sec: *mtime,
                tv_nsec: 0,
            };
            rfs::utimensat(
                &parent,
                *name,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|err| at(path, err))?;
            self.parent = Some((parent_path, parent));
        }
        Ok(())
    }
}
