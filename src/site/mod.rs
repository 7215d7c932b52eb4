//! The site model every layer shares: the `site.toml` spec, the deploy state sp keeps beside it,
//! and validation of every piece of user input that ends up in a spec (names, domains, image
//! references, env keys, memory sizes).
//!
//! `/sites/NAME/site.toml` is the declarative source of truth, written by `sp site add` and
//! editable by hand; `/sites/NAME/deploy.toml` is sp's own record of what is running (pinned image
//! digest, the previous one for rollback, host port, whether the user stopped the site).

mod claims;
mod container;

pub use claims::{check_unique, Claim};
pub use container::ContainerSpec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// Checks an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn validate_env_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.as_bytes()[0].is_ascii_digit()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid env key {key:?}: use letters, digits and '_', not starting with a digit"
        )))
    }
}

/// Env keys sp sets itself; a spec may not override them.
pub const RESERVED_ENV: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_USER",
    "DATABASE_PASSWORD_FILE",
];

/// Parses `K=V` from the command line.
pub fn parse_env_pair(pair: &str) -> Result<(String, String)> {
    let Some((k, v)) = pair.split_once('=') else {
        return Err(Error::Invalid(format!(
            "invalid --env {pair:?}: expected KEY=VALUE"
        )));
    };
    validate_env_key(k)?;
    if RESERVED_ENV.contains(&k) {
        return Err(Error::Invalid(format!(
            "--env {k}: sp sets this variable itself"
        )));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Parses a memory limit like `512m`, `1g`, `256M` or a byte count, into bytes.
pub fn parse_memory(text: &str) -> Result<i64> {
    let bad = || {
        Error::Invalid(format!(
            "invalid memory limit {text:?}: use e.g. 256m or 1g"
        ))
    };
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(bad()),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes < 6 << 20 {
        return Err(Error::Invalid(format!(
            "invalid memory limit {text:?}: Docker needs at least 6m"
        )));
    }
    Ok(bytes)
}

/// A parsed container image reference: `[registry[:port]/]path[:tag][@sha256:HEX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), `docker.io` when the reference names none.
    pub registry: String,
    /// Repository path inside the registry.
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:...` when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and validates a reference, following the grammar of the distribution project.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Err(Error::Invalid(format!(
                "invalid image reference {text:?}: {why}"
            )))
        };
        if text.is_empty() || text.len() > 255 + 72 {
            return bad("empty or too long");
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                let hex = d.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return bad("digest must be sha256: followed by 64 lowercase hex digits");
                }
                (r, Some(d.to_string()))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.starts_with('_'))
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return bad("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            let host = parts.remove(0);
            if !valid_registry_host(host) {
                return bad("registry host must be a hostname or IP with an optional :port");
            }
            host.to_string()
        } else {
            "docker.io".to_string()
        };
        for comp in &parts {
            if !valid_path_component(comp) {
                return bad("path components must be lowercase letters and digits, separated by '.', '_', '__' or '-'");
            }
        }
        let mut path = parts.join("/");
        if registry == "docker.io" && parts.len() == 1 {
            path = format!("library/{path}");
        }
        Ok(ImageRef {
            registry,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `registry/path` — the repository, without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }

    /// The same repository pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository())
    }

    /// The tag to pull when no digest is given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_registry_host(host: &str) -> bool {
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().map(|n| n == 0).unwrap_or(true) {
            return false;
        }
    }
    !h.is_empty()
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_path_component(comp: &str) -> bool {
    if comp.is_empty() {
        return false;
    }
    let b = comp.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // separators: '.', '_', '__', or one or more '-'
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// How sp decides a freshly started container is healthy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// HTTP path answered with 2xx/3xx when healthy; none means "running for `grace` seconds".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds to wait for the HTTP check before giving up (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Seconds the container must stay running when there is no path (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<u64>,
}

impl Health {
    pub fn timeout_secs(&self) -> u64 {
        self.timeout.unwrap_or(60)
    }
    pub fn grace_secs(&self) -> u64 {
        self.grace.unwrap_or(3)
    }
}

/// The site's database section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// Whether the site has a database and user (named like the site). `--no-db` sets false.
    pub enabled: bool,
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        DatabaseSpec { enabled: true }
    }
}

/// `/sites/NAME/site.toml`: everything sp needs to run the site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub name: String,
    /// Image reference as the user gave it (usually a tag; deploys pin its digest).
    pub image: String,
    /// Per-site uid (and gid) that owns `data/` and runs the container.
    pub uid: u32,
    /// Port the app listens on inside the container.
    pub port: u16,
    /// Also publish the container on a 127.0.0.1 host port while the proxy is on (for
    /// debugging; without the proxy every site is published).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Memory limit such as "512m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Where `data/` is mounted inside the container (default /data).
    #[serde(default = "default_data_mount")]
    pub data_mount: String,
    /// Release command run in the new image before it replaces the old one (e.g. migrations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<String>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub database: DatabaseSpec,
    #[serde(default, skip_serializing_if = "BackupSpec::is_default")]
    pub backup: BackupSpec,
    /// How far the container is confined (capabilities, privileges, processes, logs).
    #[serde(default, skip_serializing_if = "ContainerSpec::is_default")]
    pub container: ContainerSpec,
    /// Scheduled commands run in the site's own image (`sp schedule install` writes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Job>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// How the site's files are captured by `sp backup`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSpec {
    /// Run inside the running container before the files are archived (e.g. an SQLite
    /// `.backup` into data/); a non-zero exit fails the backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_command: Vec<String>,
    /// Pause the container while its files are archived.
    #[serde(default)]
    pub pause: bool,
}

impl BackupSpec {
    fn is_default(&self) -> bool {
        *self == BackupSpec::default()
    }
}

/// A scheduled per-site command, e.g. Django's clearsessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Name used by `sp site job NAME JOB`: lowercase letters, digits and '-'.
    pub name: String,
    /// Standard 5-field crontab expression.
    pub schedule: String,
    pub command: Vec<String>,
}

fn default_data_mount() -> String {
    "/data".to_string()
}

impl SiteSpec {
    /// Validates every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        ImageRef::parse(&self.image)?;
        if self.uid < 1000 {
            return Err(Error::Invalid(format!(
                "{}: uid {} is below 1000",
                self.name, self.uid
            )));
        }
        if self.port == 0 {
            return Err(Error::Invalid(format!(
                "{}: port must be 1-65535",
                self.name
            )));
        }
        for d in &self.domains {
            validate_domain(d)?;
        }
        if let Some(m) = &self.memory {
            parse_memory(m)?;
        }
        if !self.data_mount.starts_with('/') || self.data_mount.contains("..") {
            return Err(Error::Invalid(format!(
                "{}: data_mount must be an absolute path without '..'",
                self.name
            )));
        }
        self.container.validate(&self.name)?;
        if let Some(p) = &self.health.path {
            if !p.starts_with('/') {
                return Err(Error::Invalid(format!(
                    "{}: health.path must start with '/'",
                    self.name
                )));
            }
        }
        for j in &self.jobs {
            let name_ok = !j.name.is_empty()
                && j.name.len() <= 40
                && j.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(Error::Invalid(format!(
                    "{}: job name {:?}: use lowercase letters, digits and '-'",
                    self.name, j.name
                )));
            }
            crate::schedule::parse(&j.schedule)
                .map_err(|e| Error::Invalid(format!("{}: job {}: {e}", self.name, j.name)))?;
            if j.command.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: job {} has no command",
                    self.name, j.name
                )));
            }
        }
        for k in self.env.keys() {
            validate_env_key(k)?;
            if RESERVED_ENV.contains(&k.as_str()) {
                return Err(Error::Invalid(format!(
                    "{}: env {k} is set by sp itself",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io_path("read", path, e))?;
        let spec: SiteSpec = toml::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{}: {}", path.display(), toml_error(&text, &e)))
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as TOML text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!(
            "# sp site spec: the source of truth for this site. Edit, then run `sp apply {}`.\n{body}",
            self.name
        )
    }
}

/// sp's record of what runs for a site (`deploy.toml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployState {
    /// Image pinned by digest (`repo@sha256:…`) that runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// The local image id (`sha256:` of its config) of `current`; containers are created from
    /// it, so a site also runs from an image loaded from the image archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_id: Option<String>,
    /// What ran before the last deploy, for `sp site rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    /// Host port on 127.0.0.1 that the current container publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// The user stopped the site; `sp apply` leaves it stopped.
    #[serde(default)]
    pub stopped: bool,
    /// RFC 3339 time of the last successful deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
}

impl DeployState {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                Error::Invalid(format!("{}: {}", path.display(), toml_error(&text, &e)))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeployState::default()),
            Err(e) => Err(Error::io_path("read", path, e)),
        }
    }

    pub fn to_toml(&self) -> String {
        format!(
            "# written by sp: what is deployed for this site. Do not edit.\n{}",
            toml::to_string_pretty(self).unwrap_or_default()
        )
    }
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
    fn image_refs() {
        let r = ImageRef::parse("registry.gitlab.com/acme/blog:main").unwrap();
        assert_eq!(r.registry, "registry.gitlab.com");
        assert_eq!(r.path, "acme/blog");
        assert_eq!(r.tag.as_deref(), Some("main"));
        let r = ImageRef::parse("127.0.0.1:5000/sp-test/site:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository(), "127.0.0.1:5000/sp-test/site");
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.repository(), "docker.io/library/nginx");
        assert_eq!(r.tag_or_latest(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.pinned(&d), format!("localhost:5000/x@{d}"));
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "x:",
            "x:-tag",
            "x@sha256:abc",
            "host:0/x",
            "a b",
            "x/../y",
            "reg.io/x:tag with space",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_and_memory() {
        assert_eq!(
            parse_env_pair("A_1=x=y").unwrap(),
            ("A_1".into(), "x=y".into())
        );
        assert!(parse_env_pair("1A=x").is_err());
        assert!(parse_env_pair("A-B=x").is_err());
        assert!(parse_env_pair("novalue").is_err());
        assert!(parse_env_pair("DATABASE_URL=x").is_err());
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn example_specs_validate() {
        for f in ["sites/django-app.toml", "sites/static-site.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            SiteSpec::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
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

    #[test]
    fn spec_round_trips() {
        let spec = SiteSpec {
            name: "blog".into(),
            image: "reg.example.com/a/b:1".into(),
            uid: 20001,
            port: 8000,
            publish: false,
            domains: vec!["blog.example.com".into()],
            memory: Some("256m".into()),
            data_mount: "/data".into(),
            release: vec!["migrate".into()],
            health: Health {
                path: Some("/".into()),
                ..Default::default()
            },
            database: DatabaseSpec::default(),
            backup: BackupSpec {
                pre_command: vec!["true".into()],
                pause: true,
            },
            container: ContainerSpec {
                cap_add: vec!["NET_BIND_SERVICE".into()],
                pids_limit: Some(100),
                ..Default::default()
            },
            jobs: vec![Job {
                name: "clear".into(),
                schedule: "0 4 * * 0".into(),
                command: vec!["x".into()],
            }],
            env: [("A".to_string(), "1".to_string())].into(),
        };
        let back: SiteSpec = toml::from_str(&spec.to_toml()).unwrap();
        assert_eq!(back, spec);
    }
}
