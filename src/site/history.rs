//! `history.jsonl`: every roll-out of a site — when, by whom, which image and digest, how it
//! ended and how long it took — one JSON object a line, the last [`KEEP`] kept. Entry numbers
//! count up from 1 and are never reused, so `sp site rollback NAME --to N` means the same
//! deploy whatever was trimmed since.
//!
//! The file travels in snapshots, so it is read as hostile input: a line that does not parse,
//! or names an image id that is not a `sha256:` digest, is left out; a file larger than
//! [`MAX_BYTES`], or a link, is refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read_bounded, ImageRef};
use crate::error::{Error, Result};

/// Entries kept per site.
pub const KEEP: usize = 50;
/// The largest history file sp reads.
pub const MAX_BYTES: u64 = 1 << 20;

/// How a roll-out ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Failed,
}

/// One roll-out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// Entry number (1 for the site's first roll-out).
    pub n: u64,
    /// RFC 3339, to the second.
    pub time: String,
    /// SUDO_USER, else the user name (or uid) that ran sp.
    pub actor: String,
    /// What rolled it out: add, deploy, rollback, env, apply (also a restore starting a site).
    pub reason: String,
    /// The image reference the spec named.
    pub image: String,
    /// What was rolled out, pinned by digest (`repo@sha256:…`).
    pub pinned: String,
    /// Local image id, which lets an image archive stand in for the registry on a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub result: Outcome,
    /// Why it failed (one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_seconds: f64,
    /// For a rollback: the entry it went back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<u64>,
}

impl DeployRecord {
    /// The `sha256:…` digest of `pinned`.
    pub fn digest(&self) -> &str {
        self.pinned
            .split_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&self.pinned)
    }

    fn is_ok(&self) -> bool {
        self.result == Outcome::Ok
    }

    /// Hostile-input checks on an entry read from disk.
    fn sane(&self) -> bool {
        let pinned_ok = ImageRef::parse(&self.pinned)
            .map(|r| r.digest.is_some())
            .unwrap_or(false);
        pinned_ok
            && self.image_id.as_deref().is_none_or(is_image_id)
            && self.actor.len() <= 64
            && self.reason.len() <= 16
            && self.image.len() <= 400
            && self.error.as_ref().is_none_or(|e| e.len() <= 2000)
    }
}

/// True for `sha256:` and 64 lowercase hex digits (what Docker calls an image id).
pub fn is_image_id(id: &str) -> bool {
    id.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Reads a site's history, oldest first (none yet: empty).
pub fn load(path: &Path) -> Result<Vec<DeployRecord>> {
    let Some(bytes) = read_bounded(path, MAX_BYTES)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out: Vec<DeployRecord> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<DeployRecord>(l).ok())
        .filter(DeployRecord::sane)
        .collect();
    out.sort_by_key(|r| r.n);
    out.dedup_by_key(|r| r.n);
    Ok(out)
}

/// The history with `record` appended (numbered after the last entry) and trimmed to [`KEEP`],
/// as file text; returns the text and the new entry's number.
pub fn appended(mut entries: Vec<DeployRecord>, mut record: DeployRecord) -> (String, u64) {
    record.n = entries.last().map(|r| r.n + 1).unwrap_or(1);
    let n = record.n;
    entries.push(record);
    let skip = entries.len().saturating_sub(KEEP);
    let mut text = String::new();
    for r in &entries[skip..] {
        if let Ok(line) = serde_json::to_string(r) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    (text, n)
}

/// What `sp site rollback` goes back to.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A successful entry of the history.
    Entry(DeployRecord),
    /// A digest the history does not hold (of the spec's repository).
    Digest(String),
}

