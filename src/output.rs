//! The output edge: every `--json` answer is one object that starts with `"schema"`
//! ([`SCHEMA`]) and whose times are RFC 3339 to the second ([`json_text`]); a failure is the
//! same kind of object on stderr ([`json_error`]). Also what the binary prints that is no op's
//! report: the man pages and the public key as JSON.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::Cli;
use crate::error::{Error, Result};

/// The version of every `--json` answer's shape; raised when a field changes meaning or goes.
pub const SCHEMA: u32 = 1;

/// A report as the `--json` answer: an object with `schema` first, times to the second.
pub fn json_text<T: Serialize>(report: &T) -> Result<String> {
    let mut v =
        serde_json::to_value(report).map_err(|e| Error::Other(format!("encode JSON: {e}")))?;
    whole_seconds(&mut v);
    let mut out = Map::new();
    out.insert("schema".into(), SCHEMA.into());
    match v {
        Value::Object(m) => out.extend(m),
        other => {
            out.insert("result".into(), other);
        }
    }
    serde_json::to_string_pretty(&Value::Object(out))
        .map_err(|e| Error::Other(format!("encode JSON: {e}")))
}

/// A failure as `--json` shows it on stderr: schema, error, what to do next, exit code.
pub fn json_error(message: &str, hint: Option<&str>, exit_code: i32) -> String {
    let mut m = Map::new();
    m.insert("schema".into(), SCHEMA.into());
    m.insert("error".into(), message.into());
    m.insert("hint".into(), hint.into());
    m.insert("exit_code".into(), exit_code.into());
    Value::Object(m).to_string()
}

/// Rewrites every RFC 3339 time that carries fractions of a second to whole seconds, so no
/// field shows nanoseconds of cron jitter.
fn whole_seconds(v: &mut Value) {
    match v {
        Value::String(s) if s.len() > 20 && s.as_bytes().get(19) == Some(&b'.') => {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                *s = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(whole_seconds),
        Value::Object(m) => m.values_mut().for_each(whole_seconds),
        _ => {}
    }
}

/// `sp --json key export --public`.
#[derive(Debug, Serialize)]
pub struct PublicKey {
    pub public_key: String,
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.public_key)
    }
}

/// What `sp man --dir` wrote.
#[derive(Debug, Serialize)]
pub struct ManReport {
    dir: std::path::PathBuf,
    pages: Vec<String>,
}

impl std::fmt::Display for ManReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} man pages into {}",
            self.pages.len(),
            self.dir.display()
        )
    }
}

/// Writes sp.1 and one page per (visible) subcommand into `dir`.
pub fn man_pages(dir: &Path) -> Result<ManReport> {
    fn each(cmd: clap::Command, dir: &Path, pages: &mut Vec<String>) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            each(sub, dir, pages)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let name = man.get_filename();
        man.generate_to(dir)
            .map_err(|e| Error::io_path("write man page into", dir, e))?;
        pages.push(name);
        Ok(())
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    each(cmd, dir, &mut pages)?;
    pages.sort();
    Ok(ManReport {
        dir: dir.to_path_buf(),
        pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_start_with_the_schema_and_carry_whole_seconds() {
        #[derive(Serialize)]
        struct R {
            site: &'static str,
            at: &'static str,
            nested: Vec<&'static str>,
            note: &'static str,
        }
        let text = json_text(&R {
            site: "blog",
            at: "2026-12-02T03:17:00.976300155Z",
            nested: vec!["2026-12-02T03:17:00.5+01:00"],
            note: "2026-12-02T03:17:00.x is no time",
        })
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v.as_object().unwrap().keys().next().unwrap(), "schema");
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["site"], "blog");
        assert_eq!(v["at"], "2026-12-02T03:17:00Z");
        assert_eq!(v["nested"][0], "2026-12-02T03:17:00+01:00");
        assert_eq!(v["note"], "2026-12-02T03:17:00.x is no time");
        // Not an object (a bare list): wrapped, still with the schema.
        let v: Value = serde_json::from_str(&json_text(&vec![1, 2]).unwrap()).unwrap();
        assert_eq!(v["result"], serde_json::json!([1, 2]));
    }

    #[test]
    fn errors_as_json() {
        let v: Value =
            serde_json::from_str(&json_error("no site", Some("sp site list"), 3)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"schema": 1, "error": "no site", "hint": "sp site list", "exit_code": 3})
        );
    }
}
