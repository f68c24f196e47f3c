//! `hostctl fsck [--repair] [--json]`: check the store's objects, blobs and
//! layer indexes, every deployment's files and the boot partition's entries
//! and kernels against what was recorded; with `--repair`, fetch what is
//! damaged again from each image's source and rewrite it. Exit codes: 0 nothing damaged, 8 damage found, 9 all of it
//! repaired, 10 some could not be repaired (docs/cli.md).

use anyhow::Result;
use clap::Args;

use super::output::{outln, print_json};
use super::upgrade::open_locked;
use super::GlobalArgs;
use crate::deploy::fsck::{self, Report};
use crate::error::{code, FsckOutcome};

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Fetch what is damaged again from the image's source and rewrite it.
    #[arg(long)]
    pub repair: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &GlobalArgs, a: FsckArgs) -> Result<()> {
    // Locked: a repair writes, and a check must not see a pull half-way.
    let (d, _lock) = open_locked(g)?;
    let report = if a.repair { fsck::repair(&d, &g.registry_options()).await? } else { fsck::check(&d)? };
    if a.json {
        print_json(&report)?;
    } else {
        print_human(&report)?;
    }
    outcome(&report)
}

fn print_human(r: &Report) -> Result<()> {
    let c = &r.checked;
    outln!(
        "Checked {} object(s), {} blob(s), {} layer index(es), {} deployment(s) ({} path(s)), {} boot entr(ies), {} kernel(s).",
        c.objects,
        c.blobs,
        c.layers,
        c.deployments,
        c.paths,
        c.boot_entries,
        c.kernels
    )?;
    for dmg in &r.damaged {
        let left = r.unrepaired.as_ref().map(|u| u.iter().any(|x| x.path == dmg.path));
        let tag = match left {
            None => "damaged",
            Some(true) => "not repaired",
            Some(false) => "repaired",
        };
        outln!("{tag}: {} ({}): {}", dmg.path.display(), dmg.kind, dmg.problem)?;
    }
    for e in &r.repair_errors {
        outln!("could not repair: {e}")?;
    }
    Ok(())
}

/// The exit code as an error (0: `Ok`).
fn outcome(r: &Report) -> Result<()> {
    let n = r.damaged.len();
    match &r.unrepaired {
        _ if n == 0 => Ok(()),
        None => Err(FsckOutcome {
            message: format!("{n} damaged path(s) found; `hostctl fsck --repair` fetches them again"),
            code: code::DAMAGED,
        }
        .into()),
        Some(left) if left.is_empty() => {
            Err(FsckOutcome { message: format!("repaired {n} damaged path(s)"), code: code::REPAIRED }.into())
        }
        Some(left) => {
            let why = r.repair_errors.first().map(|e| format!(": {e}")).unwrap_or_default();
            Err(FsckOutcome {
                message: format!("{} of {n} damaged path(s) could not be repaired{why}", left.len()),
                code: code::UNREPAIRED,
            }
            .into())
        }
    }
}
