//! Rollback and pins: making the previous deployment the default for the
//! next boot, and keeping a deployment from cleanup. The caller holds the
//! sysroot lock.

use anyhow::{bail, Context, Result};

use crate::deploy::deployment::DeploymentId;
use crate::deploy::stage::Deployer;
use crate::deploy::state::{self, State};

/// Makes the rollback deployment (or, with one staged, the booted one) the
/// default and rewrites the boot entries; returns the new state.
pub fn rollback(d: &Deployer) -> Result<State> {
    let before = d.reconcile()?;
    let booted = d.booted()?;
    let after = state::after_rollback(&before, booted.as_deref())?;
    d.save_state(&after)?;
    d.write_boot_entries(&after)?;
    Ok(after)
}

/// Pins (`pin`) or unpins deployment `id` (default: the booted one). Returns
/// the deployment and whether anything changed.
pub fn set_pinned(d: &Deployer, id: Option<String>, pin: bool) -> Result<(DeploymentId, bool)> {
    let mut state = d.load_state()?;
    let id = match id {
        Some(id) => id,
        None => d.booted()?.context("no deployment is known to be booted; name one (see `hostctl status`)")?,
    };
    let id = DeploymentId::parse(&id)?;
    if !state.all().iter().any(|d| d == id.as_str()) {
        bail!("there is no deployment {id} (see `hostctl status`)");
    }
    let changed = if pin { state.pinned.insert(id.to_string()) } else { state.pinned.remove(id.as_str()) };
    if changed {
        d.save_state(&state)?;
    }
    Ok((id, changed))
}
