//! `hostctl status [--json | --format yaml|json]`: the tracked image and the
//! booted, staged and rollback deployments. Reads only; takes no lock.

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::upgrade::print_json;
use super::GlobalArgs;
use crate::deploy::booted;
use crate::deploy::deployment::Metadata;
use crate::deploy::stage::Deployer;
use crate::deploy::status;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON (same as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format [default: human].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

pub async fn run(g: &GlobalArgs, a: StatusArgs) -> Result<()> {
    let sysroot = g.open_sysroot()?;
    let d = Deployer::open(&sysroot, &g.boot_dir())?;
    let state = d.load_state()?;
    let (booted, source) = booted::detect(sysroot.root(), &g.boot_dir(), &d.layout)?;
    let meta = |id: &str| Metadata::load(&d.layout, id).map_err(|e| format!("{e:#}"));
    let h = status::build(&state, booted.as_deref(), source, &meta);
    match (a.json, a.format.unwrap_or(Format::Human)) {
        (true, _) | (_, Format::Json) => print_json(&h),
        (_, Format::Yaml) => {
            print!("{}", serde_yaml_ng::to_string(&h)?);
            Ok(())
        }
        (_, Format::Human) => {
            print!("{}", status::render_human(&h));
            Ok(())
        }
    }
}
