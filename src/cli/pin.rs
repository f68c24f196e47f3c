//! `hostctl pin`.
// CONTRACT (skeleton): the deployments work fills this in.

use anyhow::Result;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct PinArgs {}

pub async fn run(_g: &GlobalArgs, _a: PinArgs, _pin: bool) -> Result<()> {
    anyhow::bail!("hostctl pin is not implemented yet")
}
