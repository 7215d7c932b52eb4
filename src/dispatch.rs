//! Turns a parsed command line into one op call and renders its report (as JSON through
//! [`crate::output`], the one voice of every `--json` answer). The binary hands in its output
//! streams; what to print is decided here, how to print (stdout/stderr) by main. Every command
//! that changes the host leaves one line in the audit log ([`audited`] decides which, [`run`]
//! writes it).

use std::io::{BufRead, Write};
use std::path::Path;

use serde::Serialize;

use crate::cli::{
    Cli, Command, KeyCommand, ProxyCommand, RegistryCommand, ScheduleCommand, SiteCommand,
    SnapshotCommand,
};
use crate::error::{Error, Result};
use crate::ops::{self, Ctx, Notifier};
use crate::output::{json_text, man_pages, PublicKey};

/// The streams an op may write to.
pub struct Io<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    pub stdin: &'a mut (dyn BufRead + Send),
}

/// Prints a report as JSON or as text.
fn emit<T: Serialize + std::fmt::Display>(cli: &Cli, io: &mut Io, report: &T) -> Result<()> {
    let text = if cli.json {
        json_text(report)?
    } else {
        report.to_string()
    };
    writeln!(io.out, "{text}").map_err(|e| Error::io("write output", e))
}

/// A child's exit code as ours: unknown (-1) is a failure, not success.
fn exit_code_of(code: i64) -> i32 {
    if code < 0 {
        1
    } else {
        code.min(255) as i32
    }
}

/// Prints the report of an action; with `-q` (cron) a success prints nothing.
fn emit_action<T: Serialize + std::fmt::Display>(cli: &Cli, io: &mut Io, report: &T) -> Result<()> {
    emit_unless_quiet_and(true, cli, io, report)
}

/// Prints a report unless `-q` was given and `fine` is true (so cron mails only trouble).
fn emit_unless_quiet_and<T: Serialize + std::fmt::Display>(
    fine: bool,
    cli: &Cli,
    io: &mut Io,
    report: &T,
) -> Result<()> {
    if cli.quiet && !cli.json && fine {
        return Ok(());
    }
    emit(cli, io, report)
}

/// What an audited command acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// These sites.
    Sites(Vec<String>),
    /// Every site there is (recorded by name after the command).
    AllSites,
    /// The host itself (config, keys, credentials, schedule, snapshots).
    Host,
}

/// The one place that says which commands change the host (and so go into the audit log),
/// and what they act on. None: a command that only reads.
pub fn audited(cmd: &Command) -> Option<Scope> {
    let one = |name: &String| Some(Scope::Sites(vec![name.clone()]));
    let these = |sites: &[String]| {
        Some(if sites.is_empty() {
            Scope::AllSites
        } else {
            Scope::Sites(sites.to_vec())
        })
    };
    match cmd {
        Command::Init(_)
        | Command::Registry(RegistryCommand::Login { .. })
        | Command::Snapshot(SnapshotCommand::Pin { .. } | SnapshotCommand::Unpin { .. })
        | Command::Key(KeyCommand::Rotate | KeyCommand::Import { .. })
        | Command::Schedule(ScheduleCommand::Install { .. }) => Some(Scope::Host),
        Command::Prune { dry_run, .. } => (!dry_run).then_some(Scope::Host),
        Command::Apply { name } => match name {
            Some(n) => one(n),
            None => Some(Scope::AllSites),
        },
        Command::Backup { sites } => these(sites),
        Command::Restore(r) if !r.dry_run => match &r.as_name {
            Some(n) => one(n),
            None => these(&r.sites),
        },
        Command::Site(sc) => match sc {
            SiteCommand::Add(a) => one(&a.name),
            SiteCommand::Deploy(d) => one(&d.site),
            SiteCommand::Rollback(r) => (!r.dry_run).then(|| one(&r.site)).flatten(),
            SiteCommand::Env(e) => match &e.action {
                None | Some(crate::ops::site_env::EnvAction::List { .. }) => None,
                Some(_) => one(&e.name),
            },
            SiteCommand::Exec(x) => one(&x.name),
            SiteCommand::Start { name }
            | SiteCommand::Stop { name }
            | SiteCommand::Restart { name }
            | SiteCommand::Job { name, .. }
            | SiteCommand::Remove { name, .. } => one(name),
            SiteCommand::List
            | SiteCommand::Show { .. }
            | SiteCommand::Logs { .. }
            | SiteCommand::History { .. } => None,
        },
        Command::Proxy(ProxyCommand::Up | ProxyCommand::Reload) => Some(Scope::Host),
        Command::Proxy(ProxyCommand::Status) => None,
        Command::Restore(_)
        | Command::Doctor
        | Command::Snapshots(_)
        | Command::Verify(_)
        | Command::Drill(_)
        | Command::Key(
            KeyCommand::Show | KeyCommand::Export { .. } | KeyCommand::Generate { .. },
        )
        | Command::Schedule(ScheduleCommand::Show)
        | Command::Status
        | Command::Log(_)
        | Command::Completions { .. }
        | Command::Man { .. } => None,
    }
}

