//! Turns a parsed command line into one op call and renders its report. The binary hands
//! in its output streams; what to print is decided here, how to print (stdout/stderr) by main.

use std::io::{BufRead, Write};

use serde::Serialize;

use crate::cli::{
    Cli, Command, KeyCommand, RegistryCommand, ScheduleCommand, SiteCommand, SnapshotCommand,
};
use crate::error::{Error, Result};
use crate::ops::{self, Ctx, Notifier};

/// The streams an op may write to.
pub struct Io<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    pub stdin: &'a mut (dyn BufRead + Send),
}

/// Prints a report as JSON or as text.
fn emit<T: Serialize + std::fmt::Display>(cli: &Cli, io: &mut Io, report: &T) -> Result<()> {
    let text = if cli.json {
        serde_json::to_string_pretty(report)
            .map_err(|e| Error::Other(format!("encode JSON: {e}")))?
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

/// Runs the command; returns the process exit code for commands that decide their own
/// (doctor, exec), 0 otherwise.
pub async fn run(cli: Cli, notify: Notifier, io: &mut Io<'_>) -> Result<i32> {
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
        emit(&cli, io, &report)?;
        return Ok(0);
    }
    if let Command::Key(KeyCommand::Generate { output }) = &cli.command {
        // Needs no config: made wherever the identity is to be kept.
        emit_action(&cli, io, &ops::key::generate(output)?)?;
        return Ok(0);
    }
    if let Command::Completions { shell } = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut cmd, "sp", io.out);
        return Ok(0);
    }
    if let Command::Man = &cli.command {
        let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
        man.render(io.out)
            .map_err(|e| Error::io("write man page", e))?;
        return Ok(0);
    }
    let ctx = Ctx::load(&cli.config, notify)?;
    match &cli.command {
        Command::Init(_) | Command::Completions { .. } | Command::Man => {
            unreachable!("handled above")
        }
        Command::Doctor => {
            let report = ops::doctor::run(&ctx).await?;
            emit(&cli, io, &report)?;
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
            emit_action(&cli, io, &ops::registry_login::run(&ctx, &opts).await?)?;
        }
        Command::Apply { name } => {
            emit_action(&cli, io, &ops::apply::run(&ctx, name.as_deref()).await?)?;
        }
        Command::Site(sc) => return site(&cli, &ctx, sc, io).await,
        Command::Backup { sites } => {
            let opts = ops::backup::BackupOpts {
                sites: sites.clone(),
            };
            let report = ops::backup::run(&ctx, &opts).await?;
            emit_unless_quiet_and(report.ok(), &cli, io, &report)?;
            return Ok(if report.ok() { 0 } else { 1 });
        }
        Command::Restore {
            id,
            sites,
            as_name,
            from,
            identity,
            yes,
            dry_run,
            keys,
        } => {
            let opts = ops::restore::RestoreOpts {
                dry_run: *dry_run,
                id: id.clone(),
                sites: sites.clone(),
                as_name: as_name.clone(),
                from: from.clone(),
                yes: *yes,
                keys: keys.keys.clone(),
                identity: identity.identity.clone(),
            };
            emit_action(&cli, io, &ops::restore::run(&ctx, &opts).await?)?;
        }
        Command::Drill {
            id,
            from,
            keys,
            identity,
        } => {
            let report = ops::drill::run(
                &ctx,
                id,
                from.as_deref(),
                &keys.keys,
                identity.identity.as_deref(),
            )
            .await?;
            emit_unless_quiet_and(report.ok, &cli, io, &report)?;
            return Ok(if report.ok { 0 } else { 1 });
        }
        Command::Snapshots(opts) => emit(&cli, io, &ops::snapshots::list(&ctx, opts)?)?,
        Command::Snapshot(SnapshotCommand::Pin { id }) => {
            emit_action(&cli, io, &ops::snapshots::pin(&ctx, id, true)?)?
        }
        Command::Snapshot(SnapshotCommand::Unpin { id }) => {
            emit_action(&cli, io, &ops::snapshots::pin(&ctx, id, false)?)?
        }
        Command::Verify {
            id,
            from,
            keys,
            identity,
        } if id == "all" => {
            let report = ops::verify::all(
                &ctx,
                from.as_deref(),
                &keys.keys,
                identity.identity.as_deref(),
            )
            .await?;
            emit_unless_quiet_and(report.ok(), &cli, io, &report)?;
            return Ok(if report.ok() { 0 } else { 1 });
        }
        Command::Verify {
            id,
            from,
            keys,
            identity,
        } => {
            let report = ops::verify::run(
                &ctx,
                id,
                from.as_deref(),
                &keys.keys,
                identity.identity.as_deref(),
            )
            .await?;
            emit_unless_quiet_and(report.ok(), &cli, io, &report)?;
            return Ok(if report.ok() { 0 } else { 1 });
        }
        Command::Key(kc) => match kc {
            KeyCommand::Show => emit(&cli, io, &ops::key::show(&ctx)?)?,
            KeyCommand::Rotate => emit_action(&cli, io, &ops::key::rotate(&ctx)?)?,
            KeyCommand::Export { public } => {
                let text = ops::key::export(&ctx, *public)?;
                io.out
                    .write_all(text.as_bytes())
                    .map_err(|e| Error::io("write the key", e))?;
            }
            KeyCommand::Import { file, replace } => {
                emit_action(&cli, io, &ops::key::import(&ctx, file, *replace)?)?
            }
            KeyCommand::Generate { output } => emit_action(&cli, io, &ops::key::generate(output)?)?,
        },
        Command::Prune { dry_run, from } => emit_action(
            &cli,
            io,
            &ops::prune::run(&ctx, *dry_run, from.as_deref()).await?,
        )?,
        Command::Schedule(ScheduleCommand::Show) => emit(&cli, io, &ops::schedule::show(&ctx)?)?,
        Command::Schedule(ScheduleCommand::Install {
            cron_file,
            systemd_dir,
        }) => emit_action(
            &cli,
            io,
            &ops::schedule::install(&ctx, cron_file, systemd_dir.as_deref())?,
        )?,
        Command::Status => {
            let report = ops::status::run(&ctx)?;
            emit_unless_quiet_and(report.ok, &cli, io, &report)?;
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
        SiteCommand::Show { name } => emit(cli, io, &ops::site_info::show(ctx, name).await?)?,
        SiteCommand::Deploy { name, image } => {
            let opts = ops::deploy::DeployOpts {
                site: name.clone(),
                image: image.clone(),
            };
            emit_action(cli, io, &ops::deploy::deploy(ctx, &opts).await?)?;
        }
        SiteCommand::Rollback { name } => {
            emit_action(cli, io, &ops::deploy::rollback(ctx, name).await?)?
        }
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
        SiteCommand::Logs { name, follow, tail } => {
            ops::control::logs(ctx, name, *follow, *tail, io.out).await?
        }
        SiteCommand::Exec { name, cmd } => {
            let code = ops::control::exec(ctx, name, cmd, io.out, io.err).await?;
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
