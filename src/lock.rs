//! The host-wide lock: two mutating sp commands never run at once.
//!
//! It is an advisory `flock` on `STATE_DIR/sp.lock`. The kernel drops it when the holder dies, so
//! a lock left by a killed process is recovered without any cleanup. The holder writes its pid
//! and command into the file so a waiting command can say who it waits for.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

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
        std::fs::create_dir_all(state_dir).map_err(|e| Error::io_path("create", state_dir, e))?;
        let path = state_dir.join("sp.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io_path("open lock file", &path, e))?;
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
}