/// Runs the command (see [`command`]) and, for a command that changes the host, appends its
/// audit line: `argv` is the command line as typed (secrets are removed before it is stored).
pub async fn run(cli: Cli, argv: &[String], notify: Notifier, io: &mut Io<'_>) -> Result<i32> {
    let started = chrono::Utc::now();
    let clock = std::time::Instant::now();
    let scope = audited(&cli.command);
    let result = command(&cli, notify, io).await;
    if let Some(scope) = scope {
        let (code, error) = match &result {
            Ok(code) => (*code, None),
            Err(e) if e.is_broken_pipe() => (0, None),
            Err(e) => (e.exit_code(), Some(e.to_string())),
        };
        if let Err(e) = record(
            &cli.config,
            argv,
            scope,
            started,
            clock.elapsed(),
            code,
            error,
        ) {
            let _ = writeln!(io.err, "sp: warning: the audit log was not written: {e}");
        }
    }
    result
}

/// Appends one audit line to the log under the config's `state_dir` (none when there is no
/// readable config: nothing was changed then).
fn record(
    config: &Path,
    argv: &[String],
    scope: Scope,
    started: chrono::DateTime<chrono::Utc>,
    took: std::time::Duration,
    code: i32,
    error: Option<String>,
) -> Result<()> {
    let Ok(ctx) = Ctx::load(config, Box::new(|_: &str| {})) else {
        return Ok(());
    };
    let sites = match scope {
        Scope::Sites(s) => s,
        Scope::AllSites => ctx.site_names().unwrap_or_default(),
        Scope::Host => Vec::new(),
    };
    let entry = crate::audit::Entry::new(started, argv, sites, code, took, error);
    crate::audit::append(&ctx.config.state_dir, &entry)
}

