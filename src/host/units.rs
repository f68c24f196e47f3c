//! systemd units, as hostctl's apps need them: daemon-reload, start, stop,
//! restart (each waiting for its job's result, with a timeout), the unit's
//! state, the units that depend on it, and its last journal lines.
//!
//! [`Systemctl`] runs `systemctl` and `journalctl`; [`FakeUnits`] records the
//! calls and answers from a script, for the unit tests of the decision logic.
//! [`start_and_wait`] is the one place that decides whether a unit came up:
//! its start (or restart) job must succeed and the unit must then stay
//! active for a settling time, so that a service that is reported started and
//! exits a moment later counts as not coming up.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// What `systemctl show` says about a unit (the properties hostctl reads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`.
    pub load_state: String,
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`, `reloading`.
    pub active_state: String,
    /// The type-specific state (`running`, `dead`, `failed`, `auto-restart`...).
    pub sub_state: String,
    /// How the last run ended: `success`, `exit-code`, `signal`, `timeout`, `protocol`...
    pub result: String,
    /// The main process's exit status, when it exited.
    pub exec_main_status: Option<i32>,
    /// `NRestarts`: how often systemd restarted the unit by itself (`Restart=`).
    pub n_restarts: Option<u32>,
}

impl UnitState {
    /// Whether the unit is up.
    pub fn is_active(&self) -> bool {
        self.active_state == "active" || self.active_state == "reloading"
    }

    /// Whether systemd knows the unit (a file or a generator made it).
    pub fn exists(&self) -> bool {
        self.load_state != "not-found" && !self.load_state.is_empty()
    }

    /// One line for messages: `failed (failed, result exit-code, status 1)`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} ({}", self.active_state, self.sub_state);
        if !self.result.is_empty() && self.result != "success" {
            s.push_str(&format!(", result {}", self.result));
        }
        if let Some(code) = self.exec_main_status.filter(|c| *c != 0) {
            s.push_str(&format!(", exit status {code}"));
        }
        s.push(')');
        s
    }

    /// Parses `systemctl show` output (`Key=value` lines).
    pub fn parse_show(text: &str) -> UnitState {
        let mut st = UnitState::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            match k {
                "LoadState" => st.load_state = v.to_string(),
                "ActiveState" => st.active_state = v.to_string(),
                "SubState" => st.sub_state = v.to_string(),
                "Result" => st.result = v.to_string(),
                "ExecMainStatus" => st.exec_main_status = v.parse().ok(),
                "NRestarts" => st.n_restarts = v.parse().ok(),
                _ => {}
            }
        }
        st
    }
}

/// How a start or restart job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobResult {
    /// The job completed: the unit was started.
    Done,
    /// The job failed; systemctl's message.
    Failed(String),
    /// The job did not finish within the timeout (it may still be running).
    TimedOut,
}

/// The systemd operations hostctl's apps use.
pub trait Units: Send + Sync {
    /// `systemctl daemon-reload`: re-runs the generators (Quadlet among them).
    fn daemon_reload(&self) -> Result<()>;
    /// Starts `unit` and waits up to `timeout` for the job's result.
    fn start(&self, unit: &str, timeout: Duration) -> Result<JobResult>;
    /// Restarts `unit` and waits up to `timeout` for the job's result.
    fn restart(&self, unit: &str, timeout: Duration) -> Result<JobResult>;
    /// Stops `unit` (waits for the job).
    fn stop(&self, unit: &str) -> Result<()>;
    /// Forgets a failed state, so that a later state is the unit's own.
    fn reset_failed(&self, unit: &str) -> Result<()>;
    /// The unit's state now.
    fn state(&self, unit: &str) -> Result<UnitState>;
    /// Units that need `unit` (`RequiredBy=` and `BoundBy=` of it).
    fn dependents(&self, unit: &str) -> Result<Vec<String>>;
    /// The unit's last `lines` journal messages, oldest first.
    fn journal(&self, unit: &str, lines: usize) -> Result<Vec<String>>;
    /// Shows the unit's journal on this terminal (`follow`: until interrupted).
    fn show_journal(&self, unit: &str, follow: bool) -> Result<()>;
    /// The units in the failed state now, by name.
    fn failed_units(&self) -> Result<Vec<String>>;
    /// The directory systemd's generators write the units they make into
    /// (`/run/systemd/generator`), when systemd runs this system.
    fn generator_dir(&self) -> Option<PathBuf>;
    /// Makes systemd look for unit files again the next time it is asked
    /// for a unit it has not found before. systemd rebuilds its map of unit
    /// files when the modification time of one of its unit directories
    /// changed, but it leaves its generator directories out of that check:
    /// a unit added there needs a directory it does check touched.
    fn unit_dirs_changed(&self) -> Result<()>;
}

/// How long [`start_and_wait`] waits, and how long a unit must stay up.
#[derive(Clone, Copy, Debug)]
pub struct WaitPolicy {
    /// The most a start or restart job may take.
    pub timeout: Duration,
    /// How long the unit must stay active after its job completed.
    pub settle: Duration,
    /// How often the state is read while settling. A unit that went down
    /// stays down (`failed` or `inactive`) unless systemd restarts it, and
    /// its restarts are counted: any read sees either, so a few reads do.
    pub poll: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy { timeout: Duration::from_secs(120), settle: Duration::from_secs(3), poll: Duration::from_secs(1) }
    }
}

/// Whether a unit came up, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The unit became active and stayed so for the settle time.
    Up,
    /// The unit did not come up, or did not stay up.
    Down {
        /// The unit's state when hostctl gave up on it.
        state: UnitState,
        /// What went wrong, in a sentence.
        why: String,
    },
}

/// Starts (or restarts) `unit` and decides whether it came up: the job must
/// complete within the timeout and the unit must stay active for the settling
/// time. A unit that needs a health check to pass (Quadlet's
/// `Notify=healthy`) only completes its start job once it is healthy.
pub fn start_and_wait(units: &dyn Units, unit: &str, restart: bool, policy: &WaitPolicy) -> Result<Outcome> {
    let job = if restart { units.restart(unit, policy.timeout)? } else { units.start(unit, policy.timeout)? };
    let verb = if restart { "restart" } else { "start" };
    match job {
        JobResult::Done => {}
        JobResult::Failed(msg) => {
            let state = units.state(unit)?;
            return Ok(Outcome::Down { why: format!("its {verb} job failed: {msg}"), state });
        }
        JobResult::TimedOut => {
            let state = units.state(unit)?;
            let why = format!("it did not come up within {} s", policy.timeout.as_secs());
            return Ok(Outcome::Down { why, state });
        }
    }
    let end = Instant::now() + policy.settle;
    let mut restarts = None;
    loop {
        let state = units.state(unit)?;
        if !state.is_active() {
            let why = format!("it started but did not stay up: {}", state.summary());
            return Ok(Outcome::Down { why, state });
        }
        if restarts.is_some() && state.n_restarts > restarts {
            let why = "it started but did not stay up: systemd restarted it".to_string();
            return Ok(Outcome::Down { why, state });
        }
        restarts = restarts.or(state.n_restarts);
        let now = Instant::now();
        if now >= end {
            return Ok(Outcome::Up);
        }
        std::thread::sleep(policy.poll.min(end - now));
    }
}

/// The real thing: `systemctl` and `journalctl` of the running system.
#[derive(Clone, Debug, Default)]
pub struct Systemctl;

impl Systemctl {
    fn run(&self, args: &[&str]) -> Result<String> {
        let started = Instant::now();
        let out = Command::new("systemctl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running systemctl {}", args.join(" ")))?;
        tracing::debug!("systemctl {}: {} in {:?}", args.join(" "), out.status, started.elapsed());
        if !out.status.success() {
            bail!(
                "systemctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a blocking `systemctl VERB UNIT` (which returns when the job has
    /// completed, with a non-zero status if it failed), killed at `timeout`.
    fn job(&self, verb: &str, unit: &str, timeout: Duration) -> Result<JobResult> {
        let started = Instant::now();
        let mut child = Command::new("systemctl")
            .args([verb, "--job-mode=replace", unit])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running systemctl {verb} {unit}"))?;
        let end = started + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                tracing::debug!("systemctl {verb} {unit}: {status} in {:?}", started.elapsed());
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Ok(if status.success() { JobResult::Done } else { JobResult::Failed(err.trim().to_string()) });
            }
            if Instant::now() >= end {
                // The job goes on in systemd; only the waiting client ends here.
                let _ = child.kill();
                let _ = child.wait();
                return Ok(JobResult::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One record of `journalctl -o json`. `MESSAGE` is a string, or an array of
/// bytes when it is not valid UTF-8.
#[derive(Deserialize)]
struct JournalRecord {
    #[serde(rename = "MESSAGE")]
    message: Option<serde_json::Value>,
}

/// The message of one `journalctl -o json` line.
pub fn journal_message(line: &str) -> Option<String> {
    let rec: JournalRecord = serde_json::from_str(line).ok()?;
    match rec.message? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Array(bytes) => {
            let b: Vec<u8> = bytes.iter().filter_map(|v| v.as_u64().map(|n| n as u8)).collect();
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        _ => None,
    }
}

impl Units for Systemctl {
    fn daemon_reload(&self) -> Result<()> {
        self.run(&["daemon-reload"]).map(drop)
    }

    fn failed_units(&self) -> Result<Vec<String>> {
        let text = self.run(&["list-units", "--state=failed", "--no-legend", "--plain", "--full"])?;
        Ok(text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
    }

    fn start(&self, unit: &str, timeout: Duration) -> Result<JobResult> {
        self.job("start", unit, timeout)
    }

    fn restart(&self, unit: &str, timeout: Duration) -> Result<JobResult> {
        self.job("restart", unit, timeout)
    }

    fn stop(&self, unit: &str) -> Result<()> {
        self.run(&["stop", unit]).map(drop)
    }

    fn reset_failed(&self, unit: &str) -> Result<()> {
        // Fails when the unit is not loaded: nothing to forget then.
        let _ = self.run(&["reset-failed", unit]);
        Ok(())
    }

    fn state(&self, unit: &str) -> Result<UnitState> {
        let text = self.run(&["show", unit, "-p", "LoadState,ActiveState,SubState,Result,ExecMainStatus,NRestarts"])?;
        Ok(UnitState::parse_show(&text))
    }

    fn dependents(&self, unit: &str) -> Result<Vec<String>> {
        let text = self.run(&["show", unit, "-p", "RequiredBy,BoundBy"])?;
        let mut out: Vec<String> = Vec::new();
        for line in text.lines() {
            if let Some((_, v)) = line.split_once('=') {
                for u in v.split_whitespace() {
                    if !out.iter().any(|x| x == u) {
                        out.push(u.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    fn journal(&self, unit: &str, lines: usize) -> Result<Vec<String>> {
        let out = Command::new("journalctl")
            .args(["-u", unit, "-n", &lines.to_string(), "-o", "json", "--no-pager"])
            .stdin(Stdio::null())
            .output()
            .context("running journalctl")?;
        if !out.status.success() {
            bail!("journalctl -u {unit} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(journal_message).collect())
    }

    fn show_journal(&self, unit: &str, follow: bool) -> Result<()> {
        let mut cmd = Command::new("journalctl");
        cmd.args(["-u", unit, "--no-pager"]);
        if follow {
            cmd.arg("-f");
        }
        let status = cmd.status().context("running journalctl")?;
        if !status.success() {
            bail!("journalctl -u {unit} failed ({status})");
        }
        Ok(())
    }

    fn generator_dir(&self) -> Option<PathBuf> {
        // sd_booted(): systemd runs the system when /run/systemd/system exists.
        let dir = Path::new("/run/systemd/generator");
        (Path::new(RUNTIME_UNITS).is_dir() && dir.is_dir()).then(|| dir.to_path_buf())
    }

    fn unit_dirs_changed(&self) -> Result<()> {
        // The runtime units directory: on tmpfs, systemd's own, and always
        // there when systemd runs the system. Only its time changes.
        std::fs::File::open(RUNTIME_UNITS)
            .and_then(|d| d.set_modified(std::time::SystemTime::now()))
            .with_context(|| format!("updating the modification time of {RUNTIME_UNITS}"))
    }
}

/// systemd's runtime units directory, one of those it looks for unit files in.
const RUNTIME_UNITS: &str = "/run/systemd/system";

/// A recording fake: every call is logged (`"start app.service"`), states and
/// job results come from a script per unit.
#[derive(Default)]
pub struct FakeUnits {
    calls: Mutex<Vec<String>>,
    script: Mutex<HashMap<String, UnitScript>>,
    generator_dir: Mutex<Option<PathBuf>>,
}

/// What a fake unit does.
#[derive(Default)]
struct UnitScript {
    /// For each start or restart in turn: the job's result and the states the
    /// unit then reports (the last one repeats). Exhausted: `Done`, active.
    runs: VecDeque<(JobResult, Vec<UnitState>)>,
    /// The states to report now.
    current: VecDeque<UnitState>,
    dependents: Vec<String>,
    /// Whether a restart forgets `dependents`, as systemd does once the
    /// dependents it stopped are unloaded (inactive, nothing refers to them).
    unload_dependents_on_restart: bool,
    journal: Vec<String>,
}

/// A unit state for scripts: `state("active", "running")`.
pub fn state(active: &str, sub: &str) -> UnitState {
    UnitState {
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: sub.into(),
        result: if active == "failed" { "exit-code".into() } else { "success".into() },
        exec_main_status: if active == "failed" { Some(1) } else { Some(0) },
        n_restarts: Some(0),
    }
}

impl FakeUnits {
    /// A fake with no units scripted.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next start or restart of `unit` ends with `job`, then reports `states`.
    pub fn on_next_start(&self, unit: &str, job: JobResult, states: Vec<UnitState>) {
        self.script.lock().unwrap().entry(unit.to_string()).or_default().runs.push_back((job, states));
    }

    /// `unit` reports `st` until its next start.
    pub fn set_state(&self, unit: &str, st: UnitState) {
        self.script.lock().unwrap().entry(unit.to_string()).or_default().current = VecDeque::from([st]);
    }

    /// `unit`'s dependents are `deps`.
    pub fn set_dependents(&self, unit: &str, deps: &[&str]) {
        self.script.lock().unwrap().entry(unit.to_string()).or_default().dependents =
            deps.iter().map(|s| s.to_string()).collect();
    }

    /// The next restart of `unit` forgets its dependents: systemd stops the
    /// units that `Requires=`/`BindsTo=` it, then unloads them, and they no
    /// longer show in `unit`'s `RequiredBy=`/`BoundBy=` (seen in the VM).
    pub fn unload_dependents_on_restart(&self, unit: &str) {
        self.script.lock().unwrap().entry(unit.to_string()).or_default().unload_dependents_on_restart = true;
    }

    /// `unit`'s journal is `lines`.
    pub fn set_journal(&self, unit: &str, lines: &[&str]) {
        self.script.lock().unwrap().entry(unit.to_string()).or_default().journal =
            lines.iter().map(|s| s.to_string()).collect();
    }

    /// Generators write into `dir` (none by default).
    pub fn set_generator_dir(&self, dir: &Path) {
        *self.generator_dir.lock().unwrap() = Some(dir.to_path_buf());
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn run_job(&self, unit: &str) -> JobResult {
        let mut script = self.script.lock().unwrap();
        let s = script.entry(unit.to_string()).or_default();
        let (job, states) = s.runs.pop_front().unwrap_or((JobResult::Done, vec![state("active", "running")]));
        s.current = states.into();
        job
    }
}

impl Units for FakeUnits {
    fn daemon_reload(&self) -> Result<()> {
        self.record("daemon-reload".into());
        Ok(())
    }

    fn failed_units(&self) -> Result<Vec<String>> {
        let script = self.script.lock().unwrap();
        let mut failed: Vec<String> = script
            .iter()
            .filter(|(_, s)| s.current.front().is_some_and(|st| st.active_state == "failed"))
            .map(|(u, _)| u.clone())
            .collect();
        failed.sort();
        Ok(failed)
    }

    fn start(&self, unit: &str, _timeout: Duration) -> Result<JobResult> {
        self.record(format!("start {unit}"));
        Ok(self.run_job(unit))
    }

    fn restart(&self, unit: &str, _timeout: Duration) -> Result<JobResult> {
        self.record(format!("restart {unit}"));
        if let Some(s) = self.script.lock().unwrap().get_mut(unit) {
            if std::mem::take(&mut s.unload_dependents_on_restart) {
                s.dependents.clear();
            }
        }
        Ok(self.run_job(unit))
    }

    fn stop(&self, unit: &str) -> Result<()> {
        self.record(format!("stop {unit}"));
        self.set_state(unit, state("inactive", "dead"));
        Ok(())
    }

    fn reset_failed(&self, unit: &str) -> Result<()> {
        self.record(format!("reset-failed {unit}"));
        Ok(())
    }

    fn state(&self, unit: &str) -> Result<UnitState> {
        // A unit never started nor given a state is unknown to systemd.
        let not_found =
            || UnitState { load_state: "not-found".into(), active_state: "inactive".into(), ..Default::default() };
        let mut script = self.script.lock().unwrap();
        let Some(s) = script.get_mut(unit) else { return Ok(not_found()) };
        let st = if s.current.len() > 1 { s.current.pop_front() } else { s.current.front().cloned() };
        Ok(st.unwrap_or_else(not_found))
    }

    fn dependents(&self, unit: &str) -> Result<Vec<String>> {
        Ok(self.script.lock().unwrap().get(unit).map(|s| s.dependents.clone()).unwrap_or_default())
    }

    fn journal(&self, unit: &str, lines: usize) -> Result<Vec<String>> {
        let all = self.script.lock().unwrap().get(unit).map(|s| s.journal.clone()).unwrap_or_default();
        Ok(all[all.len().saturating_sub(lines)..].to_vec())
    }

    fn show_journal(&self, unit: &str, follow: bool) -> Result<()> {
        self.record(format!("journal {unit}{}", if follow { " -f" } else { "" }));
        Ok(())
    }

    fn generator_dir(&self) -> Option<PathBuf> {
        self.generator_dir.lock().unwrap().clone()
    }

    fn unit_dirs_changed(&self) -> Result<()> {
        self.record("unit-dirs-changed".into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> WaitPolicy {
        WaitPolicy {
            timeout: Duration::from_secs(1),
            settle: Duration::from_millis(20),
            poll: Duration::from_millis(1),
        }
    }

    #[test]
    fn show_output_parses_into_a_state() {
        let st = UnitState::parse_show(
            "LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nExecMainStatus=1\n",
        );
        assert_eq!(st.active_state, "failed");
        assert_eq!(st.exec_main_status, Some(1));
        assert!(!st.is_active());
        assert_eq!(st.summary(), "failed (failed, result exit-code, exit status 1)");
        assert!(!UnitState::parse_show("LoadState=not-found\nActiveState=inactive\n").exists());
    }

    #[test]
    fn journal_messages_as_text_or_bytes() {
        assert_eq!(journal_message(r#"{"MESSAGE":"hello","_PID":"1"}"#).as_deref(), Some("hello"));
        assert_eq!(journal_message(r#"{"MESSAGE":[104,105,255]}"#).as_deref(), Some("hi\u{fffd}"));
        assert_eq!(journal_message(r#"{"_PID":"1"}"#), None);
        assert_eq!(journal_message("not json"), None);
    }

    #[test]
    fn a_unit_that_stays_active_is_up() {
        let u = FakeUnits::new();
        assert_eq!(start_and_wait(&u, "a.service", false, &quick()).unwrap(), Outcome::Up);
        assert_eq!(u.calls(), ["start a.service"]);
    }

    #[test]
    fn a_unit_that_exits_after_starting_is_down() {
        let u = FakeUnits::new();
        u.on_next_start("a.service", JobResult::Done, vec![state("active", "running"), state("failed", "failed")]);
        let Outcome::Down { why, state } = start_and_wait(&u, "a.service", true, &quick()).unwrap() else {
            panic!("expected down")
        };
        assert!(why.contains("did not stay up"), "{why}");
        assert_eq!(state.active_state, "failed");
        assert_eq!(u.calls(), ["restart a.service"]);
    }

    /// A unit that died and that systemd restarted (`Restart=`) looks
    /// active again: its restart count tells.
    #[test]
    fn a_unit_restarted_while_settling_is_down() {
        let u = FakeUnits::new();
        let again = UnitState { n_restarts: Some(1), ..state("active", "running") };
        u.on_next_start("a.service", JobResult::Done, vec![state("active", "running"), again]);
        let Outcome::Down { why, .. } = start_and_wait(&u, "a.service", false, &quick()).unwrap() else {
            panic!("expected down")
        };
        assert!(why.contains("systemd restarted it"), "{why}");
        let st = UnitState::parse_show("LoadState=loaded\nActiveState=active\nNRestarts=2\n");
        assert_eq!(st.n_restarts, Some(2));
    }

    #[test]
    fn a_failed_or_timed_out_job_is_down_with_its_reason() {
        let u = FakeUnits::new();
        u.on_next_start("a.service", JobResult::Failed("Job failed".into()), vec![state("failed", "failed")]);
        u.on_next_start("a.service", JobResult::TimedOut, vec![state("activating", "start")]);
        let down = |o: Outcome| match o {
            Outcome::Down { why, .. } => why,
            Outcome::Up => panic!("expected down"),
        };
        assert!(
            down(start_and_wait(&u, "a.service", false, &quick()).unwrap()).contains("start job failed: Job failed")
        );
        assert!(down(start_and_wait(&u, "a.service", false, &quick()).unwrap()).contains("did not come up within 1 s"));
    }
}
