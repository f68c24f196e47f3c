//! Naming a stall: a request that has had no answer, or a transfer that has
//! had no byte, for [`WAIT_NOTICE`] is reported as "waiting for …" — in the
//! bar on a terminal, as a `waiting` event with `--progress=json`, otherwise
//! as a log line — and again every [`WAIT_REPEAT`] while it lasts. One
//! watcher thread per command looks once a second.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Kind, Progress};
use crate::util::human_bytes;

/// How long a wait lasts before it is reported.
pub const WAIT_NOTICE: Duration = Duration::from_secs(3);
/// How often a wait that goes on is reported again (bars update every second).
pub const WAIT_REPEAT: Duration = Duration::from_secs(10);

/// A request waiting for an answer.
pub(super) struct Wait {
    pub(super) what: String,
    since: Instant,
    noted: Option<Instant>,
}

/// Ends a wait when dropped.
pub struct WaitGuard {
    progress: Progress,
    id: u64,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.progress.state().waits.remove(&self.id);
    }
}

/// Whether a stall that began at `since` and was last reported at `noted` is due a report.
fn due(now: Instant, since: Instant, noted: Option<Instant>) -> bool {
    now.duration_since(since) >= WAIT_NOTICE && noted.is_none_or(|t| now.duration_since(t) >= WAIT_REPEAT)
}

impl Progress {
    /// Registers a wait for `what` (e.g. `registry 127.0.0.1:5000 (the manifest of os:v1)`)
    /// until the guard is dropped.
    pub fn wait(&self, what: impl Into<String>) -> WaitGuard {
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        st.waits.insert(id, Wait { what: what.into(), since: Instant::now(), noted: None });
        drop(st);
        self.start_watcher();
        WaitGuard { progress: self.clone(), id }
    }

    /// Runs `fut`, reporting it as a wait for `what` if it takes long.
    pub async fn waiting<F: Future>(&self, what: impl Into<String>, fut: F) -> F::Output {
        let _guard = self.wait(what);
        fut.await
    }

    /// Starts the watcher thread unless it runs. Called after a wait or a
    /// transfer is registered: the thread ends when it finds nothing under
    /// way (clearing the flag under the state lock, so that a registration
    /// either is seen by it or starts a new one), or with the terminal event.
    pub(super) fn start_watcher(&self) {
        if self.shared.watcher.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let p = self.clone();
        let spawned = std::thread::Builder::new().name("progress-watch".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            if !p.tick(Instant::now()) {
                break;
            }
        });
        if let Err(e) = spawned {
            tracing::debug!("no watcher for stalls: {e}");
        }
    }

    /// Reports the stalls due at `now`; false (the watcher ends) once the
    /// sink is closed or nothing is under way.
    fn tick(&self, now: Instant) -> bool {
        let mut st = self.state();
        if st.closed {
            return false;
        }
        if st.waits.is_empty() && st.transfers.is_empty() {
            self.shared.watcher.store(false, std::sync::atomic::Ordering::SeqCst);
            return false;
        }
        let mut notes = Vec::new();
        for w in st.waits.values_mut() {
            let secs = now.duration_since(w.since).as_secs();
            if due(now, w.since, w.noted) {
                w.noted = Some(now);
                let message = format!("waiting for {}, {secs} s so far", w.what);
                notes.push(json!({ "for": w.what, "seconds": secs, "message": message }));
            }
        }
        for a in st.transfers.values_mut() {
            let secs = now.duration_since(a.last_byte).as_secs();
            if let (Some(bar), true) = (&a.bar, now.duration_since(a.last_byte) >= WAIT_NOTICE) {
                bar.set_message(format!("waiting for {}: no data for {secs} s", a.from));
            }
            if due(now, a.last_byte, a.noted) {
                a.noted = Some(now);
                let message = format!(
                    "waiting for {}: no data for layer {} for {secs} s ({} of {})",
                    a.from,
                    a.name,
                    human_bytes(a.done),
                    human_bytes(a.total)
                );
                notes.push(json!({ "for": a.from, "name": a.name, "seconds": secs, "message": message }));
            }
        }
        for note in notes {
            match &self.kind {
                Kind::Json(_) => self.emit("waiting", note),
                // A stalled transfer says so in its bar; a request without one gets a line.
                Kind::Bars(_) if note.get("name").is_some() => {}
                Kind::Bars(_) => self.emit("waiting", note),
                Kind::None => tracing::warn!("{}", note["message"].as_str().unwrap_or_default()),
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_reported_after_the_notice_then_every_repeat() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!due(at(2), t0, None));
        assert!(due(at(3), t0, None));
        assert!(!due(at(12), t0, Some(at(3))));
        assert!(due(at(13), t0, Some(at(3))));
    }

    #[test]
    fn waits_and_silent_transfers_are_noted_and_forgotten_when_over() {
        let p = Progress::hidden();
        {
            let _g = p.wait("registry r (the manifest of os:v1)");
            assert!(p.tick(Instant::now() + WAIT_NOTICE));
            assert!(p.state().waits.values().all(|w| w.noted.is_some()));
        }
        assert!(p.state().waits.is_empty());
        let mut t = p.transfer("abc", 10, "registry r");
        assert!(p.tick(Instant::now() + WAIT_NOTICE));
        assert!(p.state().transfers.values().all(|a| a.noted.is_some()));
        t.inc(1);
        assert!(p.state().transfers.values().all(|a| a.noted.is_none()), "a byte ends the stall");
        t.finish("done");
        assert!(!p.tick(Instant::now()), "the watcher stops when nothing is under way");
        let _g = p.wait("something");
        p.end_ok();
        assert!(!p.tick(Instant::now()), "the watcher stops with the terminal event");
    }
}
