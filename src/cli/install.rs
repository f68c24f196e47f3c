//! `hostctl install to-disk | to-filesystem`.
// CONTRACT (skeleton): the boot work fills this in.

use anyhow::Result;
use clap::Subcommand;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum InstallCommand {}

pub async fn run(_g: &GlobalArgs, c: InstallCommand) -> Result<()> {
    match c {}
}
