//! The HTTPS front door's configuration, as a pure builder (unit-tested for exact output): the
//! Caddyfile the proxy container runs, made from the sites' routes.
//!
//! One readable block per site with domains: every domain the site lists (a `www.` alias only
//! if it is listed) → `reverse_proxy` to the site's current container on its network. Caddy's
//! automatic HTTPS gets each domain a certificate from `acme_ca` and answers plain HTTP on it
//! with a redirect to HTTPS.
//!
//! Caddy's admin API stays on the proxy container's own loopback ([`ADMIN_ADDRESS`]), so no
//! site on a network the proxy joins can reach it; sp reloads through it from inside the
//! container (`docker exec PROXY caddy reload --config F --adapter caddyfile`), which adapts
//! and loads the new config as one step: a config Caddy rejects leaves the running one in
//! place. The container itself is [`container`]; the certificates it holds, [`cert`].
//!
//! Every value written into the file is one Caddyfile token: anything that could end a token,
//! open a block, start a comment, quote, escape or name a placeholder is refused, so no spec
//! can inject configuration (see [`check_token`]).

pub mod cert;
pub mod container;

use std::collections::BTreeMap;

use crate::config::ProxyConfig;
use crate::error::{Error, Result};

pub use container::{proxy_container_spec, proxy_name, proxy_network, ProxyPlan};

/// Where Caddy's admin API listens: inside the proxy container only.
pub const ADMIN_ADDRESS: &str = "localhost:2019";

/// Where the proxy container sees `proxy.acme_ca_root` (the host file, bind-mounted read-only).
pub const ACME_CA_ROOT_PATH: &str = "/etc/caddy/acme-ca-root.pem";

/// The global options of the Caddyfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// Contact address given to the ACME CA.
    pub email: Option<String>,
    /// ACME directory URL (https://).
    pub acme_ca: String,
    /// Path, inside the proxy container, of a CA certificate to trust for the ACME server.
    pub acme_ca_root: Option<String>,
    /// The host admin's own Caddyfile fragment (`proxy.extra`), appended as is.
    pub extra: Option<String>,
}

impl Global {
    /// The global options for `[proxy]`: its `acme_ca_root` is mounted at [`ACME_CA_ROOT_PATH`].
    pub fn from_config(cfg: &ProxyConfig) -> Self {
        Global {
            email: cfg.email.clone(),
            acme_ca: cfg.acme_ca.clone(),
            acme_ca_root: cfg
                .acme_ca_root
                .as_ref()
                .map(|_| ACME_CA_ROOT_PATH.to_string()),
            extra: None,
        }
    }
}

/// Where one site's domains go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub site: String,
    /// Every domain the site answers on, as its spec lists them.
    pub domains: Vec<String>,
    /// `CONTAINER-NAME:PORT` of the site's current container, on a network the proxy joins.
    pub upstream: String,
}

/// Refuses a value that is not exactly one plain Caddyfile token: empty, or holding whitespace
/// or a control character, `{` `}` (blocks and placeholders), `#` (comments), quotes or a
/// backtick, `\` (escapes) or `<` `>` (heredocs).
pub fn check_token(what: &str, text: &str) -> Result<()> {
    let bad = text.is_empty()
        || text.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '{' | '}' | '#' | '"' | '\'' | '`' | '\\' | '<' | '>')
        });
    if bad {
        return Err(Error::Invalid(format!(
            "{what} {text:?} cannot go into the proxy config: it must be one word without whitespace, quotes, '{{', '}}', '#', '\\', '<' or '>'"
        )));
    }
    Ok(())
}

/// `NAME:PORT`: a container name or address and a port 1-65535.
fn check_upstream(site: &str, upstream: &str) -> Result<()> {
    let what = format!("site {site}: upstream");
    check_token(&what, upstream)?;
    let ok = upstream.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host.len() <= 253
            && host.as_bytes()[0].is_ascii_alphanumeric()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !ok {
        return Err(Error::Invalid(format!(
            "{what} {upstream:?}: must be CONTAINER:PORT, like sp-default-blog:8080"
        )));
    }
    Ok(())
}