/// The entry a deploy stands for: a rollback stands for the entry it went back to, and a
/// roll-out of the same digest as the one before it (an env change, a re-apply) for that one.
fn lineage(entries: &[DeployRecord]) -> std::collections::BTreeMap<u64, u64> {
    let mut map = std::collections::BTreeMap::new();
    let mut last_ok: Option<&DeployRecord> = None;
    for r in entries.iter().filter(|r| r.is_ok()) {
        let stands_for = match (r.rollback_to, last_ok) {
            (Some(to), _) => map.get(&to).copied().unwrap_or(to),
            (None, Some(prev)) if prev.digest() == r.digest() => {
                map.get(&prev.n).copied().unwrap_or(prev.n)
            }
            _ => r.n,
        };
        map.insert(r.n, stands_for);
        last_ok = Some(r);
    }
    map
}

/// Picks the rollback target. `to` is an entry number, a digest (`sha256:HEX`) or at least 7
/// hex digits of one; none means the successful deploy before the one running now, so two
/// rollbacks in a row go back two steps instead of toggling. `current` is the pinned
/// reference that runs now.
pub fn target(
    site: &str,
    entries: &[DeployRecord],
    current: Option<&str>,
    to: Option<&str>,
) -> Result<Target> {
    let current_digest = current.and_then(|c| c.split_once('@')).map(|(_, d)| d);
    let hint = format!("see `sp site history {site}`");
    let Some(to) = to else {
        let map = lineage(entries);
        let position = entries
            .iter()
            .rev()
            .find(|r| r.is_ok())
            .map(|r| map.get(&r.n).copied().unwrap_or(r.n))
            .unwrap_or(u64::MAX);
        return entries
            .iter()
            .rev()
            .filter(|r| r.is_ok() && r.n < position && Some(r.digest()) != current_digest)
            .find(|r| map.get(&r.n).copied().unwrap_or(r.n) < position)
            .cloned()
            .map(Target::Entry)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{site}: no earlier successful deploy to roll back to ({hint})"
                ))
            });
    };
    if !to.is_empty() && to.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = to
            .parse()
            .map_err(|_| Error::Invalid(format!("--to {to}: not an entry number ({hint})")))?;
        let Some(r) = entries.iter().find(|r| r.n == n) else {
            return Err(Error::NotFound(format!(
                "{site}: no history entry {n} ({hint})"
            )));
        };
        if !r.is_ok() {
            return Err(Error::Invalid(format!(
                "{site}: entry {n} is a deploy that failed; pick one that succeeded ({hint})"
            )));
        }
        return Ok(Target::Entry(r.clone()));
    }
    let hex = to.strip_prefix("sha256:").unwrap_or(to);
    let hex_ok = hex.len() >= 7
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_ok {
        return Err(Error::Invalid(format!(
            "--to {to:?}: give an entry number or an image digest (sha256:… or at least 7 hex digits) ({hint})"
        )));
    }
    let want = format!("sha256:{hex}");
    if let Some(r) = entries
        .iter()
        .rev()
        .find(|r| r.is_ok() && r.digest().starts_with(&want))
    {
        return Ok(Target::Entry(r.clone()));
    }
    if hex.len() == 64 {
        return Ok(Target::Digest(want));
    }
    Err(Error::NotFound(format!(
        "{site}: no successful deploy with digest {want}… ({hint}); give the full digest to roll back to an image sp never deployed"
    )))
}

