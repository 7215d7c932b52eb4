//! The site model every layer shares: the `site.toml` spec, the deploy state sp keeps beside it,
//! and validation of every piece of user input that ends up in a spec (names, domains, image
//! references, env keys, memory sizes).
//!
//! `/sites/NAME/site.toml` is the declarative source of truth, written by `sp site add` and
//! editable by hand; `/sites/NAME/deploy.toml` is sp's own record of what is running (pinned image
//! digest, the previous one for rollback, host port, whether the user stopped the site).

mod claims;
mod container;
mod env;
pub mod history;
mod image;
mod spec;
mod state;

pub use claims::{check_unique, Claim};
pub use container::ContainerSpec;
pub use env::{check_entry, parse_env_pair, validate_env_key, SecretEnv, RESERVED_ENV};
pub use image::ImageRef;
pub use spec::{parse_memory, BackupSpec, DatabaseSpec, Health, Job, SiteSpec};
pub use state::DeployState;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Names a site may not take: they collide with MySQL's own schemas and accounts or sp's words.
const RESERVED: &[&str] = &[
    "mysql",
    "information-schema",
    "performance-schema",
    "sys",
    "test",
    "root",
    "admin",
    "sp",
    "localhost",
    "default",
    "docker",
    "all",
    "none",
    "public",
    "mariadb",
];

/// Checks a site name: a lowercase DNS label (`a-z`, `0-9`, inner `-`) that starts with a letter,
/// at most 32 characters (MySQL's user-name limit), and not reserved. The name is also the
/// database and user name, always quoted in SQL.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("invalid site name {name:?}: {why}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 32 {
        return bad("longer than 32 characters");
    }
    let first = name.as_bytes()[0];
    if !first.is_ascii_lowercase() {
        return bad("must start with a lowercase letter");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lowercase letters, digits and '-' are allowed");
    }
    if name.ends_with('-') || name.contains("--") {
        return bad("'-' must separate letters or digits");
    }
    if RESERVED.contains(&name) {
        return bad("the name is reserved");
    }
    Ok(())
}

/// Checks a domain: a hostname of dot-separated DNS labels, at most 253 characters, with at least
/// two labels (a wildcard `*.` as the first label is allowed).
pub fn validate_domain(domain: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("invalid domain {domain:?}: {why}")));
    if domain.is_empty() || domain.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    let body = domain.strip_prefix("*.").unwrap_or(domain);
    let labels: Vec<&str> = body.split('.').collect();
    if labels.len() < 2 && body != "localhost" {
        return bad("must have at least two labels, like example.com");
    }
    for label in labels {
        if label.is_empty() || label.len() > 63 {
            return bad("each label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("only lowercase letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label may not start or end with '-'");
        }
    }
    Ok(())
}

/// Where a site's files live under `sites_dir`.
#[derive(Debug, Clone)]
pub struct SitePaths {
    pub root: PathBuf,
}

impl SitePaths {
    pub fn new(sites_dir: &Path, name: &str) -> Self {
        SitePaths {
            root: sites_dir.join(name),
        }
    }
    pub fn spec(&self) -> PathBuf {
        self.root.join("site.toml")
    }
    /// The spec of a site removed without --purge.
    pub fn removed_spec(&self) -> PathBuf {
        self.root.join("site.toml.removed")
    }
    pub fn deploy(&self) -> PathBuf {
        self.root.join("deploy.toml")
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }
    pub fn db_password(&self) -> PathBuf {
        self.secrets().join("db_password")
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// Env values given on stdin (`sp site env NAME set --stdin`): root-only, 0600.
    pub fn secret_env(&self) -> PathBuf {
        self.secrets().join("env")
    }
    /// Every roll-out of the site ([`history`]).
    pub fn history(&self) -> PathBuf {
        self.root.join("history.jsonl")
    }
    /// The last output of the container the latest roll-out replaced (`logs --previous`).
    pub fn previous_log(&self) -> PathBuf {
        self.root.join("previous.log")
    }
}

/// Reads a file sp wrote itself but that may come from a snapshot: a regular file (a link is
/// refused, never followed) of at most `max` bytes; None when there is none.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::Invalid(format!(
                "{} is a link; sp reads only the files it wrote (remove it)",
                path.display()
            )))
        }
        Err(e) => return Err(Error::io_path("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io_path("stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{} is not a regular file; sp reads only the files it wrote (remove it)",
            path.display()
        )));
    }
    if meta.len() > max {
        return Err(Error::Invalid(format!(
            "{} is larger than {max} bytes; sp did not write that (remove it)",
            path.display()
        )));
    }
    let mut out = Vec::new();
    file.take(max)
        .read_to_end(&mut out)
        .map_err(|e| Error::io_path("read", path, e))?;
    Ok(Some(out))
}

/// A TOML parse error as one line — where and what, never the offending source line, which
/// may hold a password.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("line {line}, column {col}: {}", one_line(e.message()))
        }
        None => one_line(e.message()),
    }
}

/// Collapses a multi-line parser message into one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "blog",
            "a",
            "shop2",
            "my-blog",
            "abcdefghijklmnopqrstuvwxyz012345",
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Blog",
            "1blog",
            "..",
            "a/b",
            "my_blog",
            "-a",
            "a-",
            "a--b",
            "mysql",
            "test",
            "abcdefghijklmnopqrstuvwxyz0123456",
            "bl og",
            "blög",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains() {
        for ok in [
            "example.com",
            "a.b.example.co.uk",
            "*.example.com",
            "x-1.test",
            "localhost",
        ] {
            assert!(validate_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "example",
            "-a.com",
            "a..com",
            "Exa mple.com",
            "a_b.com",
            "a.com/x",
            "ex*.com",
        ] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_errors_never_quote_the_source_line() {
        let text = "name = \"x\"\nurll = \"mysql://root:S3CRET@h\"\n";
        let e = toml::from_str::<SiteSpec>(text).unwrap_err();
        let msg = toml_error(text, &e);
        assert!(!msg.contains("S3CRET"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }
}
