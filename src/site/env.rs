//! Environment variables of a site: which names are allowed, and `K=V` from the command line.

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
