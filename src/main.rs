//! The `hostctl` binary: parse arguments, set up logging and the runtime, run
//! the command, print the error chain once and exit with its code. SIGINT and
//! SIGTERM end the command with a message saying what they interrupted.

use std::time::Duration;

use std::io::IsTerminal;

use clap::FromArgMatches;
use tracing_subscriber::EnvFilter;

/// How long threads still working when a command ends (layer imports cut
/// short by a failure or an interrupt) get to remove what they wrote.
const WIND_DOWN: Duration = Duration::from_secs(3);

enum Outcome {
    Finished(anyhow::Result<()>),
    Interrupted(hostctl::interrupt::Signal),
}

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
    // Clones of the global arguments share the command's progress sink.
    let global = cli.global.clone();
    // The command runs on a thread of its own, so that a signal is noticed
    // (here, on the main thread) even while the command is busy in
    // synchronous work.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("command".into())
        .spawn(move || {
            let _ = tx.send(handle.block_on(hostctl::cli::run(cli)));
        })
        .expect("starting the command thread");
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = rx => Outcome::Finished(r.unwrap_or_else(|_| Err(anyhow::anyhow!("the command panicked")))),
            signal = hostctl::interrupt::signalled() => Outcome::Interrupted(signal),
        }
    });
    let (message, code) = match outcome {
        Outcome::Finished(Ok(())) => (None, hostctl::error::code::OK),
        // A closed stdout (`hostctl status | head`) is not an error worth a message.
        Outcome::Finished(Err(err)) if hostctl::error::is_stdout_closed(&err) => (None, hostctl::error::code::OK),
        Outcome::Finished(Err(err)) => {
            let mut message = format!("{err:#}");
            if let Some(hint) = hostctl::error::hint(&err) {
                message.push_str(&format!("\nhint: {hint}"));
            }
            (Some(message), hostctl::error::exit_code(&err))
        }
        Outcome::Interrupted(signal) => {
            let message = global.progress().interrupted(signal.name, signal.exit_code);
            (Some(message), signal.exit_code)
        }
    };
    if code == hostctl::error::code::OK {
        // Nothing is left running after a success.
        runtime.shutdown_background();
        std::process::exit(code);
    }
    // Threads still importing layers for a failed or interrupted command see
    // their downloads end with the runtime, give up without retrying, and
    // remove what they wrote. A panic there (a timer of the shut-down
    // runtime) is part of ending and not worth a message.
    hostctl::interrupt::set_ending();
    std::panic::set_hook(Box::new(|_| {}));
    runtime.shutdown_timeout(WIND_DOWN);
    if let Some(message) = message {
        // `fsck --repair` that repaired everything exits 9 without being an error.
        let prefix = if code == hostctl::error::code::REPAIRED { "" } else { "error: " };
        eprintln!("{prefix}{message}");
    }
    std::process::exit(code);
}
