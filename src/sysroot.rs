//! The sysroot: the physical root filesystem that holds hostctl's store,
//! deployments and state, and the lock every mutating command takes.
//!
//! Every command takes `--sysroot DIR` (default `/`), so the whole lifecycle
//! except the boot itself runs against a temporary directory in tests. All
//! paths hostctl touches are derived here, in one place.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::fs::{flock, FlockOperation};

/// hostctl's top directory inside a sysroot.
pub const HOSTCTL_DIR: &str = "hostctl";

/// A handle on a sysroot directory.
#[derive(Clone, Debug)]
pub struct Sysroot {
    root: PathBuf,
}

/// Raised when another hostctl holds the sysroot lock and we may not wait.
#[derive(Debug, thiserror::Error)]
#[error("another hostctl command holds the lock on {path} (pid {holder}); try again when it has finished")]
pub struct LockHeld {
    pub path: PathBuf,
    pub holder: String,
}

/// The exclusive sysroot lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SysrootLock {
    _file: File,
}

impl Sysroot {
    /// Opens the sysroot at `root`. Nothing is created: read-only commands
    /// (`status`, `image list`) leave a sysroot as they found it; hostctl's
    /// directory is made when the lock is first taken.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            anyhow::bail!("sysroot {} is not a directory", root.display());
        }
        Ok(Sysroot { root })
    }

    /// The sysroot directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<sysroot>/hostctl`.
    pub fn hostctl_dir(&self) -> PathBuf {
        self.root.join(HOSTCTL_DIR)
    }

    /// `<sysroot>/hostctl/repo`: the content store.
    pub fn repo_dir(&self) -> PathBuf {
        self.hostctl_dir().join("repo")
    }

    /// `<sysroot>/hostctl/deploy`: deployments, one folder per stateroot.
    pub fn deploy_dir(&self) -> PathBuf {
        self.hostctl_dir().join("deploy")
    }

    /// `<sysroot>/hostctl/state.json`: deployment order, staged marker, pins.
    pub fn state_path(&self) -> PathBuf {
        self.hostctl_dir().join("state.json")
    }

    /// `<sysroot>/boot`, the default boot directory.
    pub fn default_boot_dir(&self) -> PathBuf {
        self.root.join("boot")
    }

    /// Takes the exclusive sysroot lock. Waits up to `wait` for a holder to
    /// finish; with `Duration::ZERO` fails at once with [`LockHeld`].
    pub fn lock(&self, wait: Duration) -> Result<SysrootLock> {
        fs::create_dir_all(self.hostctl_dir()).with_context(|| format!("creating {}", self.hostctl_dir().display()))?;
        let path = self.hostctl_dir().join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let start = Instant::now();
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    if start.elapsed() >= wait {
                        let holder = fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                        return Err(LockHeld {
                            path,
                            holder: if holder.is_empty() { "unknown".into() } else { holder },
                        }
                        .into());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
        }
        // Record the holder for the message others see; best effort by design.
        let _ = fs::write(&path, format!("{}\n", std::process::id()));
        Ok(SysrootLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        Sysroot::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sysroot::open(dir.path()).unwrap();
        let held = s.lock(Duration::ZERO).unwrap();
        let err = s.lock(Duration::from_millis(120)).unwrap_err();
        assert!(err.downcast_ref::<LockHeld>().is_some(), "{err:#}");
        drop(held);
        s.lock(Duration::ZERO).unwrap();
    }
}
