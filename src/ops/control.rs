//! `sp site start|stop|restart|logs|exec`: the running container, by hand, and the output of
//! the one before it.

use std::io::Write;

use futures_util::StreamExt;
use serde::Serialize;

use crate::engine::{ContainerInfo, Engine, ExecSession, LogQuery, Role};
use crate::error::{Error, Result};

use super::Ctx;

/// What start/stop/restart did.
#[derive(Debug, Serialize)]
pub struct ControlReport {
    pub site: String,
    pub action: String,
    pub container: String,
}

impl std::fmt::Display for ControlReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.site, self.action, self.container)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

/// The site's web container (the running one if several).
async fn web_container(ctx: &Ctx, engine: &Engine, site: &str) -> Result<ContainerInfo> {
    let list = engine
        .list(&ctx.config.instance, Some(site), Some(Role::Web))
        .await?;
    list.iter()
        .find(|c| c.running())
        .or(list.first())
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{site}: no container; `sp apply {site}` recreates it"
            ))
        })
}

/// `sp site start|stop|restart NAME`.
pub async fn control(ctx: &Ctx, site: &str, action: Action) -> Result<ControlReport> {
    ctx.site(site)?;
    let verb = match action {
        Action::Start => "start",
        Action::Stop => "stop",
        Action::Restart => "restart",
    };
    let _lock = ctx.lock(&format!("site {verb} {site}"))?;
    let engine = ctx.engine().await?;
    let c = web_container(ctx, &engine, site).await?;
    if matches!(action, Action::Stop | Action::Restart) {
        engine.stop(&c.id).await?;
    }
    if matches!(action, Action::Start | Action::Restart) {
        engine.start(&c.id).await?;
    }
    let mut state = ctx.deploy_state(site)?;
    state.stopped = action == Action::Stop;
    ctx.save_deploy_state(site, &state)?;
    Ok(ControlReport {
        site: site.to_string(),
        action: match action {
            Action::Start => "started",
            Action::Stop => "stopped",
            Action::Restart => "restarted",
        }
        .to_string(),
        container: c.name,
    })
}

/// Options of `sp site logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsOpts {
    /// The site.
    pub name: String,
    /// Keep printing new output.
    #[arg(long, short, conflicts_with = "previous")]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Only output since DURATION ago (90s, 45m, 26h, 7d) or since an RFC 3339 TIME.
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// The output of the container the last deploy replaced (its last 5 MiB).
    #[arg(long)]
    pub previous: bool,
}

/// The most of a replaced container's output sp keeps for `logs --previous`.
pub const PREVIOUS_LOG_BYTES: usize = 5 << 20;

/// `--since`: a duration back from `now`, or an RFC 3339 time; as Unix seconds.
pub fn parse_since(text: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.timestamp());
    }
    match crate::config::parse_duration(text) {
        Ok(d) => Ok(now.timestamp() - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)),
        Err(_) => Err(Error::Invalid(format!(
            "--since {text:?}: give a duration (90s, 45m, 26h, 7d) or an RFC 3339 time (2026-12-01T09:30:00Z)"
        ))),
    }
}

/// `sp site logs NAME [--follow] [--tail N] [--since D|T] [--previous]`: copies the
/// container's output (or, with `--previous`, what sp kept of the one before it) to `out`.
pub async fn logs(ctx: &Ctx, opts: &LogsOpts, out: &mut (dyn Write + Send)) -> Result<()> {
    let site = opts.name.as_str();
    ctx.site(site)?;
    let since = opts
        .since
        .as_deref()
        .map(|s| parse_since(s, chrono::Utc::now()))
        .transpose()?;
    if opts.previous {
        let path = ctx.paths(site).previous_log();
        let Some(bytes) = crate::site::read_bounded(&path, PREVIOUS_LOG_BYTES as u64 + 4096)?
        else {
            return Err(Error::NotFound(format!(
                "{site}: no output of an earlier container kept (sp keeps it from the next deploy on)"
            )));
        };
        let text = previous_lines(&bytes, since, opts.tail);
        out.write_all(&text)
            .map_err(|e| Error::io("write logs", e))?;
        return out.flush().map_err(|e| Error::io("write logs", e));
    }
    let engine = ctx.engine().await?;
    let c = web_container(ctx, &engine, site).await?;
    let query = LogQuery {
        follow: opts.follow,
        tail: opts.tail,
        since,
        timestamps: false,
    };
    let mut stream = Box::pin(engine.logs_with(&c.id, &query));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk.into_bytes())
            .map_err(|e| Error::io("write logs", e))?;
        out.flush().map_err(|e| Error::io("write logs", e))?;
    }
    Ok(())
}

