//! Progress reporting: bars on stderr, JSON lines for machines, or nothing;
//! and what the command is doing at each moment, so that a stall is named
//! after a few seconds (`watch`) and an interrupt says what it cut short.
//!
//! Two promises hold in every mode: each transfer that started gets exactly
//! one final `finish` event (`done`, `exists`, `failed`, `cancelled` or
//! `interrupted`), and a command ends with exactly one terminal event, `done`
//! or `error` (docs/cli.md). Once the terminal event is out the sink is
//! closed: threads still winding down after a failure write nothing more.

mod term;
mod watch;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::util::human_bytes;

pub use watch::{WaitGuard, WAIT_NOTICE};

/// How progress is shown (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, otherwise nothing.
    #[default]
    Auto,
    /// Bars on stderr, drawn with terminal control codes even when stderr is
    /// not a terminal (a log file, a CI console).
    Bar,
    /// One JSON object per line on stdout, the last always a `done` or `error` event.
    Json,
    /// Nothing.
    None,
}

/// A progress sink shared by concurrent tasks (clones share one state).
#[derive(Clone)]
pub struct Progress {
    kind: Kind,
    shared: Arc<Shared>,
}

#[derive(Clone)]
enum Kind {
    None,
    Bars(MultiProgress),
    Json(Arc<Mutex<std::io::Stdout>>),
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Whether the watcher thread was started.
    watcher: AtomicBool,
}

/// What is under way now.
#[derive(Default)]
struct State {
    next_id: u64,
    transfers: BTreeMap<u64, Active>,
    waits: BTreeMap<u64, watch::Wait>,
    phase: Option<Phase>,
    /// The terminal event is out: nothing more is written.
    closed: bool,
}

/// A transfer under way.
struct Active {
    name: String,
    /// Where the bytes come from (for "waiting for …").
    from: String,
    done: u64,
    total: u64,
    last_byte: Instant,
    /// When a stall was last reported.
    noted: Option<Instant>,
    bar: Option<ProgressBar>,
}

/// What the command is doing, for the message of an interrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    /// e.g. `pulling 127.0.0.1:5000/os:v1`.
    pub doing: String,
    /// What an interrupt now leaves behind, e.g. `nothing was deployed`.
    pub if_interrupted: String,
}

impl Progress {
    /// A sink that reports in `mode`.
    pub fn new(mode: ProgressMode) -> Self {
        let kind = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => Kind::Bars(MultiProgress::new()),
            // Asked for explicitly: drawn whatever stderr is, like
            // `docker buildx --progress=tty` (indicatif's own stderr target
            // hides itself when stderr is not a terminal).
            ProgressMode::Bar if std::io::stderr().is_terminal() => {
                Kind::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
            }
            ProgressMode::Bar => Kind::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::term_like_with_hz(
                Box::new(term::ForcedStderr::new()),
                4,
            ))),
            ProgressMode::Json => Kind::Json(Arc::new(Mutex::new(std::io::stdout()))),
            _ => Kind::None,
        };
        Progress { kind, shared: Arc::default() }
    }

    /// A sink that shows nothing.
    pub fn hidden() -> Self {
        Progress { kind: Kind::None, shared: Arc::default() }
    }

    /// Whether progress goes to stdout as JSON (commands then print results as JSON too).
    pub fn is_json(&self) -> bool {
        matches!(self.kind, Kind::Json(_))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Emits one event: a JSON line, or (its `message`) a line above the bars.
    pub fn event(&self, event: &str, fields: serde_json::Value) {
        let st = self.state();
        if !st.closed {
            self.emit(event, fields);
        }
    }

    /// Writes an event; the caller holds the state lock and checked `closed`.
    fn emit(&self, event: &str, fields: serde_json::Value) {
        match &self.kind {
            Kind::None => {}
            Kind::Bars(m) => {
                if let Some(msg) = fields.get("message").and_then(|v| v.as_str()) {
                    let _ = m.println(msg);
                }
            }
            Kind::Json(out) => {
                let mut obj = json!({ "event": event });
                if let (Some(o), serde_json::Value::Object(f)) = (obj.as_object_mut(), fields) {
                    o.extend(f);
                }
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(out, "{obj}");
                let _ = out.flush();
            }
        }
    }

    /// Says what the command does from now on (for the message of an interrupt).
    pub fn set_phase(&self, doing: impl Into<String>, if_interrupted: impl Into<String>) {
        self.state().phase = Some(Phase { doing: doing.into(), if_interrupted: if_interrupted.into() });
    }

    /// A tracker for one transfer of `total` bytes named `name`, read from `from`.
    pub fn transfer(&self, name: &str, total: u64, from: &str) -> Transfer {
        let mut st = self.state();
        let bar = match &self.kind {
            Kind::Bars(m) if !st.closed => {
                let bar = m.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>14} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(name.to_string());
                Some(bar)
            }
            _ => None,
        };
        let id = st.next_id;
        st.next_id += 1;
        let active = Active {
            name: name.to_string(),
            from: from.to_string(),
            done: 0,
            total,
            last_byte: Instant::now(),
            noted: None,
            bar: bar.clone(),
        };
        st.transfers.insert(id, active);
        if !st.closed {
            self.emit("start", json!({ "name": name, "total": total }));
        }
        drop(st);
        self.start_watcher();
        Transfer { progress: self.clone(), id, last_event: Instant::now(), ended: false }
    }

    /// The terminal event of a success, with the command's result in `fields`.
    pub fn done(&self, fields: serde_json::Value) {
        let mut st = self.state();
        if !st.closed {
            st.closed = true;
            self.emit("done", fields);
        }
    }

    /// The terminal event of a success, unless the command sent its own ([`Progress::done`]).
    pub fn end_ok(&self) {
        self.done(json!({}));
    }

    /// The terminal event of a failure: every transfer still under way gets
    /// its final event with `status` (`cancelled`, `interrupted`), then an
    /// `error` event with `message` and `exitCode`. `clear` removes the bars
    /// from the screen (an interrupt); otherwise they stay, marked.
    pub fn fail(&self, message: &str, exit_code: i32, status: &str, clear: bool) {
        let mut st = self.state();
        if st.closed {
            return;
        }
        st.closed = true;
        for (_, a) in std::mem::take(&mut st.transfers) {
            if let Some(bar) = &a.bar {
                if clear {
                    bar.finish_and_clear();
                } else {
                    bar.abandon_with_message(status.to_string());
                }
            }
            self.emit("finish", json!({ "name": a.name, "done": a.done, "total": a.total, "status": status }));
        }
        if let Kind::Bars(m) = &self.kind {
            if clear {
                let _ = m.clear();
            }
        }
        if let Kind::Json(_) = &self.kind {
            self.emit("error", json!({ "message": message, "exitCode": exit_code }));
        }
    }

    /// Ends the command for an interrupt by `signal`: says what was cut short
    /// (the transfers under way, else what was being waited for, else the
    /// phase) and what that leaves behind, and sends it as the terminal
    /// `error` event after clearing the bars. Returns the message.
    pub fn interrupted(&self, signal: &str, exit_code: i32) -> String {
        let message = describe_interrupt(&self.state(), signal);
        self.fail(&message, exit_code, "interrupted", true);
        message
    }
}

