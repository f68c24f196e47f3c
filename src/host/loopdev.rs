//! Loop devices and the kernel's view of partition tables: `losetup` to
//! attach a disk image file (`install to-disk --via-loopback`) and `partx`
//! to make the kernel read a new partition table where no udev does it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// Loop devices and partition rescans.
pub trait LoopDevices {
    /// Attaches `file` to a free loop device with partition scanning; returns the device.
    fn attach(&self, file: &Path) -> Result<PathBuf>;
    /// Detaches `dev`.
    fn detach(&self, dev: &Path) -> Result<()>;
    /// Asks the kernel to (re)read the partition table of `dev`.
    fn rescan_partitions(&self, dev: &Path) -> Result<()>;
}

/// `losetup` and `partx`.
pub struct Losetup;

impl LoopDevices for Losetup {
    fn attach(&self, file: &Path) -> Result<PathBuf> {
        let out = Command::new("losetup").args(["--show", "-f", "-P"]).arg(file).output().context("running losetup")?;
        if !out.status.success() {
            bail!("losetup failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    fn detach(&self, dev: &Path) -> Result<()> {
        let st = Command::new("losetup").arg("-d").arg(dev).status().context("running losetup -d")?;
        if !st.success() {
            bail!("losetup -d {} failed ({st})", dev.display());
        }
        Ok(())
    }

    fn rescan_partitions(&self, dev: &Path) -> Result<()> {
        let out = Command::new("partx").arg("-u").arg(dev).output().context("running partx")?;
        if !out.status.success() {
            // `-u` fails on a table the kernel never read; `-a` adds the partitions.
            let _ = Command::new("partx").arg("-a").arg(dev).output();
        }
        Ok(())
    }
}

/// One call to [`LoopDevices`], as [`RecordingLoopDevices`] writes it down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoopCall {
    /// [`LoopDevices::attach`] of this file.
    Attach(PathBuf),
    /// [`LoopDevices::detach`] of this device.
    Detach(PathBuf),
    /// [`LoopDevices::rescan_partitions`] of this device.
    Rescan(PathBuf),
}

/// Records the calls; `attach` hands out `/dev/loopN` names in order (tests).
#[derive(Default)]
pub struct RecordingLoopDevices {
    /// The calls made, in order.
    pub calls: Mutex<Vec<LoopCall>>,
}

impl LoopDevices for RecordingLoopDevices {
    fn attach(&self, file: &Path) -> Result<PathBuf> {
        let mut calls = self.calls.lock().expect("poisoned");
        let n = calls.iter().filter(|c| matches!(c, LoopCall::Attach(_))).count();
        calls.push(LoopCall::Attach(file.into()));
        Ok(PathBuf::from(format!("/dev/loop{n}")))
    }
    fn detach(&self, dev: &Path) -> Result<()> {
        self.calls.lock().expect("poisoned").push(LoopCall::Detach(dev.into()));
        Ok(())
    }
    fn rescan_partitions(&self, dev: &Path) -> Result<()> {
        self.calls.lock().expect("poisoned").push(LoopCall::Rescan(dev.into()));
        Ok(())
    }
}
