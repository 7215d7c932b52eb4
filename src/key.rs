//! The host's snapshot key: an ed25519 key pair that signs every manifest sp writes, so that
//! `verify`, `restore` and `drill` can tell a snapshot this host (or another trusted host)
//! wrote from one anybody could assemble — a checksum anyone can recompute authenticates
//! nothing.
//!
//! ```text
//! STATE_DIR/keys/            0700
//!   snapshot.key             0600  the secret key: `sp-ed25519-secret:BASE64`
//!   trusted.pub              0600  public keys of earlier (rotated) keys, one per line
//! ```
//!
//! The key lives outside the snapshots, and a copy belongs off the host (`sp key export`):
//! a new host trusts the old one's snapshots once given its key (`--key FILE`, `sp key
//! import FILE`, or `trusted_keys` in the config).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::error::{Error, Result};

const PUBLIC_PREFIX: &str = "sp-ed25519:";
const SECRET_PREFIX: &str = "sp-ed25519-secret:";
const SECRET_FILE: &str = "snapshot.key";
const TRUSTED_FILE: &str = "trusted.pub";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Where the host's keys live.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("keys")
}

/// A public key, written `sp-ed25519:BASE64`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", b64().encode(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl PublicKey {
    /// Parses `sp-ed25519:BASE64`.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let bad = || {
            Error::Invalid(format!(
                "{:?} is not an sp public key (sp-ed25519:BASE64, as `sp key show` prints)",
                crate::site::one_line(text)
                    .chars()
                    .take(60)
                    .collect::<String>()
            ))
        };
        let raw = text.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = b64()
            .decode(raw)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad())
    }

    /// Short form for messages: the first 12 characters of the key.
    pub fn short(&self) -> String {
        let s = self.to_string();
        format!("{}…", &s[..PUBLIC_PREFIX.len() + 12])
    }
}

/// The host's secret key. Never printed, logged or serialized except by [`HostKey::export`].
pub struct HostKey(SigningKey);

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey({})", self.public())
    }
}

impl HostKey {
    pub fn generate() -> HostKey {
        let seed: [u8; 32] = rand::random();
        HostKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The secret key file's text.
    pub fn export(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", b64().encode(self.0.to_bytes()))
    }

    /// Parses a secret key file's text.
    pub fn parse(text: &str) -> Result<HostKey> {
        let bad = || {
            Error::Invalid(
                "not an sp secret key (sp-ed25519-secret:BASE64, as `sp key export` writes)".into(),
            )
        };
        let raw = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = b64()
            .decode(raw)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(HostKey(SigningKey::from_bytes(&bytes)))
    }

    /// A signature of `message`, as the text of a `manifest.json.sig` file.
    pub fn sign(&self, message: &[u8]) -> String {
        let sig = self.0.sign(message);
        format!("{} {}\n", self.public(), b64().encode(sig.to_bytes()))
    }

    /// The host's key, if it has one.
    pub fn load(state_dir: &Path) -> Result<Option<HostKey>> {
        let path = dir(state_dir).join(SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => HostKey::parse(&text)
                .map(Some)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io_path("read", &path, e)),
        }
    }

    /// The host's key, made (and stored, 0600) if it has none yet; true when it was made.
    pub fn load_or_create(state_dir: &Path) -> Result<(HostKey, bool)> {
        if let Some(k) = HostKey::load(state_dir)? {
            return Ok((k, false));
        }
        let k = HostKey::generate();
        k.store(state_dir)?;
        Ok((k, true))
    }

    /// Writes this key as the host's key (0600 in a 0700 directory).
    pub fn store(&self, state_dir: &Path) -> Result<()> {
        let d = dir(state_dir);
        std::fs::create_dir_all(&d).map_err(|e| Error::io_path("create", &d, e))?;
        crate::fsutil::chmod(&d, 0o700)?;
        crate::fsutil::write_atomic(&d.join(SECRET_FILE), self.export().as_bytes(), 0o600)
    }
}

/// Keys whose signatures a command accepts: the host's own, its earlier ones, the config's
/// `trusted_keys` and any `--key FILE`.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pub keys: Vec<PublicKey>,
}

