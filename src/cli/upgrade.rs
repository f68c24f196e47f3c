//! `hostctl upgrade [--check] [--download-only] [--apply]`: fetch the tracked
//! image's update and stage it.

use anyhow::{Context, Result};
use clap::Args;

use super::output::{outln, print_json};
use super::GlobalArgs;
use crate::deploy::reboot::SystemctlReboot;
use crate::deploy::stage::Deployer;
use crate::deploy::upgrade::{check, deploy, FlowOptions, FlowReport};
use crate::imgref::ImageRef;
use crate::pull::PullOptions;
use crate::sysroot::SysrootLock;
use crate::util::human_bytes;

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Only fetch the manifest and say whether an update exists (exit 0 either way).
    #[arg(long, conflicts_with_all = ["download_only", "apply"])]
    pub check: bool,
    /// Stage the update without finalising it.
    #[arg(long)]
    pub download_only: bool,
    /// Reboot into the update once it is staged.
    #[arg(long, conflicts_with = "download_only")]
    pub apply: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &GlobalArgs, a: UpgradeArgs) -> Result<()> {
    if a.check {
        let sysroot = g.open_sysroot()?;
        let d = Deployer::open(&sysroot, &g.boot_dir())?;
        let imgref = tracked(&d)?;
        let r = check(&d, &imgref, &pull_options(g)?).await?;
        if a.json {
            return print_json(&r);
        }
        if r.update_available {
            let v = r.latest_version.as_deref().map(|v| format!(" (version {v})")).unwrap_or_default();
            outln!("Update available for {}: {}{v}", r.image, r.latest_digest)?;
        } else {
            outln!("No update available for {}: {} is current", r.image, r.latest_digest)?;
        }
        return Ok(());
    }
    let opts = pull_options(g)?;
    let (d, _lock) = open_locked(g)?;
    let imgref = tracked(&d)?;
    let flow = FlowOptions { download_only: a.download_only, apply: a.apply };
    let report = deploy(&d, &imgref, false, &opts, flow, &SystemctlReboot).await?;
    if a.json {
        print_json(&report)
    } else {
        print_flow(&report)
    }
}

fn tracked(d: &Deployer) -> Result<ImageRef> {
    let state = d.load_state()?;
    let spec = state.spec.context("no image is tracked yet; run `hostctl switch IMAGE` first")?;
    spec.image.parse().with_context(|| format!("tracked image {:?} in state.json", spec.image))
}

/// The human summary of a switch or upgrade.
pub fn print_flow(r: &FlowReport) -> Result<()> {
    if !r.changed {
        outln!("{} ({}) is already deployed; nothing to do.", r.image, r.manifest_digest)?;
        return Ok(());
    }
    outln!("Fetched {}: {} layer(s), {}", r.image, r.layers_downloaded, human_bytes(r.bytes_downloaded))?;
    if let Some(s) = &r.staged {
        let v = s.metadata.image.version.as_deref().unwrap_or("-");
        outln!("Staged deployment {} (version {v}, kernel {})", s.id, s.metadata.kernel.version)?;
        for c in &s.conflicts {
            outln!("  /etc conflict: {}: {}", c.path.display(), c.resolution)?;
        }
    }
    match &r.finalized {
        Some(f) => outln!("Deployment {} is the default for the next boot.", f.id)?,
        None if r.finalize_at_shutdown => {
            outln!("It will be finalised at shutdown (its /etc merged then) and booted next.")?
        }
        None => outln!("Not finalised (--download-only): run `hostctl upgrade` to finish.")?,
    }
    if let Some(c) = &r.cleanup {
        if !c.deployments_removed.is_empty() {
            outln!("Removed old deployment(s): {}", c.deployments_removed.join(", "))?;
        }
    }
    if r.rebooting {
        outln!("Rebooting.")?;
    }
    Ok(())
}

// Helpers shared by the deployment verbs (switch, rollback, cleanup, pin, status).

/// Takes the sysroot lock and opens the deployer.
pub fn open_locked(g: &GlobalArgs) -> Result<(Deployer, SysrootLock)> {
    let sysroot = g.open_sysroot()?;
    let lock = sysroot.lock(super::lock_wait())?;
    let d = Deployer::open(&sysroot, &g.boot_dir())?;
    Ok((d, lock))
}

/// Pull options from the global arguments, with the trust policy's verifier.
pub fn pull_options(g: &GlobalArgs) -> Result<PullOptions> {
    Ok(PullOptions {
        registry: g.registry_options(),
        platform: g.platform(),
        progress: g.progress(),
        verifier: g.verifier()?,
    })
}
