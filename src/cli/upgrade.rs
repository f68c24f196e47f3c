//! `hostctl upgrade [--check] [--download-only] [--apply]`: fetch the tracked
//! image's update and stage it.

use anyhow::{Context, Result};
use clap::Args;

use super::output::{outln, print_json};
use super::GlobalArgs;
use crate::apps::bound::BoundImagesHook;
use crate::deploy::failed_before::FailedBeforeUpdate;
use crate::deploy::stage::Deployer;
use crate::deploy::upgrade::{check, deploy_with, FlowOptions, FlowReport};
use crate::host::podman::PodmanCli;
use crate::host::reboot::SystemctlReboot;
use crate::host::units::Systemctl;
use crate::imgref::ImageRef;
use crate::pull::PullOptions;
use crate::sysroot::SysrootLock;
use crate::util::human_bytes;

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Only fetch the manifest and say whether an update exists (exit 0 either way).
    #[arg(long, conflicts_with_all = ["download_only", "apply"])]
    pub check: bool,
    #[command(flatten)]
    pub flow: FlowArgs,
}

/// The options `switch` and `upgrade` share: how far the flow goes and how
/// it reports.
#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Stage the deployment without finalising it (no /etc merge, no boot entry yet).
    #[arg(long)]
    pub download_only: bool,
    /// Reboot into the new deployment once it is staged.
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
        let (imgref, opts) = tracked(g, &d)?;
        let r = check(&d, &imgref, &opts).await?;
        if a.flow.json {
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
    let (d, _lock) = open_locked(g)?;
    let (imgref, opts) = tracked(g, &d)?;
    run_flow(g, &d, &imgref, false, &opts, &a.flow).await
}

/// Pulls and stages `imgref` as far as `flow` says and prints what happened
/// (`track`: make it the tracked image, as `switch` does). The new
/// deployment's bound images are pulled before its staging completes.
pub async fn run_flow(
    g: &GlobalArgs,
    d: &Deployer,
    imgref: &ImageRef,
    track: bool,
    opts: &PullOptions,
    flow: &FlowArgs,
) -> Result<()> {
    let options = FlowOptions { download_only: flow.download_only, apply: flow.apply };
    let podman = PodmanCli::default();
    let bound = BoundImagesHook {
        podman: &podman,
        pull: super::app::pull_settings(g),
        state_dir: g.sysroot.join(crate::apps::bound::STATE_DIR),
    };
    let failed_before = FailedBeforeUpdate { units: &Systemctl };
    let report = deploy_with(d, imgref, track, opts, options, &SystemctlReboot, &[&bound, &failed_before]).await?;
    // With --progress=json the result is the terminal `done` event (docs/cli.md).
    if opts.progress.is_json() {
        opts.progress.done(serde_json::to_value(&report)?);
        return Ok(());
    }
    if flow.json {
        print_json(&report)
    } else {
        print_flow(&report)
    }
}

/// The tracked image, and the pull options for it: the command line's, with
/// the transport options `switch` recorded filled in where it is silent.
fn tracked(g: &GlobalArgs, d: &Deployer) -> Result<(ImageRef, PullOptions)> {
    let state = d.load_state()?;
    let spec = state.spec.context("no image is tracked yet; run `hostctl switch IMAGE` first")?;
    let imgref: ImageRef =
        spec.image.parse().with_context(|| format!("tracked image {:?} in state.json", spec.image))?;
    if let ImageRef::OciDir { path, .. } | ImageRef::OciArchive { path, .. } = &imgref {
        if path.is_relative() {
            tracing::warn!(
                "the tracked image {imgref} has a relative path (recorded by an older hostctl): it is read from \
                 the current directory; run `hostctl switch` with it again to record it absolute"
            );
        }
    }
    let mut opts = pull_options(g)?;
    spec.transport_options.apply(&mut opts.registry, g.tls_verify.is_some());
    Ok((imgref, opts))
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::cli::Cli;

    /// One flag set: the same flags with the same help on both verbs, and
    /// the same conflicts (`--check` is upgrade's own).
    #[test]
    fn switch_and_upgrade_share_one_flow_flag_set() {
        let cmd = Cli::command();
        let flags = |verb: &str| {
            let sub = cmd.find_subcommand(verb).unwrap();
            ["download-only", "apply", "json"].map(|f| {
                let arg = sub.get_arguments().find(|a| a.get_long() == Some(f)).unwrap();
                arg.get_help().unwrap().to_string()
            })
        };
        assert_eq!(flags("switch"), flags("upgrade"));
        for bad in [
            &["hostctl", "switch", "reg/os", "--download-only", "--apply"][..],
            &["hostctl", "upgrade", "--download-only", "--apply"],
            &["hostctl", "upgrade", "--check", "--apply"],
            &["hostctl", "upgrade", "--check", "--download-only"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        Cli::try_parse_from(["hostctl", "upgrade", "--check", "--json"]).unwrap();
        Cli::try_parse_from(["hostctl", "switch", "reg/os", "--apply", "--json"]).unwrap();
    }
}
