//! `hostctl rollback`: make the previous deployment the default for the next boot.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::output::{outln, print_json};
use super::upgrade::open_locked;
use super::GlobalArgs;
use crate::deploy::rollback;

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &GlobalArgs, a: RollbackArgs) -> Result<()> {
    let (d, _lock) = open_locked(g)?;
    let after = rollback::rollback(&d)?;
    let default = after.deployments.first().cloned();
    if a.json {
        return print_json(&json!({ "default": default, "order": after.deployments }));
    }
    outln!("Deployment {} is now the default for the next boot.", default.unwrap_or_default())?;
    Ok(())
}
