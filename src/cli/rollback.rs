//! `hostctl rollback`.
// CONTRACT (skeleton): the deployments work fills this in.

use anyhow::Result;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct RollbackArgs {}

pub async fn run(_g: &GlobalArgs, _a: RollbackArgs) -> Result<()> {
    anyhow::bail!("hostctl rollback is not implemented yet")
}
