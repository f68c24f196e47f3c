//! `hostctl status`.
// CONTRACT (skeleton): the deployments work fills this in.

use anyhow::Result;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct StatusArgs {}

pub async fn run(_g: &GlobalArgs, _a: StatusArgs) -> Result<()> {
    anyhow::bail!("hostctl status is not implemented yet")
}
