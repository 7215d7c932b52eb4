//! `sp log [--site NAME]`: the audit log — every command that changed the host, who ran it,
//! on which sites and how it ended, oldest first.

use serde::Serialize;

use crate::audit::{self, Entry};
use crate::error::Result;
use crate::site::validate_name;

use super::Ctx;

/// Which entries `sp log` shows.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogOpts {
    /// Only commands that acted on this site.
    #[arg(long, value_name = "NAME")]
    pub site: Option<String>,
    /// Only the last N entries.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct LogReport {
    pub entries: Vec<Entry>,
    /// Lines of the log that could not be read (a torn or edited file).
    pub unreadable: usize,
}

impl std::fmt::Display for LogReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.entries.is_empty() {
            write!(f, "no audited commands")?;
        } else {
            write!(
                f,
                "{:<20} {:<12} {:<10} {:>7} COMMAND",
                "TIME", "ACTOR", "RESULT", "SECONDS"
            )?;
        }
        for e in &self.entries {
            let result = if e.exit_code == 0 {
                e.result.clone()
            } else {
                format!("{} ({})", e.result, e.exit_code)
            };
            write!(
                f,
                "\n{:<20} {:<12} {:<10} {:>7.1} {}",
                e.time.trim_end_matches('Z').replace('T', " "),
                e.actor,
                result,
                e.duration_seconds,
                e.command
            )?;
            if let Some(err) = &e.error {
                write!(f, "\n{:<20} error: {err}", "")?;
            }
        }
        if self.unreadable > 0 {
            write!(f, "\n({} unreadable line(s) skipped)", self.unreadable)?;
        }
        Ok(())
    }
}

/// `sp log`.
pub fn run(ctx: &Ctx, opts: &LogOpts) -> Result<LogReport> {
    if let Some(s) = &opts.site {
        validate_name(s)?;
    }
    let (mut entries, unreadable) = audit::read(&ctx.config.state_dir)?;
    if let Some(s) = &opts.site {
        entries.retain(|e| e.sites.contains(s));
    }
    if let Some(n) = opts.tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    Ok(LogReport {
        entries,
        unreadable,
    })
}
