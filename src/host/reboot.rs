//! Rebooting into the new deployment (`upgrade --apply`), behind a trait so
//! that tests record the request instead of rebooting the machine.

use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// Something that can reboot the machine.
pub trait Reboot: Send + Sync {
    /// Reboots the host.
    fn reboot(&self) -> Result<()>;
}

/// `systemctl reboot`.
pub struct SystemctlReboot;

impl Reboot for SystemctlReboot {
    fn reboot(&self) -> Result<()> {
        let status = Command::new("systemctl").arg("reboot").status().context("running systemctl reboot")?;
        if !status.success() {
            bail!("systemctl reboot failed ({status})");
        }
        Ok(())
    }
}

/// Records reboot requests (tests).
#[derive(Default)]
pub struct RecordingReboot {
    /// Reboots asked for.
    pub calls: Mutex<u32>,
}

impl Reboot for RecordingReboot {
    fn reboot(&self) -> Result<()> {
        *self.calls.lock().expect("poisoned") += 1;
        Ok(())
    }
}