/// The kept output of a replaced container (lines that start with Docker's timestamp), with
/// the timestamps taken off: those since `since`, the last `tail` of them.
pub fn previous_lines(bytes: &[u8], since: Option<i64>, tail: Option<u32>) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = Vec::new();
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let (stamp, rest) = match line.iter().position(|b| *b == b' ') {
            Some(i) => (std::str::from_utf8(&line[..i]).ok(), &line[i + 1..]),
            None => (None, line),
        };
        let time = stamp.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
        let body = if time.is_some() { rest } else { line };
        if let (Some(since), Some(t)) = (since, time) {
            if t.timestamp() < since {
                continue;
            }
        }
        lines.push(body);
    }
    let skip = match tail {
        Some(n) => lines.len().saturating_sub(n as usize),
        None => 0,
    };
    lines[skip..].concat()
}

/// Keeps the last [`PREVIOUS_LOG_BYTES`] of the output (with timestamps) of the container a
/// roll-out retires — of `old`, the one serving (else the first), never `new` — in the site's
/// `previous.log` (0600), for `logs --previous`. Best effort: a failure is a note, never a
/// failed deploy.
pub async fn keep_previous_logs(
    ctx: &Ctx,
    engine: &Engine,
    site: &str,
    old: &[ContainerInfo],
    new: &str,
) {
    let retired: Vec<&ContainerInfo> = old.iter().filter(|c| c.id != new).collect();
    let Some(c) = retired.iter().find(|c| c.running()).or(retired.first()) else {
        return;
    };
    let id = c.id.as_str();
    let query = LogQuery {
        timestamps: true,
        ..Default::default()
    };
    let mut kept = LogTail::new(PREVIOUS_LOG_BYTES);
    let mut stream = Box::pin(engine.logs_with(id, &query));
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        kept.push(chunk.into_bytes());
    }
    let all = kept.finish();
    let path = ctx.paths(site).previous_log();
    if let Err(e) = crate::fsutil::write_private(&path, &all) {
        ctx.note(&format!(
            "{site}: could not keep the old container's output: {e}"
        ));
    }
}

/// The last `max` bytes of a stream of log lines, kept whole lines (Docker frames) at a time.
struct LogTail {
    max: usize,
    size: usize,
    kept: std::collections::VecDeque<bytes::Bytes>,
}

impl LogTail {
    fn new(max: usize) -> LogTail {
        LogTail {
            max,
            size: 0,
            kept: Default::default(),
        }
    }

    fn push(&mut self, b: bytes::Bytes) {
        self.size += b.len();
        self.kept.push_back(b);
        while self.size > self.max && self.kept.len() > 1 {
            self.size -= self.kept.pop_front().map(|b| b.len()).unwrap_or(0);
        }
    }

    fn finish(self) -> Vec<u8> {
        let mut all: Vec<u8> = self.kept.iter().flat_map(|b| b.iter().copied()).collect();
        if all.len() > self.max {
            all.drain(..all.len() - self.max);
        }
        all
    }
}

/// Options of `sp site exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecOpts {
    /// Attach stdin (the default when stdin is not a terminal).
    #[arg(long, short)]
    pub interactive: bool,
    /// Give the command a terminal (the default, with -i, when stdin and stdout are terminals).
    #[arg(long, short)]
    pub tty: bool,
    /// The site.
    pub name: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

