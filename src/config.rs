//! The host config (`/etc/simple-paas/config.toml`, or `--config`/`SP_CONFIG`).
//!
//! Every key has a default, so a config only names what differs. Unknown keys are refused so
//! a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where sp looks for its config when neither `--config` nor `SP_CONFIG` says.
pub const DEFAULT_PATH: &str = "/etc/simple-paas/config.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Label value that marks this sp's containers; two instances on one engine never touch
    /// each other's containers.
    pub instance: String,
    /// One directory per site.
    pub sites_dir: PathBuf,
    /// Where snapshots are written.
    pub backup_dir: PathBuf,
    /// sp's own state: the host lock.
    pub state_dir: PathBuf,
    /// Seconds a mutating command waits for another one to finish.
    pub lock_timeout: u64,
    /// Public keys (`sp-ed25519:…`) of other hosts whose snapshots verify, restore and drill
    /// accept, besides this host's own keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
    pub mysql: MysqlConfig,
    pub docker: DockerConfig,
    pub backup: BackupConfig,
    pub retention: crate::snapshot::retention::Policy,
    pub proxy: ProxyConfig,
    /// Places every snapshot is also copied to (`[[destination]]`), besides `backup_dir`.
    #[serde(rename = "destination", skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationConfig>,
    /// `[encryption]`: who can read what leaves the host.
    pub encryption: EncryptionConfig,
}

/// `[[destination]]`: a place snapshots are uploaded to (see [`crate::store`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// What `--from NAME` calls it.
    pub name: String,
    /// `/path`, `s3://BUCKET/PREFIX` or `sftp://USER@HOST[:PORT]/PATH`.
    pub url: String,
    /// S3: the service's endpoint URL (none: AWS for the region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3: the region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3: `https://ENDPOINT/BUCKET/…` addressing instead of `https://BUCKET.ENDPOINT/…`
    /// (MinIO, Garage, IP endpoints).
    #[serde(default)]
    pub path_style: bool,
    /// S3: the access key id (none: `AWS_ACCESS_KEY_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// S3: the secret key inline (prefer `secret_access_key_file`). Never written out.
    #[serde(default, skip_serializing)]
    pub secret_access_key: Option<String>,
    /// S3: a root-only file holding the secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// SFTP: the private key to log in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// SFTP: the known_hosts file that must hold the server's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// S3: files are stored as objects of this many MiB each (default 8, one request each;
    /// doubling after every 1,000 of a file; 0: one object a file), so each piece completes
    /// while the backup goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_mib: Option<u64>,
    /// This destination's own `keep_*` policy (none: the host's `[retention]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::snapshot::retention::Policy>,
}

