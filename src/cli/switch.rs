//! `hostctl switch REF`: track a new image and stage a deployment of it.

use anyhow::Result;
use clap::Args;

use super::output::print_json;
use super::upgrade::print_flow;
use super::upgrade::{open_locked, pull_options};
use super::GlobalArgs;
use crate::deploy::reboot::SystemctlReboot;
use crate::deploy::upgrade::{deploy, FlowOptions};
use crate::imgref::ImageRef;

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// The image to track: [registry:|docker://|oci:|oci-archive:]NAME[:TAG][@DIGEST].
    pub image: ImageRef,
    /// Stage the deployment without finalising it (no /etc merge, no boot entry yet).
    #[arg(long)]
    pub download_only: bool,
    /// Reboot into the new deployment once it is staged.
    #[arg(long, conflicts_with = "download_only")]
    pub apply: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &GlobalArgs, a: SwitchArgs) -> Result<()> {
    let opts = pull_options(g)?;
    let (d, _lock) = open_locked(g)?;
    let flow = FlowOptions { download_only: a.download_only, apply: a.apply };
    let report = deploy(&d, &a.image, true, &opts, flow, &SystemctlReboot).await?;
    // With --progress=json the result is the terminal `done` event (docs/cli.md).
    if opts.progress.is_json() {
        opts.progress.done(serde_json::to_value(&report)?);
        return Ok(());
    }
    if a.json {
        print_json(&report)
    } else {
        print_flow(&report)
    }
}
