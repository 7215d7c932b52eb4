//! Container image references.

use crate::error::{Error, Result};

/// A parsed container image reference: `[registry[:port]/]path[:tag][@sha256:HEX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), `docker.io` when the reference names none.
    pub registry: String,
    /// Repository path inside the registry.
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:...` when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and validates a reference, following the grammar of the distribution project.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Err(Error::Invalid(format!(
                "invalid image reference {text:?}: {why}"
            )))
        };
        if text.is_empty() || text.len() > 255 + 72 {
            return bad("empty or too long");
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                let hex = d.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64
                    || !hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return bad("digest must be sha256: followed by 64 lowercase hex digits");
                }
                (r, Some(d.to_string()))
            }
            None => (text, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.starts_with('_'))
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return bad("tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let registry = if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            let host = parts.remove(0);
            if !valid_registry_host(host) {
                return bad("registry host must be a hostname or IP with an optional :port");
            }
            host.to_string()
        } else {
            "docker.io".to_string()
        };
        for comp in &parts {
            if !valid_path_component(comp) {
                return bad("path components must be lowercase letters and digits, separated by '.', '_', '__' or '-'");
            }
        }
        let mut path = parts.join("/");
        if registry == "docker.io" && parts.len() == 1 {
            path = format!("library/{path}");
        }
        Ok(ImageRef {
            registry,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `registry/path` — the repository, without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }

    /// The same repository pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository())
    }

    /// The tag to pull when no digest is given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_registry_host(host: &str) -> bool {
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().map(|n| n == 0).unwrap_or(true) {
            return false;
        }
    }
    !h.is_empty()
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_path_component(comp: &str) -> bool {
    if comp.is_empty() {
        return false;
    }
    let b = comp.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // separators: '.', '_', '__', or one or more '-'
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        let r = ImageRef::parse("registry.gitlab.com/acme/blog:main").unwrap();
        assert_eq!(r.registry, "registry.gitlab.com");
        assert_eq!(r.path, "acme/blog");
        assert_eq!(r.tag.as_deref(), Some("main"));
        let r = ImageRef::parse("127.0.0.1:5000/sp-test/site:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository(), "127.0.0.1:5000/sp-test/site");
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.repository(), "docker.io/library/nginx");
        assert_eq!(r.tag_or_latest(), "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.pinned(&d), format!("localhost:5000/x@{d}"));
        for bad in [
            "",
            "UPPER/case",
            "a//b",
            "x:",
            "x:-tag",
            "x@sha256:abc",
            "host:0/x",
            "a b",
            "x/../y",
            "reg.io/x:tag with space",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
