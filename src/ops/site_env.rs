//! `sp site env NAME [list | set K=V... | set --stdin [KEY] | unset K...]`: a site's
//! environment.
//!
//! Values given on the command line are plain configuration and live in `site.toml` `[env]`;
//! values read from stdin (`--stdin`: never argv, which every local user can read) are secrets
//! and live in `secrets/env` beside it (root-only, 0600), masked in `list` and `sp site show`
//! unless `--reveal`. Both travel in snapshots with the rest of the site's directory.
//!
//! A change:
//! 1. checks every key and value (nothing is touched before this passes);
//! 2. under the host lock, builds the new spec in memory; no difference, nothing happens;
//! 3. rolls the running image out with the new env through the deploy path (release command,
//!    health check; recorded in the history as `env`) — a failure leaves the old container
//!    serving and the files as they were;
//! 4. writes `site.toml` and/or `secrets/env`. A stopped or never deployed site only gets the
//!    files; its next deploy or `sp apply` uses them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result, StepExt};
use crate::site::{SecretEnv, SiteSpec};

use super::deploy::{rollout_recorded, Release, Rollout, Why};
use super::{provision, Ctx};

/// What `sp site env` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum EnvAction {
    /// Print the site's env (secrets masked unless --reveal).
    List {
        /// Show secret values too.
        #[arg(long)]
        reveal: bool,
    },
    /// Set variables and roll the change out. KEY=VALUE arguments are plain config (kept in
    /// site.toml); with --stdin the values are secrets, read from stdin (KEY=VALUE lines, or
    /// the whole input as the value of the one KEY given), never from argv.
    Set {
        /// KEY=VALUE pairs; with --stdin, nothing or one KEY.
        #[arg(value_name = "KEY=VALUE|KEY")]
        pairs: Vec<String>,
        /// Read the values from stdin and keep them as secrets (secrets/env, 0600).
        #[arg(long)]
        stdin: bool,
    },
    /// Remove variables and roll the change out.
    Unset {
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
    },
}

/// Options of `sp site env`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnvOpts {
    /// The site.
    pub name: String,
    #[command(subcommand)]
    pub action: Option<EnvAction>,
}

/// The most input `set --stdin` takes.
const STDIN_MAX: usize = 256 << 10;

/// One variable as `list` and `show` print it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvEntry {
    pub key: String,
    /// Absent for a masked secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Kept in secrets/env (set with --stdin).
    pub secret: bool,
}

/// The site's own env entries (not the DATABASE_* ones sp adds), secrets masked unless `reveal`.
pub fn entries(spec: &SiteSpec, reveal: bool) -> Vec<EnvEntry> {
    let mut out: Vec<EnvEntry> = spec
        .env
        .iter()
        .map(|(k, v)| EnvEntry {
            key: k.clone(),
            value: Some(v.clone()),
            secret: false,
        })
        .chain(spec.secret_env.iter().map(|(k, v)| EnvEntry {
            key: k.clone(),
            value: reveal.then(|| v.clone()),
            secret: true,
        }))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// How an entry shows in text.
pub fn shown(e: &EnvEntry) -> String {
    match &e.value {
        Some(v) => format!("{}={v}", e.key),
        None => format!("{}=******** (secret; --reveal shows it)", e.key),
    }
}

/// `sp site env NAME list`.
#[derive(Debug, Serialize)]
pub struct EnvList {
    pub site: String,
    pub env: Vec<EnvEntry>,
}

impl std::fmt::Display for EnvList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.env.is_empty() {
            return write!(f, "{}: no env set", self.site);
        }
        let lines: Vec<String> = self.env.iter().map(shown).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

/// What a change did.
#[derive(Debug, Serialize)]
pub struct EnvChange {
    pub site: String,
    /// Keys set or removed (never values).
    pub changed: Vec<String>,
    /// Keys `unset` found nowhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_set: Vec<String>,
    /// The roll-out that brought the change to the running site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Why nothing was rolled out, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

impl std::fmt::Display for EnvChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.changed.is_empty() {
            write!(f, "{}: env unchanged", self.site)?;
        } else {
            write!(f, "{}: env {} changed", self.site, self.changed.join(", "))?;
        }
        if !self.not_set.is_empty() {
            write!(f, " ({} not set)", self.not_set.join(", "))?;
        }
        if let Some(r) = &self.rollout {
            write!(f, "\n{r}")?;
        }
        if let Some(p) = &self.pending {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

/// What `sp site env` answers.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EnvReport {
    List(EnvList),
    Change(EnvChange),
}

impl std::fmt::Display for EnvReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvReport::List(l) => l.fmt(f),
            EnvReport::Change(c) => c.fmt(f),
        }
    }
}

/// A change, checked: plain values to set, secret values to set, keys to remove.
#[derive(Debug, Default, PartialEq)]
pub struct EnvEdit {
    pub plain: BTreeMap<String, String>,
    pub secret: BTreeMap<String, String>,
    pub unset: Vec<String>,
}

