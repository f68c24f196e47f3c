//! `hostctl pin [ID]` / `hostctl unpin [ID]`: keep a deployment from cleanup, or stop keeping it.

use anyhow::Result;
use clap::Args;

use super::output::outln;
use super::upgrade::open_locked;
use super::GlobalArgs;
use crate::deploy::rollback::set_pinned;

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The deployment id (see `hostctl status`) [default: the booted deployment].
    pub deployment: Option<String>,
}

pub async fn run(g: &GlobalArgs, a: PinArgs, pin: bool) -> Result<()> {
    let (d, _lock) = open_locked(g)?;
    let (id, changed) = set_pinned(&d, a.deployment, pin)?;
    let verb = if pin { "pinned" } else { "unpinned" };
    outln!("Deployment {id} is {verb}{}.", if changed { "" } else { " already" })?;
    Ok(())
}