/// The Caddyfile for `routes`: the global options, then one block per site that has domains,
/// in site-name order. Refuses a value that could change the file's structure, a site named
/// twice, and a domain two sites claim.
pub fn caddyfile(global: &Global, routes: &[Route]) -> Result<String> {
    check_token("proxy.acme_ca", &global.acme_ca)?;
    if !global.acme_ca.starts_with("https://") {
        return Err(Error::Invalid(format!(
            "proxy.acme_ca {:?}: must be an https:// ACME directory URL",
            global.acme_ca
        )));
    }
    if let Some(email) = &global.email {
        check_token("proxy.email", email)?;
    }
    if let Some(root) = &global.acme_ca_root {
        check_token("proxy.acme_ca_root", root)?;
    }

    let mut by_site: BTreeMap<&str, &Route> = BTreeMap::new();
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for r in routes {
        crate::site::validate_name(&r.site)?;
        if by_site.insert(&r.site, r).is_some() {
            return Err(Error::Invalid(format!(
                "site {} has two routes; give each site one",
                r.site
            )));
        }
        for d in &r.domains {
            check_token(&format!("site {}: domain", r.site), d)?;
            crate::site::validate_domain(d)?;
            if let Some(other) = owner.insert(d, &r.site) {
                let (a, b) = if other < r.site.as_str() {
                    (other, r.site.as_str())
                } else {
                    (r.site.as_str(), other)
                };
                return Err(Error::Conflict(format!(
                    "domain {d} is claimed by sites {a} and {b}; remove it from one of them"
                )));
            }
        }
        if !r.domains.is_empty() {
            check_upstream(&r.site, &r.upstream)?;
        }
    }

    let mut out = String::from(
        "# Written by sp from the site specs; sp overwrites it, so do not edit it by hand.\n\
         # Caddy redirects plain HTTP on every domain below to HTTPS (automatic HTTPS).\n",
    );
    out.push_str("{\n");
    out.push_str(&format!("\tadmin {ADMIN_ADDRESS}\n"));
    if let Some(email) = &global.email {
        out.push_str(&format!("\temail {email}\n"));
    }
    out.push_str(&format!("\tacme_ca {}\n", global.acme_ca));
    if let Some(root) = &global.acme_ca_root {
        out.push_str(&format!("\tacme_ca_root {root}\n"));
    }
    out.push_str("}\n");
    for (site, r) in by_site {
        if r.domains.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\n# site {site}\n{} {{\n\treverse_proxy {}\n}}\n",
            r.domains.join(", "),
            r.upstream
        ));
    }
    if let Some(extra) = &global.extra {
        out.push_str("\n# proxy.extra: the host's own fragment, as written\n");
        out.push_str(extra);
        if !extra.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(site: &str, domains: &[&str], upstream: &str) -> Route {
        Route {
            site: site.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            upstream: upstream.into(),
        }
    }

    fn pebble() -> Global {
        Global {
            email: Some("ops@example.com".into()),
            acme_ca: "https://172.17.0.1:14000/dir".into(),
            acme_ca_root: Some(ACME_CA_ROOT_PATH.into()),
            extra: None,
        }
    }

    #[test]
    fn the_hosts_own_fragment_comes_last_as_written() {
        let mut g = pebble();
        g.email = None;
        g.extra = Some("(common) {\n\theader -Server\n}".into());
        let text = caddyfile(&g, &[route("a", &["a.test"], "a:80")]).unwrap();
        assert!(
            text.ends_with(
                "# site a\na.test {\n\treverse_proxy a:80\n}\n\n# proxy.extra: the host's own fragment, as written\n(common) {\n\theader -Server\n}\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn one_block_per_site_with_domains_in_site_order() {
        let routes = [
            route("shop", &["shop.example.com"], "sp-default-shop-web:3000"),
            route("worker", &[], "sp-default-worker-web:8080"),
            route(
                "blog",
                &["blog.example.com", "www.blog.example.com"],
                "sp-default-blog-web:8080",
            ),
        ];
        assert_eq!(
            caddyfile(&pebble(), &routes).unwrap(),
            "# Written by sp from the site specs; sp overwrites it, so do not edit it by hand.\n\
             # Caddy redirects plain HTTP on every domain below to HTTPS (automatic HTTPS).\n\
             {\n\
             \tadmin localhost:2019\n\
             \temail ops@example.com\n\
             \tacme_ca https://172.17.0.1:14000/dir\n\
             \tacme_ca_root /etc/caddy/acme-ca-root.pem\n\
             }\n\
             \n\
             # site blog\n\
             blog.example.com, www.blog.example.com {\n\
             \treverse_proxy sp-default-blog-web:8080\n\
             }\n\
             \n\
             # site shop\n\
             shop.example.com {\n\
             \treverse_proxy sp-default-shop-web:3000\n\
             }\n"
        );
    }

    #[test]
    fn without_routes_only_the_global_options() {
        let global = Global::from_config(&ProxyConfig::default());
        assert_eq!(
            caddyfile(&global, &[]).unwrap(),
            "# Written by sp from the site specs; sp overwrites it, so do not edit it by hand.\n\
             # Caddy redirects plain HTTP on every domain below to HTTPS (automatic HTTPS).\n\
             {\n\
             \tadmin localhost:2019\n\
             \tacme_ca https://acme-v02.api.letsencrypt.org/directory\n\
             }\n"
        );
    }

    #[test]
    fn the_acme_root_is_the_mounted_copy() {
        let cfg = ProxyConfig {
            acme_ca_root: Some("/var/lib/sp-rig/pebble/ca.pem".into()),
            email: Some("a@b.example".into()),
            ..ProxyConfig::default()
        };
        let g = Global::from_config(&cfg);
        assert_eq!(g.acme_ca_root.as_deref(), Some(ACME_CA_ROOT_PATH));
        assert_eq!(g.email.as_deref(), Some("a@b.example"));
    }

    #[test]
    fn injection_is_refused() {
        let up = "sp-default-a-web:8080";
        let attempts = [
            route("a", &["a.test {\n\trespond hi\n}\nb.test"], up),
            route("a", &["a.test b.test"], up),
            route("a", &["a.test#"], up),
            route("a", &["{env.HOME}"], up),
            route(
                "a",
                &["a.test"],
                "x:80\n}\nevil.test {\n\treverse_proxy y:80",
            ),
            route("a", &["a.test"], "{http.request.host}:80"),
            route("a", &["a.test"], "\"x:80\""),
            route("a", &["a.test"], "x:80 y:80"),
            route("a", &["a.test"], "http://x:80"),
            route("a", &["a.test"], "x"),
            route("a\n}", &["a.test"], up),
        ];
        for r in attempts {
            let err = caddyfile(&pebble(), std::slice::from_ref(&r)).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{r:?}: {err}");
        }
        let mut g = pebble();
        g.email = Some("ops@example.com\n\tadmin 0.0.0.0:2019".into());
        let err = caddyfile(&g, &[]).unwrap_err();
        assert!(err.to_string().contains("proxy.email"), "{err}");
        let mut g = pebble();
        g.acme_ca = "https://ca.example/dir }".into();
        assert!(caddyfile(&g, &[]).is_err());
        let err = check_token("site a: domain", "a.test {").unwrap_err();
        assert_eq!(
            err.to_string(),
            "site a: domain \"a.test {\" cannot go into the proxy config: it must be one word without whitespace, quotes, '{', '}', '#', '\\', '<' or '>'"
        );
    }

    #[test]
    fn two_sites_cannot_claim_one_domain() {
        let routes = [
            route("b", &["a.test"], "b:80"),
            route("a", &["x.test", "a.test"], "a:80"),
        ];
        let err = caddyfile(&pebble(), &routes).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "domain a.test is claimed by sites a and b; remove it from one of them"
        );
        let twice = [route("a", &["a.test"], "a:80"), route("a", &[], "a:80")];
        assert!(caddyfile(&pebble(), &twice).is_err());
    }
}
