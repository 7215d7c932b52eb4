//! The server's own dump client: the admin account reaches it through an in-memory option
//! file, a watchdog stops a dump that makes no progress, and its output is checked for the
//! completion trailer.

use mysql_async::Opts;

use crate::error::{Error, Result};

/// The server's own dump client (`mariadb-dump`, else `mysqldump`) and load client, given
/// the admin account through an option file that never touches the disk — never through
/// argv: an anonymous memory file (memfd, mode 0600) each client inherits and reads as
/// `--defaults-extra-file=/dev/fd/N`. Nothing is left behind however sp ends, even killed.
pub struct DumpClient {
    program: std::path::PathBuf,
    options: std::fs::File,
    /// A dump that sends nothing for this long is stopped (a frozen server).
    pub(super) stall: std::time::Duration,
}

/// Prefix of the on-disk option files older versions of sp wrote (and left when killed).
pub const STALE_OPTION_FILE_PREFIX: &str = ".sp-client-";

/// An anonymous in-memory file holding `text`, mode 0600, closed on exec unless a child is
/// told to keep it ([`inherit_fd`]).
fn memfd_with(text: &str) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"sp-client-options".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    // A memfd starts out 0777, and the clients ignore a world-writable option file.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.flush()?;
    Ok(file)
}

/// Lets the child `cmd` starts inherit `file` under its own number (std closes every other
/// fd on exec); returns the path the child opens it by.
fn inherit_fd(cmd: &mut std::process::Command, file: &std::fs::File) -> String {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = file.as_raw_fd();
    // SAFETY: runs in the forked child before exec and only calls fcntl, which is
    // async-signal-safe; it clears FD_CLOEXEC on an fd the parent keeps open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    format!("/dev/fd/{fd}")
}

/// Deletes on-disk option files an older sp left in `dir` when it was killed; returns how
/// many there were.
pub fn sweep_stale_option_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(STALE_OPTION_FILE_PREFIX) && n.ends_with(".cnf")
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// The arguments of a consistent, complete dump of one database, without CREATE DATABASE/USE.
pub fn dump_args(options_file: &std::path::Path, db: &str) -> Vec<String> {
    vec![
        // Must come first.
        format!("--defaults-extra-file={}", options_file.display()),
        "--single-transaction".into(),
        "--routines".into(),
        "--triggers".into(),
        "--events".into(),
        "--hex-blob".into(),
        "--default-character-set=utf8mb4".into(),
        "--skip-lock-tables".into(),
        "--quick".into(),
        db.to_string(),
    ]
}

/// The `[client]` option file text for an admin connection.
pub fn option_file(opts: &Opts) -> String {
    let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut t = String::from("[client]\n");
    if let Some(u) = opts.user() {
        t.push_str(&format!("user={}\n", q(u)));
    }
    if let Some(p) = opts.pass() {
        t.push_str(&format!("password={}\n", q(p)));
    }
    match opts.socket() {
        Some(s) => t.push_str(&format!("socket={}\nprotocol=socket\n", q(s))),
        None => t.push_str(&format!(
            "host={}\nport={}\nprotocol=tcp\n",
            q(opts.ip_or_hostname()),
            opts.tcp_port()
        )),
    }
    t
}

impl DumpClient {
    pub(super) fn new(opts: &Opts, private_dir: &std::path::Path) -> Result<DumpClient> {
        let program = ["mariadb-dump", "mysqldump"]
            .iter()
            .find_map(|p| find_in_path(p))
            .ok_or_else(|| Error::NotFound("neither mariadb-dump nor mysqldump is installed (apt-get install mariadb-client)".into()))?;
        sweep_stale_option_files(private_dir);
        let options = memfd_with(&option_file(opts))
            .map_err(|e| Error::io("create the clients' in-memory option file (memfd)", e))?;
        Ok(DumpClient {
            program,
            options,
            stall: std::time::Duration::from_secs(30),
        })
    }

