//! Boot counting (the Boot Loader Specification's automatic boot assessment,
//! implemented by systemd-boot and `systemd-bless-boot`).
//!
//! A new deployment's entry is written as `NAME+3.conf`. Each time
//! systemd-boot starts it, it renames the file `NAME+<left-1>-<done+1>.conf`
//! first. When the booted system reaches `boot-complete.target` (which
//! requires `hostctl-health.service`, i.e. every check in
//! `usr/lib/hostctl/health.d/` passed), `systemd-bless-boot` renames it to
//! `NAME.conf`: good for good. When a health check fails, `hostctl health-check`
//! marks the entry bad (`NAME+0-<done>.conf`) and reboots; systemd-boot sorts
//! bad entries last, so the machine comes back on the previous deployment by
//! itself. A deployment that never comes up (kernel panic, a failing
//! `prepare-root`, a hang with a watchdog) is retried until its counter runs
//! out, then abandoned in the same way.
//!
//! This module parses counters out of entry file names and explains the
//! outcome for `hostctl status`; the decisions are pure functions.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::boot::bls;

/// Tries a new deployment's entry starts with, unless `/etc/kernel/tries` says otherwise.
pub const DEFAULT_TRIES: u32 = 3;
/// The most tries `/etc/kernel/tries` may ask for.
pub const MAX_TRIES: u32 = 99;

/// The contents of an `/etc/kernel/tries` file (kernel-install(8)'s
/// convention): a number from 1 to [`MAX_TRIES`], surrounding whitespace allowed.
pub fn parse_tries(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|n| (1..=MAX_TRIES).contains(n))
}

/// The counter of an entry file name: `(left, done)`; `None` when it has none (blessed or never counted).
pub fn counter(file_name: &str) -> Option<(u32, u32)> {
    let stem = file_name.strip_suffix(".conf")?;
    let (_, c) = stem.rsplit_once('+')?;
    match c.split_once('-') {
        Some((l, d)) => Some((l.parse().ok()?, d.parse().ok()?)),
        None => Some((c.parse().ok()?, 0)),
    }
}

/// The counter part of a file name, `+3` or `+1-2`, or `""`.
pub fn suffix_of(file_name: &str) -> String {
    if counter(file_name).is_none() {
        return String::new();
    }
    let stem = file_name.strip_suffix(".conf").unwrap_or(file_name);
    stem.rsplit_once('+').map(|(_, c)| format!("+{c}")).unwrap_or_default()
}

/// How one deployment's entry stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assessment {
    /// No counter: booted successfully (blessed), or written without counting.
    Good,
    /// Counting: `left` tries remain, `done` were used.
    Pending {
        /// Tries remaining.
        left: u32,
        /// Tries used.
        done: u32,
    },
    /// The counter reached zero: the boot loader no longer picks it by default.
    Bad {
        /// Tries used.
        done: u32,
    },
}

/// One entry's assessment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryAssessment {
    /// The deployment's id.
    pub deployment: String,
    /// How its entry stands.
    pub assessment: Assessment,
}

/// Assesses a file name.
pub fn assess(file_name: &str) -> Assessment {
    match counter(file_name) {
        None => Assessment::Good,
        Some((0, done)) => Assessment::Bad { done },
        Some((left, done)) => Assessment::Pending { left, done },
    }
}

/// The assessments of `stateroot`'s entries in `entries_dir`, default first.
pub fn read(entries_dir: &Path, stateroot: &str) -> Result<Vec<EntryAssessment>> {
    Ok(bls::list(entries_dir, stateroot)?
        .into_iter()
        .map(|(n, p)| EntryAssessment {
            deployment: n.deployment,
            assessment: assess(&p.file_name().unwrap_or_default().to_string_lossy()),
        })
        .collect())
}

