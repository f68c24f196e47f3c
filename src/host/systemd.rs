//! systemd and the boot loader's view of this boot: whether the booted entry
//! is counted (on trial), `systemd-bless-boot bad`, and the reboot that
//! follows, behind [`BootControl`] (used by the health check).

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::host::reboot::{Reboot, SystemctlReboot};

/// The boot loader and power actions taken when a health check fails.
pub trait BootControl {
    /// Whether this boot is on trial (its entry has a boot counter): only then
    /// does a failure mark it bad and reboot (an uncounted boot has nothing to fall back to).
    fn counting(&self) -> bool;
    /// Marks the booted entry bad (the boot loader will not pick it again).
    fn mark_bad(&self) -> Result<()>;
    /// Reboots the host.
    fn reboot(&self) -> Result<()>;
}

/// `systemd-bless-boot bad` and `systemctl reboot`.
pub struct SystemdBootControl;

/// The EFI variable systemd-boot sets when it boots a counted entry.
pub const BOOT_COUNT_EFIVAR: &str =
    "/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

impl BootControl for SystemdBootControl {
    fn counting(&self) -> bool {
        Path::new(BOOT_COUNT_EFIVAR).exists()
    }
    fn mark_bad(&self) -> Result<()> {
        let tool = ["/usr/lib/systemd/systemd-bless-boot", "/lib/systemd/systemd-bless-boot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("systemd-bless-boot is not installed")?;
        let st = Command::new(tool).arg("bad").status().with_context(|| format!("running {tool} bad"))?;
        if !st.success() {
            bail!("{tool} bad failed ({st}); is the entry counted (LoaderBootCountPath)?");
        }
        Ok(())
    }
    fn reboot(&self) -> Result<()> {
        SystemctlReboot.reboot()
    }
}

/// Records `mark_bad` and `reboot` in order; `counting` is what it was built
/// with (tests).
#[derive(Default)]
pub struct RecordingBootControl {
    /// False: this boot is not on trial.
    pub counted: bool,
    /// The calls made, in order.
    pub calls: Mutex<Vec<&'static str>>,
}

impl RecordingBootControl {
    /// A fake for a counted boot.
    pub fn counted() -> Self {
        RecordingBootControl { counted: true, calls: Mutex::default() }
    }
}

impl BootControl for RecordingBootControl {
    fn counting(&self) -> bool {
        self.counted
    }
    fn mark_bad(&self) -> Result<()> {
        self.calls.lock().expect("poisoned").push("bad");
        Ok(())
    }
    fn reboot(&self) -> Result<()> {
        self.calls.lock().expect("poisoned").push("reboot");
        Ok(())
    }
}
