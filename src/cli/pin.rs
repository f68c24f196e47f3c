//! `hostctl pin [ID]` / `hostctl unpin [ID]`: keep a deployment from cleanup, or stop keeping it.

use anyhow::{bail, Context, Result};
use clap::Args;

use super::output::outln;
use super::upgrade::open_locked;
use super::GlobalArgs;
use crate::deploy::deployment::check_id;

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The deployment id (see `hostctl status`) [default: the booted deployment].
    pub deployment: Option<String>,
}

pub async fn run(g: &GlobalArgs, a: PinArgs, pin: bool) -> Result<()> {
    let (d, _lock) = open_locked(g)?;
    let mut state = d.load_state()?;
    let id = match a.deployment {
        Some(id) => id,
        None => d.booted()?.context("no deployment is known to be booted; name one (see `hostctl status`)")?,
    };
    check_id(&id)?;
    if !state.all().contains(&id) {
        bail!("there is no deployment {id} (see `hostctl status`)");
    }
    let changed = if pin { state.pinned.insert(id.clone()) } else { state.pinned.remove(&id) };
    if changed {
        d.save_state(&state)?;
    }
    let verb = if pin { "pinned" } else { "unpinned" };
    outln!("Deployment {id} is {verb}{}.", if changed { "" } else { " already" })?;
    Ok(())
}
