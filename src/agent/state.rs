//! The agent's state machine and its record on disk.
//!
//! ```text
//! steady → checking → update available → downloading → staged →
//!   waiting (for the window or the lock) → rebooting → checking health →
//!   reporting → steady
//! ```
//!
//! Each phase lists the phases it may be entered from ([`Phase::allowed_from`]);
//! any other transition is a bug and refused. Every transition carries its
//! reason, is logged, and is written to `/var/lib/hostctl/agent/state.json`
//! (temp file, fsync, rename) before the agent acts on it, so a crash or a
//! reboot resumes from the last phase written.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::fleet::protocol::HaltAfter;
use crate::fleet::waves::{format_time, Schedule};

/// Where the record lives, relative to the root.
pub const STATE_DIR: &str = "var/lib/hostctl/agent";
/// Transitions kept in the record's history.
pub const HISTORY: usize = 100;

/// A phase of the update cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Nothing to do until the next check.
    Steady,
    /// Asking the registry for the followed image.
    Checking,
    /// A newer image exists; waiting for its wave or the download window.
    UpdateAvailable,
    /// Pulling and staging it.
    Downloading,
    /// Staged (held back from the next boot until the reboot gate opens).
    Staged,
    /// Waiting for the reboot window or a reboot slot.
    Waiting,
    /// Finalised and rebooting into it.
    Rebooting,
    /// Booted (or rolled back): waiting for the health checks' verdict.
    CheckingHealth,
    /// Telling the lock server the verdict (and giving the slot back when healthy).
    Reporting,
}

impl Phase {
    /// The phases this one may be entered from.
    pub fn allowed_from(self) -> &'static [Phase] {
        use Phase::*;
        match self {
            // Back to steady: nothing new or a halted release (checking), the
            // tag moved (downloading), the staging vanished or the release was
            // halted while waiting, or a report done.
            Steady => &[Checking, Downloading, Waiting, Reporting],
            Checking => &[Steady, UpdateAvailable],
            UpdateAvailable => &[Checking],
            Downloading => &[UpdateAvailable],
            Staged => &[Downloading],
            Waiting => &[Staged],
            Rebooting => &[Waiting],
            CheckingHealth => &[Rebooting],
            Reporting => &[CheckingHealth],
        }
    }

    /// Its name for people (`update available`).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Steady => "steady",
            Phase::Checking => "checking",
            Phase::UpdateAvailable => "update available",
            Phase::Downloading => "downloading",
            Phase::Staged => "staged",
            Phase::Waiting => "waiting",
            Phase::Rebooting => "rebooting",
            Phase::CheckingHealth => "checking health",
            Phase::Reporting => "reporting",
        }
    }
}

/// The update being worked on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The image followed.
    pub image: String,
    /// The digest its tag points to (the release's subject; index or manifest).
    pub digest: String,
    /// The platform manifest's digest (what the deployment records).
    pub manifest_digest: String,
    /// The staged deployment, once there is one.
    pub deployment: Option<String>,
    /// The rollout metadata artifact used, if any.
    pub release: Option<String>,
    /// Its schedule (none: no verified metadata).
    pub schedule: Option<Schedule>,
    /// Its halt threshold, sent with the health report (none: no verified
    /// metadata, and the lock server's `--halt-after` applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_after: Option<HaltAfter>,
    /// This host's position for this release, in [0, 1).
    pub position: f64,
}

/// The verdict on an update after its reboot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The digest it was about.
    pub digest: String,
    /// The deployment checked.
    pub deployment: String,
    /// Every check passed.
    pub healthy: bool,
    /// What failed, or "all checks passed".
    pub detail: String,
}

/// One transition, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// From.
    pub from: Phase,
    /// To.
    pub to: Phase,
    /// When (RFC 3339).
    pub at: String,
    /// Why.
    pub reason: String,
}

/// The agent's record (`agent status --json`, and `status.agent` in `status --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    /// The current phase.
    pub phase: Phase,
    /// Since when (RFC 3339).
    pub since: String,
    /// Why it is in this phase.
    pub reason: String,
    /// The update being worked on.
    pub target: Option<Target>,
    /// A FleetLock slot is held (taken before the reboot, kept while unhealthy).
    pub holds_slot: bool,
    /// The verdict on the last update, once known.
    pub health: Option<Health>,
    /// Digests whose health check failed on this host: never taken again.
    #[serde(default)]
    pub unhealthy: Vec<String>,
    /// When the agent acts next (RFC 3339), if it is waiting.
    pub next_attempt: Option<String>,
    /// Consecutive failures of the current step (the backoff grows with them).
    #[serde(default)]
    pub failures: u32,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// The latest transitions, oldest first.
    #[serde(default)]
    pub history: Vec<Transition>,
}

impl AgentState {
    /// A fresh agent: steady, nothing known.
    pub fn new(now: time::OffsetDateTime) -> AgentState {
        AgentState {
            phase: Phase::Steady,
            since: format_time(now),
            reason: "first start".into(),
            target: None,
            holds_slot: false,
            health: None,
            unhealthy: Vec::new(),
            next_attempt: None,
            failures: 0,
            last_error: None,
            history: Vec::new(),
        }
    }

