//! `hostctl cleanup`: remove deployments, layers and objects nothing needs,
//! and the bound app images no kept deployment and no installed app uses.

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
    let images = super::app::cleanup_bound_images(g, &d)?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["appImages"] = serde_json::to_value(&images)?;
        return print_json(&v);
    }
    outln!(
        "Removed {} deployment(s), {} layer(s), {} object(s), {}, {} temporary file(s)",
        r.deployments_removed.len(),
        r.store.layers,
        r.store.objects,
        human_bytes(r.store.bytes),
        r.temporaries_removed
    )?;
    if !images.removed.is_empty() {
        outln!(
            "Removed {} app image(s) no deployment or app uses: {}",
            images.removed.len(),
            images.removed.join(", ")
        )?;
    }
    for k in &images.kept {
        outln!("Kept {k}")?;
    }
    Ok(())
}
