//! What `install to-disk` checks before it writes a block device, so that bad
//! input loses nothing: a disk (or one of its partitions) that is mounted or
//! used as swap, a disk too small for the layout, and a disk that holds a
//! partition table (an MBR or a GPT), which is only overwritten with `--wipe`.
//! Nothing here writes; everything is checked before the image is pulled.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::install::disk;

/// A partition table found on a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionTable {
    /// A GUID partition table (`EFI PART` in LBA 1, 512- or 4096-byte sectors).
    Gpt,
    /// A DOS/MBR table (the 0x55AA signature with a non-empty partition entry).
    Mbr,
}

/// The partition table in the first 8 KiB of a disk, if any.
pub fn partition_table(head: &[u8]) -> Option<PartitionTable> {
    for lba1 in [512usize, 4096] {
        if head.len() >= lba1 + 8 && &head[lba1..lba1 + 8] == b"EFI PART" {
            return Some(PartitionTable::Gpt);
        }
    }
    if head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA {
        // A boot sector of a file system (FAT) has the signature too; a
        // table has at least one entry with a partition type.
        if (0..4).any(|i| head[446 + 16 * i + 4] != 0) {
            return Some(PartitionTable::Mbr);
        }
    }
    None
}

/// Mount points (and `swap`) of `dev` or its partitions, from
/// `/proc/self/mountinfo` and `/proc/swaps` texts. A partition is `dev`
/// followed by digits, or by `p` and digits (`/dev/sda1`, `/dev/loop0p1`).
pub fn uses_of(dev: &str, mountinfo: &str, swaps: &str) -> Vec<(String, String)> {
    // A disk whose name ends in a digit has `p<N>` partitions (`loop1p2`;
    // `loop10` is another disk), any other has `<N>` (`sda1`).
    let digit_end = dev.ends_with(|c: char| c.is_ascii_digit());
    let is_ours = |source: &str| {
        let Some(rest) = source.strip_prefix(dev) else { return false };
        let rest = if digit_end {
            match rest.strip_prefix('p') {
                Some(r) => r,
                None => return rest.is_empty(),
            }
        } else {
            rest
        };
        rest.is_empty() || rest.bytes().all(|b| b.is_ascii_digit())
    };
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        if let (Some(source), Some(point)) = (fields.get(dash + 2), fields.get(4)) {
            if is_ours(source) {
                found.push((source.to_string(), point.replace("\\040", " ")));
            }
        }
    }
    for line in swaps.lines().skip(1) {
        if let Some(source) = line.split_whitespace().next() {
            if is_ours(source) {
                found.push((source.to_string(), "swap".to_string()));
            }
        }
    }
    found
}

/// Refuses `dev` (a block device of `size` bytes) as an install target when
/// it is in use, too small for an ESP of `esp_mib` MiB and a root partition,
/// or holds a partition table and `wipe` is not set.
pub fn check(dev: &Path, size: u64, esp_mib: u64, wipe: bool) -> Result<()> {
    let name = dev.to_str().with_context(|| format!("{} is not UTF-8", dev.display()))?;
    let canonical = std::fs::canonicalize(dev).with_context(|| format!("resolving {}", dev.display()))?;
    let canonical = canonical.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let mut uses = uses_of(&canonical, &mountinfo, &swaps);
    if canonical != name {
        uses.extend(uses_of(name, &mountinfo, &swaps));
    }
    if let Some((source, point)) = uses.first() {
        let more = if uses.len() > 1 { format!(" (and {} more)", uses.len() - 1) } else { String::new() };
        let at = if point == "swap" { "is in use as swap".to_string() } else { format!("is mounted at {point}") };
        bail!("{name} is in use: {source} {at}{more}; unmount it first (install never writes a disk in use)");
    }
    disk::layout(size, esp_mib).with_context(|| format!("{name} cannot take the installation"))?;
    let mut head = vec![0u8; 8192];
    let n = std::fs::File::open(dev)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading the start of {name}"))?;
    head.truncate(n);
    if let Some(table) = partition_table(&head) {
        if !wipe {
            bail!(
                "{name} holds a partition table ({table:?}): installing would destroy everything on it; \
                 pass --wipe to overwrite it"
            );
        }
        tracing::warn!("{name} holds a partition table ({table:?}); --wipe: it is overwritten");
    }
    // A disk some other holder has claimed (device-mapper, RAID, a mount in another namespace).
    if let Err(e) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(dev).map(drop) {
        if e.raw_os_error() == Some(libc::EBUSY) {
            bail!("{name} is in use (busy: claimed by a mount, device-mapper or RAID); release it first");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_tables_are_found_and_file_system_boot_sectors_are_not() {
        let mut gpt = vec![0u8; 8192];
        gpt[510] = 0x55;
        gpt[511] = 0xAA;
        gpt[446 + 4] = 0xEE; // the protective MBR
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(partition_table(&gpt), Some(PartitionTable::Gpt));
        let mut gpt4k = vec![0u8; 8192];
        gpt4k[4096..4104].copy_from_slice(b"EFI PART");
        assert_eq!(partition_table(&gpt4k), Some(PartitionTable::Gpt));
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(partition_table(&mbr), None, "a FAT boot sector without partition entries");
        mbr[446 + 16 + 4] = 0x83;
        assert_eq!(partition_table(&mbr), Some(PartitionTable::Mbr));
        assert_eq!(partition_table(&[0u8; 8192]), None);
        assert_eq!(partition_table(&[]), None);
    }

    #[test]
    fn mounts_and_swaps_of_a_disk_or_its_partitions() {
        let mi = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                  23 22 8:17 / /mnt/my\\040data rw - ext4 /dev/sdb1 rw\n\
                  24 22 7:0 / /srv rw - ext4 /dev/loop0p2 rw\n\
                  25 22 7:10 / /x rw - ext4 /dev/loop10 rw\n";
        let swaps = "Filename Type Size Used Priority\n/dev/sdc2 partition 1 0 -2\n";
        assert_eq!(uses_of("/dev/sda", mi, swaps), vec![("/dev/sda1".into(), "/".into())]);
        assert_eq!(uses_of("/dev/sdb", mi, swaps), vec![("/dev/sdb1".into(), "/mnt/my data".into())]);
        assert_eq!(uses_of("/dev/loop0", mi, swaps), vec![("/dev/loop0p2".into(), "/srv".into())]);
        assert_eq!(uses_of("/dev/loop1", mi, swaps), vec![], "loop10 is another disk");
        assert_eq!(uses_of("/dev/sdc", mi, swaps), vec![("/dev/sdc2".into(), "swap".into())]);
        assert!(uses_of("/dev/vdb", mi, swaps).is_empty());
    }
}
