//! Ending a command early: the signals that interrupt it (SIGINT, SIGTERM)
//! with their conventional exit codes (128 + the signal number), and the
//! flag that tells work still winding down on other threads not to start
//! anything new (no retry, no resume) once the command is over.

use std::sync::atomic::{AtomicBool, Ordering};

/// A signal that ended the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal {
    /// `SIGINT` or `SIGTERM`.
    pub name: &'static str,
    /// 130 for SIGINT, 143 for SIGTERM (docs/cli.md).
    pub exit_code: i32,
}

/// Ctrl-C: exit status 130.
pub const SIGINT: Signal = Signal { name: "SIGINT", exit_code: 128 + libc::SIGINT };
/// A stop request: exit status 143.
pub const SIGTERM: Signal = Signal { name: "SIGTERM", exit_code: 128 + libc::SIGTERM };

static ENDING: AtomicBool = AtomicBool::new(false);

/// Marks the command as over (failed or interrupted): see [`is_ending`].
pub fn set_ending() {
    ENDING.store(true, Ordering::SeqCst);
}

/// Whether the command is over: a download that breaks now gives up at once
/// instead of resuming, so that its import fails, removes what it wrote and
/// lets the process exit.
pub fn is_ending() -> bool {
    ENDING.load(Ordering::SeqCst)
}

/// Waits for SIGINT or SIGTERM. Handlers that cannot be installed leave the
/// default action (the process dies) and this never returns.
pub async fn signalled() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    let (int, term) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    let (Ok(mut int), Ok(mut term)) = (int, term) else {
        tracing::debug!("cannot handle SIGINT/SIGTERM; they end the process as by default");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => SIGINT,
        _ = term.recv() => SIGTERM,
    }
}
