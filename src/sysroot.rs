//! The sysroot: the physical root filesystem that holds hostctl's store,
//! deployments and state, and the lock every mutating command takes.
//!
//! Every command takes `--sysroot DIR` (default `/`), so the whole lifecycle
//! except the boot itself runs against a temporary directory in tests. All
//! paths hostctl touches are derived here, in one place.
//!
//! # The lock and child processes
//!
//! The lock is a `flock(2)` on `hostctl/lock`. Such a lock belongs to the
//! open file description, not to the descriptor or the process, and lives
//! until the last descriptor of that description is closed. A child that any
//! thread of this process forks gets copies of all descriptors, and keeps
//! them from `fork` until `exec` closes the close-on-exec ones. Opening the
//! lock file `O_CLOEXEC` (std always does) therefore does not close the
//! window: if another thread spawns a process while the lock is held (tests
//! run in parallel threads and start registries, podman, skopeo…), merely
//! closing our descriptor would leave the lock held by the child's copy until
//! it execs, and a zero-wait `lock` right after the drop could fail with
//! [`LockHeld`] naming our own pid.
//!
//! Open-file-description locks (`F_OFD_SETLK`) would not help: they too
//! follow the description that the child's copy shares. What does help is
//! that an explicit unlock acts on the description itself, whatever other
//! descriptors share it: [`SysrootLock`]'s drop unlocks with `LOCK_UN`
//! before closing, so the release is immediate and no waiting or retry is
//! needed. (A child's copy can still exist while we hold the lock; that
//! copy never locks or unlocks, so it changes nothing.)

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

/// A deployment id, `<first 12 hex of the manifest digest>.<serial>`
/// (`deploy/<stateroot>/<id>`): checked whenever one is made or parsed, so a
/// value of this type is always safe as a path component.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeploymentId(String);

impl DeploymentId {
    /// The id of the deployment numbered `serial` of the image whose manifest digest is `manifest_hex`.
    pub fn new(manifest_hex: &str, serial: u64) -> Self {
        DeploymentId(format!("{}.{serial}", &manifest_hex[..manifest_hex.len().min(12)]))
    }

    /// Checks that `id` looks like one hostctl made.
    pub fn parse(id: &str) -> Result<Self> {
        let ok = id.split_once('.').is_some_and(|(h, s)| {
            !h.is_empty()
                && h.bytes().all(|b| b.is_ascii_hexdigit())
                && !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
        });
        if !ok {
            anyhow::bail!("{id:?} is not a deployment id (expected <hex>.<serial>, see `hostctl status`)");
        }
        Ok(DeploymentId(id.to_string()))
    }

    /// The id, as written (`<hex>.<serial>`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for DeploymentId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DeploymentId {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        DeploymentId::parse(s)
    }
}

impl From<DeploymentId> for String {
    fn from(id: DeploymentId) -> String {
        id.0
    }
}

impl TryFrom<String> for DeploymentId {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        DeploymentId::parse(&s)
    }
}

impl AsRef<str> for DeploymentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for DeploymentId {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl PartialEq<str> for DeploymentId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for DeploymentId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for DeploymentId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<DeploymentId> for String {
    fn eq(&self, other: &DeploymentId) -> bool {
        *self == other.0
    }
}

/// Raised when another hostctl holds the sysroot lock and we may not wait.
#[derive(Debug, thiserror::Error)]
#[error("another hostctl command holds the lock on {path} (pid {holder}); try again when it has finished")]
pub struct LockHeld {
    /// The lock file.
    pub path: PathBuf,
    /// The holder's process id, as it wrote it in the lock file.
    pub holder: String,
}

/// The exclusive sysroot lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SysrootLock {
    file: File,
}

impl Drop for SysrootLock {
    fn drop(&mut self) {
        // Explicitly, not by closing: a child forked meanwhile may hold a copy
        // of the descriptor until it execs (see the module documentation).
        if let Err(e) = flock(&self.file, FlockOperation::Unlock) {
            tracing::warn!("unlocking the sysroot lock: {e}");
        }
    }
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

    /// Whether this sysroot is the running system's `/`: then the kernel
    /// command line says what is booted, the first deployment takes the
    /// running `root=`, and the shutdown service may finalise stagings.
    pub fn is_running_root(&self) -> bool {
        fs::canonicalize(&self.root).map(|p| p == Path::new("/")).unwrap_or(false)
    }

    /// `<sysroot>/boot`, the default boot directory.
    pub fn default_boot_dir(&self) -> PathBuf {
        self.root.join("boot")
    }

    /// Takes the exclusive sysroot lock. Waits up to `wait` for a holder to
    /// finish; with `Duration::ZERO` fails at once with [`LockHeld`].
    pub fn lock(&self, wait: Duration) -> Result<SysrootLock> {
        fs::create_dir_all(self.hostctl_dir()).with_context(|| format!("creating {}", self.hostctl_dir().display()))?;
        lock_file(&self.hostctl_dir().join("lock"), wait)
    }
}

/// Takes an exclusive `flock(2)` on the file `path` (created if missing; its
/// directory must exist), as [`Sysroot::lock`] does on the sysroot's: waits
/// up to `wait`, then fails with [`LockHeld`] naming the holder's pid.
pub fn lock_file(path: &Path, wait: Duration) -> Result<SysrootLock> {
    let path = path.to_path_buf();
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
                    return Err(
                        LockHeld { path, holder: if holder.is_empty() { "unknown".into() } else { holder } }.into()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
    // Record the holder for the message others see; best effort by design.
    let _ = fs::write(&path, format!("{}\n", std::process::id()));
    Ok(SysrootLock { file })
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

    /// The flaky run: a test in another thread spawned a process while this
    /// one held the lock; the child's copy of the descriptor (between fork
    /// and exec) kept the lock after the guard was dropped. A duplicate
    /// descriptor of the same open file description stands in for that copy.
    #[test]
    fn relocking_at_once_succeeds_while_a_forked_child_still_holds_a_copy_of_the_lock_fd() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sysroot::open(dir.path()).unwrap();
        let held = s.lock(Duration::ZERO).unwrap();
        let childs_copy = held.file.try_clone().unwrap();
        drop(held);
        let again = s.lock(Duration::ZERO).unwrap();
        drop(again);
        drop(childs_copy);
    }

    #[test]
    fn only_the_real_root_is_the_running_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!Sysroot::open(dir.path()).unwrap().is_running_root());
        assert!(Sysroot::open("/").unwrap().is_running_root());
    }
}