/// Runs the command; returns the process exit code for commands that decide their own
/// (doctor, exec), 0 otherwise.
async fn command(cli: &Cli, notify: Notifier, io: &mut Io<'_>) -> Result<i32> {
    if let Command::Init(a) = &cli.command {
        // A password in argv is refused before anything is read or written.
        ops::init::check_url(a.mysql_url.as_deref())?;
        let mysql_password = if a.mysql_password_stdin {
            let mut line = String::new();
            io.stdin
                .read_line(&mut line)
                .map_err(|e| Error::io("read the MySQL admin password from stdin", e))?;
            Some(line.trim_end_matches(['\n', '\r']).to_string())
        } else {
            None
        };
        let opts = ops::init::InitOpts {
            mysql_password,
            mysql_password_file: a.mysql_password_file.clone(),
            instance: a.instance.clone(),
            sites_dir: a.sites_dir.clone(),
            backup_dir: a.backup_dir.clone(),
            state_dir: a.state_dir.clone(),
            mysql_url: a.mysql_url.clone(),
            mysql_host_for_containers: a.mysql_host_for_containers.clone(),
            port_range: a.port_range.clone(),
        };
        let report = ops::init::run(&cli.config, &opts)?;
        emit(cli, io, &report)?;
        return Ok(0);
    }
    if let Command::Key(KeyCommand::Generate { output }) = &cli.command {
        // Needs no config: made wherever the identity is to be kept.
        emit_action(cli, io, &ops::key::generate(output)?)?;
        return Ok(0);
    }
    if let Command::Completions { shell } = &cli.command {
        // Into a buffer first: clap_complete panics on a failed write (`| head -1`).
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let mut buf = Vec::new();
        clap_complete::generate(*shell, &mut cmd, "sp", &mut buf);
        io.out
            .write_all(&buf)
            .map_err(|e| Error::io("write completions", e))?;
        return Ok(0);
    }
    if let Command::Man { dir } = &cli.command {
        match dir {
            Some(d) => emit(cli, io, &man_pages(d)?)?,
            None => {
                let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
                let mut buf = Vec::new();
                man.render(&mut buf)
                    .map_err(|e| Error::io("render the man page", e))?;
                io.out
                    .write_all(&buf)
                    .map_err(|e| Error::io("write man page", e))?;
            }
        }
        return Ok(0);
    }
    let ctx = Ctx::load(&cli.config, notify)?;
    match &cli.command {
        Command::Init(_) | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled above")
        }
        Command::Doctor => {
            let report = ops::doctor::run(&ctx).await?;
            emit(cli, io, &report)?;
            return Ok(if report.ok() { 0 } else { 1 });
        }
        Command::Registry(RegistryCommand::Login {
            host,
            username,
            no_verify,
            ..
        }) => {
            let mut password = String::new();
            io.stdin
                .read_line(&mut password)
                .map_err(|e| Error::io("read password from stdin", e))?;
            let opts = ops::registry_login::LoginOpts {
                host: host.clone(),
                username: username.clone(),
                password: password.trim_end_matches(['\n', '\r']).to_string(),
                no_verify: *no_verify,
            };
            emit_action(cli, io, &ops::registry_login::run(&ctx, &opts).await?)?;
        }
        Command::Apply { name } => {
            emit_action(cli, io, &ops::apply::run(&ctx, name.as_deref()).await?)?;
        }
        Command::Site(sc) => return site(cli, &ctx, sc, io).await,
        Command::Backup { sites } => {
            let opts = ops::backup::BackupOpts {
                sites: sites.clone(),
            };
            let report = ops::backup::run(&ctx, &opts).await?;
            emit_unless_quiet_and(report.ok(), cli, io, &report)?;
            return Ok(if report.ok() { 0 } else { 1 });
        }
        Command::Restore(opts) => emit_action(cli, io, &ops::restore::run(&ctx, opts).await?)?,
        Command::Drill(opts) => {
            let report = ops::drill::run(&ctx, opts).await?;
            emit_unless_quiet_and(report.ok, cli, io, &report)?;
            return Ok(if report.ok { 0 } else { 1 });
        }
        Command::Snapshots(opts) => emit(cli, io, &ops::snapshots::list(&ctx, opts)?)?,
        Command::Snapshot(SnapshotCommand::Pin { id }) => {
            emit_action(cli, io, &ops::snapshots::pin(&ctx, id, true)?)?
        }
        Command::Snapshot(SnapshotCommand::Unpin { id }) => {
            emit_action(cli, io, &ops::snapshots::pin(&ctx, id, false)?)?
        }
        Command::Verify(opts) if opts.id == "all" => {
            let report = ops::verify::all(&ctx, &opts.source).await?;
            emit_unless_quiet_and(report.ok(), cli, io, &report)?;
            return Ok(if report.ok() { 0 } else { 1 });
        }
        Command::Verify(opts) => {
            let report = ops::verify::run(&ctx, opts).await?;
            emit_unless_quiet_and(report.ok(), cli, io, &report)?;
            return Ok(if report.ok() { 0 } else { 1 });
        }
        Command::Key(kc) => match kc {
            KeyCommand::Show => emit(cli, io, &ops::key::show(&ctx)?)?,
            KeyCommand::Rotate => emit_action(cli, io, &ops::key::rotate(&ctx)?)?,
            KeyCommand::Export { public } if cli.json => {
                // Secrets never go into JSON (it ends up in logs and CI output).
                if !*public {
                    return Err(Error::Invalid(
                        "the secret key is not printed as JSON; run `sp key export` without --json (or add --public)".into(),
                    ));
                }
                let key = ops::key::export(&ctx, true)?;
                emit(
                    cli,
                    io,
                    &PublicKey {
                        public_key: key.trim().to_string(),
                    },
                )?
            }
            KeyCommand::Export { public } => {
                let text = ops::key::export(&ctx, *public)?;
                io.out
                    .write_all(text.as_bytes())
                    .map_err(|e| Error::io("write the key", e))?;
            }
            KeyCommand::Import { file, replace } => {
                emit_action(cli, io, &ops::key::import(&ctx, file, *replace)?)?
            }
            KeyCommand::Generate { output } => emit_action(cli, io, &ops::key::generate(output)?)?,
        },
        Command::Proxy(pc) => match pc {
            ProxyCommand::Up | ProxyCommand::Reload => {
                emit_action(cli, io, &ops::proxy::up(&ctx).await?)?
            }
            ProxyCommand::Status => emit(cli, io, &ops::proxy::status(&ctx).await?)?,
        },
        Command::Prune { dry_run, from } => emit_action(
            cli,
            io,
            &ops::prune::run(&ctx, *dry_run, from.as_deref()).await?,
        )?,
        Command::Schedule(ScheduleCommand::Show) => emit(cli, io, &ops::schedule::show(&ctx)?)?,
        Command::Schedule(ScheduleCommand::Install {
            cron_file,
            systemd,
            systemd_dir,
        }) => {
            let target = if *systemd {
                ops::schedule::Target::Systemd(systemd_dir.clone())
            } else {
                ops::schedule::Target::Cron(cron_file.clone())
            };
            emit_action(cli, io, &ops::schedule::install(&ctx, &target)?)?
        }
        Command::Log(opts) => emit(cli, io, &ops::log::run(&ctx, opts)?)?,
        Command::Status => {
            let report = ops::status::run(&ctx)?;
            emit_unless_quiet_and(report.ok, cli, io, &report)?;
            return Ok(if report.ok { 0 } else { 1 });
        }
    }
    Ok(0)
}

