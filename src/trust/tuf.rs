//! Refreshing the pinned sigstore `trusted_root.json` through TUF, from a
//! mirror the user names (`hostctl trust update-root`).
//!
//! The TUF client is sigstore-rust's `sigstore-tuf` (the one
//! `sigstore-trust-root` uses; nothing of the workflow is written here): it
//! starts from the pinned TUF `root.json`, walks root rotations, then
//! timestamp → snapshot → targets, checking signature thresholds, expiry and
//! versions, and the target's length and hashes. Its metadata store keeps the
//! versions last trusted, so that a mirror serving older metadata than a
//! previous run saw is a rollback, refused. Written here: where the pinned
//! root, the metadata store and the trusted root live, checking that the new
//! `trusted_root.json` is one hostctl can verify with, and replacing the old
//! file atomically (a refused or failed update leaves it as it was).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sigstore_tuf::{FileStore, HttpRepository, Updater};

/// The pinned TUF root, relative to the sysroot.
pub const PINNED_TUF_ROOT: &str = "etc/hostctl/sigstore/tuf-root.json";
/// The TUF metadata store (versions last trusted), relative to the sysroot.
pub const TUF_METADATA_DIR: &str = "var/lib/hostctl/sigstore/tuf";
/// The TUF target that is the sigstore trusted root.
pub const TRUSTED_ROOT_TARGET: &str = "trusted_root.json";

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The mirror's metadata or target did not verify (expired, badly signed,
    /// rolled back, tampered), or the target is not a usable trusted root.
    #[error("{0}")]
    Refused(String),
    /// Anything else (the mirror unreachable, a file unwritable).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What an update did.
#[derive(Debug)]
pub struct Updated {
    /// The TUF root version trusted after the update.
    pub root_version: u64,
    /// The targets metadata version the target came from.
    pub targets_version: u64,
    /// Whether the file's content changed.
    pub changed: bool,
    /// The file written.
    pub path: PathBuf,
}

/// The whole error chain of a TUF error, on one line.
fn chain(e: &sigstore_tuf::Error) -> String {
    let mut s = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn tuf_err(what: &str, e: sigstore_tuf::Error) -> UpdateError {
    let msg = format!("{what}: {}", chain(&e));
    match e {
        sigstore_tuf::Error::Transport { .. } | sigstore_tuf::Error::Io { .. } => {
            UpdateError::Other(anyhow::anyhow!(msg))
        }
        _ => UpdateError::Refused(msg),
    }
}

/// Fetches `trusted_root.json` from `mirror` through TUF, trusting
/// `tuf_root` (and the metadata in `metadata_dir`), and writes it to `out`
/// atomically once it verified and loads as a trusted root.
pub async fn update_root(
    mirror: &str,
    tuf_root: &Path,
    metadata_dir: &Path,
    out: &Path,
) -> Result<Updated, UpdateError> {
    let root_bytes =
        std::fs::read(tuf_root).with_context(|| format!("reading the pinned TUF root {}", tuf_root.display()))?;
    std::fs::create_dir_all(metadata_dir)
        .with_context(|| format!("creating the TUF metadata directory {}", metadata_dir.display()))?;
    let repo = HttpRepository::new(mirror).map_err(|e| tuf_err(&format!("mirror {mirror}"), e))?;
    let mut updater = Updater::new(repo, &root_bytes)
        .map_err(|e| tuf_err(&format!("the pinned TUF root {}", tuf_root.display()), e))?
        .with_store(FileStore::new(metadata_dir));
    let now = jiff::Timestamp::now();
    updater.refresh(now).await.map_err(|e| tuf_err(&format!("TUF metadata from {mirror}"), e))?;
    let bytes = updater
        .get_target(TRUSTED_ROOT_TARGET, now)
        .await
        .map_err(|e| tuf_err(&format!("target {TRUSTED_ROOT_TARGET} from {mirror}"), e))?;
    check_usable(&bytes).map_err(|e| UpdateError::Refused(format!("{TRUSTED_ROOT_TARGET} from {mirror}: {e:#}")))?;
    let changed = std::fs::read(out).map(|old| old != bytes).unwrap_or(true);
    if changed {
        write_atomically(out, &bytes)?;
    }
    let trusted = updater.trusted();
    Ok(Updated {
        root_version: trusted.root().version,
        targets_version: trusted.targets_role("targets").map(|t| t.version).unwrap_or_default(),
        changed,
        path: out.to_path_buf(),
    })
}

/// The target must be a trusted root the bundle verifier accepts.
fn check_usable(bytes: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(bytes).context("not UTF-8")?;
    let root = sigstore_verify::trust_root::TrustedRoot::from_json(text).context("not a sigstore trusted root")?;
    sigstore_verify::Verifier::new(&root).context("not a usable trusted root")?;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// synced, renamed over `path`, and the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_atomic(path, bytes).context("writing the new trusted root")?;
    // The temporary file was private (0600); the trusted root is public.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .context("setting the new trusted root's mode")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sigstore/trusted_root.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["trusted_root.json"]);
    }

    #[test]
    fn only_usable_trusted_roots_are_taken() {
        check_usable(sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT.as_bytes()).unwrap();
        for bad in [&b"{}"[..], b"not json", b"\xff"] {
            assert!(check_usable(bad).is_err(), "{bad:?}");
        }
    }
}
