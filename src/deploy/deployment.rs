//! One deployment's identity, location and metadata
//! (`deploy/<stateroot>/<id>.json` beside its tree `deploy/<stateroot>/<id>/`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::digest::Digest;
use crate::fsutil;
use crate::oci::identity::ImageIdentity;
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
    /// The stateroot's name.
    pub stateroot: String,
}

impl Layout {
    /// The layout of `stateroot` in `sysroot`.
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelInfo {
    /// The kernel version (its `/usr/lib/modules/` directory name).
    pub version: String,
    /// sha256 over vmlinuz and initramfs: the directory name on the boot partition.
    pub checksum: String,
    /// Whether the image ships an initramfs.
    pub has_initramfs: bool,
}

/// What hostctl knows about a deployment. Serialised (in `switch --json`)
/// in camelCase; its file on disk keeps the version-1 layout (the private `disk` module).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Format version of this file.
    pub version: u32,
    /// The deployment's id (`<short digest>.<serial>`).
    pub id: String,
    /// The stateroot it belongs to.
    pub stateroot: String,
    /// The image it was deployed from.
    pub image: ImageIdentity,
    /// diff_ids in layer order (what the tree was built from; GC roots).
    pub layers: Vec<Digest>,
    /// The image's kernel.
    pub kernel: KernelInfo,
    /// Kernel arguments from the image's kargs.d.
    pub kargs: Vec<String>,
    /// The trust policy's verdict when it was pulled.
    pub verdict: Option<Verdict>,
    /// When the deployment was staged (RFC 3339).
    pub staged_at: String,
    /// When its /etc was merged and its boot entry written; `None` until finalised.
    pub finalized_at: Option<String>,
}

impl Metadata {
    /// Reads deployment `id`'s metadata.
    pub fn load(layout: &Layout, id: &str) -> Result<Metadata> {
        let p = layout.metadata(id);
        let bytes = std::fs::read(&p).with_context(|| format!("reading deployment metadata {}", p.display()))?;
        let m: disk::MetadataV1 = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))?;
        crate::format::refuse_newer(&p, "deployment metadata", m.version, METADATA_VERSION, None)?;
        if m.version != METADATA_VERSION || m.id != id {
            bail!("{} is not metadata version {METADATA_VERSION} of deployment {id}", p.display());
        }
        Ok(m.into())
    }

    /// Writes the metadata next to its deployment, crash-safely.
    pub fn save(&self, layout: &Layout) -> Result<()> {
        fsutil::write_json_atomic(&layout.metadata(&self.id), &disk::MetadataV1::from(self))
    }

    /// The title of its boot entry.
    pub fn title(&self) -> String {
        let image = &self.image.image.image;
        let last = image.rsplit('/').next().unwrap_or(image);
        let name = last.split(['@', ':']).next().unwrap_or(last);
        match &self.image.version {
            Some(v) => format!("{name} {v} ({})", self.id),
            None => format!("{name} ({})", self.id),
        }
    }
}

/// The metadata file's format (version 1), kept as it always was so that
/// files written by any hostctl load in any other: snake_case, the image
/// reference as one string, its identity in flat fields. Only added fields
/// (optional, ignored by older readers) may join it.
mod disk {
    use serde::{Deserialize, Serialize};

    use super::{KernelInfo, Metadata};
    use crate::digest::Digest;
    use crate::oci::identity::{ImageIdentity, ImageReference};
    use crate::trust::Verdict;

    #[derive(Serialize, Deserialize)]
    pub struct MetadataV1 {
        pub version: u32,
        pub id: String,
        pub stateroot: String,
        /// The image reference as hostctl writes it (`oci:/p:t`, `reg/os:t`).
        pub image: String,
        pub manifest_digest: Digest,
        pub config_digest: Digest,
        pub layers: Vec<Digest>,
        pub image_version: Option<String>,
        pub image_created: Option<String>,
        /// Added after the first release: absent in older files.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub image_architecture: Option<String>,
        pub kernel: KernelV1,
        pub kargs: Vec<String>,
        pub verdict: Option<VerdictV1>,
        pub staged_at: String,
        #[serde(default)]
        pub finalized_at: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct KernelV1 {
        pub version: String,
        pub checksum: String,
        pub has_initramfs: bool,
    }