impl DestinationConfig {
    /// The S3 secret key: inline, from its file, or none (then the environment's).
    pub fn secret(&self) -> Result<Option<String>> {
        if let Some(s) = &self.secret_access_key {
            return Ok(Some(s.clone()));
        }
        match &self.secret_access_key_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io_path("read", p, e))?;
                Ok(Some(text.trim().to_string()))
            }
            None => Ok(None),
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "destination name {:?}: use 1-40 of [A-Za-z0-9_-]",
                self.name
            ));
        }
        let url = crate::store::Url::parse(&self.url)
            .map_err(|e| format!("destination {}: url {e}", self.name))?;
        let s3 = matches!(url, crate::store::Url::S3 { .. });
        let s3_only = [
            ("endpoint", self.endpoint.is_some()),
            ("region", self.region.is_some()),
            ("path_style", self.path_style),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            (
                "secret_access_key_file",
                self.secret_access_key_file.is_some(),
            ),
            ("segment_mib", self.segment_mib.is_some()),
        ];
        for (k, set) in s3_only {
            if set && !s3 {
                return Err(format!(
                    "destination {}: {k} is for s3:// destinations only",
                    self.name
                ));
            }
        }
        if let Some(n) = self.segment_mib {
            if n > 4096 {
                return Err(format!(
                    "destination {}: segment_mib = {n}: use 0 (one object a file) to 4096",
                    self.name
                ));
            }
        }
        let sftp = matches!(url, crate::store::Url::Sftp { .. });
        for (k, v) in [
            ("key_file", &self.key_file),
            ("known_hosts", &self.known_hosts),
        ] {
            match v {
                Some(_) if !sftp => {
                    return Err(format!(
                        "destination {}: {k} is for sftp:// destinations only",
                        self.name
                    ))
                }
                Some(p) if !p.is_absolute() => {
                    return Err(format!(
                        "destination {}: {k} must be an absolute path",
                        self.name
                    ))
                }
                None if sftp => {
                    return Err(format!(
                        "destination {}: an sftp:// destination needs {k} = \"/path\" ({})",
                        self.name,
                        if k == "key_file" {
                            "an unencrypted ed25519 or RSA private key, e.g. from ssh-keygen -t ed25519 -N ''"
                        } else {
                            "a file with the server's host key line, e.g. from ssh-keyscan -p PORT HOST, checked against its fingerprint"
                        }
                    ))
                }
                _ => {}
            }
        }
        if self.secret_access_key.is_some() && self.secret_access_key_file.is_some() {
            return Err(format!(
                "destination {}: set secret_access_key or secret_access_key_file, not both",
                self.name
            ));
        }
        if let Some(p) = &self.secret_access_key_file {
            if !p.is_absolute() {
                return Err(format!(
                    "destination {}: secret_access_key_file must be an absolute path",
                    self.name
                ));
            }
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(format!(
                    "destination {}: endpoint {e:?}: use an http(s):// URL",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// `[encryption]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// age x25519 recipients (`age1…`, from `sp key generate`): every file is encrypted to
    /// them as it streams to a destination. Empty: destinations get plaintext.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Encrypt the snapshots in `backup_dir` too: it then holds them in the off-host format
    /// (see [`crate::store::offsite`]), and reading them back needs `--identity`. Needs
    /// `recipients`.
    pub local: bool,
}

/// Who answers HTTPS for the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// sp runs Caddy as a container in front of every site, with automatic certificates.
    Caddy,
    /// No proxy: the host brings its own front door to the sites' 127.0.0.1 ports.
    None,
}

/// Let's Encrypt's production ACME directory, the default `proxy.acme_ca`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[proxy]`: the HTTPS front door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// `caddy` (the default) or `none`.
    pub mode: ProxyMode,
    /// The Caddy image the proxy container runs.
    pub image: String,
    /// Host address ports 80 and 443 are published on (`0.0.0.0`: every interface).
    pub listen: String,
    /// Contact address given to the ACME CA (expiry notices, account recovery).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// ACME directory URL certificates come from.
    pub acme_ca: String,
    /// A CA certificate (PEM) to trust for the ACME server's own TLS, e.g. a test CA's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme_ca_root: Option<PathBuf>,
    /// Host port plain HTTP is published on (redirects to HTTPS, ACME HTTP challenges).
    pub http_port: u16,
    /// Host port HTTPS is published on.
    pub https_port: u16,
    /// How long an old container keeps running after its route moved to the new one, so
    /// requests it is still answering finish ("5s").
    pub drain: String,
    /// A Caddyfile fragment of the host's admin, appended to the generated config as is
    /// (global snippets, extra sites). sp validates the whole config with Caddy before use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<PathBuf>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            mode: ProxyMode::Caddy,
            image: "caddy:2".into(),
            listen: "0.0.0.0".into(),
            email: None,
            acme_ca: LETS_ENCRYPT.into(),
            acme_ca_root: None,
            http_port: 80,
            https_port: 443,
            drain: "5s".into(),
            extra: None,
        }
    }
}

impl ProxyConfig {
    /// Whether sp runs the proxy.
    pub fn enabled(&self) -> bool {
        self.mode == ProxyMode::Caddy
    }

