//! The versions of hostctl's on-disk formats, the check that refuses a
//! sysroot written by a newer hostctl before anything is changed, and the
//! runner of in-place migrations from older versions (docs/store.md,
//! "Format versions").
//!
//! Two files carry a version that a reader must understand before it may
//! change anything: the store's marker `repo/format.json` (absent in format 1,
//! the layout of the first releases) and `state.json` (its `version` field).
//! Deployment metadata and layer indexes carry their own versions as well;
//! they are checked where they are read.
//!
//! A version goes up only when an older hostctl would misread the new
//! layout: after a rollback to an older image, that image's hostctl reads
//! the same sysroot, and a needless bump would lock it out.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::FormatTooNew;

/// The store's format: 1 is the layout without a marker; 2 adds
/// `repo/format.json` (the layout is otherwise unchanged).
pub const STORE_VERSION: u32 = 2;

/// The version of `state.json` this hostctl reads and writes.
pub const STATE_VERSION: u32 = 1;

/// The store's format marker, relative to the repository directory.
pub const STORE_MARKER: &str = "format.json";

/// Contents of `repo/format.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The format version of the store.
    pub version: u32,
    /// Which hostctl wrote it (`hostctl 0.1.0`), for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

/// This hostctl's name and version, as recorded in a marker.
pub fn this_hostctl() -> String {
    format!("hostctl {}", env!("CARGO_PKG_VERSION"))
}

/// Reads the store's marker in `repo`; `None` when there is none (format 1,
/// or a store not created yet).
pub fn read_store_marker(repo: &Path) -> Result<Option<Marker>> {
    let path = repo.join(STORE_MARKER);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let m: Marker = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing the store's format marker {}", path.display()))?;
            Ok(Some(m))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the store's marker for `version`, atomically.
pub fn write_store_marker(repo: &Path, version: u32) -> Result<()> {
    let m = Marker { version, written_by: Some(this_hostctl()) };
    crate::fsutil::write_json_atomic(&repo.join(STORE_MARKER), &m)
}

/// Fails with [`FormatTooNew`] when `found` is newer than `supported`.
pub fn refuse_newer(path: &Path, what: &str, found: u32, supported: u32, written_by: Option<&str>) -> Result<()> {
    if found > supported {
        return Err(FormatTooNew {
            path: path.to_path_buf(),
            what: what.to_string(),
            found,
            supported,
            written_by: written_by.map(str::to_string),
        }
        .into());
    }
    Ok(())
}

/// Refuses a sysroot whose store or `state.json` was written by a newer
/// hostctl. Reads only: run before the lock file or anything else is made.
pub fn check_sysroot(hostctl_dir: &Path) -> Result<()> {
    let repo = hostctl_dir.join("repo");
    if let Some(m) = read_store_marker(&repo)? {
        refuse_newer(&repo.join(STORE_MARKER), "store", m.version, STORE_VERSION, m.written_by.as_deref())?;
    }
    let state = hostctl_dir.join("state.json");
    if let Some(v) = json_version(&state)? {
        refuse_newer(&state, "deployment state", v, STATE_VERSION, None)?;
    }
    Ok(())
}

/// The `version` field of a JSON file, if the file exists and has one.
fn json_version(path: &Path) -> Result<Option<u32>> {
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<u32>,
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            let v: Versioned = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
            Ok(v.version)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// One migration step: brings a store of version `to - 1` to version `to`.
/// A step must be idempotent: a step killed half-way is run again from the
/// start by the next hostctl, since the marker still names the old version.
pub struct Step {
    /// The version the step produces.
    pub to: u32,
    /// What it does, for the log.
    pub what: &'static str,
    /// The work, given the repository directory.
    pub run: fn(&Path) -> Result<()>,
}

/// The store's migrations, oldest first.
pub const STORE_STEPS: &[Step] = &[Step {
    to: 2,
    what: "record the store's format version in repo/format.json (the layout is unchanged)",
    run: |_| Ok(()),
}];

/// Brings the store in `repo` from `from` up to the last step's version, one
/// step at a time; the marker is rewritten (atomically) after each step, so a
/// killed migration resumes at the step it was in. Returns the versions
/// migrated through.
pub fn migrate(repo: &Path, from: u32, steps: &[Step]) -> Result<Vec<u32>> {
    let mut done = Vec::new();
    for step in steps.iter().filter(|s| s.to > from) {
        tracing::info!("migrating the store {} to format {}: {}", repo.display(), step.to, step.what);
        (step.run)(repo).with_context(|| format!("migrating the store to format {}: {}", step.to, step.what))?;
        write_store_marker(repo, step.to)?;
        done.push(step.to);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_store_or_state_is_refused_and_left_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().join("hostctl");
        std::fs::create_dir_all(h.join("repo")).unwrap();
        check_sysroot(&h).unwrap();
        let newer = r#"{"version":3,"written_by":"hostctl 9.0.0"}"#;
        std::fs::write(h.join("repo/format.json"), newer).unwrap();
        let e = check_sysroot(&h).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::code::FORMAT_TOO_NEW, "{e:#}");
        let msg = format!("{e:#}");
        assert!(msg.contains("format version 3") && msg.contains("hostctl 9.0.0"), "{msg}");
        assert_eq!(std::fs::read_to_string(h.join("repo/format.json")).unwrap(), newer);
        std::fs::write(h.join("repo/format.json"), r#"{"version":2}"#).unwrap();
        std::fs::write(h.join("state.json"), r#"{"version":2,"stateroot":"default","future":1}"#).unwrap();
        let e = check_sysroot(&h).unwrap_err();
        assert!(format!("{e:#}").contains("deployment state"), "{e:#}");
        std::fs::write(h.join("state.json"), r#"{"version":1,"stateroot":"default"}"#).unwrap();
        check_sysroot(&h).unwrap();
    }

    fn fail_once(repo: &Path) -> Result<()> {
        let flag = repo.join("step3-ran");
        if flag.exists() {
            return Ok(());
        }
        std::fs::write(&flag, "").unwrap();
        anyhow::bail!("killed half-way")
    }

    /// A migration interrupted in a step leaves the marker at the last
    /// finished step; the next run does the rest.
    #[test]
    fn a_killed_migration_is_completed_by_the_next_run() {
        let d = tempfile::tempdir().unwrap();
        let steps = [
            Step { to: 2, what: "nothing", run: |_| Ok(()) },
            Step { to: 3, what: "fails the first time", run: fail_once },
        ];
        let e = migrate(d.path(), 1, &steps).unwrap_err();
        assert!(format!("{e:#}").contains("format 3"), "{e:#}");
        assert_eq!(read_store_marker(d.path()).unwrap().unwrap().version, 2);
        assert_eq!(migrate(d.path(), 2, &steps).unwrap(), vec![3]);
        let m = read_store_marker(d.path()).unwrap().unwrap();
        assert_eq!((m.version, m.written_by), (3, Some(this_hostctl())));
        assert_eq!(migrate(d.path(), 3, &steps).unwrap(), Vec::<u32>::new());
    }
}
