//! Units that had already failed when an update was staged. They are
//! recorded in the new deployment (`/etc/hostctl/failed-before-update`,
//! written to the tree's `usr/etc` like the bound-image record), and the
//! base's health check `10-system-running` does not hold them against it:
//! an app that was crash-looping before the upgrade is no sign that the new
//! OS is bad, and rolling the OS back for it (and reporting the release
//! unhealthy to the fleet, which halts the rollout) would punish every host
//! for one broken app. A unit that was fine before and fails after the
//! reboot still fails the check, and the host rolls back.
//!
//! hostctl's own units are left out (the check skips them anyway). Where
//! systemd cannot be asked (no systemd as PID 1), nothing is recorded and
//! staging goes on: the record only ever relaxes the check.

use std::path::Path;

use anyhow::{Context, Result};

use crate::deploy::hooks::StageHook;
use crate::deploy::stage::{Deployer, Staged};
use crate::host::units::Units;

/// The record, relative to a deployment's tree (`/etc/hostctl/failed-before-update` when booted).
pub const RECORD: &str = "usr/etc/hostctl/failed-before-update";

/// The stage hook that writes [`RECORD`].
pub struct FailedBeforeUpdate<'a> {
    /// The running system's systemd.
    pub units: &'a dyn Units,
}

impl StageHook for FailedBeforeUpdate<'_> {
    fn name(&self) -> &str {
        "recording the units that had failed before the update"
    }

    fn staged(&self, d: &Deployer, staged: &Staged) -> Result<()> {
        let failed = match self.units.failed_units() {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("not recording failed units (systemd cannot be asked): {e:#}");
                return Ok(());
            }
        };
        write(&d.layout.tree(&staged.id), &failed)
    }
}

/// Writes the record of `failed` (hostctl's own units left out) into `tree`.
pub fn write(tree: &Path, failed: &[String]) -> Result<()> {
    let mut text = String::from(
        "# Units that had failed when this deployment was staged, one a line, written by\n\
         # hostctl; the health check 10-system-running does not hold them against it.\n",
    );
    let mut units: Vec<&String> = failed.iter().filter(|u| !u.starts_with("hostctl-")).collect();
    units.sort();
    units.dedup();
    if !units.is_empty() {
        tracing::info!(
            "{} unit(s) had failed before the update and will not fail its health check: {}",
            units.len(),
            units.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    for u in units {
        text.push_str(u);
        text.push('\n');
    }
    let path = tree.join(RECORD);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::fsutil::write_atomic(&path, text.as_bytes())
}

/// The units a deployment's record lists (none recorded: none).
pub fn read(tree: &Path) -> Result<Vec<String>> {
    let path = tree.join(RECORD);
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            Ok(t.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::units::{state, FakeUnits};

    #[test]
    fn the_record_lists_the_failed_units_but_hostctl_s_own_sorted_once() {
        let d = tempfile::tempdir().unwrap();
        let failed = ["web.service", "hostctl-health.service", "api.service", "web.service"].map(String::from);
        write(d.path(), &failed).unwrap();
        assert_eq!(read(d.path()).unwrap(), ["api.service", "web.service"]);
        // Written again at the next staging: replaced, not added to.
        write(d.path(), &[]).unwrap();
        assert!(read(d.path()).unwrap().is_empty());
        assert!(read(&d.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn the_fake_systemd_reports_its_failed_units() {
        let u = FakeUnits::new();
        u.set_state("b.service", state("failed", "failed"));
        u.set_state("a.service", state("active", "running"));
        u.set_state("c.service", state("failed", "failed"));
        assert_eq!(u.failed_units().unwrap(), ["b.service", "c.service"]);
    }
}
