//! The host-wide lock: two mutating sp commands never run at once.
//!
//! It is an advisory `flock` on `STATE_DIR/sp.lock`. The kernel drops it when the holder dies, so
//! a lock left by a killed process is recovered without any cleanup. The holder writes its pid
//! and command into the file so a waiting command can say who it waits for.
//!
//! The file is root's alone (0600, in a 0700 `state_dir`): a local user who could open it
//! could flock it and block sp. A lock file owned by anyone else is refused.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Mode of the lock file: root's alone.
pub const LOCK_MODE: u32 = 0o600;

/// Creates `state_dir` (0700) or takes away what others may do in it: it holds the lock and
/// the drills' scratch copies of sites (their specs, their secrets).
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io_path("create", dir, e))?;
    let meta = std::fs::metadata(dir).map_err(|e| Error::io_path("stat", dir, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        crate::fsutil::chmod(dir, meta.permissions().mode() & 0o7700)?;
    }
    Ok(())
}

/// Held while alive; released on drop (or by the kernel when the process dies).
#[derive(Debug)]
pub struct HostLock {
    file: File,
}

impl HostLock {
    /// Takes the lock, waiting up to `timeout`. `on_wait` is called once with the holder's
    /// description when sp has to wait.
    pub fn acquire(
        state_dir: &Path,
        what: &str,
        timeout: Duration,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<HostLock> {
        ensure_private_dir(state_dir)?;
        let path = state_dir.join("sp.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(LOCK_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io_path("open lock file", &path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io_path("stat lock file", &path, e))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(Error::Other(format!(
                "the lock file {} belongs to uid {}, not to this user (uid {me}); delete it and run sp again",
                path.display(),
                meta.uid()
            )));
        }
        if meta.permissions().mode() & 0o777 != LOCK_MODE {
            file.set_permissions(std::fs::Permissions::from_mode(LOCK_MODE))
                .map_err(|e| Error::io_path("chmod lock file", &path, e))?;
        }
        let start = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file);
                    if start.elapsed() >= timeout {
                        return Err(Error::Locked(format!(
                            "another sp command holds the host lock ({holder}); gave up after {}s — wait for it to finish or raise lock_timeout",
                            timeout.as_secs()
                        )));
                    }
                    if !told {
                        on_wait(&holder);
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io_path("lock", &path, e)),
            }
        }
        let note = format!("pid {} ({what})\n", std::process::id());
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.write_all(note.as_bytes());
        let _ = file.flush();
        Ok(HostLock { file })
    }
}

impl Drop for HostLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "held by another process".to_string()
    } else {
        format!("held by {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_times_out_then_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = HostLock::acquire(dir.path(), "first", Duration::ZERO, &mut |_| {}).unwrap();
        // flock locks belong to the open file description, so a second open in-process conflicts.
        let err = HostLock::acquire(
            dir.path(),
            "second",
            Duration::from_millis(300),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("first"), "{err}");
        assert_eq!(err.exit_code(), 75);
        drop(first);
        HostLock::acquire(dir.path(), "third", Duration::ZERO, &mut |_| {}).unwrap();
    }

    #[test]
    fn a_lock_file_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // only root can hand a file to another user
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("sp.lock");
        std::fs::write(&lock, "").unwrap();
        std::os::unix::fs::chown(&lock, Some(12345), Some(12345)).unwrap();
        let err = HostLock::acquire(dir.path(), "t", Duration::ZERO, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("belongs to uid 12345"), "{err}");
    }

    #[test]
    fn the_lock_file_and_its_directory_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let lock = state.join("sp.lock");
        std::fs::write(&lock, "").unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let held = HostLock::acquire(&state, "t", Duration::ZERO, &mut |_| {}).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&lock), 0o600);
        assert_eq!(mode(&state), 0o700);
        drop(held);
        let fresh = dir.path().join("new/state");
        drop(HostLock::acquire(&fresh, "t", Duration::ZERO, &mut |_| {}).unwrap());
        assert_eq!(mode(&fresh.join("sp.lock")), 0o600);
        assert_eq!(mode(&fresh), 0o700);
    }
}
