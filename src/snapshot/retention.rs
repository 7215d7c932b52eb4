//! Which snapshots `sp prune` keeps: keep-last/hourly/daily/weekly/monthly/yearly, like restic
//! and borg. For each rule, walking from newest to oldest, the newest snapshot of each
//! distinct period is kept until the rule's count of periods is reached. Pinned snapshots and
//! the newest verified one are always kept. A policy that keeps nothing deletes nothing.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The `[retention]` config section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// What the policy sees of a snapshot.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
    pub pinned: bool,
    pub verified: bool,
    /// Sites the snapshot holds; the policy applies per site, so a snapshot of one site
    /// (`--site`, a final snapshot before removal) never takes another site's slot.
    pub sites: Vec<String>,
}

/// The decision for one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    /// Why it is kept (empty when it goes).
    pub reasons: Vec<String>,
}

/// Decides for every candidate, newest first: the policy is applied to each site's snapshots
/// (and to those holding no site) on its own, and a snapshot is kept if any of them keeps it.
pub fn plan(candidates: &[Candidate], policy: &Policy) -> Vec<Decision> {
    let mut names: Vec<&str> = candidates
        .iter()
        .flat_map(|c| c.sites.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut groups: Vec<Vec<Candidate>> = names
        .iter()
        .map(|n| {
            candidates
                .iter()
                .filter(|c| c.sites.iter().any(|s| s == n))
                .cloned()
                .collect()
        })
        .collect();
    groups.push(
        candidates
            .iter()
            .filter(|c| c.sites.is_empty())
            .cloned()
            .collect(),
    );
    let mut out = plan_group(candidates, &Policy::default());
    for d in &mut out {
        d.keep = false;
        d.reasons.clear();
    }
    for (g, name) in groups
        .iter()
        .zip(names.iter().map(|n| Some(*n)).chain([None]))
    {
        for d in plan_group(g, policy).into_iter().filter(|d| d.keep) {
            if let Some(o) = out.iter_mut().find(|o| o.id == d.id) {
                o.keep = true;
                for r in d.reasons {
                    let r = match name {
                        Some(n) if !policy.is_empty() => format!("{r} of {n}"),
                        _ => r,
                    };
                    if !o.reasons.contains(&r) {
                        o.reasons.push(r);
                    }
                }
            }
        }
    }
    out
}

fn plan_group(candidates: &[Candidate], policy: &Policy) -> Vec<Decision> {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let mut out: Vec<Decision> = order
        .iter()
        .map(|c| Decision {
            id: c.id.clone(),
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    if policy.is_empty() {
        for d in &mut out {
            d.keep = true;
            d.reasons.push("no retention policy".into());
        }
        return out;
    }
    type Key = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);
    let rules: [(&str, u32, Key); 6] = [
        ("last", policy.keep_last, |_| (0, 0, 0, 0)),
        ("hourly", policy.keep_hourly, |t| {
            (t.year(), t.ordinal(), t.hour(), 0)
        }),
        ("daily", policy.keep_daily, |t| {
            (t.year(), t.ordinal(), 0, 0)
        }),
        ("weekly", policy.keep_weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }),
        ("monthly", policy.keep_monthly, |t| {
            (t.year(), t.month(), 0, 0)
        }),
        ("yearly", policy.keep_yearly, |t| (t.year(), 0, 0, 0)),
    ];
    for (name, count, key) in rules {
        let mut kept = 0;
        let mut last: Option<(i32, u32, u32, u32)> = None;
        for (i, c) in order.iter().enumerate() {
            if kept >= count {
                break;
            }
            let k = if name == "last" {
                (i as i32, 0, 0, 0)
            } else {
                key(&c.time)
            };
            if last != Some(k) {
                out[i].keep = true;
                out[i].reasons.push(name.to_string());
                kept += 1;
                last = Some(k);
            }
        }
    }
    for (i, c) in order.iter().enumerate() {
        if c.pinned {
            out[i].keep = true;
            out[i].reasons.push("pinned".into());
        }
    }
    if let Some(i) = order.iter().position(|c| c.verified) {
        out[i].keep = true;
        out[i].reasons.push("newest verified".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn c(id: &str, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Candidate {
        Candidate {
            id: id.into(),
            time: Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap(),
            pinned: false,
            verified: false,
            sites: Vec::new(),
        }
    }

    fn kept(cands: &[Candidate], p: &Policy) -> Vec<String> {
        let mut k: Vec<String> = plan(cands, p)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect();
        k.sort();
        k
    }

    /// Snapshots every 6 hours for 40 days, from 2026-01-01.
    fn series() -> Vec<Candidate> {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        (0..160)
            .map(|i| {
                let t = start + chrono::Duration::hours(6 * i);
                Candidate {
                    id: format!("s{i:03}"),
                    time: t,
                    pinned: false,
                    verified: false,
                    sites: Vec::new(),
                }
            })
            .collect()
    }

    #[test]
    fn a_partial_snapshot_does_not_take_a_full_one_s_slot() {
        let both = |id: &str, h| Candidate {
            sites: vec!["a".into(), "b".into()],
            ..c(id, 2026, 3, 1, h, 0)
        };
        let cands = vec![
            both("full1", 1),
            both("full2", 2),
            Candidate {
                sites: vec!["b".into()],
                ..c("onlyb", 2026, 3, 1, 23, 0)
            },
            both("yesterday", 1),
        ];
        let mut cands = cands;
        cands[3].time = Utc.with_ymd_and_hms(2026, 2, 28, 1, 0, 0).unwrap();
        let p = Policy {
            keep_daily: 2,
            ..Default::default()
        };
        // Site a: full2 (1 March), yesterday. Site b: onlyb (1 March), yesterday.
        assert_eq!(kept(&cands, &p), vec!["full2", "onlyb", "yesterday"]);
    }

    #[test]
    fn keep_last() {
        let s = series();
        let p = Policy {
            keep_last: 3,
            ..Default::default()
        };
        assert_eq!(kept(&s, &p), vec!["s157", "s158", "s159"]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day() {
        let s = series();
        let p = Policy {
            keep_daily: 3,
            ..Default::default()
        };
        // Days 38, 39, 37 (0-based): their last snapshots are at 18:00 → indices 4d+3.
        assert_eq!(kept(&s, &p), vec!["s151", "s155", "s159"]);
    }

    #[test]
    fn keep_weekly_and_monthly() {
        let s = series();
        let p = Policy {
            keep_weekly: 2,
            keep_monthly: 2,
            ..Default::default()
        };
        // Newest is 2026-02-09 18:00 (Mon, ISO week 7); week 6 ends Sun 2026-02-08 18:00 = s155.
        // Monthly: February's newest s159, January's newest 2026-01-31 18:00 = s123.
        assert_eq!(kept(&s, &p), vec!["s123", "s155", "s159"]);
    }

    #[test]
    fn keep_hourly_and_yearly() {
        let cands = vec![
            c("a", 2024, 6, 1, 10, 0),
            c("b", 2025, 3, 1, 10, 0),
            c("c", 2025, 12, 31, 23, 0),
            c("d", 2026, 1, 1, 10, 5),
            c("e", 2026, 1, 1, 10, 50),
            c("f", 2026, 1, 1, 11, 5),
        ];
        let p = Policy {
            keep_hourly: 2,
            keep_yearly: 3,
            ..Default::default()
        };
        // hourly: f (11h), e (newest of 10h); yearly: 2026 → f, 2025 → c, 2024 → a.
        assert_eq!(kept(&cands, &p), vec!["a", "c", "e", "f"]);
    }

    #[test]
    fn pinned_and_newest_verified_survive_and_empty_policy_keeps_all() {
        let mut s = series();
        s[10].pinned = true;
        s[20].verified = true;
        s[5].verified = true;
        let p = Policy {
            keep_last: 1,
            ..Default::default()
        };
        assert_eq!(kept(&s, &p), vec!["s010", "s020", "s159"]);
        assert_eq!(kept(&s, &Policy::default()).len(), 160);
    }
}
