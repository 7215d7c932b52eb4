//! The certificates the proxy holds, read from its data directory on the host (Caddy keeps
//! `caddy/certificates/ISSUER-DIR/DOMAIN/DOMAIN.crt`), for `sp proxy status`.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One certificate Caddy stores for a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The issuer's common name (or its whole name when it has none).
    pub issuer: String,
    /// RFC 3339, to the second.
    pub not_after: String,
    /// Hex, lower case.
    pub serial: String,
}

/// Reads the first certificate of a PEM file's text.
pub fn parse_pem(text: &[u8]) -> Option<CertInfo> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text).ok()?;
    let (_, cert) = X509Certificate::from_der(&pem.contents).ok()?;
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok().map(str::to_string))
        .unwrap_or_else(|| cert.issuer().to_string());
    let not_after = DateTime::<Utc>::from_timestamp(cert.validity().not_after.timestamp(), 0)?
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    Some(CertInfo {
        issuer,
        not_after,
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

/// The certificate Caddy holds for `domain` under `data_dir` (the newest-expiring one if
/// several issuers have one), or None.
pub fn find(data_dir: &Path, domain: &str) -> Option<CertInfo> {
    let base = data_dir.join("caddy/certificates");
    let mut best: Option<CertInfo> = None;
    for issuer in std::fs::read_dir(base).ok()?.flatten() {
        let file = issuer.path().join(domain).join(format!("{domain}.crt"));
        // Only regular files: never follow a link out of the data directory.
        let Ok(meta) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        if !meta.is_file() || meta.len() > 1 << 20 {
            continue;
        }
        let Some(info) = std::fs::read(&file).ok().and_then(|t| parse_pem(&t)) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| info.not_after > b.not_after) {
            best = Some(info);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    // A self-signed certificate made with
    // `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1
    //  -subj /CN=sp-test-issuer -set_serial 0x1234abcd`.
    const PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIEEjSrzTAKBggqhkjOPQQDAjAZMRcwFQYDVQQDDA5zcC10
ZXN0LWlzc3VlcjAeFw0yNjEyMDExMDQ2NDdaFw0yNjEyMDIxMDQ2NDdaMBkxFzAV
BgNVBAMMDnNwLXRlc3QtaXNzdWVyMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
9n729U9QoPM5vdYf9u7pz9nwNzXD3/UqpS35fz+62fOv2SHHbiU+C6lurpRHrkx2
t4ShH468XhmSOg20k7tNGqNTMFEwHQYDVR0OBBYEFAwj9noqlCfItCaLLzJ3NuIn
MFrqMB8GA1UdIwQYMBaAFAwj9noqlCfItCaLLzJ3NuInMFrqMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAPRbtbkzXE8LvkvSdqoYlzKn/CaKIN7Z
Q5DC9Rqppl2FAiBxv4uophGeG/DoadxZAjp6XtxV7Hxp5iDxCRaGqeLoDA==
-----END CERTIFICATE-----
";

    #[test]
    fn reads_issuer_expiry_and_serial() {
        let info = parse_pem(PEM.as_bytes()).expect("parses");
        assert_eq!(info.issuer, "sp-test-issuer");
        assert_eq!(info.serial, "1234abcd");
        assert_eq!(info.not_after, "2026-12-02T10:46:47Z");
        assert_eq!(parse_pem(b"not a certificate"), None);
    }

    #[test]
    fn finds_the_domains_file_and_ignores_links() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("caddy/certificates/ca-example-dir/a.test");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(find(d.path(), "a.test"), None);
        std::fs::write(dir.join("a.test.crt"), PEM).unwrap();
        assert_eq!(find(d.path(), "a.test").unwrap().serial, "1234abcd");
        let other = d.path().join("caddy/certificates/x/b.test");
        std::fs::create_dir_all(&other).unwrap();
        std::os::unix::fs::symlink(dir.join("a.test.crt"), other.join("b.test.crt")).unwrap();
        assert_eq!(find(d.path(), "b.test"), None);
    }
}