/// Who runs sp: SUDO_USER when sudo started it, else the user name of the uid (or the uid).
pub fn actor() -> String {
    if let Ok(u) = std::env::var("SUDO_USER") {
        let ok = !u.is_empty()
            && u.len() <= 32
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            return u;
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64, hex: char, ok: bool, rollback_to: Option<u64>) -> DeployRecord {
        DeployRecord {
            n,
            time: "2026-12-01T10:00:00Z".into(),
            actor: "root".into(),
            reason: if rollback_to.is_some() {
                "rollback"
            } else {
                "deploy"
            }
            .into(),
            image: "reg.test/a:v".into(),
            pinned: format!("reg.test/a@sha256:{}", hex.to_string().repeat(64)),
            image_id: None,
            result: if ok { Outcome::Ok } else { Outcome::Failed },
            error: None,
            duration_seconds: 1.0,
            rollback_to,
        }
    }

    fn digest_of(t: &Target) -> String {
        match t {
            Target::Entry(r) => r.digest().to_string(),
            Target::Digest(d) => d.clone(),
        }
    }

    #[test]
    fn rolling_back_twice_goes_back_two_steps() {
        let mut h = vec![rec(1, 'a', true, None), rec(2, 'b', true, None)];
        h.push(rec(3, 'c', true, None));
        let cur = |h: &[DeployRecord]| h.last().unwrap().pinned.clone();
        let t = target("s", &h, Some(&cur(&h)), None).unwrap();
        assert_eq!(digest_of(&t), format!("sha256:{}", "b".repeat(64)));
        h.push(rec(4, 'b', true, Some(2)));
        let t = target("s", &h, Some(&cur(&h)), None).unwrap();
        assert_eq!(digest_of(&t), format!("sha256:{}", "a".repeat(64)));
        h.push(rec(5, 'a', true, Some(1)));
        // An env change on the rolled-back image keeps its place in the line.
        h.push(rec(6, 'a', true, None));
        assert!(target("s", &h, Some(&cur(&h)), None).is_err());
    }

    #[test]
    fn failed_deploys_are_no_target() {
        let h = vec![
            rec(1, 'a', true, None),
            rec(2, 'b', false, None),
            rec(3, 'c', true, None),
        ];
        let t = target("s", &h, Some(&h[2].pinned), None).unwrap();
        assert_eq!(t, Target::Entry(h[0].clone()));
        let e = target("s", &h, None, Some("2")).unwrap_err().to_string();
        assert!(e.contains("failed"), "{e}");
        assert!(target("s", &h, None, Some("9")).is_err());
        assert_eq!(
            target("s", &h, None, Some("1")).unwrap(),
            Target::Entry(h[0].clone())
        );
    }

    #[test]
    fn digests_and_prefixes() {
        let h = vec![rec(1, 'a', true, None), rec(2, 'b', true, None)];
        assert_eq!(
            target("s", &h, None, Some("aaaaaaa")).unwrap(),
            Target::Entry(h[0].clone())
        );
        let full = format!("sha256:{}", "d".repeat(64));
        assert_eq!(
            target("s", &h, None, Some(&full)).unwrap(),
            Target::Digest(full.clone())
        );
        for bad in ["abc", "sha256:xyz1234", "-1", "../../etc", ""] {
            assert!(target("s", &h, None, Some(bad)).is_err(), "{bad}");
        }
        assert!(target("s", &h, None, Some("ddddddd")).is_err());
    }

    #[test]
    fn numbers_are_never_reused_and_the_file_is_bounded() {
        let mut h = Vec::new();
        for _ in 0..(KEEP + 5) {
            let (text, n) = appended(h.clone(), rec(0, 'a', true, None));
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("h");
            std::fs::write(&p, text).unwrap();
            h = load(&p).unwrap();
            assert_eq!(h.last().unwrap().n, n);
        }
        assert_eq!(h.len(), KEEP);
        assert_eq!(h.last().unwrap().n, (KEEP + 5) as u64);
    }

    #[test]
    fn hostile_lines_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h");
        let good = serde_json::to_string(&rec(1, 'a', true, None)).unwrap();
        let mut bad_id = rec(2, 'b', true, None);
        bad_id.image_id = Some("sha256:../../../etc/shadow".into());
        let mut bad_ref = rec(3, 'c', true, None);
        bad_ref.pinned = "reg.test/a:latest".into();
        let text = format!(
            "{good}\nnot json\n{}\n{}\n",
            serde_json::to_string(&bad_id).unwrap(),
            serde_json::to_string(&bad_ref).unwrap()
        );
        std::fs::write(&p, text).unwrap();
        let h = load(&p).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].n, 1);
        // A link is refused, not followed.
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(load(&l).is_err());
    }
}
