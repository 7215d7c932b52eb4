//! The audit log: one JSON line per command that changes the host (who, when, what, on which
//! sites, how it ended), appended to `state_dir/audit.log` (mode 0600) and rotated at
//! [`MAX_BYTES`] into `audit.log.1` … `audit.log.N`. Only `dispatch` writes it; `sp log` reads it.
//! Command lines are stored with secrets removed ([`redact`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A log file past this size is rotated before the next line.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Rotated files kept beside the live one.
pub const KEEP: usize = 3;

/// One audited command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When it started (RFC 3339, to the second).
    pub time: String,
    /// The person: `SUDO_USER` when run through sudo, else the user name of the uid.
    pub actor: String,
    pub uid: u32,
    /// The command line, secrets removed, as one shell-quoted string.
    pub command: String,
    /// The sites it acted on (every site there was, for host-wide commands).
    pub sites: Vec<String>,
    /// `ok` or `failed`.
    pub result: String,
    pub exit_code: i32,
    pub duration_seconds: f64,
    /// The error, when it failed.
    pub error: Option<String>,
}

impl Entry {
    /// An entry for a command that started at `started` and ended with `exit_code`.
    pub fn new(
        started: DateTime<Utc>,
        argv: &[String],
        sites: Vec<String>,
        exit_code: i32,
        duration: std::time::Duration,
        error: Option<String>,
    ) -> Entry {
        let (actor, uid) = actor();
        Entry {
            time: started.to_rfc3339_opts(SecondsFormat::Secs, true),
            actor,
            uid,
            command: redact(argv)
                .iter()
                .map(|w| crate::schedule::shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
            sites,
            result: if exit_code == 0 { "ok" } else { "failed" }.into(),
            exit_code,
            duration_seconds: (duration.as_secs_f64() * 1000.0).round() / 1000.0,
            error,
        }
    }
}

/// Who runs this: `SUDO_USER` (the person behind sudo), else the name of the real uid, else
/// the uid as a number.
pub fn actor() -> (String, u32) {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if let Some(u) = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty() && u.len() <= 64 && !u.chars().any(char::is_control))
    {
        return (u, uid);
    }
    (user_name(uid).unwrap_or_else(|| uid.to_string()), uid)
}

/// The passwd name of `uid`.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into the buffers we own and sets result to pwd or null.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into buf, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().map(String::from)
}

const HIDDEN: &str = "<redacted>";

/// The command line with secret values replaced: `--env K=V` (and `--env=K=V`) keep only the
/// key, so does every `K=V` after `env set`, and a URL keeps its user but not its password.
/// Secrets are never meant to be in argv (they come on stdin), but a person may put them there.
pub fn redact(argv: &[String]) -> Vec<String> {
    let hide_value = |w: &str| match w.split_once('=') {
        Some((k, _)) => format!("{k}={HIDDEN}"),
        None => w.to_string(),
    };
    let mut out = Vec::with_capacity(argv.len());
    let mut after_env_flag = false;
    let mut env_set = false;
    let mut after_dashes = false;
    for (i, w) in argv.iter().enumerate() {
        let word = if after_env_flag {
            hide_value(w)
        } else if let Some(v) = w.strip_prefix("--env=") {
            format!("--env={}", hide_value(v))
        } else if env_set && !after_dashes && !w.starts_with('-') && w.contains('=') {
            hide_value(w)
        } else {
            redact_url(w)
        };
        after_env_flag = !after_dashes && w == "--env";
        if w == "--" {
            after_dashes = true;
        }
        if w == "set" && i > 0 && argv[..i].iter().any(|a| a == "env") {
            env_set = true;
        }
        out.push(word);
    }
    out
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host`.
fn redact_url(w: &str) -> String {
    let Some((scheme, rest)) = w.split_once("://") else {
        return w.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:{HIDDEN}@{host}{tail}")
        }
        _ => w.to_string(),
    }
}

/// The live log file under `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.log")
}

