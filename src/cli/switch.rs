//! `hostctl switch`.
// CONTRACT (skeleton): the deployments work fills this in.

use anyhow::Result;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct SwitchArgs {}

pub async fn run(_g: &GlobalArgs, _a: SwitchArgs) -> Result<()> {
    anyhow::bail!("hostctl switch is not implemented yet")
}
