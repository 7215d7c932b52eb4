//! `sp status`: per site, the newest good snapshot and its age, whether the schedule is
//! installed as the config says, the next scheduled backup and the last failure; exits non-zero
//! when a site's newest snapshot is older than `backup.max_age` (or it has none), when the last
//! backup failed or left a site out, when the last drill failed, or when the cron file or
//! systemd timers are missing or differ from the config.

use chrono::{DateTime, Local, Utc};
use serde::Serialize;

use crate::config::parse_duration;
use crate::error::{Error, Result};

use super::backup::BackupStatus;
use super::Ctx;

#[derive(Debug, Serialize)]
pub struct SiteStatus {
    pub site: String,
    pub last_snapshot: Option<String>,
    pub last_snapshot_time: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
    /// Newest snapshot is within max_age.
    pub fresh: bool,
    /// The last backup left this site out: the step and the error.
    pub failed: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub ok: bool,
    pub max_age: String,
    /// The cron file or systemd timers: installed, and what the config asks for.
    pub schedule: super::schedule::ScheduleCheck,
    /// Only when the installed schedule will run it.
    pub next_backup: Option<DateTime<Local>>,
    pub last_backup_error: Option<String>,
    pub last_backup_failure: Option<DateTime<Utc>>,
    /// Sites the last backup left out.
    pub failed_sites: Vec<super::backup::SiteFailure>,
    /// Why the last `sp prune` failed, if it did.
    pub last_prune_error: Option<String>,
    /// The last `sp drill`: snapshot, time and whether it passed.
    pub last_drill: Option<DrillSummary>,
    pub sites: Vec<SiteStatus>,
}

#[derive(Debug, Serialize)]
pub struct DrillSummary {
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub ok: bool,
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<20} {:<20} {:<8} STATE",
            "SITE", "LAST SNAPSHOT", "AGE"
        )?;
        for s in &self.sites {
            write!(
                f,
                "\n{:<20} {:<20} {:<8} {}",
                s.site,
                s.last_snapshot.as_deref().unwrap_or("-"),
                s.age_seconds.map(age).unwrap_or_else(|| "-".into()),
                match (&s.failed, s.fresh) {
                    (Some(why), _) => format!("FAILED in the last backup: {why}"),
                    (None, true) => "ok".to_string(),
                    (None, false) => format!("STALE (max_age {})", self.max_age),
                }
            )?;
        }
        match &self.schedule.problem {
            Some(p) => write!(f, "\nschedule: FAILED: {p}")?,
            None => write!(
                f,
                "\nschedule: installed ({} {})",
                self.schedule
                    .kind
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
                self.schedule
                    .location
                    .as_ref()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default()
            )?,
        }
        match &self.next_backup {
            Some(t) => write!(f, "\nnext backup: {}", t.format("%Y-%m-%d %H:%M %Z"))?,
            None if self.schedule.problem.is_some() => {
                write!(f, "\nnext backup: none (the schedule is not in place)")?
            }
            None => write!(f, "\nnext backup: not scheduled (backup.schedule is empty)")?,
        }
        match &self.last_drill {
            Some(d) => write!(
                f,
                "\nlast verified restore (drill): {} of snapshot {} — {}",
                d.time.format("%Y-%m-%d %H:%M UTC"),
                d.snapshot,
                if d.ok { "passed" } else { "FAILED" }
            )?,
            None => write!(f, "\nlast verified restore (drill): never — run `sp drill`")?,
        }
        if let Some(e) = &self.last_prune_error {
            write!(f, "\nlast prune FAILED: {e}")?;
        }
        if let (Some(t), Some(e)) = (&self.last_backup_failure, &self.last_backup_error) {
            write!(
                f,
                "\nlast failed backup: {} — {e}",
                t.format("%Y-%m-%d %H:%M UTC")
            )?;
        }
        Ok(())
    }
}

/// `sp status`.
pub fn run(ctx: &Ctx) -> Result<StatusReport> {
    let max_age = parse_duration(&ctx.config.backup.max_age).map_err(Error::Invalid)?;
    let snaps = super::snapshots::all_local(ctx)?;
    let now = Utc::now();
    let mut sites = Vec::new();
    let status = BackupStatus::load(ctx);
    for name in ctx.site_names()? {
        let newest = snaps.iter().rev().find(|s| s.sites.contains(&name));
        let failed = status
            .failed_sites
            .iter()
            .find(|f| f.site == name)
            .map(|f| format!("step '{}': {}", f.step, f.error));
        let age_seconds = newest.map(|s| (now - s.time).num_seconds());
        sites.push(SiteStatus {
            site: name,
            last_snapshot: newest.map(|s| s.id.clone()),
            last_snapshot_time: newest.map(|s| s.time),
            age_seconds,
            fresh: age_seconds
                .map(|a| a <= max_age.as_secs() as i64)
                .unwrap_or(false),
            failed,
        });
    }
    // The last backup failed, or left a site out (then it also succeeded, at the same time).
    let failed_last = match (status.last_failure, status.last_success) {
        (Some(f), Some(s)) => f > s || !status.failed_sites.is_empty(),
        (Some(_), None) => true,
        _ => false,
    };
    let schedule = super::schedule::check(ctx)?;
    let next_backup = if ctx.config.backup.schedule.trim().is_empty() || !schedule.matches {
        None
    } else {
        crate::schedule::next_runs(&ctx.config.backup.schedule, &Local::now(), 1)
            .map_err(Error::Invalid)?
            .into_iter()
            .next()
    };
    let last_drill = super::drill::last(ctx).map(|d| DrillSummary {
        snapshot: d.id,
        time: d.time,
        ok: d.ok,
    });
    Ok(StatusReport {
        // A site the last backup left out makes `failed_last` true as well.
        ok: sites.iter().all(|s| s.fresh)
            && !failed_last
            && status.prune_error.is_none()
            && last_drill.as_ref().is_none_or(|d| d.ok)
            && schedule.matches,
        max_age: ctx.config.backup.max_age.clone(),
        schedule,
        next_backup,
        last_backup_error: if failed_last { status.last_error } else { None },
        last_backup_failure: if failed_last {
            status.last_failure
        } else {
            None
        },
        failed_sites: status.failed_sites,
        last_prune_error: status.prune_error,
        last_drill,
        sites,
    })
}
