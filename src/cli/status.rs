//! `hostctl status [--json | --format yaml|json]`: the tracked image and the
//! booted, staged and rollback deployments. Reads only; takes no lock.

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::output::{self, print_json};
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
    let (booted, source) = booted::detect(&sysroot, &g.boot_dir(), &layout)?;
    let meta = |id: &str| Metadata::load(&layout, id).map_err(|e| format!("{e:#}"));
    let facts = boot_facts(g, &layout, &state);
    let h = status::build(&state, booted.as_deref(), source, &meta, &facts);
    match (a.json, a.format.unwrap_or(Format::Human)) {
        (true, _) | (_, Format::Json) => match with_agent(g, &h)? {
            Some(doc) => print_json(&doc),
            None => print_json(&h),
        },
        (_, Format::Yaml) => {
            let yaml = match with_agent(g, &h)? {
                Some(doc) => serde_yaml_ng::to_string(&doc)?,
                None => serde_yaml_ng::to_string(&h)?,
            };
            output::print(&yaml)?;
            Ok(())
        }
        (_, Format::Human) => {
            output::print(&status::render_human(&h))?;
            Ok(())
        }
    }
}

/// The document with the update agent's record as `status.agent`, when the
/// agent has run (else `None`: the document as it is, its key order kept).
fn with_agent(g: &GlobalArgs, h: &status::HostStatus) -> Result<Option<serde_json::Value>> {
    let Some(agent) = crate::agent::state::load(&g.sysroot)? else { return Ok(None) };
    let mut doc = serde_json::to_value(h)?;
    doc["status"]["agent"] = serde_json::to_value(agent)?;
    Ok(Some(doc))
}

/// The stateroot's boot entries (boot counting) and the health-check records
/// of its deployments, each read once.
fn boot_facts(g: &GlobalArgs, layout: &Layout, state: &State) -> status::BootFacts {
    use crate::boot::{bls, counting, health};
    let (entries, entries_error) = match counting::read(&bls::entries_dir(&g.boot_dir()), &layout.stateroot) {
        Ok(e) => (e, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let health =
        state.all().into_iter().filter_map(|id| health::read_record(&g.sysroot, &id).map(|r| (id, r))).collect();
    let bound_images = state
        .all()
        .into_iter()
        .filter_map(|id| crate::deploy::hooks::read_bound_images(&layout.tree(&id)).ok().map(|b| (id, b)))
        .collect();
    status::BootFacts { entries, entries_error, health, bound_images }
}
