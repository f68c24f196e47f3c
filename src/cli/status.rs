//! `hostctl status [--json | --format yaml|json]`: the tracked image and the
//! booted, staged and rollback deployments. Reads only; takes no lock.

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::output::{self, print_json};
use super::GlobalArgs;
use crate::agent::state::AgentState;
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

/// The status document with the update agent's record as `status.agent`.
/// Serialized as it is, not through a `serde_json::Value`, whose map sorts
/// the keys: bootc's order (`staged`, `booted`, `rollback`, …) is kept and
/// the record comes last.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WithAgent<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: &'a status::ObjectMeta,
    spec: &'a status::HostSpec,
    status: StateWithAgent<'a>,
}

#[derive(Serialize)]
struct StateWithAgent<'a> {
    #[serde(flatten)]
    state: &'a status::HostState,
    agent: AgentState,
}

/// The document with the agent's record, when the agent has run (else `None`).
fn with_agent<'a>(g: &GlobalArgs, h: &'a status::HostStatus) -> Result<Option<WithAgent<'a>>> {
    let Some(agent) = crate::agent::state::load(&g.sysroot)? else { return Ok(None) };
    Ok(Some(WithAgent {
        api_version: h.api_version,
        kind: h.kind,
        metadata: &h.metadata,
        spec: &h.spec,
        status: StateWithAgent { state: &h.status, agent },
    }))
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