/// The one-line message for an interrupt by `signal` in state `st`.
fn describe_interrupt(st: &State, signal: &str) -> String {
    let mut transfers: Vec<&Active> = st.transfers.values().collect();
    transfers.sort_by_key(|a| std::cmp::Reverse(a.done));
    let what = if let Some(a) = transfers.first() {
        let more = match transfers.len() - 1 {
            0 => String::new(),
            n => format!(" and {n} other layer(s)"),
        };
        Some(format!("pulling layer {} ({} of {}){more}", a.name, human_bytes(a.done), human_bytes(a.total)))
    } else if let Some(w) = st.waits.values().next() {
        Some(format!("waiting for {}", w.what))
    } else {
        st.phase.as_ref().map(|p| p.doing.clone())
    };
    let mut message = format!("interrupted by {signal}");
    if let Some(what) = what {
        message.push_str(&format!(" while {what}"));
    }
    if let Some(p) = &st.phase {
        message.push_str(&format!("; {}", p.if_interrupted));
    }
    message
}

/// Progress of one transfer; ends with [`Transfer::finish`] (or `failed` when dropped).
pub struct Transfer {
    progress: Progress,
    id: u64,
    last_event: Instant,
    ended: bool,
}

impl Transfer {
    /// Adds `n` bytes.
    pub fn inc(&mut self, n: u64) {
        let p = &self.progress;
        let mut st = p.state();
        let closed = st.closed;
        let Some(a) = st.transfers.get_mut(&self.id) else { return };
        a.done += n;
        a.last_byte = Instant::now();
        if let Some(b) = &a.bar {
            if a.noted.is_some() {
                b.set_message("");
            }
            b.inc(n);
        }
        a.noted = None;
        if p.is_json() && !closed && self.last_event.elapsed() >= Duration::from_millis(500) {
            self.last_event = Instant::now();
            let fields = json!({ "name": a.name, "done": a.done, "total": a.total });
            p.emit("progress", fields);
        }
    }

    /// Ends the transfer with a short status (`done`, `exists`, `failed`).
    pub fn finish(mut self, status: &str) {
        self.end(status);
    }

    fn end(&mut self, status: &str) {
        self.ended = true;
        let p = &self.progress;
        let mut st = p.state();
        // Already ended by the command's failure or an interrupt.
        let Some(a) = st.transfers.remove(&self.id) else { return };
        if st.closed {
            return;
        }
        if let Some(b) = &a.bar {
            b.finish_with_message(status.to_string());
        }
        p.emit("finish", json!({ "name": a.name, "done": a.done, "total": a.total, "status": status }));
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if !self.ended {
            self.end("failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_names_the_layer_under_way_and_the_phase() {
        let p = Progress::hidden();
        p.set_phase("pulling reg/os:1", "nothing was deployed");
        let mut t = p.transfer("abc123", 40 << 20, "registry reg");
        t.inc(12 << 20);
        let msg = p.interrupted("SIGINT", 130);
        assert_eq!(
            msg,
            "interrupted by SIGINT while pulling layer abc123 (12.0 MiB of 40.0 MiB); nothing was deployed"
        );
        // The transfer's own end after the interrupt changes nothing.
        t.finish("failed");
        assert!(p.state().transfers.is_empty() && p.state().closed);

        let p = Progress::hidden();
        assert_eq!(p.interrupted("SIGTERM", 143), "interrupted by SIGTERM");
    }
}