impl Keyring {
    /// The host's keys (own and earlier) plus `trusted` (config) and the key `files`.
    pub fn load(state_dir: &Path, trusted: &[String], files: &[PathBuf]) -> Result<Keyring> {
        let mut ring = Keyring::default();
        if let Some(k) = HostKey::load(state_dir)? {
            ring.add(k.public());
        }
        let path = dir(state_dir).join(TRUSTED_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for l in text.lines().filter(|l| !l.trim().is_empty()) {
                    ring.add(
                        PublicKey::parse(l)
                            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?,
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io_path("read", &path, e)),
        }
        for t in trusted {
            ring.add(
                PublicKey::parse(t).map_err(|e| Error::Invalid(format!("trusted_keys: {e}")))?,
            );
        }
        for f in files {
            ring.add(read_key_file(f)?);
        }
        Ok(ring)
    }

    fn add(&mut self, k: PublicKey) {
        if !self.keys.contains(&k) {
            self.keys.push(k);
        }
    }

    /// Checks `sig_text` (a `manifest.json.sig` file) against `message`.
    pub fn check(&self, message: &[u8], sig_text: &str) -> std::result::Result<PublicKey, Refusal> {
        let mut it = sig_text.split_whitespace();
        let (Some(key), Some(sig), None) = (it.next(), it.next(), it.next()) else {
            return Err(Refusal::Malformed);
        };
        let key = PublicKey::parse(key).map_err(|_| Refusal::Malformed)?;
        let sig: [u8; 64] = b64()
            .decode(sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(Refusal::Malformed)?;
        if !self.keys.contains(&key) {
            return Err(Refusal::Untrusted(key.to_string()));
        }
        key.0
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| Refusal::BadSignature)?;
        Ok(key)
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    /// Signed by this key (`sp-ed25519:…`), which is not trusted here.
    Untrusted(String),
    BadSignature,
}

/// A key file given with `--key`: a public key, or a secret key (its public half is used).
pub fn read_key_file(path: &Path) -> Result<PublicKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io_path("read", path, e))?;
    let t = text.trim();
    let parsed = if t.starts_with(SECRET_PREFIX) {
        HostKey::parse(t).map(|k| k.public())
    } else {
        PublicKey::parse(t)
    };
    parsed.map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Makes `new` the host's key; the old one's public half stays trusted (older snapshots
/// still verify). Returns the old public key.
pub fn rotate(state_dir: &Path, new: &HostKey) -> Result<Option<PublicKey>> {
    let old = HostKey::load(state_dir)?;
    if let Some(old) = &old {
        let d = dir(state_dir);
        let path = d.join(TRUSTED_FILE);
        let mut text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io_path("read", &path, e)),
        };
        let line = old.public().to_string();
        if !text.lines().any(|l| l.trim() == line) {
            text.push_str(&line);
            text.push('\n');
        }
        crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600)?;
    }
    new.store(state_dir)?;
    Ok(old.map(|k| k.public()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_only_from_a_trusted_key_over_the_same_bytes() {
        let k = HostKey::generate();
        let other = HostKey::generate();
        let ring = Keyring {
            keys: vec![k.public()],
        };
        let sig = k.sign(b"manifest");
        assert_eq!(ring.check(b"manifest", &sig), Ok(k.public()));
        assert_eq!(ring.check(b"manifest!", &sig), Err(Refusal::BadSignature));
        assert_eq!(
            ring.check(b"manifest", &other.sign(b"manifest")),
            Err(Refusal::Untrusted(other.public().to_string()))
        );
        // Someone else's signature under our key's name.
        let forged = format!(
            "{} {}",
            k.public(),
            other.sign(b"manifest").split_whitespace().nth(1).unwrap()
        );
        assert_eq!(ring.check(b"manifest", &forged), Err(Refusal::BadSignature));
        assert_eq!(ring.check(b"manifest", "garbage"), Err(Refusal::Malformed));
    }

    #[test]
    fn keys_round_trip_through_their_text() {
        let k = HostKey::generate();
        let back = HostKey::parse(&k.export()).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(
            PublicKey::parse(&k.public().to_string()).unwrap(),
            k.public()
        );
        assert!(PublicKey::parse("sp-ed25519:AAAA").is_err());
        assert!(HostKey::parse(&k.public().to_string()).is_err());
        assert!(!format!("{k:?}").contains(&k.export()[SECRET_PREFIX.len()..]));
    }

    #[test]
    fn rotation_keeps_the_old_key_trusted() {
        let d = tempfile::tempdir().unwrap();
        let (first, made) = HostKey::load_or_create(d.path()).unwrap();
        assert!(made);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir(d.path())), 0o700);
        assert_eq!(mode(&dir(d.path()).join(SECRET_FILE)), 0o600);
        let second = HostKey::generate();
        assert_eq!(rotate(d.path(), &second).unwrap(), Some(first.public()));
        let ring = Keyring::load(d.path(), &[], &[]).unwrap();
        assert_eq!(ring.keys, vec![second.public(), first.public()]);
    }
}
