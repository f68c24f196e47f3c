//! `hostctl cleanup`: drop deployments nothing needs (keeping booted, staged,
//! default, rollback and pinned ones), then garbage-collect the store, and
//! remove every temporary a killed or failed command left ([`leftovers`]).
//!
//! Order: `state.json` first (the commit point), then boot entries, then the
//! trees (renamed to `.tmp-` names before removal so a crash mid-delete leaves
//! only leftovers the next run removes), then kernels and store objects.

use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;

use crate::deploy::deployment::Metadata;
use crate::deploy::leftovers;
use crate::deploy::stage::{remove_any, Deployer};
use crate::deploy::state;
use crate::fsutil;
use crate::store::{GcRoots, GcStats};

/// What a cleanup removed.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    /// Ids of the deployments removed.
    pub deployments_removed: Vec<String>,
    /// What the store's garbage collection freed.
    pub store: GcStats,
    /// Temporary files and directories left by killed or failed commands.
    pub temporaries_removed: usize,
}

/// Runs a cleanup; the caller holds the sysroot lock.
pub fn cleanup(d: &Deployer, booted: Option<&str>) -> Result<CleanupReport> {
    // First, while nothing of this run is under way: every temporary now is a leftover.
    let temporaries_removed = leftovers::remove(d)?;
    let before = d.reconcile()?;
    let after = state::after_cleanup(&before, booted);
    let removed: Vec<String> = before.all().into_iter().filter(|id| !after.all().contains(id)).collect();
    if after != before {
        d.save_state(&after)?;
        d.write_boot_entries(&after)?;
    }
    for id in &removed {
        let doomed = d.layout.dir.join(format!("{}{id}", fsutil::TMP_PREFIX));
        std::fs::rename(d.layout.tree(id), &doomed)?;
        remove_any(&d.layout.metadata(id))?;
        remove_any(&doomed)?;
    }
    if !removed.is_empty() {
        fsutil::sync_dir(&d.layout.dir)?;
    }
    let mut roots = GcRoots::default();
    let mut blobs = BTreeSet::new();
    let mut diff_ids = BTreeSet::new();
    for id in after.all() {
        let m = Metadata::load(&d.layout, &id)?;
        blobs.insert(m.image.image_digest.clone());
        blobs.insert(m.image.config_digest.clone());
        diff_ids.extend(m.layers.iter().cloned());
    }
    roots.blobs = blobs.into_iter().collect();
    roots.diff_ids = diff_ids.into_iter().collect();
    let store = d.store.gc(&roots)?;
    Ok(CleanupReport { deployments_removed: removed, store, temporaries_removed })
}
