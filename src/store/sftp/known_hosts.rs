//! Which SFTP servers sp talks to: the server's host key must be in the destination's
//! `known_hosts` file (plain, `[host]:port`, patterns and negations, hashed `|1|` entries,
//! `@revoked`); an unknown or changed key is refused during the handshake, before anything is
//! sent, never learnt on first use. [`check_known_hosts`] is the pure verdict; [`Checker`] is
//! russh's handler that applies it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};

/// What a known_hosts file says about a server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey {
    /// A line for this host holds this key.
    Known,
    /// No line names this host (with this key's algorithm).
    Unknown,
    /// A line for this host holds another key of the same algorithm (its 1-based number).
    Changed { line: usize },
    /// A `@revoked` line holds this key.
    Revoked { line: usize },
}

/// The name known_hosts files use for a server: `HOST`, or `[HOST]:PORT` off port 22.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key` for `host`:`port` against a known_hosts file's text (OpenSSH's format: plain,
/// wildcard and negated patterns, hashed `|1|` names, `@revoked`; `@cert-authority` lines are
/// ignored, as sp accepts no host certificates). Pure, for tests.
pub fn check_known_hosts(text: &str, host: &str, port: u16, key: &PublicKey) -> HostKey {
    let name = known_hosts_name(host, port);
    let mut changed = None;
    let mut known = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let mut fields = raw.split_whitespace();
        let Some(mut first) = fields.next() else {
            continue;
        };
        if first.starts_with('#') {
            continue;
        }
        let mut marker = None;
        if first.starts_with('@') {
            marker = Some(first);
            let Some(next) = fields.next() else { continue };
            first = next;
        }
        let (Some(_alg), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !hosts_match(first, &name) {
            continue;
        }
        let Ok(recorded) = russh::keys::parse_public_key_base64(b64) else {
            continue;
        };
        let same = recorded.key_data() == key.key_data();
        match marker {
            Some("@revoked") if same => return HostKey::Revoked { line },
            Some(_) => continue,
            None => {}
        }
        if same {
            known = true;
        } else if recorded.algorithm() == key.algorithm() && changed.is_none() {
            changed = Some(line);
        }
    }
    match (known, changed) {
        (true, _) => HostKey::Known,
        (false, Some(line)) => HostKey::Changed { line },
        (false, None) => HostKey::Unknown,
    }
}

/// Whether a known_hosts host field (comma-separated patterns) names `name`: some pattern
/// matches and no negated one does.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut hit = false;
    for p in patterns.split(',') {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg, name) {
                return false;
            }
        } else if p.starts_with("|1|") {
            hit |= hashed_match(p, name);
        } else if glob(p, name) {
            hit = true;
        }
    }
    hit
}

