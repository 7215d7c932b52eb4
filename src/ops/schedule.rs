//! `sp schedule show|install`: the host's backup schedule and the sites' jobs, as one cron file
//! or as systemd timers (never both), and [`check`]: whether what is installed is what the
//! config asks for (`sp status`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::schedule::{self, shell_quote};

use super::Ctx;

/// One scheduled thing.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// `backup`, `drill` or `SITE/JOB`.
    pub name: String,
    /// The site of a site job.
    pub site: Option<String>,
    pub schedule: String,
    /// The shell command cron runs.
    pub command: String,
    pub next: Vec<DateTime<Local>>,
}

/// Everything sp schedules on this host.
pub fn jobs(ctx: &Ctx, runs: usize) -> Result<Vec<Job>> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("locate the sp binary", e))?
        .display()
        .to_string();
    let sp = shell_quote(&exe);
    let now = Local::now();
    let mut out = Vec::new();
    let mut add = |name: String, sched: &str, command: String| -> Result<()> {
        let next = schedule::next_runs(sched, &now, runs)
            .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        out.push(Job {
            site: name.split_once('/').map(|(s, _)| s.to_string()),
            name,
            schedule: sched.to_string(),
            command,
            next,
        });
        Ok(())
    };
    if !ctx.config.backup.schedule.trim().is_empty() {
        add(
            "backup".into(),
            &ctx.config.backup.schedule,
            format!("{sp} -q backup && {sp} -q prune"),
        )?;
    }
    if !ctx.config.backup.drill_schedule.trim().is_empty() {
        add(
            "drill".into(),
            &ctx.config.backup.drill_schedule,
            format!("{sp} -q drill"),
        )?;
    }
    for spec in ctx.sites()? {
        for j in &spec.jobs {
            let cmd = format!(
                "{sp} -q site job {} {}",
                shell_quote(&spec.name),
                shell_quote(&j.name)
            );
            add(format!("{}/{}", spec.name, j.name), &j.schedule, cmd)?;
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct ScheduleReport {
    pub jobs: Vec<Job>,
    /// `install`: what it wrote (cron or systemd).
    pub kind: Option<schedule::Kind>,
    /// Files written by `install`.
    pub written: Vec<PathBuf>,
    /// Files an earlier `install` wrote that this one no longer does (the other kind).
    pub removed: Vec<PathBuf>,
    /// What is left for the person to do (systemd: reload and enable the timers).
    pub next_step: Option<String>,
}

impl std::fmt::Display for ScheduleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.jobs.is_empty() {
            write!(f, "nothing scheduled")?;
        }
        let mut first = true;
        for j in &self.jobs {
            if !first {
                writeln!(f)?;
            }
            first = false;
            let next: Vec<String> = j
                .next
                .iter()
                .map(|t| t.format("%Y-%m-%d %H:%M %a").to_string())
                .collect();
            write!(
                f,
                "{:<24} {:<16} next: {}",
                j.name,
                j.schedule,
                next.join(", ")
            )?;
        }
        for w in &self.written {
            write!(f, "\nwrote {}", w.display())?;
        }
        for r in &self.removed {
            write!(f, "\nremoved {}", r.display())?;
        }
        if let Some(n) = &self.next_step {
            write!(f, "\nnext: {n}")?;
        }
        Ok(())
    }
}

/// `sp schedule show`.
pub fn show(ctx: &Ctx) -> Result<ScheduleReport> {
    Ok(ScheduleReport {
        jobs: jobs(ctx, 3)?,
        kind: None,
        written: Vec::new(),
        removed: Vec::new(),
        next_step: None,
    })
}

/// After a reboot, `sp apply`: the kernel has forgotten sp's firewall table that keeps the
/// sites' networks apart (see [`crate::firewall`]), and apply puts it back.
fn boot_command() -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::io("locate the sp binary", e))?;
    Ok(format!(
        "{} -q apply",
        shell_quote(&exe.display().to_string())
    ))
}