/// The terminal sp runs in, as exec sees it.
pub struct Terminal {
    /// Whether stdin is a terminal.
    pub stdin_is_tty: bool,
    /// Whether stdout is a terminal (output redirected to a file gets no TTY by default: a
    /// TTY would turn its newlines into CRLF and mix stderr in).
    pub stdout_is_tty: bool,
    /// The process's stdin (handed to the command with -i).
    pub stdin: Box<dyn std::io::Read + Send>,
}

/// `sp site exec [-i] [-t] NAME -- CMD...`: runs CMD in the running container as the site's
/// uid and returns its exit code. Without -i or -t: both when stdin (and stdout) is a
/// terminal, -i alone when not. With -t on a terminal, the terminal is in raw mode while CMD
/// runs. A signal (^C without a TTY) ends the session at once; the command may run on.
pub async fn exec(
    ctx: &Ctx,
    opts: &ExecOpts,
    term: Terminal,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<i64> {
    let site = opts.name.as_str();
    let spec = ctx.site(site)?;
    if opts.cmd.is_empty() {
        return Err(Error::Invalid(
            "exec needs a command: sp site exec NAME -- CMD...".into(),
        ));
    }
    let (interactive, tty) = match (opts.interactive, opts.tty) {
        (false, false) => (true, term.stdin_is_tty && term.stdout_is_tty),
        chosen => chosen,
    };
    let engine = ctx.engine().await?;
    let c = web_container(ctx, &engine, site).await?;
    if !c.running() {
        return Err(Error::NotRunning(format!(
            "{site}: the container is not running (state {}); start it with `sp site start {site}`",
            c.state
        )));
    }
    let size = terminal_size;
    // Raw mode only for a terminal session on a real terminal; restored when this returns.
    let _raw = (tty && interactive && term.stdin_is_tty)
        .then(RawMode::enter)
        .flatten();
    let session = ExecSession {
        stdin: interactive.then_some(term.stdin),
        tty: tty.then_some(&size as &(dyn Fn() -> Option<(u16, u16)> + Send + Sync)),
        out,
        err,
    };
    engine
        .exec_session(
            &c.id,
            &opts.cmd,
            Some(&format!("{0}:{0}", spec.uid)),
            session,
        )
        .await
}

/// The size (columns, rows) of the terminal on stdout or stdin, if either is one.
fn terminal_size() -> Option<(u16, u16)> {
    for fd in [1, 0, 2] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

/// The terminal on stdin in raw mode (keys go to the command as typed, ^C included) until
/// dropped.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(parse_since("90s", now).unwrap(), now.timestamp() - 90);
        assert_eq!(parse_since("2h", now).unwrap(), now.timestamp() - 7200);
        assert_eq!(
            parse_since("2026-12-01T09:00:00Z", now).unwrap(),
            now.timestamp() - 3600
        );
        for bad in ["", "yesterday", "5x", "-1h"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_kept_output_is_bounded_and_ends_with_the_last_line() {
        let mut t = LogTail::new(1000);
        for i in 0..500 {
            t.push(bytes::Bytes::from(format!(
                "2026-12-01T09:00:00Z line {i}\n"
            )));
        }
        let out = t.finish();
        assert!(out.len() <= 1000 && out.len() > 900, "{}", out.len());
        assert!(out.starts_with(b"2026-"));
        assert!(out.ends_with(b"line 499\n"));
        let mut t = LogTail::new(10);
        t.push(bytes::Bytes::from_static(b"a very long single line\n"));
        assert_eq!(t.finish(), b"ngle line\n");
    }

    #[test]
    fn previous_lines_strip_stamps_and_filter() {
        let log = b"2026-12-01T09:00:00.1Z one\n2026-12-01T09:30:00.5Z two\nno stamp\n2026-12-01T10:00:00Z three\n";
        assert_eq!(
            previous_lines(log, None, None),
            b"one\ntwo\nno stamp\nthree\n"
        );
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-01T09:15:00Z")
            .unwrap()
            .timestamp();
        assert_eq!(
            previous_lines(log, Some(since), None),
            b"two\nno stamp\nthree\n"
        );
        assert_eq!(previous_lines(log, None, Some(1)), b"three\n");
    }
}
