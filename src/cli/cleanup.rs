//! `hostctl cleanup`.
// CONTRACT (skeleton): the deployments work fills this in.

use anyhow::Result;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct CleanupArgs {}

pub async fn run(_g: &GlobalArgs, _a: CleanupArgs) -> Result<()> {
    anyhow::bail!("hostctl cleanup is not implemented yet")
}
