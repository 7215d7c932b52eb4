//! `sp schedule show|install`: the host's backup schedule and the sites' jobs, as one crontab.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::schedule::{self, shell_quote};

use super::Ctx;

/// One scheduled thing.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// `backup` or `SITE/JOB`.
    pub name: String,
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
        let next = schedule::next_runs(sched, &now, runs).map_err(Error::Invalid)?;
        out.push(Job {
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
    /// Files written by `install`.
    pub written: Vec<PathBuf>,
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
        Ok(())
    }
}

/// `sp schedule show`.
pub fn show(ctx: &Ctx) -> Result<ScheduleReport> {
    Ok(ScheduleReport {
        jobs: jobs(ctx, 3)?,
        written: Vec::new(),
    })
}

/// After a reboot, `sp apply`: the kernel has forgotten sp's firewall table that keeps the
/// sites' networks apart (see [`crate::firewall`]), and apply puts it back.
fn reboot_entry() -> Result<schedule::Entry> {
    let exe = std::env::current_exe().map_err(|e| Error::io("locate the sp binary", e))?;
    Ok(schedule::Entry {
        comment: "after a reboot: the sites' firewall table (the kernel forgets it)".into(),
        schedule: "@reboot".into(),
        command: format!("{} -q apply", shell_quote(&exe.display().to_string())),
    })
}

/// `sp schedule install`: writes the cron file and, if asked, systemd units.
pub fn install(ctx: &Ctx, cron_file: &Path, systemd_dir: Option<&Path>) -> Result<ScheduleReport> {
    let _lock = ctx.lock("schedule install")?;
    let jobs = jobs(ctx, 3)?;
    let mut entries: Vec<schedule::Entry> = jobs
        .iter()
        .map(|j| schedule::Entry {
            comment: j.name.clone(),
            schedule: j.schedule.clone(),
            command: j.command.clone(),
        })
        .collect();
    entries.push(reboot_entry()?);
    let config =
        std::fs::canonicalize(&ctx.config_path).unwrap_or_else(|_| ctx.config_path.clone());
    crate::fsutil::write_atomic(
        cron_file,
        schedule::cron_file(&config, &entries).as_bytes(),
        0o644,
    )?;
    let mut written = vec![cron_file.to_path_buf()];
    if let Some(dir) = systemd_dir {
        for j in &jobs {
            let unit = format!("simple-paas-{}", j.name.replace('/', "-"));
            let Some(cal) = schedule::on_calendar(&j.schedule) else {
                return Err(Error::Invalid(format!(
                    "{}: {:?} has steps or ranges systemd spells differently; use the cron file",
                    j.name, j.schedule
                )));
            };
            let service = format!(
                "[Unit]\nDescription=sp: {name}\n\n[Service]\nType=oneshot\nEnvironment=SP_CONFIG={config}\nExecStart=/bin/sh -c {cmd}\n",
                name = j.name,
                config = config.display(),
                cmd = shell_quote(&j.command)
            );
            let timer = format!(
                "[Unit]\nDescription=sp: {name} on schedule\n\n[Timer]\nOnCalendar={cal}\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
                name = j.name
            );
            for (ext, text) in [("service", service), ("timer", timer)] {
                let p = dir.join(format!("{unit}.{ext}"));
                crate::fsutil::write_atomic(&p, text.as_bytes(), 0o644)?;
                written.push(p);
            }
        }
    }
    Ok(ScheduleReport { jobs, written })
}
