//! The `sp` binary: parse, set up logging, call the library, map errors to exit codes.

use std::io::IsTerminal;

use clap::Parser;
use sp::cli::Cli;
use sp::dispatch::{run, Io};

fn main() {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("sp={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();

    let terminal = std::io::stderr().is_terminal();
    let quiet = cli.quiet || cli.json && !terminal;
    let notify: sp::ops::Notifier = Box::new(sp::ui::Terminal::new(quiet, terminal && !cli.json));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sp: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut stdin = std::io::BufReader::new(std::io::stdin());
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        stdin: &mut stdin,
    };
    let code = match runtime.block_on(async {
        sp::interrupt::install();
        run(cli, notify, &mut io).await
    }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sp: error: {e}");
            e.exit_code()
        }
    };
    drop(runtime);
    std::process::exit(code);
}
