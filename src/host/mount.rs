//! The mount calls of the boot-time root set-up, behind a trait: the real
//! implementation makes `mount(2)` calls through rustix, the recording one
//! (unit tests) writes down what would have been done.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use rustix::mount::{mount_bind, mount_move, mount_remount, MountFlags};

/// One mount operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountOp {
    /// Bind-mount `src` at `dst`.
    Bind {
        /// The path to bind.
        src: PathBuf,
        /// The mount point.
        dst: PathBuf,
    },
    /// Make the bind mount at `path` read-only.
    ReadOnly {
        /// The bind mount.
        path: PathBuf,
    },
    /// Move the mount at `src` to `dst`.
    Move {
        /// The mount point now.
        src: PathBuf,
        /// The new mount point.
        dst: PathBuf,
    },
}

/// Something that mounts.
pub trait Mounter {
    /// Performs `op`.
    fn apply(&self, op: &MountOp) -> Result<()>;
}

/// Real `mount(2)` calls.
pub struct SyscallMounter;

impl Mounter for SyscallMounter {
    fn apply(&self, op: &MountOp) -> Result<()> {
        match op {
            MountOp::Bind { src, dst } => {
                mount_bind(src, dst).with_context(|| format!("bind-mounting {} at {}", src.display(), dst.display()))
            }
            MountOp::ReadOnly { path } => mount_remount(path, MountFlags::BIND | MountFlags::RDONLY, "")
                .with_context(|| format!("making {} read-only", path.display())),
            MountOp::Move { src, dst } => {
                mount_move(src, dst).with_context(|| format!("moving the mount {} to {}", src.display(), dst.display()))
            }
        }
    }
}

/// Records operations instead of mounting (tests).
#[derive(Default)]
pub struct RecordingMounter {
    /// The operations asked for, in order.
    pub ops: Mutex<Vec<MountOp>>,
}

impl Mounter for RecordingMounter {
    fn apply(&self, op: &MountOp) -> Result<()> {
        self.ops.lock().expect("poisoned").push(op.clone());
        Ok(())
    }
}

/// A path shown in messages.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}
