//! One deployment's identity, location and metadata
//! (`deploy/<stateroot>/<id>.json` beside its tree `deploy/<stateroot>/<id>/`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil;
use crate::sysroot::Sysroot;
use crate::trust::Verdict;

/// Version of the metadata format.
pub const METADATA_VERSION: u32 = 1;

pub use crate::sysroot::DeploymentId;

/// A deployment id: `<first 12 hex of the manifest digest>.<serial>`.
pub fn make_id(manifest: &Digest, serial: u64) -> DeploymentId {
    DeploymentId::new(manifest.hex(), serial)
}

/// Paths of a stateroot's deployments.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `<sysroot>/hostctl/deploy/<stateroot>`.
    pub dir: PathBuf,
    pub stateroot: String,
}

impl Layout {
    pub fn new(sysroot: &Sysroot, stateroot: &str) -> Layout {
        Layout { dir: sysroot.deploy_dir().join(stateroot), stateroot: stateroot.into() }
    }
    /// The root tree of deployment `id`.
    pub fn tree(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
    /// Its metadata file.
    pub fn metadata(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
    /// The stateroot's persistent /var.
    pub fn var(&self) -> PathBuf {
        self.dir.join("var")
    }
    /// The `hostctl=` kernel argument value: the tree's path from the sysroot's root.
    pub fn karg_path(&self, id: &str) -> String {
        format!("/{}/deploy/{}/{id}", crate::sysroot::HOSTCTL_DIR, self.stateroot)
    }
    /// The deployment id named by a `hostctl=` value, if it is of this stateroot.
    pub fn id_from_karg(&self, value: &str) -> Option<DeploymentId> {
        let prefix = format!("/{}/deploy/{}/", crate::sysroot::HOSTCTL_DIR, self.stateroot);
        DeploymentId::parse(value.strip_prefix(&prefix)?.trim_end_matches('/')).ok()
    }
}

/// Kernel details recorded with a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub version: String,
    /// sha256 over vmlinuz and initramfs: the directory name on the boot partition.
    pub checksum: String,
    pub has_initramfs: bool,
}

/// What hostctl knows about a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub version: u32,
    pub id: String,
    pub stateroot: String,
    /// The image reference it was deployed from.
    pub image: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// diff_ids in layer order (what the tree was built from; GC roots).
    pub layers: Vec<Digest>,
    /// The image's `org.opencontainers.image.version` label.
    pub image_version: Option<String>,
    /// The image config's `created` time.
    pub image_created: Option<String>,
    pub kernel: KernelInfo,
    /// Kernel arguments from the image's kargs.d.
    pub kargs: Vec<String>,
    /// The trust policy's verdict when it was pulled.
    pub verdict: Option<Verdict>,
    /// When the deployment was staged (RFC 3339).
    pub staged_at: String,
    /// When its /etc was merged and its boot entry written; `None` until finalised.
    #[serde(default)]
    pub finalized_at: Option<String>,
}

impl Metadata {
    pub fn load(layout: &Layout, id: &str) -> Result<Metadata> {
        let p = layout.metadata(id);
        let bytes = std::fs::read(&p).with_context(|| format!("reading deployment metadata {}", p.display()))?;
        let m: Metadata = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))?;
        if m.version != METADATA_VERSION || m.id != id {
            bail!("{} is not metadata version {METADATA_VERSION} of deployment {id}", p.display());
        }
        Ok(m)
    }

    pub fn save(&self, layout: &Layout) -> Result<()> {
        fsutil::write_json_atomic(&layout.metadata(&self.id), self)
    }

    /// The title of its boot entry.
    pub fn title(&self) -> String {
        let last = self.image.rsplit('/').next().unwrap_or(&self.image);
        let name = last.split(['@', ':']).next().unwrap_or(last);
        match &self.image_version {
            Some(v) => format!("{name} {v} ({})", self.id),
            None => format!("{name} ({})", self.id),
        }
    }
}

/// Reads the deployment tree's metadata or explains that it is missing.
pub fn load_all(layout: &Layout, ids: &[String]) -> Result<Vec<Metadata>> {
    ids.iter().map(|id| Metadata::load(layout, id)).collect()
}

/// True when `path` is an existing directory.
pub fn tree_exists(path: &Path) -> bool {
    path.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_kargs_table() {
        let d = Digest::of(b"manifest");
        let id = make_id(&d, 7);
        assert_eq!(id.len(), 12 + 2);
        assert!(id.ends_with(".7"));
        DeploymentId::parse(&id).unwrap();
        for bad in ["", "abc", "abc.", ".1", "../x.1", "abc.1/..", "xyz.1", "abc.1a"] {
            assert!(DeploymentId::parse(bad).is_err(), "{bad}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::new(&Sysroot::open(tmp.path()).unwrap(), "default");
        assert_eq!(l.karg_path(&id), format!("/hostctl/deploy/default/{id}"));
        assert_eq!(l.id_from_karg(&l.karg_path(&id)), Some(id.clone()));
        assert_eq!(l.id_from_karg(&format!("/hostctl/deploy/other/{id}")), None);
        assert_eq!(l.id_from_karg("/hostctl/deploy/default/../../x"), None);
    }
}
