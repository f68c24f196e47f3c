//! `hostctl health-check`: runs the booted deployment's health checks and
//! acts on the result (docs/boot.md, "Health checks").
//!
//! Checks are executables in `/usr/lib/hostctl/health.d/` (shipped by the
//! image) and `/etc/hostctl/health.d/` (local), run in file-name order; a
//! check passes when it exits 0 within its time limit. `hostctl-health.service`
//! runs this before `boot-complete.target`, which it is required by: when
//! every check passes, the target is reached and `systemd-bless-boot` marks
//! the entry good. When one fails, the result is recorded in
//! `<sysroot>/hostctl/health/<deployment>.json`, the entry is marked bad and
//! the machine reboots, so the boot loader picks the previous deployment.
//! The boot-loader and reboot calls go through [`BootControl`] and the
//! checks through [`ScriptRunner`], both in `host/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::host::scripts::{ProcessRunner, ScriptRunner};
use crate::host::systemd::BootControl;

/// Where checks live, relative to `/`.
pub const CHECK_DIRS: [&str; 2] = ["usr/lib/hostctl/health.d", "etc/hostctl/health.d"];

/// The longest one check may run.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's file name.
    pub name: String,
    /// The check's executable.
    pub path: PathBuf,
    /// It passed.
    pub passed: bool,
    /// Exit status or why it could not run.
    pub detail: String,
    /// Its output (truncated).
    pub output: String,
}

impl CheckResult {
    /// A check that failed before it could run to an exit status (`detail`
    /// says why); there is no output.
    pub fn failed(name: String, path: &Path, detail: String) -> Self {
        CheckResult { name, path: path.into(), passed: false, detail, output: String::new() }
    }
}

/// The record written for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// The deployment checked; `None` when the booted one is unknown.
    pub deployment: Option<String>,
    /// Every check passed.
    pub passed: bool,
    /// When the checks ran (RFC 3339, UTC).
    pub checked_at: String,
    /// Each check's result, in the order run.
    pub checks: Vec<CheckResult>,
}

