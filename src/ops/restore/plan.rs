//! What `sp restore` will do, decided before it does anything: built from the signed
//! manifest and what is observed on the host, without reading any of the snapshot's data.
//! `sp restore --dry-run` prints it and stops; a conflict is refused from it, so a restore
//! that cannot go ahead never spends minutes verifying first. The functions here are pure.

use std::path::PathBuf;

use serde::Serialize;

use crate::snapshot::{Kind, SiteEntry};

/// The whole restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    pub id: String,
    pub kind: Kind,
    pub from: PathBuf,
    /// Every site of the snapshot under its own name, and the host config.
    pub whole_host: bool,
    /// The snapshot's host config replaces the local one (local settings win).
    pub host_config: bool,
    pub sites: Vec<SitePlan>,
    /// Sites whose current state a `pre-restore` snapshot keeps before `--yes` replaces it.
    pub safety_snapshot_of: Vec<String>,
    /// Compressed bytes the restore reads: archives and dumps.
    pub bytes: u64,
}

/// One site of the restore.
#[derive(Debug, Clone, Serialize)]
pub struct SitePlan {
    /// The name it is restored under.
    pub site: String,
    /// Its name in the snapshot (differs with `--as`).
    pub from_site: String,
    pub action: Action,
    /// The database and user it gets (none for a site without a database).
    pub database: Option<String>,
    pub user: Option<String>,
    /// What exists under its name and would be replaced (refused without `--yes`).
    pub replaces: Vec<String>,
    pub image: ImageSource,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Restore,
    /// An earlier run of this same restore was interrupted here: it goes on.
    Resume,
    /// An earlier run of this same restore finished this site.
    Skip,
}

/// Where a site's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum ImageSource {
    /// The snapshot recorded no image (a site that never ran).
    None,
    /// Already on this host.
    Local { reference: String },
    /// Pulled by digest; the image archive beside the snapshots is the fallback if it exists.
    Registry {
        reference: String,
        archive_fallback: bool,
    },
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::None => write!(f, "no image recorded"),
            ImageSource::Local { reference } => write!(f, "{reference} (already on this host)"),
            ImageSource::Registry {
                reference,
                archive_fallback,
            } => write!(
                f,
                "{reference} from its registry{}",
                if *archive_fallback {
                    ", else the image archive"
                } else {
                    " (no image archive kept)"
                }
            ),
        }
    }
}

/// What was observed on the host for one target name.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `ID running|done` from the site's restore marker.
    pub marker: Option<(String, String)>,
    pub dir: Option<PathBuf>,
    pub database: bool,
    pub containers: usize,
    pub image_local: bool,
    pub image_archive: bool,
}

/// Decides one site's part of restoring snapshot `id`'s `entry` as `target`.
pub fn site_plan(
    id: &str,
    entry: &SiteEntry,
    target: &str,
    seen: &Observed,
    sizes: u64,
) -> SitePlan {
    let ours = seen.marker.as_ref().is_some_and(|(m, _)| m == id);
    let done = ours && seen.marker.as_ref().is_some_and(|(_, s)| s == "done");
    let mut replaces = Vec::new();
    if !ours {
        if let Some(d) = &seen.dir {
            replaces.push(format!("its directory {}", d.display()));
        }
        if entry.database.is_some() && seen.database {
            replaces.push(format!("its database {target}"));
        }
        if seen.containers > 0 {
            replaces.push(format!("its {} container(s)", seen.containers));
        }
    }
    let image = match &entry.image {
        None => ImageSource::None,
        Some(r) if seen.image_local => ImageSource::Local {
            reference: r.clone(),
        },
        Some(r) => ImageSource::Registry {
            reference: r.clone(),
            archive_fallback: seen.image_archive,
        },
    };
    SitePlan {
        site: target.to_string(),
        from_site: entry.name.clone(),
        action: match (ours, done) {
            (true, true) => Action::Skip,
            (true, false) => Action::Resume,
            _ => Action::Restore,
        },
        database: entry.database.as_ref().map(|_| target.to_string()),
        user: entry.database.as_ref().map(|_| target.to_string()),
        replaces,
        image,
        bytes: if done { 0 } else { sizes },
    }
}

