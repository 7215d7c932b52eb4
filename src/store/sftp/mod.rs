//! SFTP servers (any OpenSSH `sshd`, a NAS, a storage box) in pure Rust: russh for SSH and
//! russh-sftp for the file protocol, so a bare host needs no `ssh` binary. The client logs in
//! with the destination's `key_file` (ed25519 or RSA, unencrypted) and talks only to a server
//! whose host key its `known_hosts` file holds: an unknown or changed key is refused before
//! anything is sent, never learnt on first use.
//!
//! Objects are files under the URL's path. A write goes to a `.part-RANDOM` file in its
//! target's directory (created as needed) and is renamed into place on commit; dropped
//! unfinished, the part file is removed. Listing never follows a link (the server's `READDIR`
//! attributes are `lstat`'s) and never lists names starting with `.`. Reads and writes stream
//! through the protocol's pipelined requests, so memory stays bounded.
//!
//! Like the S3 store, this one is blocking: each call drives the async client on the runtime
//! the store was opened under (call it from `spawn_blocking`, `store::blocking` or a thread of
//! its own).

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{OpenFlags, StatusCode};

mod file;
mod known_hosts;

use self::file::{SftpReader, SftpUpload};
use self::known_hosts::Checker;
pub use self::known_hosts::{check_known_hosts, known_hosts_name, HostKey};
use super::{check_path, Object, Store, Upload};
use crate::config::DestinationConfig;
use crate::error::{Error, Result};

/// How long connecting and logging in may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one SFTP request may wait for its answer.
const REQUEST_TIMEOUT_SECS: u64 = 60;
/// Bytes an upload gathers before it hands them to the (pipelined) SFTP writer.
pub(super) const WRITE_BUF: usize = 256 << 10;
/// Bytes a download asks for per read.
const READ_BUF: usize = 1 << 20;

/// One logged-in SFTP session (the SSH handle keeps the connection open).
struct Conn {
    sftp: SftpSession,
    ssh: client::Handle<Checker>,
}

pub struct SftpStore {
    what: String,
    user: String,
    host: String,
    port: u16,
    /// The server-side directory objects live under (absolute, no trailing `/`).
    root: String,
    key_file: PathBuf,
    known_hosts: PathBuf,
    rt: tokio::runtime::Handle,
    conn: Mutex<Option<Arc<Conn>>>,
    /// Directories known to exist (so a write does not stat its parents every time).
    dirs: Mutex<HashSet<String>>,
}

/// Opens an SFTP destination (no connection yet: the first call makes it). Call under a
/// tokio runtime.
pub fn open(
    cfg: &DestinationConfig,
    user: &str,
    host: &str,
    port: u16,
    path: &str,
) -> Result<SftpStore> {
    let need = |what: &str, v: &Option<PathBuf>| -> Result<PathBuf> {
        v.clone().ok_or_else(|| {
            Error::Invalid(format!(
                "destination {}: sftp:// needs {what} = \"/path\" in its [[destination]]",
                cfg.name
            ))
        })
    };
    let key_file = need("key_file", &cfg.key_file)?;
    let known_hosts = need("known_hosts", &cfg.known_hosts)?;
    let rt = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Other(format!(
            "destination {}: opened outside the runtime (a bug)",
            cfg.name
        ))
    })?;
    Ok(SftpStore {
        what: format!("{} ({})", cfg.name, cfg.url),
        user: user.to_string(),
        host: host.to_string(),
        port,
        root: path.trim_end_matches('/').to_string(),
        key_file,
        known_hosts,
        rt,
        conn: Mutex::new(None),
        dirs: Mutex::new(HashSet::new()),
    })
}

fn load_key(path: &Path) -> Result<PrivateKey> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io_path("read key_file", path, e))?;
    russh::keys::decode_secret_key(&text, None).map_err(|e| {
        Error::Invalid(format!(
            "key_file {}: not an unencrypted OpenSSH private key ({e}); make one with ssh-keygen -t ed25519 -N ''",
            path.display()
        ))
    })
}

fn not_found(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile)
}