/// The checks under `root`, in file-name order (across both directories).
pub fn find_checks(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for d in CHECK_DIRS {
        let dir = root.join(d);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.ends_with('~') {
                continue;
            }
            // A local check of the same name replaces the image's.
            out.retain(|(n, _)| *n != name);
            out.push((name, e.path()));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

/// Runs one check with a time limit.
pub fn run_check(path: &Path, timeout: Duration) -> CheckResult {
    check_with(&ProcessRunner, path, timeout)
}

/// Runs one check through `runner`.
pub fn check_with(runner: &dyn ScriptRunner, path: &Path, timeout: Duration) -> CheckResult {
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let r = runner.run(path, timeout);
    CheckResult { name, path: path.into(), passed: r.passed, detail: r.detail, output: r.output }
}

/// Where the record of `deployment` is kept.
pub fn record_path(sysroot: &Path, deployment: Option<&str>) -> PathBuf {
    sysroot.join(crate::sysroot::HOSTCTL_DIR).join("health").join(format!("{}.json", deployment.unwrap_or("unknown")))
}

fn write_record(p: &Path, rec: &HealthRecord) -> Result<()> {
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fsutil::write_json_atomic(p, rec)
}

/// Reads the record of `deployment`, if any.
pub fn read_record(sysroot: &Path, deployment: &str) -> Option<HealthRecord> {
    let bytes = std::fs::read(record_path(sysroot, Some(deployment))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Runs the checks of the system at `root`, records the result under
/// `sysroot` and, on failure, marks the boot bad and reboots through `ctl`.
///
/// A verdict is reached whatever goes wrong around the checks: checks that
/// cannot be listed are a failed check, and a record that cannot be written
/// (a full or read-only sysroot) is a warning, so that neither keeps a
/// deployment on trial booted without a decision.
pub fn run(root: &Path, sysroot: &Path, deployment: Option<&str>, ctl: &dyn BootControl) -> Result<HealthRecord> {
    run_with(root, sysroot, deployment, ctl, &ProcessRunner)
}

/// [`run`] with the checks run through `runner`.
pub fn run_with(
    root: &Path,
    sysroot: &Path,
    deployment: Option<&str>,
    ctl: &dyn BootControl,
    runner: &dyn ScriptRunner,
) -> Result<HealthRecord> {
    let mut results = Vec::new();
    let checks = find_checks(root).unwrap_or_else(|e| {
        results.push(CheckResult::failed("(listing the checks)".into(), root, format!("{e:#}")));
        Vec::new()
    });
    for c in &checks {
        let r = check_with(runner, c, CHECK_TIMEOUT);
        eprintln!("hostctl health-check: {} {} ({})", r.name, if r.passed { "passed" } else { "FAILED" }, r.detail);
        let failed = !r.passed;
        results.push(r);
        if failed {
            break;
        }
    }
    let passed = results.iter().all(|r| r.passed);
    let rec = HealthRecord {
        deployment: deployment.map(str::to_string),
        passed,
        checked_at: crate::util::now_rfc3339(),
        checks: results,
    };
    let p = record_path(sysroot, deployment);
    if let Err(e) = write_record(&p, &rec) {
        eprintln!("hostctl health-check: warning: the result could not be recorded: {e:#}");
    }
    if !passed {
        let failed = rec.checks.iter().find(|c| !c.passed).map(|c| c.name.clone()).unwrap_or_default();
        eprintln!("hostctl health-check: deployment {} failed health check {failed}", deployment.unwrap_or("?"));
        if !ctl.counting() {
            eprintln!(
                "hostctl health-check: this boot is not on trial (no boot counter): not rebooting, there is nothing to fall back to"
            );
            return Ok(rec);
        }
        if let Err(e) = ctl.mark_bad() {
            eprintln!("hostctl health-check: {e:#}");
        }
        ctl.reboot()?;
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Rec(Mutex<Vec<&'static str>>, bool);
    impl BootControl for Rec {
        fn counting(&self) -> bool {
            !self.1
        }
        fn mark_bad(&self) -> Result<()> {
            self.0.lock().unwrap().push("bad");
            Ok(())
        }
        fn reboot(&self) -> Result<()> {
            self.0.lock().unwrap().push("reboot");
            Ok(())
        }
    }

    fn script(dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn passing_checks_record_success_and_do_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        script(&t.path().join(CHECK_DIRS[0]), "10-ok", "exit 0");
        script(&t.path().join(CHECK_DIRS[1]), "20-ok", "true");
        let ctl = Rec::default();
        let r = run(t.path(), t.path(), Some("abc.1"), &ctl).unwrap();
        assert!(r.passed && r.checks.len() == 2);
        assert!(ctl.0.lock().unwrap().is_empty());
        assert!(read_record(t.path(), "abc.1").unwrap().passed);
    }

    #[test]
    fn a_failing_check_marks_bad_and_reboots() {
        let t = tempfile::tempdir().unwrap();
        script(&t.path().join(CHECK_DIRS[0]), "10-ok", "exit 0");
        script(&t.path().join(CHECK_DIRS[0]), "50-fail", "echo disk is on fire; exit 3");
        script(&t.path().join(CHECK_DIRS[0]), "90-never", "exit 0");
        let ctl = Rec::default();
        let r = run(t.path(), t.path(), Some("abc.1"), &ctl).unwrap();
        assert!(!r.passed);
        assert_eq!(r.checks.len(), 2, "stops at the first failure");
        assert_eq!(*ctl.0.lock().unwrap(), ["bad", "reboot"]);
        let uncounted = Rec(Mutex::default(), true);
        assert!(!run(t.path(), t.path(), Some("abc.1"), &uncounted).unwrap().passed);
        assert!(uncounted.0.lock().unwrap().is_empty(), "no reboot loop on a boot that is not on trial");
        let rec = read_record(t.path(), "abc.1").unwrap();
        assert_eq!(rec.checks[1].name, "50-fail");
        assert_eq!(rec.checks[1].output, "disk is on fire");
    }

    #[test]
    fn a_verdict_is_reached_when_the_checks_cannot_be_listed_or_the_record_not_written() {
        let t = tempfile::tempdir().unwrap();
        script(&t.path().join(CHECK_DIRS[0]), "50-fail", "exit 1");
        // The record's directory is a file: the record cannot be written.
        let sysroot = t.path().join("sysroot");
        std::fs::create_dir_all(sysroot.join(crate::sysroot::HOSTCTL_DIR)).unwrap();
        std::fs::write(sysroot.join(crate::sysroot::HOSTCTL_DIR).join("health"), "").unwrap();
        let ctl = Rec::default();
        assert!(!run(t.path(), &sysroot, Some("abc.1"), &ctl).unwrap().passed);
        assert_eq!(*ctl.0.lock().unwrap(), ["bad", "reboot"]);
        // A check directory that cannot be read is a failed check.
        let unreadable = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(unreadable.path().join(CHECK_DIRS[0]).parent().unwrap()).unwrap();
        std::fs::write(unreadable.path().join(CHECK_DIRS[0]), "not a directory").unwrap();
        let ctl = Rec::default();
        let r = run(unreadable.path(), unreadable.path(), Some("abc.1"), &ctl).unwrap();
        assert!(!r.passed && r.checks[0].name == "(listing the checks)", "{r:?}");
        assert_eq!(*ctl.0.lock().unwrap(), ["bad", "reboot"]);
    }

    #[test]
    fn checks_run_through_the_runner_and_a_failure_reaches_the_boot_loader() {
        use crate::host::scripts::{RecordingRunner, ScriptRun};
        use crate::host::systemd::RecordingBootControl;
        let t = tempfile::tempdir().unwrap();
        for name in ["10-disk", "20-network", "30-app"] {
            script(&t.path().join(CHECK_DIRS[0]), name, "exit 0");
        }
        let failed = ScriptRun { passed: false, detail: "exit status: 1".into(), output: "no route".into() };
        let runner = RecordingRunner { results: [("20-network".to_string(), failed)].into(), ..Default::default() };
        let ctl = RecordingBootControl::counted();
        let r = run_with(t.path(), t.path(), Some("abc.1"), &ctl, &runner).unwrap();
        assert!(!r.passed);
        assert_eq!((r.checks[1].name.as_str(), r.checks[1].output.as_str()), ("20-network", "no route"));
        let dir = t.path().join(CHECK_DIRS[0]);
        assert_eq!(*runner.calls.lock().unwrap(), [dir.join("10-disk"), dir.join("20-network")]);
        assert_eq!(*ctl.calls.lock().unwrap(), ["bad", "reboot"]);
    }

    #[test]
    fn local_checks_override_and_hang_is_a_failure() {
        let t = tempfile::tempdir().unwrap();
        script(&t.path().join(CHECK_DIRS[0]), "50-x", "exit 1");
        script(&t.path().join(CHECK_DIRS[1]), "50-x", "exit 0");
        assert_eq!(find_checks(t.path()).unwrap(), [t.path().join(CHECK_DIRS[1]).join("50-x")]);
        script(&t.path().join("slow"), "s", "sleep 5");
        let r = run_check(&t.path().join("slow/s"), Duration::from_millis(200));
        assert!(!r.passed && r.detail.contains("timed out"));
    }

    #[test]
    fn a_check_that_cannot_run_is_a_failure_without_output() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("not-executable");
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        let r = run_check(&p, CHECK_TIMEOUT);
        assert_eq!(r, CheckResult::failed("not-executable".into(), &p, r.detail.clone()));
        assert!(r.detail.starts_with("could not run: "), "{}", r.detail);
    }
}
