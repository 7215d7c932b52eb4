//! `sp registry login HOST --username U --password-stdin`: check the credential against the
//! registry, then store it (mode 0600) for every later pull from HOST.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::registry::{validate_host, Credential};

use super::Ctx;

#[derive(Debug, Clone)]
pub struct LoginOpts {
    pub host: String,
    pub username: String,
    /// Read from stdin by the caller; never from argv.
    pub password: String,
    /// Store without asking the registry first.
    pub no_verify: bool,
}

#[derive(Debug, Serialize)]
pub struct LoginReport {
    pub host: String,
    pub username: String,
    pub verified: bool,
    pub stored_in: String,
}

impl std::fmt::Display for LoginReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stored credentials for {}@{} in {}{}",
            self.username,
            self.host,
            self.stored_in,
            if self.verified {
                " (the registry accepted them)"
            } else {
                " (not verified)"
            }
        )
    }
}

/// `sp registry login`.
pub async fn run(ctx: &Ctx, opts: &LoginOpts) -> Result<LoginReport> {
    validate_host(&opts.host)?;
    if opts.username.is_empty() {
        return Err(Error::Invalid("--username must not be empty".into()));
    }
    if opts.password.is_empty() {
        return Err(Error::Invalid(
            "no password on stdin (use --password-stdin with the token piped in)".into(),
        ));
    }
    let cred = Credential {
        username: opts.username.clone(),
        password: opts.password.clone(),
    };
    if !opts.no_verify {
        let host = opts.host.clone();
        let c = cred.clone();
        tokio::task::spawn_blocking(move || verify(&host, &c))
            .await
            .map_err(|e| Error::Other(format!("registry check: {e}")))??;
    }
    let _lock = ctx.lock("registry login")?;
    let path = ctx.credentials_path();
    let mut all = ctx.credentials()?;
    all.registries.insert(opts.host.clone(), cred);
    all.save(&path)?;
    Ok(LoginReport {
        host: opts.host.clone(),
        username: opts.username.clone(),
        verified: !opts.no_verify,
        stored_in: path.display().to_string(),
    })
}

/// Loopback registries speak plain HTTP (as Docker assumes); others HTTPS.
fn base_url(host: &str) -> String {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    if h == "localhost" || h.starts_with("127.") || h == "[::1]" {
        format!("http://{host}")
    } else {
        format!("https://{host}")
    }
}

fn basic(c: &Credential) -> String {
    use base64::Engine as _;
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Asks the registry whether it accepts the credential: `/v2/` with basic auth, or the token
/// service it points to (GitLab) with basic auth.
fn verify(host: &str, c: &Credential) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/v2/", base_url(host));
    let unreachable =
        |e: ureq::Error| Error::Other(format!("registry {host} did not answer at {url}: {e}"));
    let resp = agent
        .get(&url)
        .header("Authorization", basic(c))
        .call()
        .map_err(unreachable)?;
    let status = resp.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if status == 401 && challenge.to_ascii_lowercase().starts_with("bearer") {
        let realm = param(&challenge, "realm").ok_or_else(|| {
            Error::Other(format!(
                "registry {host} sent a token challenge without a realm"
            ))
        })?;
        let service = param(&challenge, "service").unwrap_or_default();
        let token_url = format!("{realm}?service={}&account={}", service, c.username);
        let r = agent
            .get(&token_url)
            .header("Authorization", basic(c))
            .call()
            .map_err(|e| Error::Other(format!("token service {realm} did not answer: {e}")))?;
        if r.status().as_u16() == 200 {
            return Ok(());
        }
        return Err(Error::Invalid(format!(
            "registry {host} refused the credentials for {} (token service answered {})",
            c.username,
            r.status().as_u16()
        )));
    }
    if status == 401 || status == 403 {
        return Err(Error::Invalid(format!(
            "registry {host} refused the credentials for {}",
            c.username
        )));
    }
    Err(Error::Other(format!(
        "registry {host} answered {status} at {url}"
    )))
}

/// A `key="value"` parameter of a WWW-Authenticate header.
fn param(header: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=\"");
    let start = header.find(&pat)? + pat.len();
    let end = header[start..].find('"')? + start;
    Some(header[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gitlab_style_challenges() {
        let h = r#"Bearer realm="https://gitlab.example.com/jwt/auth",service="container_registry",scope="registry:catalog:*""#;
        assert_eq!(
            param(h, "realm").as_deref(),
            Some("https://gitlab.example.com/jwt/auth")
        );
        assert_eq!(param(h, "service").as_deref(), Some("container_registry"));
        assert_eq!(param(h, "nope"), None);
    }

    #[test]
    fn loopback_registries_use_http() {
        assert_eq!(base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(
            base_url("registry.gitlab.com"),
            "https://registry.gitlab.com"
        );
    }
}
