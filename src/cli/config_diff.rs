//! `hostctl config-diff [--json]`: the booted deployment's `/etc` against its
//! image's defaults (added, modified, removed), as the /etc merge sees it.
//! Reads only; takes no lock.

use std::io::Write;

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use super::output::print_json;
use super::GlobalArgs;
use crate::deploy::booted;
use crate::deploy::config_diff::{self, EtcDiff};
use crate::deploy::deployment::Layout;
use crate::deploy::state::State;

#[derive(Debug, Args)]
pub struct ConfigDiffArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `config-diff --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    deployment: String,
    #[serde(flatten)]
    diff: EtcDiff,
}

pub async fn run(g: &GlobalArgs, a: ConfigDiffArgs) -> Result<()> {
    let sysroot = g.open_sysroot()?;
    let state = State::load(&sysroot.state_path())?;
    let layout = Layout::new(&sysroot, &state.stateroot);
    let (booted, _) = booted::detect(&sysroot, &g.boot_dir(), &layout)?;
    let Some(id) = booted else {
        bail!("no booted deployment in {}: config-diff compares the booted /etc", sysroot.root().display());
    };
    let diff = config_diff::deployment(&layout.tree(&id))?;
    if a.json {
        return print_json(&Output { deployment: id, diff });
    }
    let mut out = super::output::stdout();
    let etc = |p: &std::path::Path| {
        if p.as_os_str().is_empty() {
            "/etc".to_string()
        } else {
            format!("/etc/{}", p.display())
        }
    };
    for p in &diff.added {
        writeln!(out, "A {}", etc(p))?;
    }
    for m in &diff.modified {
        writeln!(out, "M {} ({})", etc(&m.path), m.changes.join(", "))?;
    }
    for p in &diff.removed {
        writeln!(out, "D {}", etc(p))?;
    }
    if diff.is_empty() {
        eprintln!("/etc of deployment {id} is as its image ships it");
    }
    Ok(())
}