/// What `status` says about automatic rollback, if anything: the
/// deployments that were abandoned, and whether the booted one is not the
/// one the entries order first (the boot loader fell back).
pub fn explain(entries: &[EntryAssessment], booted: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let default = entries.first().map(|e| e.deployment.as_str());
    for e in entries {
        match &e.assessment {
            Assessment::Bad { done } => {
                let fell_back = default == Some(e.deployment.as_str()) && booted.is_some_and(|b| b != e.deployment);
                let tail = if fell_back {
                    format!("; the boot loader fell back to {}", booted.unwrap_or_default())
                } else {
                    String::new()
                };
                out.push(format!(
                    "deployment {} failed to boot ({done} attempt{}, health checks failed or it never came up): abandoned{tail}",
                    e.deployment,
                    if *done == 1 { "" } else { "s" }
                ));
            }
            Assessment::Pending { left, done } if booted == Some(e.deployment.as_str()) => out.push(format!(
                "deployment {} is on trial: boot {done} of {}, not yet marked good (health checks pending)",
                e.deployment,
                left + done
            )),
            Assessment::Pending { left, .. } => out.push(format!(
                "deployment {} will be tried at most {left} more time(s) before it is abandoned",
                e.deployment
            )),
            Assessment::Good => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_files() {
        assert_eq!(parse_tries("2\n"), Some(2));
        assert_eq!(parse_tries(" 5 "), Some(5));
        for bad in ["0", "", "three", "-1", "100", "2 3"] {
            assert_eq!(parse_tries(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn counters_table() {
        let cases = [
            ("hostctl-default-3-abc.1.conf", None, ""),
            ("hostctl-default-3-abc.1+3.conf", Some((3, 0)), "+3"),
            ("hostctl-default-3-abc.1+2-1.conf", Some((2, 1)), "+2-1"),
            ("hostctl-default-3-abc.1+0-3.conf", Some((0, 3)), "+0-3"),
            ("hostctl-default-3-abc.1+x.conf", None, ""),
            ("hostctl-default-3-abc.1+3", None, ""),
        ];
        for (name, c, suffix) in cases {
            assert_eq!(counter(name), c, "{name}");
            assert_eq!(suffix_of(name), suffix, "{name}");
        }
        assert_eq!(assess("a+0-1.conf"), Assessment::Bad { done: 1 });
        assert_eq!(assess("a+1-2.conf"), Assessment::Pending { left: 1, done: 2 });
        assert_eq!(assess("a.conf"), Assessment::Good);
    }

    #[test]
    fn explains_an_automatic_rollback() {
        let e = |d: &str, a| EntryAssessment { deployment: d.into(), assessment: a };
        let entries = [e("v3.5", Assessment::Bad { done: 1 }), e("v1.1", Assessment::Good)];
        let msg = explain(&entries, Some("v1.1"));
        assert_eq!(msg.len(), 1);
        assert!(msg[0].contains("v3.5 failed to boot") && msg[0].contains("fell back to v1.1"), "{msg:?}");
        let trial = [e("v2.2", Assessment::Pending { left: 2, done: 1 }), e("v1.1", Assessment::Good)];
        assert!(explain(&trial, Some("v2.2"))[0].contains("on trial"));
        assert!(explain(&[e("v1.1", Assessment::Good)], Some("v1.1")).is_empty());
    }

    #[test]
    fn sync_keeps_counters_and_counts_new_entries() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let entry = |id: &str| bls::BlsEntry {
            title: id.into(),
            linux: "/k".into(),
            initrd: None,
            options: format!("hostctl=/hostctl/deploy/default/{id}"),
        };
        bls::sync_counted(dir, "default", &[("a.1".into(), entry("a.1"))], None).unwrap();
        bls::sync_counted(dir, "default", &[("b.2".into(), entry("b.2")), ("a.1".into(), entry("a.1"))], Some(3))
            .unwrap();
        let names = |dir: &Path| {
            let mut v: Vec<String> =
                std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
            v.sort();
            v
        };
        assert_eq!(names(dir), ["hostctl-default-2-a.1.conf", "hostctl-default-3-b.2+3.conf"]);
        // The boot loader counts one try; a rollback rewrites both and keeps the state.
        std::fs::rename(dir.join("hostctl-default-3-b.2+3.conf"), dir.join("hostctl-default-3-b.2+0-3.conf")).unwrap();
        bls::sync_counted(dir, "default", &[("a.1".into(), entry("a.1")), ("b.2".into(), entry("b.2"))], Some(3))
            .unwrap();
        assert_eq!(names(dir), ["hostctl-default-4-b.2+0-3.conf", "hostctl-default-5-a.1.conf"]);
        let r = read(dir, "default").unwrap();
        assert_eq!(r[0], EntryAssessment { deployment: "a.1".into(), assessment: Assessment::Good });
        assert_eq!(r[1].assessment, Assessment::Bad { done: 3 });
    }
}
