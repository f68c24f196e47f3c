//! The disk tools `install to-disk` runs: `sgdisk` for the partition table,
//! `mkfs.vfat` and mtools' `mcopy` for the ESP, `mkfs.ext4 -d` for the root
//! file system, behind [`DiskTools`].
//!
//! Nothing is mounted: the host may be unable to mount FAT (or anything, in a
//! container). A target that is a regular file is created at the given size;
//! a block device is written in place.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// Partition names (GPT) and file system labels.
pub const ESP_PARTLABEL: &str = "hostctl-esp";
/// The root partition's GPT partition label.
pub const ROOT_PARTLABEL: &str = "hostctl-root";
/// The ESP's FAT volume label.
pub const ESP_FS_LABEL: &str = "HOSTCTL-ESP";
/// The root file system's label.
pub const ROOT_FS_LABEL: &str = "hostctl-root";

/// Where the partitions go, in bytes (computed by `install::disk::layout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The whole disk.
    pub disk_size: u64,
    /// Where the ESP starts.
    pub esp_offset: u64,
    /// The ESP's size.
    pub esp_size: u64,
    /// Where the root partition starts.
    pub root_offset: u64,
    /// The root partition's size.
    pub root_size: u64,
}

/// The external tools.
pub trait DiskTools {
    /// Writes a fresh GPT with the two partitions of `l` to `target`.
    fn partition(&self, target: &Path, l: &Layout) -> Result<()>;
    /// Makes a FAT32 ESP on `target` (a file of `size` bytes is created) and copies `content`'s files into it.
    fn make_esp(&self, target: &Path, size: u64, content: &Path) -> Result<()>;
    /// Makes the ext4 root file system on `target` (a file of `size` bytes is created) from `content`.
    fn make_root(&self, target: &Path, size: u64, content: &Path, uuid: &str) -> Result<()>;
}

/// sgdisk, mkfs.vfat, mcopy, mkfs.ext4.
pub struct ExternalTools;

/// Runs `cmd`; a failure carries its stderr.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out =
        cmd.output().with_context(|| format!("running {shown} (integration/setup.sh --vm installs the tools)"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn is_regular(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(true)
}

impl DiskTools for ExternalTools {
    fn partition(&self, target: &Path, l: &Layout) -> Result<()> {
        run(Command::new("sgdisk").arg("-Z").arg(target))?;
        let sector = 512;
        run(Command::new("sgdisk")
            .arg(format!("-n=1:{}:{}", l.esp_offset / sector, (l.esp_offset + l.esp_size) / sector - 1))
            .arg("-t=1:EF00")
            .arg(format!("-c=1:{ESP_PARTLABEL}"))
            .arg(format!("-n=2:{}:{}", l.root_offset / sector, (l.root_offset + l.root_size) / sector - 1))
            .arg("-t=2:8304")
            .arg(format!("-c=2:{ROOT_PARTLABEL}"))
            .arg(target))
    }

    fn make_esp(&self, target: &Path, size: u64, content: &Path) -> Result<()> {
        let mut c = Command::new("mkfs.vfat");
        c.args(["-F", "32", "-n", ESP_FS_LABEL]);
        if is_regular(target) {
            let _ = std::fs::remove_file(target);
            c.arg("-C").arg(target).arg((size / 1024).to_string());
        } else {
            c.arg(target);
        }
        run(&mut c)?;
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(content)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        if entries.is_empty() {
            return Ok(());
        }
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-s")
            .arg("-Q")
            .arg("-i")
            .arg(target)
            .args(&entries)
            .arg("::/"))
    }

    fn make_root(&self, target: &Path, size: u64, content: &Path, uuid: &str) -> Result<()> {
        let mut c = Command::new("mkfs.ext4");
        c.args(["-q", "-F", "-L", ROOT_FS_LABEL, "-U", uuid, "-d"]).arg(content).arg(target);
        if is_regular(target) {
            let _ = std::fs::remove_file(target);
            c.arg(format!("{}k", size / 1024));
        }
        run(&mut c)
    }
}

/// One call to [`DiskTools`], as [`RecordingDiskTools`] writes it down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskCall {
    /// [`DiskTools::partition`].
    Partition {
        /// The disk or disk image file.
        target: PathBuf,
        /// Where the partitions go.
        layout: Layout,
    },
    /// [`DiskTools::make_esp`].
    MakeEsp {
        /// The partition or image file.
        target: PathBuf,
        /// Its size, in bytes.
        size: u64,
        /// The directory whose files are copied in.
        content: PathBuf,
    },
    /// [`DiskTools::make_root`].
    MakeRoot {
        /// The partition or image file.
        target: PathBuf,
        /// Its size, in bytes.
        size: u64,
        /// The directory the file system is made from.
        content: PathBuf,
        /// The file system UUID.
        uuid: String,
    },
}

/// Records the calls and creates each target file at its size, empty (tests).
#[derive(Default)]
pub struct RecordingDiskTools {
    /// The calls made, in order.
    pub calls: Mutex<Vec<DiskCall>>,
}

impl RecordingDiskTools {
    fn record(&self, c: DiskCall) {
        self.calls.lock().expect("poisoned").push(c);
    }
}

fn sparse_file(target: &Path, size: u64) -> Result<()> {
    if is_regular(target) {
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(target)?;
        if f.metadata()?.len() < size {
            f.set_len(size)?;
        }
    }
    Ok(())
}

impl DiskTools for RecordingDiskTools {
    fn partition(&self, target: &Path, l: &Layout) -> Result<()> {
        self.record(DiskCall::Partition { target: target.into(), layout: *l });
        Ok(())
    }
    fn make_esp(&self, target: &Path, size: u64, content: &Path) -> Result<()> {
        self.record(DiskCall::MakeEsp { target: target.into(), size, content: content.into() });
        sparse_file(target, size)
    }
    fn make_root(&self, target: &Path, size: u64, content: &Path, uuid: &str) -> Result<()> {
        self.record(DiskCall::MakeRoot { target: target.into(), size, content: content.into(), uuid: uuid.into() });
        sparse_file(target, size)
    }
}
