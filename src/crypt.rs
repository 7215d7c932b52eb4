//! age encryption of what leaves the host: x25519 recipients (`[encryption] recipients`) to
//! encrypt, an identity file (`sp key generate`, `--identity FILE`) to decrypt. Both sides
//! stream: [`Recipients::encrypt`] wraps a writer, [`Identity::decrypt`] wraps a reader, so
//! memory stays bounded whatever the file size. age authenticates every 64 KiB chunk, so a
//! changed byte fails the read that reaches it.

use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use crate::error::{Error, Result};

/// The first bytes of every age file (binary format).
pub const MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Public keys (`age1…`) files are encrypted to; any one of their identities decrypts.
#[derive(Clone)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipients({})", self.0.len())
    }
}

impl Recipients {
    /// Parses `age1…` recipients; an empty list means no encryption.
    pub fn parse(list: &[String]) -> std::result::Result<Recipients, String> {
        let mut out = Vec::new();
        for r in list {
            out.push(age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                format!("encryption.recipients: {r:?} is not an age x25519 recipient (age1…): {e}")
            })?);
        }
        Ok(Recipients(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A writer that encrypts into `out`; call [`Encrypting::finish`] to write the last chunk.
    pub fn encrypt<W: Write>(&self, out: W) -> Result<Encrypting<W>> {
        let enc = age::Encryptor::with_recipients(self.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::Other(format!("age: {e}")))?;
        let w = enc
            .wrap_output(out)
            .map_err(|e| Error::io("start age encryption", e))?;
        Ok(Encrypting(w))
    }
}

/// An encrypting writer (see [`Recipients::encrypt`]).
pub struct Encrypting<W: Write>(age::stream::StreamWriter<W>);

impl<W: Write> Write for Encrypting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Encrypting<W> {
    /// Writes the final chunk and returns the inner writer; without it the file is truncated
    /// (and refused by any reader).
    pub fn finish(self) -> std::io::Result<W> {
        self.0.finish()
    }
}

/// A secret age identity (`AGE-SECRET-KEY-1…`), read from a file.
pub struct Identity(Vec<Box<dyn age::Identity>>);

impl Identity {
    /// Reads an identity file (as `sp key generate` or `age-keygen` write it).
    pub fn load(path: &Path) -> Result<Identity> {
        let file = std::fs::File::open(path).map_err(|e| Error::io_path("read", path, e))?;
        let ids = age::IdentityFile::from_buffer(std::io::BufReader::new(file))
            .map_err(|e| {
                Error::Invalid(format!(
                    "{}: not an age identity file ({e})",
                    path.display()
                ))
            })?
            .into_identities()
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        if ids.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: holds no age identity (AGE-SECRET-KEY-1…)",
                path.display()
            )));
        }
        Ok(Identity(ids))
    }

    /// A reader of the plaintext of the age file `input`. A wrong identity fails here, a
    /// changed byte fails the read that reaches it.
    pub fn decrypt<R: Read>(&self, input: R) -> std::result::Result<impl Read, String> {
        let d = age::Decryptor::new(input).map_err(|e| format!("not age ciphertext: {e}"))?;
        d.decrypt(self.0.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => {
                    "the identity does not decrypt it (encrypted to other recipients)".to_string()
                }
                other => format!("cannot decrypt: {other}"),
            })
    }
}

/// A new identity: its secret text (`AGE-SECRET-KEY-1…`) and its recipient (`age1…`).
pub fn generate() -> (String, String) {
    let id = age::x25519::Identity::generate();
    (
        id.to_string().expose_secret().to_string(),
        id.to_public().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (tempfile::TempDir, Identity, Recipients) {
        let (secret, public) = generate();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id");
        std::fs::write(&p, format!("# test\n{secret}\n")).unwrap();
        (
            dir,
            Identity::load(&p).unwrap(),
            Recipients::parse(&[public]).unwrap(),
        )
    }

    #[test]
    fn round_trip_is_ciphertext_and_back() {
        let (_d, id, rcpt) = pair();
        let plain = b"marker-PLAINTEXT-1234".repeat(10_000);
        let mut w = rcpt.encrypt(Vec::new()).unwrap();
        w.write_all(&plain).unwrap();
        let ct = w.finish().unwrap();
        assert!(ct.starts_with(MAGIC));
        assert!(memchr::memmem::find(&ct, b"marker-PLAINTEXT").is_none());
        let mut back = Vec::new();
        id.decrypt(&ct[..]).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn changed_byte_or_wrong_key_fails() {
        let (_d, id, rcpt) = pair();
        let mut w = rcpt.encrypt(Vec::new()).unwrap();
        w.write_all(&vec![7u8; 200_000]).unwrap();
        let mut ct = w.finish().unwrap();
        let n = ct.len();
        ct[n / 2] ^= 1;
        let mut back = Vec::new();
        assert!(id.decrypt(&ct[..]).unwrap().read_to_end(&mut back).is_err());
        let (_d2, other, _) = pair();
        let err = other.decrypt(&ct[..]).err().unwrap();
        assert!(err.contains("does not decrypt"), "{err}");
    }

    #[test]
    fn bad_recipient_and_identity_are_refused() {
        let e = Recipients::parse(&["age1nope".into()]).unwrap_err();
        assert!(e.contains("encryption.recipients"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id");
        std::fs::write(&p, "hello\n").unwrap();
        assert!(Identity::load(&p).is_err());
    }
}
