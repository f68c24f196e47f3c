//! `hostctl upgrade`.
// CONTRACT (skeleton): the deployments work fills this in.

use anyhow::Result;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct UpgradeArgs {}

pub async fn run(_g: &GlobalArgs, _a: UpgradeArgs) -> Result<()> {
    anyhow::bail!("hostctl upgrade is not implemented yet")
}