impl SftpStore {
    fn abs(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.root.clone()
        } else {
            format!("{}/{rel}", self.root)
        }
    }

    fn err(&self, what: &str, path: &str, e: SftpError) -> Error {
        if not_found(&e) {
            return Error::NotFound(format!("{}: no object {path}", self.what));
        }
        if matches!(e, SftpError::IO(_) | SftpError::Timeout) {
            // The connection is gone or stuck: the next call makes a new one.
            if let Ok(mut c) = self.conn.lock() {
                *c = None;
            }
        }
        let msg = e.to_string().replace('\n', " ");
        Error::Other(format!("{}: {what} {path}: {msg}", self.what))
    }

    async fn connect(&self) -> Result<Conn> {
        let name = known_hosts_name(&self.host, self.port);
        let key = Arc::new(load_key(&self.key_file)?);
        let refused = Arc::new(Mutex::new(None));
        let checker = Checker {
            host: self.host.clone(),
            port: self.port,
            known_hosts: self.known_hosts.clone(),
            refused: refused.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(Duration::from_secs(600)),
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            preferred: russh::Preferred {
                cipher: cipher_order(aes_in_hardware()).into(),
                ..Default::default()
            },
            ..Default::default()
        });
        let addr = (self.host.clone(), self.port);
        let fail = |step: &str, e: String| {
            Error::Other(format!(
                "{}: {step} {name}: {e}; check the url, the server and the key",
                self.what
            ))
        };
        let login = async {
            let mut ssh = match client::connect(config, addr, checker).await {
                Ok(h) => h,
                Err(e) => {
                    if let Some(why) = refused.lock().ok().and_then(|mut r| r.take()) {
                        return Err(Error::Unauthentic(why));
                    }
                    return Err(fail("connect to", e.to_string()));
                }
            };
            let hash = if key.algorithm().is_rsa() {
                ssh.best_supported_rsa_hash()
                    .await
                    .map_err(|e| fail("negotiate with", e.to_string()))?
                    .flatten()
            } else {
                None
            };
            let auth = ssh
                .authenticate_publickey(
                    self.user.clone(),
                    PrivateKeyWithHashAlg::new(key.clone(), hash),
                )
                .await
                .map_err(|e| fail("log in to", e.to_string()))?;
            if !auth.success() {
                return Err(Error::Other(format!(
                    "{}: {name} refused key_file {} for user {}; add its public key to that user's authorized_keys",
                    self.what,
                    self.key_file.display(),
                    self.user
                )));
            }
            let ch = ssh
                .channel_open_session()
                .await
                .map_err(|e| fail("open a session on", e.to_string()))?;
            ch.request_subsystem(true, "sftp")
                .await
                .map_err(|e| fail("start sftp on", e.to_string()))?;
            let sftp = SftpSession::new(ch.into_stream())
                .await
                .map_err(|e| fail("start sftp on", e.to_string()))?;
            sftp.set_timeout(REQUEST_TIMEOUT_SECS);
            Ok(Conn { sftp, ssh })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, login).await {
            Ok(r) => r,
            Err(_) => Err(fail(
                "connect to",
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            )),
        }
    }

    /// The session, connecting (again) when there is none.
    fn session(&self) -> Result<Arc<Conn>> {
        let mut slot = self
            .conn
            .lock()
            .map_err(|_| Error::Other(format!("{}: connection lock poisoned", self.what)))?;
        if let Some(c) = slot.as_ref() {
            if !c.ssh.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(self.rt.block_on(self.connect())?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Creates `dir` (absolute) and its missing parents below `/`.
    async fn mkdirs(&self, sftp: &SftpSession, dir: &str) -> Result<()> {
        let mut path = String::new();
        for comp in dir.split('/').filter(|c| !c.is_empty()) {
            path.push('/');
            path.push_str(comp);
            if self.dirs.lock().is_ok_and(|d| d.contains(&path)) {
                continue;
            }
            match sftp.symlink_metadata(path.clone()).await {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(Error::Conflict(format!(
                        "{}: {path} exists on the server and is no directory; move it away",
                        self.what
                    )))
                }
                Err(e) if not_found(&e) => {
                    if let Err(e) = sftp.create_dir(path.clone()).await {
                        // Another upload may have made it meanwhile.
                        let made = sftp
                            .symlink_metadata(path.clone())
                            .await
                            .is_ok_and(|m| m.file_type().is_dir());
                        if !made {
                            return Err(self.err("create directory", &path, e));
                        }
                    }
                }
                Err(e) => return Err(self.err("stat", &path, e)),
            }
            if let Ok(mut d) = self.dirs.lock() {
                d.insert(path.clone());
            }
        }
        Ok(())
    }

    async fn walk(&self, sftp: &SftpSession, start: &str) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let mut todo = vec![start.to_string()];
        while let Some(rel) = todo.pop() {
            let dir = self.abs(&rel);
            let entries = match sftp.read_dir(dir.clone()).await {
                Ok(e) => e,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(self.err("list", &dir, e)),
            };
            for e in entries {
                let name = e.file_name();
                if name.starts_with('.') || name.contains('/') || name.contains('\\') {
                    continue;
                }
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                // READDIR's attributes are lstat's: a link is neither followed nor listed.
                let meta = e.metadata();
                let kind = meta.file_type();
                if kind.is_dir() {
                    todo.push(child);
                } else if kind.is_file() {
                    out.push(Object {
                        path: child,
                        size: meta.size.unwrap_or(0),
                    });
                }
            }
        }
        Ok(out)
    }
}

