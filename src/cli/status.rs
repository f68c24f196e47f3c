//! `hostctl status [--json | --format yaml|json]`: the tracked image and the
//! booted, staged and rollback deployments. Reads only; takes no lock.

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::upgrade::print_json;
use super::GlobalArgs;
use crate::deploy::booted;
use crate::deploy::deployment::{Layout, Metadata};
use crate::deploy::state::State;
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
    // Read-only: no lock, and nothing is created on a sysroot without hostctl.
    let sysroot = g.open_sysroot()?;
    let state = State::load(&sysroot.state_path())?;
    let layout = Layout::new(&sysroot, &state.stateroot);
    let (booted, source) = booted::detect(sysroot.root(), &g.boot_dir(), &layout)?;
    let meta = |id: &str| Metadata::load(&layout, id).map_err(|e| format!("{e:#}"));
    let h = status::build(&state, booted.as_deref(), source, &meta);
    match (a.json, a.format.unwrap_or(Format::Human)) {
        (true, _) | (_, Format::Json) => print_json(&h),
        (_, Format::Yaml) => {
            print!("{}", serde_yaml_ng::to_string(&h)?);
            Ok(())
        }
        (_, Format::Human) => {
            print!("{}", status::render_human(&h));
            print!("{}", boot_notes(g, &layout, booted.as_deref()));
            Ok(())
        }
    }
}

/// What boot counting and the health checks say (automatic rollback), for the human view.
fn boot_notes(g: &GlobalArgs, layout: &Layout, booted: Option<&str>) -> String {
    use crate::boot::{bls, counting, health};
    let entries = match counting::read(&bls::entries_dir(&g.boot_dir()), &layout.stateroot) {
        Ok(e) => e,
        Err(e) => return format!("\nBoot entries: could not be read: {e:#}\n"),
    };
    let mut s = String::new();
    for note in counting::explain(&entries, booted) {
        s.push_str(&format!("\n{note}\n"));
        let failed = entries.iter().find(|e| note.starts_with(&format!("deployment {} failed", e.deployment)));
        if let Some(rec) = failed.and_then(|e| health::read_record(g.sysroot.as_path(), &e.deployment)) {
            for c in rec.checks.iter().filter(|c| !c.passed) {
                s.push_str(&format!(
                    "    health check {} failed ({}) at {}: {}\n",
                    c.name, c.detail, rec.checked_at, c.output
                ));
            }
        }
    }
    s
}
