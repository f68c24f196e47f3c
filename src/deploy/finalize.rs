//! When a staged deployment is finalised: at once, or — on a running host
//! whose `hostctl-finalize-staged.service` is armed — at shutdown, so that
//! `/etc` edits made until then are kept (docs/boot.md). Also what the
//! service itself does at shutdown.

use std::path::Path;

use anyhow::{Context, Result};

use crate::deploy::stage::{Deployer, Finalized};
use crate::sysroot::Sysroot;

/// Created by `hostctl-finalize-staged.service` when it starts: from then on
/// `upgrade`/`switch` on this running system leave the staged deployment for
/// the service to finalise at shutdown.
pub const FINALIZE_ARMED_FLAG: &str = "/run/hostctl/finalize-at-shutdown";

/// True when `sysroot` is the running system's `/` and the shutdown service is armed.
pub fn finalize_at_shutdown_armed(sysroot: &Sysroot) -> bool {
    sysroot.is_running_root() && Path::new(FINALIZE_ARMED_FLAG).exists()
}

/// What finalising the staged deployment came to.
#[derive(Clone, Debug)]
pub enum Finalization {
    /// Finalised now: it is the default for the next boot.
    Now(Finalized),
    /// Left to the shutdown service (and unlocked, if a download-only
    /// staging was locked): it boots next after a clean shutdown.
    AtShutdown {
        /// The deployment's id.
        id: String,
    },
    /// Nothing was staged unfinalised.
    NothingStaged,
}

impl Finalization {
    /// Whether the next boot starts the staged deployment (so a reboot is worth it).
    pub fn boots_next(&self) -> bool {
        !matches!(self, Finalization::NothingStaged)
    }

    /// The finalisation done now, if any.
    pub fn now(self) -> Option<Finalized> {
        match self {
            Finalization::Now(f) => Some(f),
            _ => None,
        }
    }
}

/// Finalises the staged deployment now, or leaves it to the shutdown service
/// when that is armed ([`finalize_at_shutdown_armed`]). The caller holds the
/// lock.
pub fn finalize(d: &Deployer, booted: Option<&str>) -> Result<Finalization> {
    let state = d.load_state()?;
    let Some(id) = state.staged_unfinalized().map(str::to_string) else { return Ok(Finalization::NothingStaged) };
    if finalize_at_shutdown_armed(&d.sysroot) {
        if state.staged_locked {
            // A running host: unlock a download-only staging and leave it
            // to the shutdown service, which merges /etc at the last moment.
            let mut s = state;
            s.staged_locked = false;
            d.save_state(&s)?;
        }
        tracing::info!("deployment {id} is finalised at shutdown");
        return Ok(Finalization::AtShutdown { id });
    }
    let f = d.finalize_staged(booted).with_context(|| format!("finalising deployment {id}"))?;
    Ok(f.map_or(Finalization::NothingStaged, Finalization::Now))
}

/// What `hostctl finalize-staged` did at shutdown.
#[derive(Clone, Debug)]
pub struct AtShutdown {
    /// Layers pulled since the last sync that are now on disk.
    pub layers_synced: usize,
    /// What became of the staged deployment.
    pub outcome: ShutdownOutcome,
}

/// The staged deployment's fate at shutdown.
#[derive(Clone, Debug)]
pub enum ShutdownOutcome {
    /// Staged with `--download-only`: left unfinalised.
    LeftLocked {
        /// The deployment's id.
        id: String,
    },
    /// Finalised: it is the default for the next boot.
    Finalized(Finalized),
    /// Nothing was staged unfinalised.
    NothingStaged,
}

/// The shutdown service's work: syncs the store, then finalises the staged
/// deployment unless it was staged `--download-only`. The caller holds the lock.
pub fn at_shutdown(d: &Deployer) -> Result<AtShutdown> {
    // A clean shutdown: layers pulled since the last sync reach the
    // disk now, so the next boot's first pull has nothing to re-check
    // (only a crash leaves marks behind; store::durability).
    let layers_synced = match d.store.sync() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("hostctl finalize-staged: syncing the store: {e:#}");
            0
        }
    };
    let booted = d.booted()?;
    let state = d.load_state()?;
    if let Some(id) = state.staged_unfinalized().filter(|_| state.staged_locked) {
        return Ok(AtShutdown { layers_synced, outcome: ShutdownOutcome::LeftLocked { id: id.to_string() } });
    }
    let outcome = match d.finalize_staged(booted.as_deref())? {
        Some(f) => ShutdownOutcome::Finalized(f),
        None => ShutdownOutcome::NothingStaged,
    };
    Ok(AtShutdown { layers_synced, outcome })
}
