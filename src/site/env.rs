//! Environment variables of a site: which names are allowed, and `K=V` from the command line.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_env_is_checked_like_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("env");
        let mut e = SecretEnv::default();
        e.0.insert("API_KEY".into(), "s3cr=t\n\"x\"".into());
        std::fs::write(&p, e.to_toml()).unwrap();
        assert_eq!(SecretEnv::load(&p).unwrap(), e);
        for bad in [
            "DATABASE_URL = \"x\"\n",
            "\"1A\" = \"x\"\n",
            "A = 1\n",
            "A = \"a\\u0000b\"\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(SecretEnv::load(&p).is_err(), "{bad}");
        }
        assert_eq!(
            SecretEnv::load(&dir.path().join("none")).unwrap(),
            SecretEnv::default()
        );
    }

    #[test]
    fn env_pairs() {
        assert_eq!(
            parse_env_pair("A_1=x=y").unwrap(),
            ("A_1".into(), "x=y".into())
        );
        assert!(parse_env_pair("1A=x").is_err());
        assert!(parse_env_pair("A-B=x").is_err());
        assert!(parse_env_pair("novalue").is_err());
        assert!(parse_env_pair("DATABASE_URL=x").is_err());
    }
}

/// The env values a site keeps out of `site.toml` (`secrets/env`, root-only, mode 0600): set
/// with `sp site env NAME set --stdin`, shown masked unless `--reveal`. A TOML table of
/// `KEY = "value"`. It travels in snapshots, so it is read as hostile input (a link, a huge
/// file, a bad or reserved key is refused).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretEnv(pub BTreeMap<String, String>);

/// The largest secrets file sp reads.
pub const SECRET_ENV_MAX_BYTES: u64 = 1 << 20;

impl SecretEnv {
    /// Reads the file; none is an empty set.
    pub fn load(path: &Path) -> Result<SecretEnv> {
        let Some(bytes) = super::read_bounded(path, SECRET_ENV_MAX_BYTES)? else {
            return Ok(SecretEnv::default());
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Invalid(format!("{}: not UTF-8", path.display())))?;
        let map: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{}: {}",
                path.display(),
                super::toml_error(&text, &e)
            ))
        })?;
        for (k, v) in &map {
            check_entry(k, v).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        }
        Ok(SecretEnv(map))
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        format!(
            "# written by sp (`sp site env`): env values kept out of site.toml. Do not edit.\n{}",
            toml::to_string(&self.0).unwrap_or_default()
        )
    }
}

/// Checks one env entry: a valid key sp does not set itself, a value without NUL (which no
/// process environment can hold).
pub fn check_entry(key: &str, value: &str) -> Result<()> {
    validate_env_key(key)?;
    if RESERVED_ENV.contains(&key) {
        return Err(Error::Invalid(format!(
            "env {key}: sp sets this variable itself"
        )));
    }
    if value.contains('\0') {
        return Err(Error::Invalid(format!(
            "env {key}: the value holds a NUL byte, which no environment can carry"
        )));
    }
    Ok(())
}