    #[derive(Serialize, Deserialize)]
    pub struct VerdictV1 {
        pub rule: String,
        pub signature_verified: bool,
        pub signers: Vec<String>,
    }

    impl From<MetadataV1> for Metadata {
        fn from(m: MetadataV1) -> Self {
            Metadata {
                version: m.version,
                id: m.id,
                stateroot: m.stateroot,
                image: ImageIdentity {
                    image: ImageReference::from_text(&m.image),
                    image_digest: m.manifest_digest,
                    config_digest: m.config_digest,
                    version: m.image_version,
                    timestamp: m.image_created,
                    architecture: m.image_architecture,
                },
                layers: m.layers,
                kernel: KernelInfo {
                    version: m.kernel.version,
                    checksum: m.kernel.checksum,
                    has_initramfs: m.kernel.has_initramfs,
                },
                kargs: m.kargs,
                verdict: m.verdict.map(|v| Verdict {
                    rule: v.rule,
                    signature_verified: v.signature_verified,
                    signers: v.signers,
                }),
                staged_at: m.staged_at,
                finalized_at: m.finalized_at,
            }
        }
    }

    impl From<&Metadata> for MetadataV1 {
        fn from(m: &Metadata) -> Self {
            MetadataV1 {
                version: m.version,
                id: m.id.clone(),
                stateroot: m.stateroot.clone(),
                image: m.image.image.to_text(),
                manifest_digest: m.image.image_digest.clone(),
                config_digest: m.image.config_digest.clone(),
                layers: m.layers.clone(),
                image_version: m.image.version.clone(),
                image_created: m.image.timestamp.clone(),
                image_architecture: m.image.architecture.clone(),
                kernel: KernelV1 {
                    version: m.kernel.version.clone(),
                    checksum: m.kernel.checksum.clone(),
                    has_initramfs: m.kernel.has_initramfs,
                },
                kargs: m.kargs.clone(),
                verdict: m.verdict.as_ref().map(|v| VerdictV1 {
                    rule: v.rule.clone(),
                    signature_verified: v.signature_verified,
                    signers: v.signers.clone(),
                }),
                staged_at: m.staged_at.clone(),
                finalized_at: m.finalized_at.clone(),
            }
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

    /// A metadata file written before the image identity was shared (and
    /// before the architecture was recorded) still loads, and saving keeps
    /// the version-1 field names that older hostctl binaries read.
    #[test]
    fn metadata_written_by_an_older_hostctl_still_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::new(&Sysroot::open(tmp.path()).unwrap(), "default");
        std::fs::create_dir_all(&l.dir).unwrap();
        let m = Digest::of(b"m");
        let c = Digest::of(b"c");
        let old = serde_json::json!({
            "version": 1, "id": "0123456789ab.3", "stateroot": "default",
            "image": "oci:/srv/os:v2", "manifest_digest": m, "config_digest": c, "layers": [],
            "image_version": "2.0", "image_created": "2026-01-01T00:00:00Z",
            "kernel": {"version": "6.1", "checksum": "k", "has_initramfs": true},
            "kargs": ["quiet"],
            "verdict": {"rule": "insecureAcceptAnything", "signature_verified": false, "signers": []},
            "staged_at": "2026-01-02T00:00:00Z"
        });
        std::fs::write(l.metadata("0123456789ab.3"), old.to_string()).unwrap();
        let md = Metadata::load(&l, "0123456789ab.3").unwrap();
        assert_eq!((md.image.image.transport.as_str(), md.image.image.image.as_str()), ("oci", "/srv/os:v2"));
        assert_eq!(md.image.image_digest, m);
        assert_eq!(md.image.version.as_deref(), Some("2.0"));
        assert_eq!(md.image.architecture, None);
        assert!(!md.verdict.as_ref().unwrap().signature_verified);
        assert_eq!(md.title(), "os 2.0 (0123456789ab.3)");

        let md = Metadata { image: ImageIdentity { architecture: Some("arm64".into()), ..md.image }, ..md };
        md.save(&l).unwrap();
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(l.metadata("0123456789ab.3")).unwrap()).unwrap();
        let mut want = old.clone();
        want["image_architecture"] = "arm64".into();
        want["finalized_at"] = serde_json::Value::Null;
        assert_eq!(saved, want, "the file keeps its version-1 layout");
        assert_eq!(Metadata::load(&l, "0123456789ab.3").unwrap(), md);
    }

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
