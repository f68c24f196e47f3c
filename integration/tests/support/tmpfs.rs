//! A small filesystem of the test's own: a tmpfs of a given size mounted on
//! a temporary directory, to fill up, grow and measure; unmounted on drop.

use std::path::Path;
use std::process::Command;

use super::run;

/// A tmpfs mounted for the test.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount(8)'s `size=`: `16m`, `1g`).
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()));
        Tmpfs { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Frees space: the same filesystem, grown to `size`.
    pub fn grow(&self, size: &str) {
        run(Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(self.path()));
    }

    /// Bytes available.
    pub fn avail(&self) -> u64 {
        let out = run(Command::new("df").args(["--output=avail", "-B1"]).arg(self.path()));
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