/// Parses `set`/`unset` input into an edit; `stdin` is what was read with `--stdin`.
/// Pure: every bad key or value is refused here, before anything is touched.
pub fn parse_edit(action: &EnvAction, stdin: Option<&str>) -> Result<EnvEdit> {
    let mut edit = EnvEdit::default();
    match action {
        EnvAction::List { .. } => {}
        EnvAction::Set {
            pairs,
            stdin: false,
        } => {
            if pairs.is_empty() {
                return Err(Error::Invalid(
                    "env set needs KEY=VALUE arguments, or --stdin for secret values".into(),
                ));
            }
            for p in pairs {
                let Some((k, v)) = p.split_once('=') else {
                    return Err(Error::Invalid(format!(
                        "env set {p:?}: expected KEY=VALUE (or `--stdin {p}` to read a secret value from stdin)"
                    )));
                };
                crate::site::check_entry(k, v)?;
                edit.plain.insert(k.to_string(), v.to_string());
            }
        }
        EnvAction::Set { pairs, stdin: true } => {
            let text = stdin.unwrap_or_default();
            if text.len() > STDIN_MAX {
                return Err(Error::Invalid(format!(
                    "env set --stdin: more than {} KiB on stdin",
                    STDIN_MAX >> 10
                )));
            }
            match pairs.as_slice() {
                [] => {
                    for line in text.lines() {
                        let line = line.trim_end_matches('\r');
                        if line.trim().is_empty() || line.starts_with('#') {
                            continue;
                        }
                        // Never echo the line: it holds a secret.
                        let Some((k, v)) = line.split_once('=') else {
                            return Err(Error::Invalid(
                                "env set --stdin: every line must be KEY=VALUE (or give one KEY to read its whole value)".into(),
                            ));
                        };
                        crate::site::check_entry(k, v)?;
                        edit.secret.insert(k.to_string(), v.to_string());
                    }
                    if edit.secret.is_empty() {
                        return Err(Error::Invalid(
                            "env set --stdin: no KEY=VALUE lines on stdin".into(),
                        ));
                    }
                }
                [key] if !key.contains('=') => {
                    let value = text
                        .strip_suffix('\n')
                        .map(|v| v.strip_suffix('\r').unwrap_or(v))
                        .unwrap_or(text);
                    crate::site::check_entry(key, value)?;
                    edit.secret.insert(key.clone(), value.to_string());
                }
                _ => {
                    return Err(Error::Invalid(
                        "env set --stdin takes no arguments (KEY=VALUE lines on stdin) or one KEY (its value on stdin); values never go on the command line".into(),
                    ))
                }
            }
        }
        EnvAction::Unset { keys } => {
            for k in keys {
                crate::site::validate_env_key(k)?;
                if !edit.unset.contains(k) {
                    edit.unset.push(k.clone());
                }
            }
        }
    }
    Ok(edit)
}

/// The spec with `edit` applied, the keys that changed, and those `unset` did not find.
pub fn apply_edit(spec: &SiteSpec, edit: &EnvEdit) -> (SiteSpec, Vec<String>, Vec<String>) {
    let mut new = spec.clone();
    let mut not_set = Vec::new();
    for (k, v) in &edit.plain {
        new.secret_env.remove(k);
        new.env.insert(k.clone(), v.clone());
    }
    for (k, v) in &edit.secret {
        new.env.remove(k);
        new.secret_env.insert(k.clone(), v.clone());
    }
    for k in &edit.unset {
        let a = new.env.remove(k).is_some();
        let b = new.secret_env.remove(k).is_some();
        if !a && !b {
            not_set.push(k.clone());
        }
    }
    let mut changed: Vec<String> = new
        .env
        .keys()
        .chain(new.secret_env.keys())
        .chain(spec.env.keys())
        .chain(spec.secret_env.keys())
        .filter(|k| {
            new.env.get(*k) != spec.env.get(*k) || new.secret_env.get(*k) != spec.secret_env.get(*k)
        })
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    (new, changed, not_set)
}

/// `sp site env NAME [...]` (the steps in the module docs). `stdin` holds what `--stdin` read.
pub async fn run(ctx: &Ctx, opts: &EnvOpts, stdin: Option<&str>) -> Result<EnvReport> {
    let site = opts.name.as_str();
    let action = opts
        .action
        .clone()
        .unwrap_or(EnvAction::List { reveal: false });
    if let EnvAction::List { reveal } = action {
        let spec = ctx.site(site)?;
        return Ok(EnvReport::List(EnvList {
            site: site.to_string(),
            env: entries(&spec, reveal),
        }));
    }
    let edit = parse_edit(&action, stdin)?;
    ctx.site(site)?;
    let _lock = ctx.lock(&format!("site env {site}"))?;
    let spec = ctx.site(site)?;
    let (new, changed, not_set) = apply_edit(&spec, &edit);
    let mut report = EnvChange {
        site: site.to_string(),
        changed,
        not_set,
        rollout: None,
        pending: None,
    };
    if report.changed.is_empty() {
        return Ok(EnvReport::Change(report));
    }
    new.validate()?;
    let state = ctx.deploy_state(site)?;
    match (&state.current, state.stopped) {
        (Some(pinned), false) => {
            let engine = ctx.engine().await?;
            let r = rollout_recorded(
                ctx,
                &engine,
                &new,
                pinned,
                state.current_id.as_deref(),
                Release::Run,
                Why::because("env"),
            )
            .await
            .map_err(|e| {
                Error::Other(format!(
                    "{e} — the env was not changed and the old container keeps serving"
                ))
            })?;
            report.rollout = Some(r);
        }
        (Some(_), true) => {
            report.pending = Some(format!(
                "{site} is stopped: the new env applies when it next starts through `sp site deploy {site}` or `sp apply {site}`"
            ))
        }
        (None, _) => {
            report.pending = Some(format!(
                "{site} is not deployed yet: its first deploy uses the new env"
            ))
        }
    }
    write_env(ctx, &spec, &new).step(site, "record")?;
    Ok(EnvReport::Change(report))
}

