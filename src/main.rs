//! The `hostctl` binary: parse arguments, set up logging and the runtime, run
//! the command, print the error chain once and exit with its code.

use std::io::IsTerminal;

use clap::FromArgMatches;
use tracing_subscriber::EnvFilter;

fn main() {
    let matches = hostctl::cli::command().get_matches();
    let cli = hostctl::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let level = match cli.global.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("hostctl={level}")));
    // Colours only on a terminal (tracing-subscriber's default is always,
    // unless NO_COLOR is set); clap's own help and errors decide the same way.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();

    // Async only pays for network I/O; disk work and hashing run on the blocking
    // pool. Two workers match the small machines hostctl mostly runs on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let result = runtime.block_on(hostctl::cli::run(cli));
    // Do not wait for blocking threads still draining a failed pipeline.
    runtime.shutdown_background();
    if let Err(err) = result {
        // A closed stdout (`hostctl status | head`) is not an error worth a message.
        if hostctl::error::is_stdout_closed(&err) {
            std::process::exit(hostctl::error::code::OK);
        }
        eprintln!("error: {err:#}");
        std::process::exit(hostctl::error::exit_code(&err));
    }
}