impl RestorePlan {
    /// `site: what it would replace` for every conflict.
    pub fn conflicts(&self) -> Vec<String> {
        self.sites
            .iter()
            .filter(|s| !s.replaces.is_empty())
            .map(|s| format!("{}: {}", s.site, s.replaces.join(", ")))
            .collect()
    }
}

impl std::fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "restore of {} snapshot {} from {} ({}):",
            self.kind,
            self.id,
            self.from.display(),
            crate::ops::backup::human_bytes(self.bytes)
        )?;
        if self.host_config {
            writeln!(
                f,
                "  the host config and registry credentials (local settings win)"
            )?;
        }
        for s in &self.sites {
            let name = if s.site == s.from_site {
                s.site.clone()
            } else {
                format!("{} as {}", s.from_site, s.site)
            };
            let what = match s.action {
                Action::Skip => "already restored by an earlier run: skipped".to_string(),
                Action::Resume => "resumes an interrupted run".to_string(),
                Action::Restore => match &s.database {
                    Some(d) => format!("files, database and user {d}"),
                    None => "files (no database)".to_string(),
                },
            };
            writeln!(f, "  {name}: {what}; image {}", s.image)?;
            if !s.replaces.is_empty() {
                writeln!(f, "    replaces {}", s.replaces.join(", "))?;
            }
        }
        if !self.safety_snapshot_of.is_empty() {
            writeln!(
                f,
                "  first a pre-restore snapshot of {}",
                self.safety_snapshot_of.join(", ")
            )?;
        }
        write!(f, "nothing was changed (--dry-run)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(db: bool) -> SiteEntry {
        serde_json::from_value(serde_json::json!({
            "name": "blog", "image": "r/blog@sha256:aa", "image_id": null, "uid": 20000,
            "archive": "sites/blog.tar.zst",
            "database": if db { serde_json::json!({"name": "blog", "dump": "sites/blog.sql.zst", "tables": []}) } else { serde_json::Value::Null },
        }))
        .unwrap()
    }

    #[test]
    fn what_exists_is_named_and_an_earlier_run_of_the_same_restore_is_not() {
        let seen = Observed {
            dir: Some("/sites/blog".into()),
            database: true,
            containers: 1,
            image_archive: true,
            ..Default::default()
        };
        let p = site_plan("S1", &entry(true), "blog", &seen, 10);
        assert_eq!(p.action, Action::Restore);
        assert_eq!(
            p.replaces,
            [
                "its directory /sites/blog",
                "its database blog",
                "its 1 container(s)"
            ]
        );
        assert_eq!(
            p.image,
            ImageSource::Registry {
                reference: "r/blog@sha256:aa".into(),
                archive_fallback: true
            }
        );
        let resumed = Observed {
            marker: Some(("S1".into(), "running".into())),
            ..seen.clone()
        };
        let p = site_plan("S1", &entry(true), "blog", &resumed, 10);
        assert_eq!((p.action, p.replaces.len()), (Action::Resume, 0));
        let done = Observed {
            marker: Some(("S1".into(), "done".into())),
            ..seen.clone()
        };
        assert_eq!(
            site_plan("S1", &entry(true), "blog", &done, 10).action,
            Action::Skip
        );
        // Another snapshot's marker is no excuse.
        let other = Observed {
            marker: Some(("S0".into(), "done".into())),
            ..seen
        };
        assert_eq!(
            site_plan("S1", &entry(true), "blog", &other, 10)
                .replaces
                .len(),
            3
        );
    }

    #[test]
    fn a_site_without_a_database_gets_none_and_a_clone_its_own_names() {
        let p = site_plan("S1", &entry(false), "copy", &Observed::default(), 5);
        assert_eq!((p.database, p.user), (None, None));
        let p = site_plan("S1", &entry(true), "copy", &Observed::default(), 5);
        assert_eq!(p.database.as_deref(), Some("copy"));
        assert_eq!(p.from_site, "blog");
    }
}
