//! `hostctl switch REF`: track a new image and stage a deployment of it.

use anyhow::Result;
use clap::Args;

use super::upgrade::{open_locked, pull_options, run_flow, FlowArgs};
use super::GlobalArgs;
use crate::imgref::ImageRef;

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// The image to track: [registry:|docker://|oci:|oci-archive:]NAME[:TAG][@DIGEST].
    /// A layout's path is recorded absolute; --tls-verify, --cert-dir and
    /// --authfile are recorded with it for `upgrade`.
    pub image: ImageRef,
    #[command(flatten)]
    pub flow: FlowArgs,
}

pub async fn run(g: &GlobalArgs, a: SwitchArgs) -> Result<()> {
    let opts = pull_options(g)?;
    let (d, _lock) = open_locked(g)?;
    run_flow(g, &d, &a.image, true, &opts, &a.flow).await
}
