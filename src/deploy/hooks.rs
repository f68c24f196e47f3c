//! The staging seam: work other subsystems add to staging a deployment
//! (the apps subsystem pulls the images its bound units need there, so they
//! start offline after the reboot).

use anyhow::Result;

use crate::deploy::stage::{Deployer, Staged};

/// Work done once a deployment is staged — its tree checked out and
/// recorded in `state.json`, not yet finalised. An error undoes the staging,
/// so the host stays on what it had.
pub trait StageHook: Send + Sync {
    /// Names the work in messages ("pulling bound images").
    fn name(&self) -> &str;
    /// Runs for the deployment `staged` (its tree is `d.layout.tree(&staged.id)`).
    fn staged(&self, d: &Deployer, staged: &Staged) -> Result<()>;
}