impl Store for SftpStore {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn list(&self, prefix: &str) -> Result<Vec<Object>> {
        let start = super::list_start(prefix)?;
        let c = self.session()?;
        let mut out = self.rt.block_on(self.walk(&c.sftp, &start))?;
        out.retain(|o| o.path.starts_with(prefix));
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn stat(&self, path: &str) -> Result<Option<u64>> {
        check_path(path)?;
        let c = self.session()?;
        match self.rt.block_on(c.sftp.symlink_metadata(self.abs(path))) {
            Ok(m) if m.file_type().is_file() => Ok(Some(m.size.unwrap_or(0))),
            Ok(_) => Ok(None),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.err("stat", path, e)),
        }
    }

    fn read(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        check_path(path)?;
        let c = self.session()?;
        let abs = self.abs(path);
        let file = self.rt.block_on(async {
            // Only a plain file: a link on the server is not followed out of the store.
            let m = c
                .sftp
                .symlink_metadata(abs.clone())
                .await
                .map_err(|e| self.err("stat", path, e))?;
            if !m.file_type().is_file() {
                return Err(Error::NotFound(format!(
                    "{}: {path} is no plain file",
                    self.what
                )));
            }
            c.sftp
                .open_with_flags(abs.clone(), OpenFlags::READ)
                .await
                .map_err(|e| self.err("read", path, e))
        })?;
        Ok(Box::new(std::io::BufReader::with_capacity(
            READ_BUF,
            SftpReader {
                rt: self.rt.clone(),
                file,
                _conn: c,
            },
        )))
    }

    fn write(&self, path: &str) -> Result<Box<dyn Upload>> {
        check_path(path)?;
        let c = self.session()?;
        let target = self.abs(path);
        let dir = match target.rsplit_once('/') {
            Some((d, _)) => d.to_string(),
            None => self.root.clone(),
        };
        let part = format!("{dir}/.part-{:016x}", rand::random::<u64>());
        let file = self.rt.block_on(async {
            self.mkdirs(&c.sftp, &dir).await?;
            c.sftp
                .open_with_flags(
                    part.clone(),
                    OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
                )
                .await
                .map_err(|e| self.err("create", path, e))
        })?;
        Ok(Box::new(SftpUpload {
            rt: self.rt.clone(),
            conn: c,
            file: Some(file),
            buf: Vec::with_capacity(WRITE_BUF),
            part,
            target,
            what: self.what.clone(),
        }))
    }

    fn delete(&self, path: &str) -> Result<()> {
        check_path(path)?;
        let c = self.session()?;
        let abs = self.abs(path);
        self.rt.block_on(async {
            match c.sftp.remove_file(abs.clone()).await {
                Err(e) if !not_found(&e) => return Err(self.err("delete", path, e)),
                _ => {}
            }
            // Empty folders left behind go too (best effort).
            let mut dir = abs.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if parent.len() <= self.root.len() || c.sftp.remove_dir(parent).await.is_err() {
                    break;
                }
                if let Ok(mut d) = self.dirs.lock() {
                    d.remove(parent);
                }
                dir = parent;
            }
            Ok(())
        })
    }
}

/// The SSH ciphers to offer, best first: AES-GCM where the CPU does AES (several times
/// cheaper than ChaCha20-Poly1305 there, for sp and for the server), else ChaCha20-Poly1305;
/// both authenticated, the CTR ones last as russh has them.
pub fn cipher_order(aes: bool) -> Vec<russh::cipher::Name> {
    use russh::cipher::{AES_128_CTR, AES_192_CTR, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    let aead = if aes {
        [AES_256_GCM, CHACHA20_POLY1305]
    } else {
        [CHACHA20_POLY1305, AES_256_GCM]
    };
    aead.into_iter()
        .chain([AES_256_CTR, AES_192_CTR, AES_128_CTR])
        .collect()
}

fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_is_offered_first_only_where_the_cpu_does_aes() {
        use russh::cipher::{AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
        let hw = cipher_order(true);
        assert_eq!(&hw[..3], &[AES_256_GCM, CHACHA20_POLY1305, AES_256_CTR]);
        let sw = cipher_order(false);
        assert_eq!(&sw[..2], &[CHACHA20_POLY1305, AES_256_GCM]);
        assert_eq!(hw.len(), sw.len());
    }
}