/// Writes what changed: `site.toml` (plain env) and `secrets/env` (0600; removed when empty).
fn write_env(ctx: &Ctx, old: &SiteSpec, new: &SiteSpec) -> Result<()> {
    let paths = ctx.paths(&new.name);
    if old.env != new.env {
        provision::write_spec(&paths, new)?;
    }
    if old.secret_env != new.secret_env {
        let path = paths.secret_env();
        if new.secret_env.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io_path("remove", &path, e)),
            }
        } else {
            let text = SecretEnv(new.secret_env.clone()).to_toml();
            crate::fsutil::write_private(&path, text.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[&str], stdin: bool) -> EnvAction {
        EnvAction::Set {
            pairs: pairs.iter().map(|s| s.to_string()).collect(),
            stdin,
        }
    }

    #[test]
    fn argv_values_are_plain_stdin_values_secret() {
        let e = parse_edit(&set(&["A=1", "B=x=y"], false), None).unwrap();
        assert_eq!(e.plain.len(), 2);
        assert_eq!(e.plain["B"], "x=y");
        let e = parse_edit(&set(&[], true), Some("K1=v1\n# note\n\nK2=a=b\r\n")).unwrap();
        assert_eq!(e.secret["K1"], "v1");
        assert_eq!(e.secret["K2"], "a=b");
        assert!(e.plain.is_empty());
        let e = parse_edit(&set(&["TOKEN"], true), Some("multi\nline\n")).unwrap();
        assert_eq!(e.secret["TOKEN"], "multi\nline");
    }

    #[test]
    fn bad_input_is_refused_without_echoing_secrets() {
        for (action, stdin) in [
            (set(&["1A=x"], false), None),
            (set(&["A-B=x"], false), None),
            (set(&["DATABASE_URL=x"], false), None),
            (set(&["NOVALUE"], false), None),
            (set(&[], false), None),
            (set(&["A=1"], true), Some("x")),
            (set(&["A", "B"], true), Some("x")),
            (set(&[], true), Some("")),
            (set(&[], true), Some("S3CRET-no-equals\n")),
            (set(&[], true), Some("DATABASE_PASSWORD_FILE=S3CRET\n")),
            (set(&["K"], true), Some("a\0S3CRET")),
            (
                EnvAction::Unset {
                    keys: vec!["bad key".into()],
                },
                None,
            ),
        ] {
            let e = parse_edit(&action, stdin).unwrap_err().to_string();
            assert!(!e.contains("S3CRET"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn edits_move_keys_between_plain_and_secret() {
        let text = "name = \"s\"\nimage = \"reg.test/a:v1\"\nuid = 20000\nport = 8080\n[env]\nA = \"1\"\nB = \"2\"\n";
        let mut spec: SiteSpec = toml::from_str(text).unwrap();
        spec.secret_env.insert("S".into(), "x".into());
        let edit = EnvEdit {
            secret: [("A".to_string(), "s3".to_string())].into(),
            unset: vec!["S".into(), "NONE".into()],
            ..Default::default()
        };
        let (new, changed, not_set) = apply_edit(&spec, &edit);
        assert_eq!(changed, vec!["A".to_string(), "S".to_string()]);
        assert_eq!(not_set, vec!["NONE".to_string()]);
        assert!(!new.env.contains_key("A"));
        assert_eq!(new.secret_env["A"], "s3");
        assert!(!new.secret_env.contains_key("S"));
        new.validate().unwrap();
        // The same values again change nothing.
        let (_, changed, _) = apply_edit(&new, &edit);
        assert!(changed.is_empty());
        // Secrets never reach site.toml.
        assert!(!new.to_toml().contains("s3"));
        let shown: Vec<String> = entries(&new, false).iter().map(shown).collect();
        assert!(!shown.join("\n").contains("s3"));
        let json = serde_json::to_string(&entries(&new, false)).unwrap();
        assert!(!json.contains("s3"), "{json}");
        assert!(serde_json::to_string(&entries(&new, true))
            .unwrap()
            .contains("s3"));
    }
}