/// Where `install` writes: the cron file, or the systemd directory.
#[derive(Debug, Clone)]
pub enum Target {
    Cron(PathBuf),
    Systemd(PathBuf),
}

impl Target {
    fn kind(&self) -> schedule::Kind {
        match self {
            Target::Cron(_) => schedule::Kind::Cron,
            Target::Systemd(_) => schedule::Kind::Systemd,
        }
    }
    fn location(&self) -> &Path {
        match self {
            Target::Cron(p) | Target::Systemd(p) => p,
        }
    }
}

/// The files (path, text) that `install` writes for `target` from the config as it is now.
fn wanted(ctx: &Ctx, jobs: &[Job], target: &Target) -> Result<Vec<(PathBuf, String)>> {
    let config =
        std::fs::canonicalize(&ctx.config_path).unwrap_or_else(|_| ctx.config_path.clone());
    match target {
        Target::Cron(file) => {
            let mut entries: Vec<schedule::Entry> = jobs
                .iter()
                .map(|j| schedule::Entry {
                    comment: j.name.clone(),
                    schedule: j.schedule.clone(),
                    command: j.command.clone(),
                })
                .collect();
            entries.push(schedule::Entry {
                comment: "after a reboot: the sites' firewall table (the kernel forgets it)".into(),
                schedule: "@reboot".into(),
                command: boot_command()?,
            });
            Ok(vec![(file.clone(), schedule::cron_file(&config, &entries))])
        }
        Target::Systemd(dir) => {
            let timers: Vec<schedule::Timer> = jobs
                .iter()
                .map(|j| schedule::Timer {
                    name: j.name.clone(),
                    schedule: j.schedule.clone(),
                    command: j.command.clone(),
                })
                .collect();
            let units = schedule::systemd_units(&config, &timers, &boot_command()?)
                .map_err(Error::Invalid)?;
            Ok(units
                .into_iter()
                .map(|(name, text)| (dir.join(name), text))
                .collect())
        }
    }
}

/// `sp schedule install`: writes the cron file or (`--systemd`) the systemd units, removes
/// whatever an earlier install of the other kind (or for jobs now gone) left, and records
/// what it wrote in `state_dir` for `sp status`.
pub fn install(ctx: &Ctx, target: &Target) -> Result<ScheduleReport> {
    let _lock = ctx.lock("schedule install")?;
    let jobs = jobs(ctx, 3)?;
    // Everything is built (and a schedule systemd cannot spell refused) before a file changes.
    let files = wanted(ctx, &jobs, target)?;
    let previous = schedule::Installed::load(&ctx.config.state_dir).unwrap_or(None);
    let had_record = previous.is_some();
    for (path, text) in &files {
        crate::fsutil::write_atomic(path, text.as_bytes(), 0o644)?;
    }
    let written: Vec<PathBuf> = files.into_iter().map(|(p, _)| p).collect();
    let mut removed = Vec::new();
    for old in previous.map(|p| p.files).unwrap_or_default() {
        if !written.contains(&old) && old.is_file() {
            std::fs::remove_file(&old).map_err(|e| Error::io_path("remove", &old, e))?;
            removed.push(old);
        }
    }
    schedule::Installed {
        kind: target.kind(),
        location: target.location().to_path_buf(),
        files: written.clone(),
    }
    .save(&ctx.config.state_dir)?;
    // An install by an older sp left no record: what it wrote of the other kind would run
    // every job a second time. It is not removed unasked, but named.
    let other = match (had_record, target) {
        (false, Target::Systemd(_)) => std::fs::read_to_string(schedule::DEFAULT_CRON_FILE)
            .is_ok_and(|t| t.starts_with("# Written by `sp schedule install`"))
            .then(|| schedule::DEFAULT_CRON_FILE.to_string()),
        (false, Target::Cron(_)) => {
            let timer = Path::new(schedule::DEFAULT_SYSTEMD_DIR).join("simple-paas-backup.timer");
            timer.is_file().then(|| timer.display().to_string())
        }
        _ => None,
    };
    let next_step = match target {
        Target::Cron(_) => other.map(|o| {
            format!("an earlier install left {o} (and its siblings): remove them, or every job runs twice")
        }),
        Target::Systemd(_) => {
            let timers: Vec<String> = written
                .iter()
                .filter_map(|p| p.file_name()?.to_str())
                .filter(|n| n.ends_with(".timer") || *n == "simple-paas-boot.service")
                .map(String::from)
                .collect();
            let remove = other
                .map(|o| format!("rm {o} && "))
                .unwrap_or_default();
            Some(format!(
                "{remove}systemctl daemon-reload && systemctl enable --now {}",
                timers.join(" ")
            ))
        }
    };
    Ok(ScheduleReport {
        jobs,
        kind: Some(target.kind()),
        written,
        removed,
        next_step,
    })
}

