//! Hidden verbs run by systemd units and the initramfs, not by people
//! (docs/boot.md): `prepare-root` (initramfs), `finalize-staged`
//! (`hostctl-finalize-staged.service`, at shutdown) and `health-check`
//! (`hostctl-health.service`, before `boot-complete.target`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::output::outln;
use super::upgrade::open_locked;
use super::GlobalArgs;
use crate::boot::{health, prepare_root};
use crate::deploy::finalize::{self, ShutdownOutcome};
use crate::host::mount;
use crate::host::systemd::{BootControl, SystemdBootControl};

#[derive(Debug, Subcommand)]
pub enum InternalCommand {
    /// Set up the deployment named by `hostctl=` as the root (initramfs).
    #[command(hide = true)]
    PrepareRoot {
        /// Where the initramfs mounted the physical root.
        #[arg(long, default_value = "/root")]
        root: PathBuf,
        /// The kernel command line to read.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
    },
    /// Merge /etc into the staged deployment and write its boot entry (at shutdown).
    #[command(hide = true)]
    FinalizeStaged,
    /// Run the health checks of the booted deployment; on failure mark it bad and reboot.
    #[command(hide = true)]
    HealthCheck {
        /// Only run and record the checks (no boot-loader change, no reboot).
        #[arg(long)]
        dry_run: bool,
    },
}

struct DryRun;

impl BootControl for DryRun {
    fn counting(&self) -> bool {
        true
    }
    fn mark_bad(&self) -> Result<()> {
        eprintln!("hostctl health-check: --dry-run: not marking the entry bad");
        Ok(())
    }
    fn reboot(&self) -> Result<()> {
        eprintln!("hostctl health-check: --dry-run: not rebooting");
        Ok(())
    }
}

/// A line of a verb that systemd runs at boot or shutdown (its stdout is
/// the journal): one that cannot be written is dropped and the verb's work
/// goes on, since finalising or recording a health check matters more.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = outln!($($arg)*);
    }};
}

pub async fn run(g: &GlobalArgs, c: InternalCommand) -> Result<()> {
    match c {
        InternalCommand::PrepareRoot { root, cmdline } => {
            let cl = std::fs::read_to_string(&cmdline).with_context(|| format!("reading {}", cmdline.display()))?;
            prepare_root::run(&cl, &root, &mount::SyscallMounter)?;
            Ok(())
        }
        InternalCommand::FinalizeStaged => {
            let (d, _lock) = open_locked(g)?;
            let done = finalize::at_shutdown(&d)?;
            if done.layers_synced > 0 {
                say!("hostctl finalize-staged: {} layer(s) pulled since the last sync are on disk", done.layers_synced);
            }
            match done.outcome {
                ShutdownOutcome::LeftLocked { id } => say!(
                    "hostctl finalize-staged: deployment {id} was downloaded with --download-only; \
                     left unfinalised (run `hostctl upgrade` to finalise it)"
                ),
                ShutdownOutcome::Finalized(f) => {
                    say!(
                        "hostctl finalize-staged: deployment {} finalised (/etc merged from {}, {} conflict(s)); it boots next",
                        f.id,
                        f.merged_from.as_deref().unwrap_or("its defaults"),
                        f.conflicts.len()
                    );
                    for c in &f.conflicts {
                        say!("  /etc conflict: {}: {}", c.path.display(), c.resolution);
                    }
                }
                ShutdownOutcome::NothingStaged => say!("hostctl finalize-staged: nothing staged"),
            }
            Ok(())
        }
        InternalCommand::HealthCheck { dry_run } => {
            let sysroot = g.open_sysroot()?;
            let d = crate::deploy::stage::Deployer::open(&sysroot, &g.boot_dir())?;
            let booted = d.booted()?;
            let ctl: &dyn BootControl = if dry_run { &DryRun } else { &SystemdBootControl };
            let rec = health::run(std::path::Path::new("/"), sysroot.root(), booted.as_deref(), ctl)?;
            if rec.passed {
                say!("hostctl health-check: {} check(s) passed", rec.checks.len());
                Ok(())
            } else {
                anyhow::bail!("health checks failed")
            }
        }
    }
}