    /// `drain` as a duration.
    pub fn drain_time(&self) -> std::result::Result<std::time::Duration, String> {
        parse_duration(&self.drain).map_err(|e| format!("proxy.drain: {e}"))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        crate::site::ImageRef::parse(&self.image).map_err(|e| format!("proxy.image: {e}"))?;
        self.listen.parse::<std::net::IpAddr>().map_err(|_| {
            format!(
                "proxy.listen {:?}: use an IP address such as 0.0.0.0 (every interface) or 127.0.0.1",
                self.listen
            )
        })?;
        if let Some(email) = &self.email {
            let parts = email.split_once('@');
            let ok = matches!(parts, Some((u, d)) if !u.is_empty() && d.contains('.'))
                && crate::proxy::check_token("proxy.email", email).is_ok();
            if !ok {
                return Err(format!(
                    "proxy.email {email:?}: use a plain address such as ops@example.com"
                ));
            }
        }
        let host = self.acme_ca.strip_prefix("https://").unwrap_or("");
        if host.is_empty()
            || host.starts_with('/')
            || crate::proxy::check_token("proxy.acme_ca", &self.acme_ca).is_err()
        {
            return Err(format!(
                "proxy.acme_ca {:?}: use an https:// ACME directory URL such as {LETS_ENCRYPT}",
                self.acme_ca
            ));
        }
        if let Some(p) = &self.acme_ca_root {
            if !p.is_absolute() {
                return Err("proxy.acme_ca_root must be an absolute path".into());
            }
        }
        if let Some(p) = &self.extra {
            if !p.is_absolute() {
                return Err("proxy.extra must be an absolute path".into());
            }
        }
        if self.http_port == 0 || self.https_port == 0 || self.http_port == self.https_port {
            return Err(format!(
                "proxy.http_port {} and proxy.https_port {}: use two different ports 1-65535 (80 and 443 on a real host)",
                self.http_port, self.https_port
            ));
        }
        self.drain_time()?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Standard 5-field crontab expression for `sp backup` + `sp prune` (empty: not scheduled).
    pub schedule: String,
    /// zstd level (1-19).
    pub zstd_level: i32,
    /// zstd worker threads (0: one per core).
    pub zstd_threads: u32,
    /// `sp status` fails when the newest good snapshot of a site is older than this ("26h", "2d").
    pub max_age: String,
    /// GET after a successful backup (e.g. a healthchecks.io URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_success_url: Option<String>,
    /// GET after a failed backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure_url: Option<String>,
    /// When `sp schedule install` runs `sp drill` (crontab; empty: never).
    pub drill_schedule: String,
    /// Keep a `docker save` archive of every site's running image beside the snapshots (once
    /// per image), so a restore works when the registry cannot serve the image any more.
    pub keep_images: bool,
    /// How long a site's `pre_command` may run before the site is left out of the backup.
    pub pre_command_timeout: String,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            schedule: "17 3 * * *".into(),
            zstd_level: 3,
            zstd_threads: 0,
            max_age: "26h".into(),
            on_success_url: None,
            on_failure_url: None,
            keep_images: true,
            drill_schedule: "43 4 * * 0".into(),
            pre_command_timeout: "10m".into(),
        }
    }
}

/// Parses a duration like `90s`, `45m`, `26h`, `7d`.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: use e.g. 90s, 45m, 26h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{text:?}: use e.g. 90s, 45m, 26h or 7d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    /// Admin connection: `mysql://USER[:PASSWORD]@HOST:PORT` or `mysql://USER@localhost?socket=PATH`.
    pub url: String,
    /// File holding the admin password, when the URL carries none (keeps it out of the config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// `HOST:PORT` containers use to reach the server (`host.docker.internal` is the bridge gateway).
    pub host_for_containers: String,
    /// Host part of the per-site MySQL users. `%`: containers come from their site's own
    /// network (a subnet Docker picks), and sp itself logs in as them from the host.
    pub user_host: String,
    /// How long connecting, or any one statement or dump read that makes no progress, may take
    /// before sp gives up ("30s", "2m").
    pub timeout: String,
    /// `MAX_USER_CONNECTIONS` of every site's database user, so one site cannot take all of
    /// the server's connections (a restore loads over up to 3 as the site's user).
    pub max_user_connections: u32,
}

