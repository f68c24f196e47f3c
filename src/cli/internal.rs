//! Hidden verbs run by systemd units and the initramfs, not by people.
// CONTRACT (skeleton): the boot work adds `prepare-root` and `finalize-staged`.

use anyhow::Result;
use clap::Subcommand;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum InternalCommand {}

pub async fn run(_g: &GlobalArgs, c: InternalCommand) -> Result<()> {
    match c {}
}
