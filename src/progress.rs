//! Progress reporting: bars on a terminal, JSON lines for machines, or nothing.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// How progress is shown (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, otherwise nothing.
    #[default]
    Auto,
    /// Bars on stderr.
    Bar,
    /// One JSON object per line on stdout.
    Json,
    /// Nothing.
    None,
}

/// A progress sink shared by concurrent tasks.
#[derive(Clone)]
pub struct Progress {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    None,
    Bars(MultiProgress),
    Json(Arc<Mutex<std::io::Stdout>>),
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        let kind = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => Kind::Bars(MultiProgress::new()),
            ProgressMode::Bar => Kind::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            ProgressMode::Json => Kind::Json(Arc::new(Mutex::new(std::io::stdout()))),
            _ => Kind::None,
        };
        Progress { kind }
    }

    /// A sink that shows nothing.
    pub fn hidden() -> Self {
        Progress { kind: Kind::None }
    }

    /// Whether progress goes to stdout as JSON (commands then print results as JSON too).
    pub fn is_json(&self) -> bool {
        matches!(self.kind, Kind::Json(_))
    }

    /// Emits one event: a JSON line, or a line above the bars.
    pub fn event(&self, event: &str, fields: serde_json::Value) {
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
            }
        }
    }

    /// A tracker for one transfer of `total` bytes named `name`.
    pub fn transfer(&self, name: &str, total: u64) -> Transfer {
        let bar = match &self.kind {
            Kind::Bars(m) => {
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
        self.event("start", json!({ "name": name, "total": total }));
        Transfer { progress: self.clone(), name: name.to_string(), total, done: 0, bar, last_event: Instant::now() }
    }
}

/// Progress of one transfer.
pub struct Transfer {
    progress: Progress,
    name: String,
    total: u64,
    done: u64,
    bar: Option<ProgressBar>,
    last_event: Instant,
}

impl Transfer {
    /// Adds `n` bytes.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.progress.is_json() && self.last_event.elapsed() >= Duration::from_millis(500) {
            self.last_event = Instant::now();
            self.progress.event("progress", json!({ "name": self.name, "done": self.done, "total": self.total }));
        }
    }

    /// Ends the transfer with a short status (`done`, `exists`, `failed`).
    pub fn finish(self, status: &str) {
        if let Some(b) = &self.bar {
            b.finish_with_message(status.to_string());
        }
        self.progress
            .event("finish", json!({ "name": self.name, "done": self.done, "total": self.total, "status": status }));
    }
}
