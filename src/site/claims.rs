//! What no two sites may share on one host: a uid (a removed site's files are still owned by
//! its uid, so its claim stays until it is purged) and a domain.

use super::SiteSpec;
use crate::error::{Error, Result};

/// What another site holds that no second site may have: its uid (also while it is removed
/// with its files kept, since they are still owned by that uid) and its domains.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub site: String,
    pub uid: u32,
    pub domains: Vec<String>,
    /// Removed without --purge: the spec is `site.toml.removed`, its files are kept.
    pub removed: bool,
}

impl Claim {
    pub fn of(spec: &SiteSpec, removed: bool) -> Claim {
        Claim {
            site: spec.name.clone(),
            uid: spec.uid,
            domains: if removed {
                Vec::new()
            } else {
                spec.domains.clone()
            },
            removed,
        }
    }
}

/// Refuses a spec whose uid or one of whose domains another site already has (claims of the
/// site itself are skipped). The error names the other site.
pub fn check_unique(spec: &SiteSpec, others: &[Claim]) -> Result<()> {
    for o in others.iter().filter(|o| o.site != spec.name) {
        if o.uid == spec.uid {
            let (state, fix) = if o.removed {
                (
                    " (removed, its files kept)",
                    format!("; `sp site remove {} --purge` frees it", o.site),
                )
            } else {
                ("", String::new())
            };
            return Err(Error::Conflict(format!(
                "{}: uid {} already belongs to site {}{state}; give {} a uid of its own{fix}",
                spec.name, spec.uid, o.site, spec.name
            )));
        }
        if let Some(d) = spec.domains.iter().find(|d| o.domains.contains(d)) {
            return Err(Error::Conflict(format!(
                "{}: domain {d} already belongs to site {}; remove it from one of them",
                spec.name, o.site
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_or_domain_of_another_site_is_refused() {
        let mut spec: SiteSpec = toml::from_str(
            "name = \"b\"\nimage = \"reg.example.com/b:1\"\nuid = 20001\nport = 80\ndomains = [\"b.example.com\"]\n",
        )
        .unwrap();
        let claim = |site: &str, uid, domains: &[&str], removed| Claim {
            site: site.into(),
            uid,
            domains: domains.iter().map(|d| d.to_string()).collect(),
            removed,
        };
        let own = claim("b", 20001, &["b.example.com"], false);
        assert!(check_unique(
            &spec,
            &[own.clone(), claim("a", 20000, &["a.example.com"], false)]
        )
        .is_ok());
        let err = check_unique(&spec, &[own.clone(), claim("a", 20001, &[], false)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b: uid 20001 already belongs to site a; give b a uid of its own"
        );
        assert_eq!(err.exit_code(), 4);
        let err = check_unique(&spec, &[claim("a", 20001, &[], true)]).unwrap_err();
        assert!(
            err.to_string().contains("site a (removed, its files kept)"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("`sp site remove a --purge` frees it"),
            "{err}"
        );
        spec.uid = 20002;
        let err = check_unique(
            &spec,
            &[claim(
                "a",
                20000,
                &["x.example.com", "b.example.com"],
                false,
            )],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "b: domain b.example.com already belongs to site a; remove it from one of them"
        );
        // A removed site's domains are free again; its uid is not.
        let spec_a: SiteSpec = toml::from_str(
            "name = \"a\"\nimage = \"reg.example.com/a:1\"\nuid = 20000\nport = 80\ndomains = [\"b.example.com\"]\n",
        )
        .unwrap();
        assert_eq!(Claim::of(&spec_a, true).domains, Vec::<String>::new());
        assert!(check_unique(&spec, &[Claim::of(&spec_a, true)]).is_ok());
    }
}