/// Smallest `mysql.max_user_connections`: a restore's parallel load plus the app itself.
pub const MIN_USER_CONNECTIONS: u32 = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Kept so older configs still load; ignored: every site runs on a network of its own
    /// (`sp-INSTANCE-SITE`), so sites cannot reach one another.
    pub network: String,
    /// Host ports sp publishes sites on, on 127.0.0.1 only: "FIRST-LAST".
    pub port_range: String,
    /// First uid handed to sites; each site gets the next free one.
    pub first_uid: u32,
    /// How long one request to the Docker engine may take (a pull included) before sp gives up.
    pub timeout: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instance: "default".into(),
            sites_dir: "/sites".into(),
            backup_dir: "/var/backups/simple-paas".into(),
            state_dir: "/var/lib/simple-paas".into(),
            lock_timeout: 300,
            trusted_keys: Vec::new(),
            mysql: MysqlConfig::default(),
            docker: DockerConfig::default(),
            backup: BackupConfig::default(),
            retention: crate::snapshot::retention::Policy {
                keep_last: 3,
                keep_daily: 7,
                keep_weekly: 4,
                keep_monthly: 6,
                ..Default::default()
            },
            proxy: ProxyConfig::default(),
            destinations: Vec::new(),
            encryption: EncryptionConfig::default(),
        }
    }
}

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            url: "mysql://root@localhost?socket=/run/mysqld/mysqld.sock".into(),
            password_file: None,
            host_for_containers: "host.docker.internal:3306".into(),
            user_host: "%".into(),
            timeout: "30s".into(),
            max_user_connections: 30,
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            network: "bridge".into(),
            port_range: "20000-29999".into(),
            first_uid: 20000,
            timeout: "10m".into(),
        }
    }
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                bad("not found; run `sp init` to write one".into())
            } else {
                bad(e.to_string())
            }
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: origin.display().to_string(),
            message,
        };
        let cfg: Config =
            toml::from_str(text).map_err(|e| bad(crate::site::toml_error(text, &e)))?;
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let label_ok = !self.instance.is_empty()
            && self.instance.len() <= 40
            && self
                .instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !label_ok {
            return Err(format!(
                "instance {:?}: use 1-40 of [A-Za-z0-9_-]",
                self.instance
            ));
        }
        for (k, p) in [
            ("sites_dir", &self.sites_dir),
            ("backup_dir", &self.backup_dir),
            ("state_dir", &self.state_dir),
        ] {
            if !p.is_absolute() {
                return Err(format!("{k} must be an absolute path"));
            }
        }
        for k in &self.trusted_keys {
            crate::key::PublicKey::parse(k).map_err(|e| format!("trusted_keys: {e}"))?;
        }
        self.port_range()?;
        split_host_port(&self.mysql.host_for_containers)
            .ok_or_else(|| "mysql.host_for_containers must be HOST:PORT".to_string())?;
        if !self.backup.schedule.trim().is_empty() {
            crate::schedule::parse(&self.backup.schedule)
                .map_err(|e| format!("backup.schedule: {e}"))?;
        }
        if !self.backup.drill_schedule.trim().is_empty() {
            crate::schedule::parse(&self.backup.drill_schedule)
                .map_err(|e| format!("backup.drill_schedule: {e}"))?;
        }
        if !(1..=19).contains(&self.backup.zstd_level) {
            return Err("backup.zstd_level must be 1-19".into());
        }
        parse_duration(&self.backup.max_age).map_err(|e| format!("backup.max_age {e}"))?;
        parse_duration(&self.backup.pre_command_timeout)
            .map_err(|e| format!("backup.pre_command_timeout {e}"))?;
        parse_duration(&self.mysql.timeout).map_err(|e| format!("mysql.timeout {e}"))?;
        parse_duration(&self.docker.timeout).map_err(|e| format!("docker.timeout {e}"))?;
        if self.mysql.max_user_connections < MIN_USER_CONNECTIONS {
            return Err(format!(
                "mysql.max_user_connections must be at least {MIN_USER_CONNECTIONS}: a restore loads a site's dump over up to 3 connections as its own user"
            ));
        }
        if let Some(p) = &self.mysql.password_file {
            if !p.is_absolute() {
                return Err("mysql.password_file must be an absolute path".into());
            }
        }
        if self.mysql.user_host.is_empty() || self.mysql.user_host.contains('\'') {
            return Err(
                "mysql.user_host must be a MySQL host pattern: \"%\" (see SETUP.md)".into(),
            );
        }
        self.proxy.validate()?;
        let mut names = std::collections::HashSet::new();
        for d in &self.destinations {
            d.validate()?;
            if !names.insert(d.name.as_str()) {
                return Err(format!("destination {:?} is named twice", d.name));
            }
        }
        crate::crypt::Recipients::parse(&self.encryption.recipients)?;
        if self.encryption.local && self.encryption.recipients.is_empty() {
            return Err("encryption.local = true needs [encryption] recipients (`sp key generate --output FILE` prints one): add one, or set local = false".into());
        }
        Ok(())
    }

    /// The inclusive host-port range sites are published on.
    pub fn port_range(&self) -> std::result::Result<(u16, u16), String> {
        let r = &self.docker.port_range;
        let parsed = r.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        match parsed {
            Some((a, b)) if a >= 1024 && a <= b => Ok((a, b)),
            _ => Err(format!(
                "docker.port_range {r:?}: use FIRST-LAST, ports 1024-65535"
            )),
        }
    }

    /// The commented config `sp init` writes.
    pub fn commented_default(&self) -> String {
        let c = self;
        format!(
            r#"# sp host config. Every key is optional; these are the defaults unless noted.

# Label value on every container this sp runs; two sp instances on one Docker engine
# never touch each other's containers.
instance = "{instance}"

# One directory per site: /sites/NAME/{{site.toml,data/,secrets/}}.
sites_dir = "{sites}"

# Where snapshots go.
backup_dir = "{backup}"

# sp's own state: the host lock, and the key that signs every snapshot (keys/snapshot.key;
# keep a copy off this host: `sp key export`).
state_dir = "{state}"

# Seconds a mutating command waits for another sp command to finish.
lock_timeout = {lock}

# Public keys of other hosts whose snapshots verify, restore and drill accept (this host's
# own keys are always trusted), as `sp key show` prints them on that host.
# trusted_keys = ["sp-ed25519:..."]

[mysql]
# Admin connection used to create databases and users (needs CREATE USER and GRANT OPTION).
# TCP: "mysql://sp_admin@127.0.0.1:3306"; socket: "mysql://root@localhost?socket=/run/mysqld/mysqld.sock"
url = "{url}"
# Admin password, kept out of this file in a root-only file (mode 0600): `sp init
# --mysql-password-stdin` writes one, `--mysql-password-file` names yours. Unset: socket auth.
{pwf}
# How containers reach the server. host.docker.internal is the Docker bridge gateway
# (172.17.0.1), also from each site's own network: make MariaDB listen there and on
# loopback only (bind-address = 127.0.0.1,172.17.0.1).
host_for_containers = "{hfc}"
# Host part of the per-site database users. "%" admits the sites' own networks (subnets
# Docker picks) and sp on the host; the server itself listens only where said above.
user_host = "{uh}"
# How long connecting, or one statement or dump read without progress, may take: a frozen
# server fails the command (naming the site and step) instead of hanging it.
timeout = "{mysql_timeout}"
# Most connections one site's database user may hold at once (at least 4: a restore loads
# over up to 3 as the site's user).
max_user_connections = {muc}

[docker]
# Every site runs on a Docker network of its own (sp-INSTANCE-SITE), so sites cannot reach
# one another; they reach MariaDB through host.docker.internal.
# Host ports (127.0.0.1 only) sp publishes sites on; the HTTPS proxy forwards to them.
port_range = "{ports}"
# First uid handed to sites; each site gets its own.
first_uid = {uid}
# How long one request to the Docker engine (a pull included) may take before sp gives up.
timeout = "{docker_timeout}"

[backup]
# When `sp schedule install` runs `sp backup` and `sp prune`: a standard 5-field crontab
# expression (minute hour day-of-month month day-of-week; Sunday is 0 or 7).
schedule = "{sched}"
zstd_level = {level}
# zstd worker threads; 0 = one per core.
zstd_threads = {threads}
# `sp status` exits non-zero when a site's newest snapshot is older than this.
max_age = "{max_age}"
# Pinged (GET) after each backup, e.g. a healthchecks.io check.
# on_success_url = "https://hc-ping.com/UUID"
# on_failure_url = "https://hc-ping.com/UUID/fail"
# When `sp schedule install` runs `sp drill` (restore the latest snapshot into a scratch
# namespace and check it); empty: never.
drill_schedule = "{drill}"
# Keep `docker save` archives of the sites' images under backup_dir/images (once per image),
# for restores when the registry has deleted the tag or is down.
keep_images = {keep_images}
# How long a site's pre_command may run before that site is left out of the backup.
pre_command_timeout = "{pre_timeout}"

[retention]
# What `sp prune` keeps; pinned snapshots and the newest verified one are always kept.
keep_last = {kl}
keep_hourly = {kh}
keep_daily = {kd}
keep_weekly = {kw}
keep_monthly = {km}
keep_yearly = {ky}

[proxy]
# The HTTPS front door. "caddy": sp runs Caddy as a container in front of every site, with
# certificates from the ACME CA below, and sites publish no host port; "none": the host
# brings its own (sites publish a 127.0.0.1 port each).
mode = "{proxy_mode}"
# The Caddy image of the proxy container.
image = "{proxy_image}"
# Host address ports 80 and 443 are published on ("0.0.0.0": every interface).
listen = "{proxy_listen}"
# Contact address for the ACME CA (expiry notices, account recovery).
{proxy_email}
# ACME directory certificates come from. Let's Encrypt's staging CA for a first try:
# "https://acme-staging-v02.api.letsencrypt.org/directory".
acme_ca = "{proxy_acme_ca}"
# A CA certificate (PEM) to trust for the ACME server's own TLS, e.g. a private or test CA's.
{proxy_acme_ca_root}
# Host ports of plain HTTP (redirects to HTTPS) and HTTPS.
http_port = {proxy_http_port}
https_port = {proxy_https_port}
# How long an old container keeps answering after a deploy moved its route to the new one.
drain = "{proxy_drain}"
# A Caddyfile fragment of your own, appended to the generated config (validated with it).
{proxy_extra}
"#,
            proxy_http_port = c.proxy.http_port,
            proxy_https_port = c.proxy.https_port,
            proxy_drain = c.proxy.drain,
            proxy_extra = match &c.proxy.extra {
                Some(p) => format!("extra = {}", toml_string(&p.display().to_string())),
                None => "# extra = \"/etc/simple-paas/Caddyfile.extra\"".into(),
            },
            proxy_mode = match c.proxy.mode {
                ProxyMode::Caddy => "caddy",
                ProxyMode::None => "none",
            },
            proxy_image = c.proxy.image,
            proxy_listen = c.proxy.listen,
            proxy_email = match &c.proxy.email {
                Some(e) => format!("email = {}", toml_string(e)),
                None => "# email = \"ops@example.com\"".into(),
            },
            proxy_acme_ca = c.proxy.acme_ca,
            proxy_acme_ca_root = match &c.proxy.acme_ca_root {
                Some(p) => format!("acme_ca_root = {}", toml_string(&p.display().to_string())),
                None => "# acme_ca_root = \"/etc/simple-paas/acme-ca.pem\"".into(),
            },
            sched = c.backup.schedule,
            level = c.backup.zstd_level,
            threads = c.backup.zstd_threads,
            max_age = c.backup.max_age,
            keep_images = c.backup.keep_images,
            pre_timeout = c.backup.pre_command_timeout,
            mysql_timeout = c.mysql.timeout,
            docker_timeout = c.docker.timeout,
            drill = c.backup.drill_schedule,
            kl = c.retention.keep_last,
            kh = c.retention.keep_hourly,
            kd = c.retention.keep_daily,
            kw = c.retention.keep_weekly,
            km = c.retention.keep_monthly,
            ky = c.retention.keep_yearly,
            instance = c.instance,
            sites = c.sites_dir.display(),
            backup = c.backup_dir.display(),
            state = c.state_dir.display(),
            lock = c.lock_timeout,
            url = c.mysql.url,
            hfc = c.mysql.host_for_containers,
            uh = c.mysql.user_host,
            muc = c.mysql.max_user_connections,
            pwf = match &c.mysql.password_file {
                Some(p) => format!("password_file = {}", toml_string(&p.display().to_string())),
                None => "# password_file = \"/etc/simple-paas/mysql-admin.password\"".into(),
            },
            ports = c.docker.port_range,
            uid = c.docker.first_uid,
        )
    }
}