    /// Dumps `db` into `out` (streamed; nothing is held in memory), checking the exit status
    /// and the completion trailer. Returns the uncompressed byte count.
    pub fn dump(&self, db: &str, out: &mut dyn std::io::Write) -> Result<u64> {
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(&self.program);
        let options = inherit_fd(&mut cmd, &self.options);
        let mut child = cmd
            .args(dump_args(std::path::Path::new(&options), db))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("start {}", self.program.display()), e))?;
        let mut stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = std::io::Read::read_to_string(e, &mut s);
            }
            s
        });
        let mut keeper = crate::snapshot::archive::TailKeeper::new(out);
        // A dump that sends nothing for `stall` is stopped: a frozen server must fail the
        // backup (naming the site and step), never hang it while it holds the host lock.
        let watch = Watchdog::start(child.id(), self.stall);
        let copied = match child.stdout.take() {
            Some(so) => copy_big(&mut watch.reader(so), &mut keeper),
            None => Ok(0),
        };
        let status = child
            .wait()
            .map_err(|e| Error::io("wait for the dump client", e))?;
        if watch.stop() {
            return Err(Error::Other(format!(
                "the dump of {db} sent nothing for {}s (mysql.timeout) and was stopped: the server stopped answering",
                self.stall.as_secs()
            )));
        }
        let stderr = err_reader.join().unwrap_or_default();
        let tool = self
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !status.success() {
            let first = first_error_line(&stderr);
            return Err(Error::Other(format!(
                "{tool} of {db} failed ({status}): {first}"
            )));
        }
        copied.map_err(|e| Error::io(format!("write the dump of {db}"), e))?;
        if !crate::snapshot::archive::has_dump_trailer(keeper.tail()) {
            return Err(Error::Other(format!(
                "{tool} of {db} ended without its completion trailer"
            )));
        }
        Ok(keeper.bytes)
    }
}

/// Kills a child process that makes no progress (no bytes read through [`Watchdog::reader`])
/// for a while.
struct Watchdog {
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Watchdog {
    fn start(pid: u32, stall: std::time::Duration) -> Watchdog {
        use std::sync::atomic::Ordering;
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, d) = (progress.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut last = 0;
            let mut since = std::time::Instant::now();
            while !d.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let now = p.load(Ordering::SeqCst);
                if now != last {
                    last = now;
                    since = std::time::Instant::now();
                } else if since.elapsed() >= stall {
                    // SAFETY: kill(2) on our own child's pid; no memory is touched.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    return true;
                }
            }
            false
        });
        Watchdog {
            progress,
            done,
            thread: Some(thread),
        }
    }

    /// `r`, counting what is read as progress.
    fn reader<R: std::io::Read>(&self, r: R) -> impl std::io::Read {
        struct Counted<R>(R, std::sync::Arc<std::sync::atomic::AtomicU64>);
        impl<R: std::io::Read> std::io::Read for Counted<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1
                    .fetch_add(n as u64 + 1, std::sync::atomic::Ordering::SeqCst);
                Ok(n)
            }
        }
        Counted(r, self.progress.clone())
    }

    /// Stops watching; true when the child was killed for making no progress.
    fn stop(mut self) -> bool {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(false))
            .unwrap_or(false)
    }
}

/// `io::copy` with a 1 MiB buffer (the default 8 KiB costs a syscall and a zstd call per chunk).
fn copy_big(r: &mut dyn std::io::Read, w: &mut dyn std::io::Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// The line of a client's stderr that says what went wrong (mysql frames the failing
/// statement in dashes before the `ERROR` line).
fn first_error_line(stderr: &str) -> &str {
    let lines = || {
        stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '-'))
    };
    lines()
        .find(|l| l.contains("ERROR") || l.contains("error"))
        .or_else(|| lines().next())
        .unwrap_or("no message")
}

fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_options_keep_the_password_out_of_argv() {
        let opts = Opts::from_url("mysql://admin:s3cr%22et@127.0.0.1:13306").unwrap();
        let text = option_file(&opts);
        assert!(text.contains("password=\"s3cr\\\"et\"\n"), "{text}");
        assert!(text.contains("host=\"127.0.0.1\"\nport=13306\n"), "{text}");
        let args = dump_args(std::path::Path::new("/tmp/x.cnf"), "blog");
        assert_eq!(args[0], "--defaults-extra-file=/tmp/x.cnf");
        assert!(args.iter().all(|a| !a.contains("s3cr")));
        assert!(!args
            .iter()
            .any(|a| a == "--databases" || a == "--all-databases"));
        assert!(
            args.contains(&"--single-transaction".to_string())
                && args.contains(&"--hex-blob".to_string())
        );
        assert_eq!(args.last().map(String::as_str), Some("blog"));
    }

    #[test]
    fn the_option_file_lives_in_memory_and_reaches_the_child() {
        let text = "[client]\nuser=\"x\"\n";
        let file = memfd_with(text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let mut cmd = std::process::Command::new("cat");
        let path = inherit_fd(&mut cmd, &file);
        assert!(path.starts_with("/dev/fd/"), "{path}");
        let out = cmd.arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), text);
        // Without being told, a child does not get it.
        let out = std::process::Command::new("cat")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
    }

    #[test]
    fn stale_option_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".sp-client-abc.cnf"), "x").unwrap();
        std::fs::write(dir.path().join("keep.cnf"), "x").unwrap();
        assert_eq!(sweep_stale_option_files(dir.path()), 1);
        assert!(dir.path().join("keep.cnf").exists());
        assert_eq!(sweep_stale_option_files(&dir.path().join("missing")), 0);
    }
}
