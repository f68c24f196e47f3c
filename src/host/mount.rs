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
    /// Mount a fresh tmpfs at `dst` (mode 0755).
    Tmpfs {
        /// The mount point.
        dst: PathBuf,
    },
    /// Mount an overlay at `dst`: `lower` below, writes into `upper`
    /// (with `work` as overlayfs's scratch directory on the same filesystem).
    Overlay {
        /// The read-only lower directory (`dst` itself, to overlay it).
        lower: PathBuf,
        /// Where changes go.
        upper: PathBuf,
        /// overlayfs's work directory.
        work: PathBuf,
        /// The mount point.
        dst: PathBuf,
        /// Mount the overlay read-only.
        read_only: bool,
    },
}

/// Something that mounts.
pub trait Mounter {
    /// Performs `op`.
    fn apply(&self, op: &MountOp) -> Result<()>;

    /// The filesystem type of the topmost mount whose mount point is `path`
    /// (`overlay`, `tmpfs`), `None` when `path` is no mount point.
    fn fs_type_at(&self, path: &Path) -> Result<Option<String>>;
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
            MountOp::Tmpfs { dst } => {
                rustix::mount::mount("tmpfs", dst, "tmpfs", MountFlags::NODEV | MountFlags::NOSUID, c"mode=0755")
                    .with_context(|| format!("mounting a tmpfs at {}", dst.display()))
            }
            MountOp::Overlay { lower, upper, work, dst, read_only } => {
                let data = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    overlay_path(lower)?,
                    overlay_path(upper)?,
                    overlay_path(work)?
                );
                let flags = if *read_only { MountFlags::RDONLY } else { MountFlags::empty() };
                let data_c = std::ffi::CString::new(data.clone()).context("overlay options")?;
                rustix::mount::mount("overlay", dst, "overlay", flags, data_c.as_c_str())
                    .with_context(|| format!("mounting an overlay on {} ({data})", dst.display()))
            }
        }
    }

    fn fs_type_at(&self, path: &Path) -> Result<Option<String>> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        let path = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        Ok(fs_type_in_mountinfo(&text, &path))
    }
}

/// A path as an overlayfs option value: `,` and `:` would split it.
fn overlay_path(p: &Path) -> Result<String> {
    let s = p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))?;
    anyhow::ensure!(!s.contains([',', ':', '\\']), "{s} cannot be an overlayfs option (it holds , : or \\)");
    Ok(s.to_string())
}

/// The filesystem type of the last (topmost) mount at `path` in a
/// `/proc/self/mountinfo` text (proc(5): field 5 is the mount point, with
/// spaces and the like as octal escapes; the type follows the ` - `).
pub fn fs_type_in_mountinfo(mountinfo: &str, path: &Path) -> Option<String> {
    let want = path.to_str()?;
    let mut found = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        if fields.len() > 4 && unescape(fields[4]) == want {
            found = fields.get(dash + 1).map(|s| s.to_string());
        }
    }
    found
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
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

    /// What the recorded operations mounted last at `path`.
    fn fs_type_at(&self, path: &Path) -> Result<Option<String>> {
        let ops = self.ops.lock().expect("poisoned");
        Ok(ops.iter().rev().find_map(|op| match op {
            MountOp::Overlay { dst, .. } if dst == path => Some("overlay".to_string()),
            MountOp::Tmpfs { dst } if dst == path => Some("tmpfs".to_string()),
            MountOp::Bind { dst, .. } if dst == path => Some("bind".to_string()),
            _ => None,
        }))
    }
}

/// A path shown in messages.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// proc(5)'s example line, and a mount point with a space, stacked.
    #[test]
    fn the_topmost_mount_at_a_path_is_found_in_mountinfo() {
        let text = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 22 0:35 / /usr ro,relatime shared:2 - ext4 /dev/vda2 rw\n\
                    41 40 0:36 / /usr rw,relatime - overlay overlay rw,lowerdir=/usr,upperdir=/run/u\n\
                    42 22 0:37 / /my\\040dir rw - tmpfs tmpfs rw\n";
        assert_eq!(fs_type_in_mountinfo(text, Path::new("/mnt2")).as_deref(), Some("ext3"));
        assert_eq!(fs_type_in_mountinfo(text, Path::new("/usr")).as_deref(), Some("overlay"));
        assert_eq!(fs_type_in_mountinfo(text, Path::new("/my dir")).as_deref(), Some("tmpfs"));
        assert_eq!(fs_type_in_mountinfo(text, Path::new("/mnt1")), None);
    }
}
