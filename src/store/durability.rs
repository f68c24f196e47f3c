//! When the store's writes reach the disk: layers committed before their
//! objects were synced, and what a crash of the machine leaves to check.
//!
//! Committing a layer does not wait for the disk. Waiting (`syncfs` before the
//! index is written) cost 1.0–1.25 s of a 3.5 s pull of a 773 MB image
//! (docs/benchmarks.md), and it buys nothing against the common failure, a
//! killed process: objects are renamed into place only once complete, and the
//! page cache is coherent, so whatever a killed pull committed is intact.
//! Only a crash of the machine (power cut, kernel panic) can lose writes that
//! were acknowledged but not yet written back: an object renamed into place
//! may come back empty, short or missing, while the index naming it survives.
//!
//! So the store commits a layer in this order: a mark
//! `repo/unsynced/<diff_id hex>` holding the current boot id (written and
//! fsynced), then the index and by-blob alias (each written atomically). The
//! mark is removed by [`sync`], one `syncfs` for everything written so far,
//! which runs before anything is built from the store that a machine will boot
//! (staging a deployment), and at every clean shutdown
//! (`hostctl finalize-staged`). A mark whose boot id is not the running
//! kernel's means the machine went down before that sync: [`crate::store::Store::recover`]
//! then re-hashes every object of that layer and drops the layer (and the
//! objects that did not survive) so that the next pull downloads it again.
//! A mark of the current boot belongs to a pull that finished or was killed;
//! its objects are trustworthy.
//!
//! ostree reasons the same way about its staging directories, which carry
//! the boot id in their names and are resumed only within the same boot.
//! Without a boot id (no `/proc`), layers are synced before they are
//! committed, as before.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::digest::Digest;

/// The directory of marks, below the repository.
const DIR: &str = "unsynced";
/// The running kernel's boot id: a random UUID that changes at every boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The running kernel's boot id, if it can be read.
pub fn boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn mark_path(repo: &Path, diff_id: &Digest) -> PathBuf {
    repo.join(DIR).join(diff_id.hex())
}

/// Records, durably, that the objects of layer `diff_id` may not be on disk
/// yet. `Ok(false)` when there is no boot id to record: the caller must sync
/// before it commits.
pub fn mark(repo: &Path, diff_id: &Digest) -> Result<bool> {
    let Some(boot) = boot_id() else { return Ok(false) };
    let dir = repo.join(DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_atomic(&mark_path(repo, diff_id), format!("{boot}\n").as_bytes())?;
    Ok(true)
}

/// The layers marked, with the boot id each mark holds (empty if unreadable).
fn marks(repo: &Path) -> Result<Vec<(Digest, String)>> {
    let dir = repo.join(DIR);
    let mut out = Vec::new();
    for entry in crate::fsutil::read_dir_if_present(&dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Leftover temporary files of an interrupted mark are not marks.
        let Ok(diff_id) = format!("sha256:{name}").parse::<Digest>() else { continue };
        let boot = fs::read_to_string(entry.path()).map(|s| s.trim().to_string()).unwrap_or_default();
        out.push((diff_id, boot));
    }
    out.sort();
    Ok(out)
}

/// Makes everything written to the store's filesystem so far durable (one
/// `syncfs`), then forgets the marks that existed before it. Returns how many
/// layers were waiting for it.
pub fn sync(repo: &Path) -> Result<usize> {
    let waiting = marks(repo)?;
    crate::fsutil::syncfs(&repo.join("objects"))?;
    for (diff_id, _) in &waiting {
        forget(repo, diff_id)?;
    }
    if !waiting.is_empty() {
        crate::fsutil::sync_dir(&repo.join(DIR))?;
    }
    Ok(waiting.len())
}

/// The layers committed, but not synced, by an earlier boot: the machine went
/// down before they reached the disk (or shut down without
/// `hostctl finalize-staged`, whose sync would have removed the mark). A mark
/// that cannot be read counts as one.
pub fn from_earlier_boots(repo: &Path) -> Result<Vec<Digest>> {
    let now = boot_id();
    Ok(marks(repo)?.into_iter().filter(|(_, boot)| now.as_deref() != Some(boot.as_str())).map(|(d, _)| d).collect())
}

/// Removes the mark of `diff_id` (not synced: the next [`sync`] or a later
/// recovery covers it).
pub fn forget(repo: &Path, diff_id: &Digest) -> Result<()> {
    crate::fsutil::remove_file_if_present(&mark_path(repo, diff_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    #[test]
    fn marks_of_this_boot_are_not_suspect_and_sync_forgets_them() {
        let repo = tempfile::tempdir().unwrap();
        fs::create_dir_all(repo.path().join("objects")).unwrap();
        assert!(mark(repo.path(), &digest('a')).unwrap(), "this machine has a boot id");
        assert!(from_earlier_boots(repo.path()).unwrap().is_empty());

        // A mark left by another boot is suspect; an unreadable one too.
        fs::write(mark_path(repo.path(), &digest('b')), "00000000-0000-0000-0000-000000000000\n").unwrap();
        fs::write(mark_path(repo.path(), &digest('c')), "").unwrap();
        fs::write(repo.path().join(DIR).join(".tmp-xyz"), "junk").unwrap();
        assert_eq!(from_earlier_boots(repo.path()).unwrap(), vec![digest('b'), digest('c')]);

        assert_eq!(sync(repo.path()).unwrap(), 3);
        assert!(marks(repo.path()).unwrap().is_empty());
        assert_eq!(sync(repo.path()).unwrap(), 0, "nothing waits any more");
    }

    #[test]
    fn forgetting_a_missing_mark_is_fine() {
        let repo = tempfile::tempdir().unwrap();
        forget(repo.path(), &digest('d')).unwrap();
        assert!(from_earlier_boots(repo.path()).unwrap().is_empty());
    }
}