/// Whether the schedule on disk is the one the config asks for.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleCheck {
    /// A cron file or systemd units written by `sp schedule install` are in place.
    pub installed: bool,
    pub kind: Option<schedule::Kind>,
    /// The cron file or the systemd directory.
    pub location: Option<PathBuf>,
    /// They say what `sp schedule install` would write now.
    pub matches: bool,
    /// What is wrong and what to do, when not installed or not matching.
    pub problem: Option<String>,
}

/// Compares the installed cron file or systemd units with what the config asks for now. No
/// record of an install (an older sp) falls back to the default cron file.
pub fn check(ctx: &Ctx) -> Result<ScheduleCheck> {
    let record = schedule::Installed::load(&ctx.config.state_dir)?;
    let target = match &record {
        Some(r) if r.kind == schedule::Kind::Systemd => Target::Systemd(r.location.clone()),
        Some(r) => Target::Cron(r.location.clone()),
        None => Target::Cron(PathBuf::from(schedule::DEFAULT_CRON_FILE)),
    };
    // A spec that does not load (status reports it too) leaves nothing to compare with.
    let files = match jobs(ctx, 1).and_then(|jobs| wanted(ctx, &jobs, &target)) {
        Ok(files) => files,
        Err(e) => {
            return Ok(ScheduleCheck {
                installed: record.is_some() || target.location().exists(),
                kind: record.map(|r| r.kind),
                location: Some(target.location().to_path_buf()),
                matches: false,
                problem: Some(format!(
                    "cannot tell whether the installed schedule is the config's: {e}"
                )),
            })
        }
    };
    let mut missing = Vec::new();
    let mut differ = Vec::new();
    for (path, text) in &files {
        match std::fs::read_to_string(path) {
            Ok(t) if t == *text => {}
            Ok(_) => differ.push(path.display().to_string()),
            Err(_) => missing.push(path.display().to_string()),
        }
    }
    let again = match &target {
        Target::Cron(p) if p.as_os_str() == schedule::DEFAULT_CRON_FILE => {
            "sp schedule install".to_string()
        }
        Target::Cron(p) => format!(
            "sp schedule install --cron-file {}",
            shell_quote(&p.display().to_string())
        ),
        Target::Systemd(d) => format!(
            "sp schedule install --systemd --systemd-dir {}",
            shell_quote(&d.display().to_string())
        ),
    };
    let installed = missing.len() < files.len();
    let problem = if !installed {
        Some(format!(
            "the schedule is not installed (no {}): nothing runs the backups; run `{again}`",
            missing.join(", ")
        ))
    } else if !missing.is_empty() || !differ.is_empty() {
        let mut what: Vec<String> = missing.iter().map(|m| format!("{m} missing")).collect();
        what.extend(differ.iter().map(|d| format!("{d} differs")));
        Some(format!(
            "the installed schedule is not the config's ({}); run `{again}`",
            what.join(", ")
        ))
    } else {
        None
    };
    Ok(ScheduleCheck {
        installed,
        kind: installed.then(|| target.kind()),
        location: Some(target.location().to_path_buf()),
        matches: problem.is_none(),
        problem,
    })
}
