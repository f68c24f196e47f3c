//! `hostctl container lint`: static checks of an OS image's root filesystem,
//! run as the last step of its build (`RUN hostctl container lint`) or
//! against an unpacked tree (`--rootfs DIR`).
//!
//! Each check has a name, a one-line explanation and a [`Level`]; it returns
//! its findings (empty: passed). The checks live one group per file: boot
//! (`boot.rs`), the root's layout (`layout.rs`), `/etc` (`etc.rs`), the whole
//! tree (`tree.rs`), hostctl's own parts (`hostctl.rs`) and the fleet agent's
//! configuration (`agent.rs`). The list and its mapping to bootc's
//! `container lint` are in docs/authoring.md.

mod agent;
mod boot;
mod etc;
mod hostctl;
mod layout;
mod root;
mod tree;

use std::collections::BTreeSet;

use serde::Serialize;

pub use root::Root;

/// How much a failed check matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Listed for review; never fails the lint.
    Info,
    /// Likely a mistake; fails the lint only with `--fatal-warnings`.
    Warning,
    /// The image will not deploy, boot or update as intended; fails the lint.
    Error,
}

impl Level {
    /// The level's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// What a check returns: its findings (empty when it passed).
pub type Findings = anyhow::Result<Vec<String>>;

/// One check.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Check {
    /// Its name (for `--skip`).
    pub name: &'static str,
    /// How much a finding matters.
    pub level: Level,
    /// One line saying what it checks and why.
    pub explanation: &'static str,
    /// The check itself.
    #[serde(skip)]
    pub run: fn(&Root) -> Findings,
}

/// Every check, in the order they run and are listed.
pub fn checks() -> Vec<Check> {
    let mut all = Vec::new();
    all.extend_from_slice(boot::CHECKS);
    all.extend_from_slice(layout::CHECKS);
    all.extend_from_slice(etc::CHECKS);
    all.extend_from_slice(tree::CHECKS);
    all.extend_from_slice(hostctl::CHECKS);
    all.extend_from_slice(agent::CHECKS);
    all
}

/// Every check's name (the values `--skip` accepts).
pub fn names() -> Vec<&'static str> {
    checks().iter().map(|c| c.name).collect()
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No findings.
    Passed,
    /// Findings (or the check could not run; the error is its one finding).
    Failed,
    /// Skipped with `--skip`.
    Skipped,
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: &'static str,
    /// Its level.
    pub level: Level,
    /// Its explanation.
    pub explanation: &'static str,
    /// What happened.
    pub status: Status,
    /// What it found (paths or sentences), all of them.
    pub findings: Vec<String>,
}

/// The whole lint's result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The tree checked.
    pub rootfs: String,
    /// One result per check, in order.
    pub checks: Vec<CheckResult>,
    /// Failed checks of level error.
    pub errors: usize,
    /// Failed checks of level warning.
    pub warnings: usize,
    /// Failed checks of level info.
    pub infos: usize,
}

impl Report {
    /// Whether the lint fails: an error, or a warning when warnings are fatal.
    pub fn failed(&self, fatal_warnings: bool) -> bool {
        self.errors > 0 || (fatal_warnings && self.warnings > 0)
    }
}

/// Runs every check not in `skip` against `root`.
pub fn run(root: &Root, skip: &BTreeSet<String>) -> Report {
    let mut results = Vec::new();
    let (mut errors, mut warnings, mut infos) = (0, 0, 0);
    for c in checks() {
        let (status, findings) = if skip.contains(c.name) {
            (Status::Skipped, Vec::new())
        } else {
            match (c.run)(root) {
                Ok(f) if f.is_empty() => (Status::Passed, f),
                Ok(f) => (Status::Failed, f),
                Err(e) => (Status::Failed, vec![format!("the check could not run: {e:#}")]),
            }
        };
        if status == Status::Failed {
            match c.level {
                Level::Error => errors += 1,
                Level::Warning => warnings += 1,
                Level::Info => infos += 1,
            }
        }
        results.push(CheckResult { name: c.name, level: c.level, explanation: c.explanation, status, findings });
    }
    Report { rootfs: root.dir().display().to_string(), checks: results, errors, warnings, infos }
}