    /// Moves to `to` for `reason`; refused unless `to` may follow the current phase.
    pub fn transition(&mut self, to: Phase, reason: impl Into<String>, now: time::OffsetDateTime) -> Result<()> {
        let reason = reason.into();
        if !to.allowed_from().contains(&self.phase) {
            bail!(
                "agent state machine: {} → {} is not a transition ({} may only follow {})",
                self.phase.name(),
                to.name(),
                to.name(),
                to.allowed_from().iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
            );
        }
        tracing::info!("agent: {} → {}: {reason}", self.phase.name(), to.name());
        let at = format_time(now);
        let entry = Transition { from: self.phase, to, at: at.clone(), reason: reason.clone() };
        // Routine checks do not push the update's story out of the history:
        // going to check is not recorded, and a check's outcome replaces the
        // previous one of the same kind (the log has them all).
        match self.history.last_mut() {
            _ if to == Phase::Checking => {}
            Some(last) if self.phase == Phase::Checking && last.from == Phase::Checking && last.to == to => {
                *last = entry
            }
            _ => self.history.push(entry),
        }
        if self.history.len() > HISTORY {
            self.history.remove(0);
        }
        self.phase = to;
        self.since = at;
        self.reason = reason;
        self.failures = 0;
        self.last_error = None;
        self.next_attempt = None;
        Ok(())
    }

    /// Records a failed attempt of the current step (the phase stays).
    pub fn failed(&mut self, error: &anyhow::Error) {
        self.failures += 1;
        let msg = format!("{error:#}");
        tracing::warn!("agent: {} failed (attempt {}): {msg}", self.phase.name(), self.failures);
        self.last_error = Some(msg);
    }

    /// Records a decision to stay in the current phase, and why.
    pub fn stay(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        if reason != self.reason {
            tracing::info!("agent: {}: {reason}", self.phase.name());
            self.reason = reason;
        }
    }
}

/// The record's path under `root`.
pub fn path(root: &Path) -> PathBuf {
    root.join(STATE_DIR).join("state.json")
}

/// Reads the record under `root`; `None` before the agent's first run.
pub fn load(root: &Path) -> Result<Option<AgentState>> {
    let p = path(root);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| format!("reading {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes the record under `root` crash-safely.
pub fn save(root: &Path, s: &AgentState) -> Result<()> {
    let p = path(root);
    let dir = p.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_json_atomic(&p, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_cycle_runs_in_order_and_nothing_else_is_a_transition() {
        use Phase::*;
        let now = datetime!(2026-12-07 10:00 UTC);
        let mut s = AgentState::new(now);
        for to in
            [Checking, UpdateAvailable, Downloading, Staged, Waiting, Rebooting, CheckingHealth, Reporting, Steady]
        {
            s.transition(to, format!("to {}", to.name()), now).unwrap();
        }
        // Going to check is not recorded.
        assert_eq!(s.history.len(), 8);
        // Repeated checks with the same outcome keep one entry, the latest.
        for i in 0..5 {
            s.transition(Checking, "interval", now).unwrap();
            s.transition(Steady, format!("nothing new ({i})"), now).unwrap();
        }
        assert_eq!(s.history.len(), 9);
        assert_eq!(s.history.last().unwrap().reason, "nothing new (4)");
        let all =
            [Steady, Checking, UpdateAvailable, Downloading, Staged, Waiting, Rebooting, CheckingHealth, Reporting];
        for from in all {
            for to in all {
                let mut s = AgentState::new(now);
                s.phase = from;
                let ok = s.transition(to, "test", now).is_ok();
                assert_eq!(ok, to.allowed_from().contains(&from), "{} → {}", from.name(), to.name());
                if !ok {
                    assert_eq!(s.phase, from, "a refused transition changes nothing");
                }
            }
        }
        // A reboot cannot be skipped to, nor health checked without one.
        let mut s = AgentState::new(now);
        let err = s.transition(Rebooting, "x", now).unwrap_err().to_string();
        assert!(err.contains("steady → rebooting is not a transition (rebooting may only follow waiting)"), "{err}");
    }

    #[test]
    fn the_record_round_trips_in_camel_case() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let now = datetime!(2026-12-07 10:00 UTC);
        let mut s = AgentState::new(now);
        s.transition(Phase::Checking, "interval", now).unwrap();
        s.target = Some(Target {
            image: "r/os:1".into(),
            digest: "sha256:a".into(),
            manifest_digest: "sha256:b".into(),
            deployment: None,
            release: None,
            schedule: None,
            halt_after: Some(HaltAfter::Percent(2.5)),
            position: 0.5,
        });
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap(), s);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        for key in [
            "\"holdsSlot\"",
            "\"manifestDigest\"",
            "\"nextAttempt\"",
            "\"phase\": \"checking\"",
            "\"haltAfter\": \"2.5%\"",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
        std::fs::write(path(dir.path()), "{").unwrap();
        assert!(format!("{:#}", load(dir.path()).unwrap_err()).contains("state.json"));
    }
}
