//! The three-way /etc merge: the new image's defaults plus the admin's local
//! changes relative to the previous deployment's defaults.
// CONTRACT (skeleton): the deployment-tree work fills this in.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

/// A path where the admin's change and the new image's change collide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Relative to /etc.
    pub path: PathBuf,
    /// Human explanation and which side wins (documented in docs/etc-merge.md).
    pub resolution: String,
}

/// What the merge will do; computed before anything is written.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EtcMergePlan {
    /// Paths (relative to /etc) whose local version is carried over.
    pub keep_local: Vec<PathBuf>,
    /// Paths the admin deleted, which stay deleted.
    pub keep_deleted: Vec<PathBuf>,
    pub conflicts: Vec<Conflict>,
}

/// Plans the merge from the previous deployment's defaults (`old_defaults`,
/// its `usr/etc`), its live `/etc` (`current`) and the new defaults (`new_defaults`).
pub fn plan(_old_defaults: &Path, _current: &Path, _new_defaults: &Path) -> Result<EtcMergePlan> {
    anyhow::bail!("/etc merge is not implemented yet")
}

/// Writes the new `/etc` (`new_etc`, must not exist): a real copy of
/// `new_defaults` (never hardlinks into the store) with the plan applied from `current`.
pub fn apply(_plan: &EtcMergePlan, _current: &Path, _new_defaults: &Path, _new_etc: &Path) -> Result<()> {
    anyhow::bail!("/etc merge is not implemented yet")
}