/// Shortens a list of findings for a terminal: the first `max`, then a count.
pub fn truncated(findings: &[String], max: usize) -> Vec<String> {
    let mut out: Vec<String> = findings.iter().take(max).cloned().collect();
    if findings.len() > max {
        out.push(format!("...and {} more (--json lists all)", findings.len() - max));
    }
    out
}

#[cfg(test)]
pub(crate) mod testroot {
    //! A temporary tree that passes every check, for the per-check tests to break.
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::Root;

    /// Writes `content` at `rel` below `root`, creating parents.
    pub fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// A tree that passes every check.
    pub fn good() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["dev", "proc", "sys", "run", "tmp", "var", "boot", "sysroot", "etc", "usr/lib/systemd/system"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        symlink("/run", r.join("var/run")).unwrap();
        write(r, "usr/lib/modules/6.12.1/vmlinuz", "kernel");
        write(r, "usr/lib/modules/6.12.1/initramfs.img", "initramfs");
        write(r, "usr/lib/hostctl/kargs.d/10-base.toml", "kargs = [\"console=ttyS0\"]\n");
        write(r, "usr/bin/hostctl", "#!/bin/sh\n");
        write(r, "usr/share/initramfs-tools/hooks/hostctl", "#!/bin/sh\n");
        for u in super::hostctl::UNITS {
            write(r, &format!("usr/lib/systemd/system/{u}"), "[Unit]\n");
            std::fs::create_dir_all(r.join("usr/lib/systemd/system/multi-user.target.wants")).unwrap();
            symlink(format!("../{u}"), r.join(format!("usr/lib/systemd/system/multi-user.target.wants/{u}"))).unwrap();
        }
        write(r, "etc/hostname", "host\n");
        write(r, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n");
        write(r, "etc/group", "root:x:0:\n");
        t
    }

    /// The [`Root`] of `t`, with no mount points.
    pub fn root(t: &Path) -> Root {
        Root::with_mounts(t, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_explained() {
        let all = checks();
        let names: BTreeSet<_> = all.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), all.len());
        for c in all {
            assert!(!c.explanation.is_empty() && !c.explanation.contains('\n'), "{}", c.name);
            assert!(c.name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'), "{}", c.name);
        }
    }

    #[test]
    fn a_good_tree_passes_every_check() {
        let t = testroot::good();
        let report = run(&testroot::root(t.path()), &BTreeSet::new());
        let failed: Vec<_> = report.checks.iter().filter(|c| c.status != Status::Passed).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert!(!report.failed(true));
    }

    #[test]
    fn skipped_checks_do_not_run_and_levels_count() {
        let t = testroot::good();
        std::fs::remove_dir_all(t.path().join("usr/lib/modules")).unwrap();
        std::fs::write(t.path().join("boot/leftover"), "x").unwrap();
        let root = testroot::root(t.path());
        let report = run(&root, &BTreeSet::new());
        assert_eq!((report.errors, report.warnings), (1, 1), "{report:#?}");
        assert!(report.failed(false));
        let skip: BTreeSet<String> = ["kernel".to_string()].into();
        let report = run(&root, &skip);
        assert_eq!(report.checks.iter().find(|c| c.name == "kernel").unwrap().status, Status::Skipped);
        assert!(!report.failed(false) && report.failed(true));
    }

    #[test]
    fn truncation_says_how_many_more() {
        let f: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        assert_eq!(truncated(&f, 3), ["0", "1", "2", "...and 2 more (--json lists all)"]);
        assert_eq!(truncated(&f, 5).len(), 5);
    }
}