/// Whether site users at `user_host` can log in from the sites' own networks (subnets
/// Docker picks, 172.18-31.x or 192.168.x) and from sp on the host: only `%` admits them all.
pub fn check_user_host(user_host: &str) -> std::result::Result<String, String> {
    if user_host == "%" {
        Ok("% (the sites' own networks and sp on the host; MariaDB must listen on loopback and the bridge only)".into())
    } else {
        Err(format!(
            "{user_host:?} does not admit containers on their sites' own networks (Docker picks their subnets): set mysql.user_host = \"%\" and keep MariaDB listening on 127.0.0.1 and 172.17.0.1 only"
        ))
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// True when a MySQL URL carries a password (`mysql://USER:PASSWORD@…`), even an empty one.
pub fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':'),
        None => false,
    }
}

/// Splits `HOST:PORT`.
pub fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (h, p) = text.rsplit_once(':')?;
    let port = p.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!h.is_empty()).then_some((h, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_the_commented_file() {
        let text = Config::default().commented_default();
        let cfg: Config = toml::from_str(&text).unwrap();
        assert_eq!(cfg.sites_dir, PathBuf::from("/sites"));
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn the_password_file_is_written_into_the_commented_config() {
        let mut c = Config::default();
        c.mysql.password_file = Some("/etc/sp/a \"b\".pw".into());
        let text = c.commented_default();
        assert!(
            text.contains("\npassword_file = '/etc/sp/a \"b\".pw'\n"),
            "{text}"
        );
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.mysql.password_file, c.mysql.password_file);
        assert_eq!(back.mysql.max_user_connections, 30);
    }

    #[test]
    fn only_a_wildcard_user_host_admits_the_sites_networks() {
        assert!(check_user_host("%").is_ok());
        let err = check_user_host("172.17.%").unwrap_err();
        assert!(err.contains("mysql.user_host = \"%\""), "{err}");
    }

    #[test]
    fn passwords_in_urls_are_spotted() {
        for yes in [
            "mysql://u:pw@127.0.0.1:3306",
            "mysql://u:@h",
            "mysql://u:p@ss@h/db",
            "u:pw@h",
        ] {
            assert!(url_has_password(yes), "{yes}");
        }
        for no in [
            "mysql://sp_admin@127.0.0.1:3306",
            "mysql://root@localhost?socket=/run/mysqld/mysqld.sock",
            "mysql://127.0.0.1:3306",
            "mysql://u@h/db?x=a:b@c",
        ] {
            assert!(!url_has_password(no), "{no}");
        }
    }

    #[test]
    fn the_proxy_is_caddy_by_default_and_configurable() {
        let d = Config::default().proxy;
        assert_eq!(d.mode, ProxyMode::Caddy);
        assert_eq!(
            (d.http_port, d.https_port, d.drain.as_str()),
            (80, 443, "5s")
        );
        assert_eq!(d.image, "caddy:2");
        assert_eq!(d.listen, "0.0.0.0");
        assert_eq!(d.email, None);
        assert_eq!(d.acme_ca, LETS_ENCRYPT);
        assert_eq!(d.acme_ca_root, None);
        let text =
            "[proxy]\nmode = \"caddy\"\nimage = \"sp-test/caddy:2.6\"\nlisten = \"127.0.0.1\"\n\
                    email = \"ops@example.com\"\nacme_ca = \"https://172.17.0.1:14000/dir\"\n\
                    acme_ca_root = \"/var/lib/sp-rig/pebble/ca.pem\"\n\
                    http_port = 18080\nhttps_port = 18443\ndrain = \"1s\"\nextra = \"/etc/x.caddy\"\n";
        let cfg = Config::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(
            cfg.proxy,
            ProxyConfig {
                mode: ProxyMode::Caddy,
                image: "sp-test/caddy:2.6".into(),
                listen: "127.0.0.1".into(),
                email: Some("ops@example.com".into()),
                acme_ca: "https://172.17.0.1:14000/dir".into(),
                acme_ca_root: Some("/var/lib/sp-rig/pebble/ca.pem".into()),
                http_port: 18080,
                https_port: 18443,
                drain: "1s".into(),
                extra: Some("/etc/x.caddy".into()),
            }
        );
        // What `sp init` writes for a config like that reads back the same.
        let back = Config::parse(&cfg.commented_default(), Path::new("t.toml")).unwrap();
        assert_eq!(back.proxy, cfg.proxy);
        let err = Config::parse("[proxy]\nmode = \"nginx\"", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("caddy"), "{err}");
    }

    #[test]
    fn destinations_and_encryption() {
        let (_, public) = crate::crypt::generate();
        let text = format!(
            "[[destination]]\nname = \"offsite\"\nurl = \"s3://my-bucket/sp/h1\"\nendpoint = \"http://127.0.0.1:9000\"\npath_style = true\naccess_key_id = \"AK\"\nsecret_access_key = \"TOPSECRET\"\n[destination.retention]\nkeep_daily = 30\n[[destination]]\nname = \"usb\"\nurl = \"/mnt/usb\"\n[encryption]\nrecipients = [\"{public}\"]\n"
        );
        let c = Config::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(c.destinations.len(), 2);
        assert_eq!(c.destinations[0].retention.as_ref().unwrap().keep_daily, 30);
        assert!(c.destinations[1].retention.is_none());
        assert_eq!(
            c.destinations[0].secret().unwrap().as_deref(),
            Some("TOPSECRET")
        );
        // The secret is never written out (JSON or TOML).
        assert!(!serde_json::to_string(&c).unwrap().contains("TOPSECRET"));
        assert!(!toml::to_string(&c).unwrap().contains("TOPSECRET"));
        let c = Config::parse(
            "[[destination]]\nname = \"a\"\nurl = \"s3://bkt\"\nsegment_mib = 0",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.destinations[0].segment_mib, Some(0));
        let ok = "[[destination]]\nname = \"nas\"\nurl = \"sftp://backup@nas:2222/srv/sp\"\nkey_file = \"/etc/sp/nas.key\"\nknown_hosts = \"/etc/sp/nas.known_hosts\"\n";
        let c = Config::parse(ok, Path::new("t.toml")).unwrap();
        assert_eq!(
            c.destinations[0].key_file.as_deref(),
            Some(Path::new("/etc/sp/nas.key"))
        );
        for bad in [
            "[[destination]]\nname = \"a\"\nurl = \"relative\"",
            "[[destination]]\nname = \"a b\"\nurl = \"/x\"",
            "[[destination]]\nname = \"a\"\nurl = \"sftp://u@h:22/x\"",
            "[[destination]]\nname = \"a\"\nurl = \"sftp://u@h/x\"\nkey_file = \"/k\"",
            "[[destination]]\nname = \"a\"\nurl = \"sftp://u@h/x\"\nkey_file = \"k\"\nknown_hosts = \"/kh\"",
            "[[destination]]\nname = \"a\"\nurl = \"sftp://u@h/x\"\nkey_file = \"/k\"\nknown_hosts = \"/kh\"\nendpoint = \"http://h\"",
            "[[destination]]\nname = \"a\"\nurl = \"/x\"\nknown_hosts = \"/kh\"",
            "[[destination]]\nname = \"a\"\nurl = \"/x\"\nendpoint = \"http://h\"",
            "[[destination]]\nname = \"a\"\nurl = \"s3://bkt\"\nendpoint = \"h:9000\"",
            "[[destination]]\nname = \"a\"\nurl = \"s3://bkt\"\nsecret_access_key = \"x\"\nsecret_access_key_file = \"/f\"",
            "[[destination]]\nname = \"a\"\nurl = \"s3://bkt\"\nsecret_access_key_file = \"rel\"",
            "[[destination]]\nname = \"a\"\nurl = \"/x\"\n[[destination]]\nname = \"a\"\nurl = \"/y\"",
            "[[destination]]\nname = \"a\"\nurl = \"/x\"\nbogus = 1",
            "[[destination]]\nname = \"a\"\nurl = \"/x\"\nsegment_mib = 8",
            "[[destination]]\nname = \"a\"\nurl = \"s3://bkt\"\nsegment_mib = 5000",
            "[encryption]\nrecipients = [\"age1notakey\"]",
            "[encryption]\nlocal = true",
            "[encryption]\nrecipients = []\nlocal = true",
        ] {
            assert!(Config::parse(bad, Path::new("t.toml")).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_encryption_needs_recipients() {
        let e = Config::parse("[encryption]\nlocal = true", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipients") && !e.contains('\n'), "{e}");
        let (_, public) = crate::crypt::generate();
        let text = format!("[encryption]\nrecipients = [\"{public}\"]\nlocal = true\n");
        let c = Config::parse(&text, Path::new("t.toml")).unwrap();
        assert!(c.encryption.local);
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/config.example.toml");
        Config::load(&path).unwrap();
    }

    #[test]
    fn rejects_bad_values() {
        let bad = [
            "unknown_key = 1",
            "instance = \"a b\"",
            "sites_dir = \"relative\"",
            "[docker]\nport_range = \"80-90\"",
            "[docker]\nport_range = \"3000-2000\"",
            "[mysql]\nhost_for_containers = \"nohost\"",
            "[mysql]\nmax_user_connections = 3",
            "[mysql]\npassword_file = \"relative.pw\"",
            "[proxy]\nmode = \"traefik\"",
            "[proxy]\nunknown = 1",
            "[proxy]\nlisten = \"example.com\"",
            "[proxy]\nlisten = \"0.0.0.0:443\"",
            "[proxy]\nacme_ca = \"http://acme.example.com/directory\"",
            "[proxy]\nacme_ca = \"https://\"",
            "[proxy]\nacme_ca = \"https://ca.example.com/dir {\"",
            "[proxy]\nacme_ca_root = \"ca.pem\"",
            "[proxy]\nhttp_port = 443",
            "[proxy]\nhttps_port = 0",
            "[proxy]\ndrain = \"soon\"",
            "[proxy]\nextra = \"Caddyfile\"",
            "[proxy]\nemail = \"nobody\"",
            "[proxy]\nemail = \"a@b.com\\n}\"",
            "[proxy]\nimage = \"Not An Image\"",
        ];
        for text in bad {
            let parsed: std::result::Result<Config, _> = toml::from_str(text);
            let ok = parsed.map(|c| c.validate().is_ok()).unwrap_or(false);
            assert!(!ok, "{text}");
        }
    }
}
