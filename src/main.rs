//! The `sp` binary: parse, set up logging, call the library, map errors to exit codes.

use std::io::{IsTerminal, Write};

use clap::Parser;
use sp::cli::Cli;
use sp::dispatch::{run, Io};
use sp::output::json_error;

/// Colour only for a person at a terminal, and never when NO_COLOR is set (no-color.org).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints a failure on stderr: one line of text, or with `--json` one JSON object.
fn report_error(json: bool, message: &str, hint: Option<&str>, code: i32) {
    let line = if json {
        json_error(message, hint, code)
    } else {
        match hint {
            Some(h) => format!("sp: error: {message} — {h}"),
            None => format!("sp: error: {message}"),
        }
    };
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let wants_json = argv
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        // --help and --version are "errors" that print to stdout: let clap do those.
        Err(e) if wants_json && e.use_stderr() => {
            let text = e.kind().to_string();
            let detail = e.to_string();
            let first = detail
                .lines()
                .next()
                .unwrap_or(&text)
                .trim_start_matches("error: ");
            report_error(true, first, Some("see `sp --help`"), e.exit_code());
            std::process::exit(e.exit_code());
        }
        Err(e) => e.exit(),
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let terminal = std::io::stderr().is_terminal();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("sp={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(terminal))
        .with_target(false)
        .without_time()
        .init();

    let quiet = cli.quiet || cli.json && !terminal;
    let notify: sp::ops::Notifier = Box::new(sp::ui::Terminal::new(quiet, terminal && !cli.json));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report_error(
                cli.json,
                &format!("cannot start the async runtime: {e}"),
                None,
                1,
            );
            std::process::exit(1);
        }
    };
    let json = cli.json;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut stdin = std::io::BufReader::new(std::io::stdin());
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        stdin: &mut stdin,
    };
    let code = match runtime.block_on(async {
        sp::interrupt::install();
        run(cli, &argv, notify, &mut io).await
    }) {
        Ok(code) => code,
        // The reader went away (`sp … | head`): what it wanted it has; exit quietly.
        Err(e) if e.is_broken_pipe() => 0,
        Err(e) => {
            report_error(json, &e.to_string(), e.hint().as_deref(), e.exit_code());
            e.exit_code()
        }
    };
    drop(runtime);
    std::process::exit(code);
}
