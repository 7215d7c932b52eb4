//! `sp key show|rotate|export|import`: the host key that signs every snapshot's manifest
//! (see [`crate::key`]). Rotation and import take the host lock: a backup signing at the same
//! moment must not see half a key. `sp key generate --output FILE`: a new age identity that
//! decrypts off-host snapshots (see [`crate::crypt`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::key::{self, HostKey};

use super::Ctx;

#[derive(Debug, Serialize)]
pub struct KeyReport {
    /// This host's public key (`sp-ed25519:…`); none until `sp init` or the first backup.
    pub public_key: Option<String>,
    /// Where the secret key is kept.
    pub secret_key_file: PathBuf,
    /// Other keys whose snapshots are accepted: earlier keys of this host, `trusted_keys`.
    pub trusted: Vec<String>,
    /// What the command changed.
    pub changed: Vec<String>,
}

impl std::fmt::Display for KeyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.changed {
            writeln!(f, "{c}")?;
        }
        match &self.public_key {
            Some(k) => writeln!(f, "public key: {k}")?,
            None => writeln!(
                f,
                "no key yet: `sp init` or the first `sp backup` makes one"
            )?,
        }
        write!(f, "secret key: {}", self.secret_key_file.display())?;
        for t in &self.trusted {
            write!(f, "\nalso trusted: {t}")?;
        }
        Ok(())
    }
}

fn report(ctx: &Ctx, changed: Vec<String>) -> Result<KeyReport> {
    let own = HostKey::load(&ctx.config.state_dir)?.map(|k| k.public());
    let ring = ctx.keyring(&[])?;
    Ok(KeyReport {
        public_key: own.map(|k| k.to_string()),
        secret_key_file: key::dir(&ctx.config.state_dir).join("snapshot.key"),
        trusted: ring
            .keys
            .iter()
            .filter(|k| Some(**k) != own)
            .map(|k| k.to_string())
            .collect(),
        changed,
    })
}

/// `sp key show`.
pub fn show(ctx: &Ctx) -> Result<KeyReport> {
    report(ctx, Vec::new())
}

/// `sp key rotate`: a new key signs from now on; the old one's public half stays trusted.
pub fn rotate(ctx: &Ctx) -> Result<KeyReport> {
    let _lock = ctx.lock("key rotate")?;
    let new = HostKey::generate();
    let old = key::rotate(&ctx.config.state_dir, &new)?;
    let mut changed = vec![format!("new key {}", new.public())];
    if let Some(o) = old {
        changed.push(format!(
            "the old key {} still verifies older snapshots",
            o.short()
        ));
    }
    changed.push("keep a copy of the new key off this host: `sp key export`".into());
    report(ctx, changed)
}

/// `sp key export [--public]`: the key file's text.
pub fn export(ctx: &Ctx, public: bool) -> Result<String> {
    let k = HostKey::load(&ctx.config.state_dir)?.ok_or_else(|| {
        Error::NotFound("this host has no snapshot key yet: run `sp init` or `sp backup`".into())
    })?;
    Ok(if public {
        format!("{}\n", k.public())
    } else {
        k.export()
    })
}

/// `sp key import FILE [--replace]`: the old host's secret key becomes this host's, so its
/// snapshots verify here and new ones are signed the same way.
pub fn import(ctx: &Ctx, file: &Path, replace: bool) -> Result<KeyReport> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io_path("read", file, e))?;
    let new =
        HostKey::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", file.display())))?;
    let _lock = ctx.lock("key import")?;
    let current = HostKey::load(&ctx.config.state_dir)?;
    if let Some(c) = &current {
        if c.public() == new.public() {
            return report(ctx, vec!["this key is already the host's key".into()]);
        }
        if !replace {
            return Err(Error::Conflict(format!(
                "this host already has a key ({}); pass --replace to make the imported one the host's key (the current one stays trusted)",
                c.public().short()
            )));
        }
    }
    key::rotate(&ctx.config.state_dir, &new)?;
    report(ctx, vec![format!("imported key {}", new.public())])
}

/// What `sp key generate` made.
#[derive(Debug, Serialize)]
pub struct GeneratedIdentity {
    pub identity_file: PathBuf,
    /// `age1…`: goes into `[encryption] recipients`.
    pub recipient: String,
}

impl std::fmt::Display for GeneratedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "wrote the age identity {} (mode 0600)",
            self.identity_file.display()
        )?;
        writeln!(f, "recipient: {}", self.recipient)?;
        write!(
            f,
            "put the recipient into [encryption] recipients; keep the identity OFF this host (a password manager, a safe): it decrypts every off-host snapshot, and `sp restore --from NAME --identity FILE` needs it after the host is gone"
        )
    }
}

/// `sp key generate --output FILE`: a new age x25519 identity, written 0600 to a new file.
pub fn generate(output: &Path) -> Result<GeneratedIdentity> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (secret, recipient) = crate::crypt::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Conflict(format!(
                    "{} exists; sp never overwrites an identity (snapshots encrypted to it would be lost): pick another --output",
                    output.display()
                ))
            } else {
                Error::io_path("create", output, e)
            }
        })?;
    let text = format!(
        "# sp age identity, made {}\n# recipient: {recipient}\n{secret}\n",
        chrono::Utc::now().to_rfc3339()
    );
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io_path("write", output, e))?;
    Ok(GeneratedIdentity {
        identity_file: output.to_path_buf(),
        recipient,
    })
}
