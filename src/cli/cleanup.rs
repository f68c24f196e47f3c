//! `hostctl cleanup`: remove deployments, layers and objects nothing needs.

use anyhow::Result;
use clap::Args;

use super::output::{outln, print_json};
use super::upgrade::open_locked;
use super::GlobalArgs;
use crate::util::human_bytes;

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &GlobalArgs, a: CleanupArgs) -> Result<()> {
    let (d, _lock) = open_locked(g)?;
    let booted = d.booted()?;
    let r = crate::deploy::cleanup::cleanup(&d, booted.as_deref())?;
    if a.json {
        return print_json(&r);
    }
    outln!(
        "Removed {} deployment(s), {} layer(s), {} object(s), {}, {} temporary file(s)",
        r.deployments_removed.len(),
        r.store.layers,
        r.store.objects,
        human_bytes(r.store.bytes),
        r.temporaries_removed
    )?;
    Ok(())
}