/// `|1|SALT|HASH`: HMAC-SHA1 of the name under the salt (both base64).
fn hashed_match(entry: &str, name: &str) -> bool {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let mut parts = entry.split('|').skip(2);
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// `*` and `?` wildcards, case-insensitive (host names are).
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((b'?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => {
                n.first().is_some_and(|m| m.eq_ignore_ascii_case(c)) && go(rest, &n[1..])
            }
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The one-line refusal for a host key that is not [`HostKey::Known`].
fn refusal(verdict: &HostKey, name: &str, key: &PublicKey, file: &Path) -> String {
    let fp = key.fingerprint(HashAlg::Sha256);
    let alg = key.algorithm();
    let file = file.display();
    match verdict {
        HostKey::Known => String::new(),
        HostKey::Unknown => format!(
            "sftp server {name}: its host key ({alg} {fp}) is not in known_hosts {file}; nothing was sent — check the fingerprint with the server's admin and add its line (ssh-keyscan output) to that file"
        ),
        HostKey::Changed { line } => format!(
            "sftp server {name}: its host key ({alg} {fp}) does not match line {line} of {file} — the key changed or someone is in between; nothing was sent — if the server really got a new key, replace that line"
        ),
        HostKey::Revoked { line } => format!(
            "sftp server {name}: its host key ({alg} {fp}) is revoked at line {line} of {file}; nothing was sent"
        ),
    }
}

/// Checks the server's key during the handshake; a refusal's reason is kept for the error.
pub(super) struct Checker {
    pub host: String,
    pub port: u16,
    pub known_hosts: PathBuf,
    pub refused: Arc<Mutex<Option<String>>>,
}

impl Checker {
    fn refuse(&self, why: String) -> std::result::Result<bool, russh::Error> {
        if let Ok(mut r) = self.refused.lock() {
            *r = Some(why);
        }
        Ok(false)
    }
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let name = known_hosts_name(&self.host, self.port);
        let key = match server {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return self.refuse(format!(
                    "sftp server {name}: it offered a host certificate, which sp does not accept; nothing was sent — configure the server to offer its plain host key"
                ));
            }
        };
        let text = match std::fs::read_to_string(&self.known_hosts) {
            Ok(t) => t,
            Err(e) => {
                return self.refuse(format!(
                    "sftp server {name}: cannot read known_hosts {}: {e}; nothing was sent",
                    self.known_hosts.display()
                ))
            }
        };
        match check_known_hosts(&text, &self.host, self.port, key) {
            HostKey::Known => Ok(true),
            v => {
                let why = refusal(&v, &name, key, &self.known_hosts);
                self.refuse(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAICtmGtiljDQMjCmEwubiNnnSuF7GoYm3KB6WM/Q/yswe";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    #[test]
    fn known_hosts_plain_and_port() {
        let a = key(KEY_A);
        let text = format!("# comment\n\n[127.0.0.1]:2222 ssh-ed25519 {KEY_A} rig\n");
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 2222, &a),
            HostKey::Known
        );
        // Another port is another server.
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 22, &a),
            HostKey::Unknown
        );
        assert_eq!(
            check_known_hosts("", "127.0.0.1", 2222, &a),
            HostKey::Unknown
        );
        let text = format!("backup.example.org,10.0.0.9 ssh-ed25519 {KEY_A}\n");
        assert_eq!(check_known_hosts(&text, "10.0.0.9", 22, &a), HostKey::Known);
        assert_eq!(
            check_known_hosts(&text, "BACKUP.example.org", 22, &a),
            HostKey::Known
        );
    }

    #[test]
    fn known_hosts_changed_and_revoked() {
        let (a, b) = (key(KEY_A), key(KEY_B));
        let text = format!("h ssh-ed25519 {KEY_B}\n");
        assert_eq!(
            check_known_hosts(&text, "h", 22, &a),
            HostKey::Changed { line: 1 }
        );
        assert_eq!(check_known_hosts(&text, "h", 22, &b), HostKey::Known);
        // Any line with the key makes it known (rotation: old and new listed).
        let text = format!("h ssh-ed25519 {KEY_B}\nh ssh-ed25519 {KEY_A}\n");
        assert_eq!(check_known_hosts(&text, "h", 22, &a), HostKey::Known);
        let text = format!("h ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}\n");
        assert_eq!(
            check_known_hosts(&text, "h", 22, &a),
            HostKey::Revoked { line: 2 }
        );
        // A certificate authority line vouches for nothing here.
        let text = format!("@cert-authority * ssh-ed25519 {KEY_A}\n");
        assert_eq!(check_known_hosts(&text, "h", 22, &a), HostKey::Unknown);
        // Garbage lines are skipped, not fatal.
        let text = format!("h ssh-ed25519 !!!notbase64\nh\nh ssh-ed25519 {KEY_A}\n");
        assert_eq!(check_known_hosts(&text, "h", 22, &a), HostKey::Known);
    }

    #[test]
    fn known_hosts_patterns() {
        let a = key(KEY_A);
        let text = format!("*.example.org,!evil.example.org ssh-ed25519 {KEY_A}\n");
        assert_eq!(
            check_known_hosts(&text, "b1.example.org", 22, &a),
            HostKey::Known
        );
        assert_eq!(
            check_known_hosts(&text, "evil.example.org", 22, &a),
            HostKey::Unknown
        );
        assert_eq!(
            check_known_hosts(&text, "example.org", 22, &a),
            HostKey::Unknown
        );
        let text = format!("10.0.0.? ssh-ed25519 {KEY_A}\n");
        assert_eq!(check_known_hosts(&text, "10.0.0.7", 22, &a), HostKey::Known);
        assert_eq!(
            check_known_hosts(&text, "10.0.0.17", 22, &a),
            HostKey::Unknown
        );
    }

    #[test]
    fn known_hosts_hashed() {
        use base64::Engine as _;
        use hmac::{KeyInit, Mac};
        let a = key(KEY_A);
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[backup.example.org]:2200");
        let b64 = base64::engine::general_purpose::STANDARD;
        let entry = format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        let text = format!("{entry} ssh-ed25519 {KEY_A}\n");
        assert_eq!(
            check_known_hosts(&text, "backup.example.org", 2200, &a),
            HostKey::Known
        );
        assert_eq!(
            check_known_hosts(&text, "backup.example.org", 22, &a),
            HostKey::Unknown
        );
    }

    #[test]
    fn refusals_are_one_line_and_name_the_host() {
        let a = key(KEY_A);
        for v in [
            HostKey::Unknown,
            HostKey::Changed { line: 3 },
            HostKey::Revoked { line: 1 },
        ] {
            let m = refusal(&v, "[127.0.0.1]:2222", &a, Path::new("/etc/sp/known_hosts"));
            assert!(!m.contains('\n'), "{m}");
            assert!(m.contains("[127.0.0.1]:2222"), "{m}");
            assert!(m.contains("SHA256:"), "{m}");
        }
    }
}
