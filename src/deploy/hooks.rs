//! The staging seam: work other subsystems add to staging a deployment
//! (the apps subsystem pulls the images its bound units need there, so they
//! start offline after the reboot).

use anyhow::Result;

use crate::deploy::stage::{Deployer, Staged};

/// Work done once a deployment is staged — its tree checked out and
/// recorded in `state.json`, not yet finalised. An error undoes the staging,
/// so the host stays on what it had.
pub trait StageHook: Send + Sync {
    /// Names the work in messages ("pulling bound images").
    fn name(&self) -> &str;
    /// Runs for the deployment `staged` (its tree is `d.layout.tree(&staged.id)`).
    fn staged(&self, d: &Deployer, staged: &Staged) -> Result<()>;
}

/// Where the apps' stage hook records, inside a deployment's tree, the
/// images its bound units were pinned to (read by `status` and `cleanup`).
/// It sits in the tree's `/usr/etc` beside the pins themselves, so the
/// booted system shows it as `/etc/hostctl/bound-images.json`.
pub const BOUND_IMAGES_RECORD: &str = "usr/etc/hostctl/bound-images.json";

/// One logically bound image of a deployment, pinned by digest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundImage {
    /// The Quadlet file that names it (`web.container`, `db.image`).
    pub unit: String,
    /// The reference in the file's `Image=`.
    pub image: String,
    /// The manifest digest it was pulled at when the deployment was staged.
    pub digest: String,
    /// What the unit runs: `image` pinned by `digest` (`repo@sha256:...`).
    pub pinned: String,
}

/// The bound images recorded in the deployment tree `tree` (none: an empty list).
pub fn read_bound_images(tree: &std::path::Path) -> Result<Vec<BoundImage>> {
    use anyhow::Context;
    let path = tree.join(BOUND_IMAGES_RECORD);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