fn rotated(state_dir: &Path, n: usize) -> PathBuf {
    state_dir.join(format!("audit.log.{n}"))
}

/// Appends one line (rotating first when the file is past [`MAX_BYTES`]).
pub fn append(state_dir: &Path, entry: &Entry) -> Result<()> {
    crate::lock::ensure_private_dir(state_dir)?;
    let live = path(state_dir);
    if std::fs::metadata(&live).is_ok_and(|m| m.len() >= MAX_BYTES) {
        for n in (1..KEEP).rev() {
            let _ = std::fs::rename(rotated(state_dir, n), rotated(state_dir, n + 1));
        }
        std::fs::rename(&live, rotated(state_dir, 1))
            .map_err(|e| Error::io_path("rotate", &live, e))?;
    }
    let mut line = serde_json::to_string(entry)
        .map_err(|e| Error::Other(format!("encode the audit entry: {e}")))?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&live)
        .map_err(|e| Error::io_path("open", &live, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io_path("chmod", &live, e))?;
    // One write of the whole line: O_APPEND keeps concurrent commands' lines whole.
    f.write_all(line.as_bytes())
        .map_err(|e| Error::io_path("append to", &live, e))
}

/// Every entry, oldest first (rotated files before the live one), and how many lines could
/// not be read.
pub fn read(state_dir: &Path) -> Result<(Vec<Entry>, usize)> {
    let mut files: Vec<PathBuf> = (1..=KEEP).rev().map(|n| rotated(state_dir, n)).collect();
    files.push(path(state_dir));
    let mut entries = Vec::new();
    let mut bad = 0;
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io_path("read", &f, e)),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Entry>(line) {
                Ok(e) => entries.push(e),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((entries, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn redacts_env_values_and_url_passwords() {
        assert_eq!(
            redact(&argv(
                "sp site add blog --image x --env API_KEY=s3cret --env=TOKEN=abc"
            )),
            argv("sp site add blog --image x --env API_KEY=<redacted> --env=TOKEN=<redacted>")
        );
        assert_eq!(
            redact(&argv("sp site env blog set A=1 B=two")),
            argv("sp site env blog set A=<redacted> B=<redacted>")
        );
        assert_eq!(
            redact(&argv("sp init --mysql-url mysql://root:pw@db:3306/x")),
            argv("sp init --mysql-url mysql://root:<redacted>@db:3306/x")
        );
        // Nothing secret: unchanged, and what follows `--` in exec is the command itself.
        let plain = argv("sp site exec blog -- env FOO=bar");
        assert_eq!(redact(&plain), plain);
        let url = argv("sp init --mysql-url mysql://root@db:3306");
        assert_eq!(redact(&url), url);
    }

    #[test]
    fn appends_private_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let e = Entry::new(
            Utc::now(),
            &argv("sp site stop blog"),
            vec!["blog".into()],
            0,
            std::time::Duration::from_millis(1234),
            None,
        );
        append(&state, &e).unwrap();
        append(&state, &e).unwrap();
        let mode = std::fs::metadata(path(&state))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (got, bad) = read(&state).unwrap();
        assert_eq!((got.len(), bad), (2, 0));
        assert_eq!(got[0], e);
        assert_eq!(got[0].duration_seconds, 1.234);
        assert!(!got[0].time.contains('.'), "{}", got[0].time);
        // Past the size limit, the next line starts a new file; nothing is lost.
        let f = OpenOptions::new().append(true).open(path(&state)).unwrap();
        f.set_len(MAX_BYTES).unwrap();
        append(&state, &e).unwrap();
        assert!(rotated(&state, 1).is_file());
        assert_eq!(
            std::fs::read_to_string(path(&state))
                .unwrap()
                .lines()
                .count(),
            1
        );
        let (got, bad) = read(&state).unwrap();
        assert_eq!(got.len(), 3);
        assert!(bad >= 1, "the NUL padding is one unreadable line");
    }
}