async fn site(cli: &Cli, ctx: &Ctx, sc: &SiteCommand, io: &mut Io<'_>) -> Result<i32> {
    use ops::control::Action;
    match sc {
        SiteCommand::Add(a) => {
            let opts = ops::site_add::SiteAddOpts {
                name: a.name.clone(),
                image: a.image.clone(),
                domains: a.domains.clone(),
                port: a.port,
                env: a.env.clone(),
                no_db: a.no_db,
                memory: a.memory.clone(),
                health_path: a.health_path.clone(),
                release: Vec::new(),
            };
            emit_action(cli, io, &ops::site_add::run(ctx, &opts).await?)?;
        }
        SiteCommand::List => emit(cli, io, &ops::site_info::list(ctx).await?)?,
        SiteCommand::Show { name, reveal } => {
            emit(cli, io, &ops::site_info::show(ctx, name, *reveal).await?)?
        }
        SiteCommand::Env(opts) => {
            let from_stdin = matches!(
                opts.action,
                Some(ops::site_env::EnvAction::Set { stdin: true, .. })
            );
            let mut text = String::new();
            if from_stdin {
                io.stdin
                    .read_to_string(&mut text)
                    .map_err(|e| Error::io("read env values from stdin", e))?;
            }
            let input = from_stdin.then_some(text.as_str());
            let report = ops::site_env::run(ctx, opts, input).await?;
            match report {
                ops::site_env::EnvReport::List(_) => emit(cli, io, &report)?,
                ops::site_env::EnvReport::Change(_) => emit_action(cli, io, &report)?,
            }
        }
        SiteCommand::Deploy(opts) => {
            emit_action(cli, io, &ops::deploy::deploy(ctx, opts).await?)?;
        }
        SiteCommand::Rollback(opts) => {
            let report = ops::rollback::rollback(ctx, opts).await?;
            if report.dry_run {
                emit(cli, io, &report)?
            } else {
                emit_action(cli, io, &report)?
            }
        }
        SiteCommand::History { name } => emit(cli, io, &ops::history::history(ctx, name)?)?,
        SiteCommand::Start { name } => emit_action(
            cli,
            io,
            &ops::control::control(ctx, name, Action::Start).await?,
        )?,
        SiteCommand::Stop { name } => emit_action(
            cli,
            io,
            &ops::control::control(ctx, name, Action::Stop).await?,
        )?,
        SiteCommand::Restart { name } => emit_action(
            cli,
            io,
            &ops::control::control(ctx, name, Action::Restart).await?,
        )?,
        SiteCommand::Logs(opts) => ops::control::logs(ctx, opts, io.out).await?,
        SiteCommand::Exec(opts) => {
            use std::io::IsTerminal;
            let term = ops::control::Terminal {
                stdin_is_tty: std::io::stdin().is_terminal(),
                stdout_is_tty: std::io::stdout().is_terminal(),
                stdin: Box::new(std::io::stdin()),
            };
            let code = ops::control::exec(ctx, opts, term, io.out, io.err).await?;
            return Ok(exit_code_of(code));
        }
        SiteCommand::Job { name, job } => {
            let code = ops::job::run(ctx, name, job, io.out).await?;
            return Ok(exit_code_of(code));
        }
        SiteCommand::Remove { name, purge, yes } => {
            let opts = ops::site_remove::RemoveOpts {
                site: name.clone(),
                purge: *purge,
                yes: *yes,
            };
            let (err, stdin) = (&mut *io.err, &mut *io.stdin);
            let mut confirm = |prompt: &str| {
                let _ = write!(err, "{prompt}");
                let _ = err.flush();
                let mut line = String::new();
                stdin
                    .read_line(&mut line)
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|_| line)
            };
            let report = ops::site_remove::run(ctx, &opts, &mut confirm).await?;
            emit_action(cli, io, &report)?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn scope(line: &str) -> Option<Scope> {
        let cli = Cli::try_parse_from(line.split(' ')).unwrap();
        audited(&cli.command)
    }

    #[test]
    fn changes_are_audited_reads_and_dry_runs_are_not() {
        let sites = |s: &[&str]| Some(Scope::Sites(s.iter().map(|x| x.to_string()).collect()));
        assert_eq!(scope("sp site stop blog"), sites(&["blog"]));
        assert_eq!(scope("sp site exec blog -- true"), sites(&["blog"]));
        assert_eq!(scope("sp backup --site a --site b"), sites(&["a", "b"]));
        assert_eq!(scope("sp restore latest --site a --as b"), sites(&["b"]));
        assert_eq!(scope("sp apply"), Some(Scope::AllSites));
        assert_eq!(scope("sp restore latest"), Some(Scope::AllSites));
        assert_eq!(scope("sp prune"), Some(Scope::Host));
        assert_eq!(scope("sp schedule install --systemd"), Some(Scope::Host));
        for read in [
            "sp site list",
            "sp site show blog",
            "sp site logs blog",
            "sp status",
            "sp prune --dry-run",
            "sp restore latest --dry-run",
            "sp verify",
            "sp log",
            "sp key export",
        ] {
            assert_eq!(scope(read), None, "{read}");
        }
    }
}
