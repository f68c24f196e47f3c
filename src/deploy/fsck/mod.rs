//! `hostctl fsck`: the store checked against its ids ([`crate::store::fsck`]),
//! every deployment's tree against the image it was built from (the layer
//! indexes, merged as the checkout merges them; `walk.rs`), and the boot
//! partition against what the deployments recorded (`boot.rs`). In a tree:
//! each path's type, mode, owner, link target, device number and xattrs, for
//! regular files that it is still the store's intact object (the same
//! inode), and below `usr` the entries the image does not have. The
//! deployments' `/etc` (the admin's merged copy) is not the image's and is
//! not checked; their `usr/etc` is.
//!
//! Repairing ([`repair`]) fetches damaged layers, manifests and configs again
//! from the source each image came from (by digest, so only the very bytes
//! that were pulled are accepted), re-imports them, and then rewrites each
//! damaged path of each deployment from the repaired store: regular files
//! are hard-linked to their object again (a file rewritten in place had
//! changed the object every deployment shares; once the object is rewritten,
//! the old inode is replaced in every deployment), other nodes are created
//! anew (in a `.tmp-fsck-<pid>` directory of the stateroot, which `cleanup`
//! removes if the run is killed), directories get their recorded owner, mode
//! and xattrs back, extra entries are removed. Last, the boot partition's
//! damaged kernels are copied again from their deployment and its entries
//! written again.

mod boot;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::deploy::checkout::checkout_tree;
use crate::deploy::deployment::Metadata;
use crate::deploy::stage::Deployer;
use crate::deploy::tree::{Node, NodeKind, Tree};
use crate::digest::Digest;
use crate::imgref::ImageRef;
use crate::oci::RegistryOptions;
use crate::store::fsck::{StoreCheck, StoreDamage};
use crate::store::{LayerIndex, LayerSpec, ObjectId};

/// One damaged path, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Damage {
    /// The path at fault.
    pub path: PathBuf,
    /// `blob`, `layer-index`, `object`, `deployed`, `boot-entry` or `kernel`.
    pub kind: &'static str,
    /// The deployment it belongs to (deployed paths, boot entries and kernels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// What `fsck` found (and, with `--repair`, what it did).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Paths checked, by kind.
    pub checked: Checked,
    /// Everything found damaged by the first check.
    pub damaged: Vec<Damage>,
    /// With `--repair`: what is still damaged after repairing (empty: all repaired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrepaired: Option<Vec<Damage>>,
    /// With `--repair`: why something could not be repaired (a source gone, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repair_errors: Vec<String>,
}

/// Counts of what was checked.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// Blobs re-hashed.
    pub blobs: usize,
    /// Layer indexes read.
    pub layers: usize,
    /// Objects re-hashed.
    pub objects: usize,
    /// Deployments walked.
    pub deployments: usize,
    /// Deployed paths compared with their image.
    pub paths: usize,
    /// Boot entries compared with their deployment.
    pub boot_entries: usize,
    /// Kernel directories on the boot partition compared with their checksum.
    pub kernels: usize,
}

/// A damaged deployed path and how to repair it.
struct DeployedDamage {
    damage: Damage,
    tree: PathBuf,
    rel: PathBuf,
    fix: Fix,
}

/// How a damaged deployed path is repaired.
enum Fix {
    /// Rewritten as this node of the image's tree.
    Node(Node),
    /// Removed: the image does not have it.
    Remove,
}

/// Everything one check found.
struct Found {
    store: StoreCheck,
    deployed: Vec<DeployedDamage>,
    boot: Vec<boot::BootDamage>,
    checked: Checked,
}

impl Found {
    fn damage(&self) -> Vec<Damage> {
        let mut v: Vec<Damage> = self
            .store
            .found
            .iter()
            .map(|f| Damage {
                path: f.path.clone(),
                kind: match f.damage {
                    StoreDamage::Blob { .. } => "blob",
                    StoreDamage::LayerIndex { .. } => "layer-index",
                    StoreDamage::Object { .. } => "object",
                },
                deployment: None,
                problem: f.problem.clone(),
            })
            .collect();
        v.extend(self.deployed.iter().map(|d| d.damage.clone()));
        v.extend(self.boot.iter().map(|b| b.damage.clone()));
        v
    }
}

/// Checks the store and every deployment the state knows.
pub fn check(d: &Deployer) -> Result<Report> {
    let found = check_all(d)?;
    Ok(Report { checked: found.checked.clone(), damaged: found.damage(), ..Report::default() })
}

fn check_all(d: &Deployer) -> Result<Found> {
    let store = crate::store::fsck::check(&d.store)?;
    let state = d.load_state()?;
    let mut checked =
        Checked { blobs: store.blobs, layers: store.layers, objects: store.objects, ..Checked::default() };
    let mut deployed = Vec::new();
    for id in state.all() {
        let md = Metadata::load(&d.layout, &id)?;
        checked.deployments += 1;
        let tree_dir = d.layout.tree(&id);
        let indexes: Option<Vec<LayerIndex>> = md.layers.iter().map(|l| store.indexes.get(l).cloned()).collect();
        let Some(indexes) = indexes else {
            deployed.push(DeployedDamage {
                damage: Damage {
                    path: tree_dir.clone(),
                    kind: "deployed",
                    deployment: Some(id.clone()),
                    problem: "not checked: a layer index of its image is damaged or missing".into(),
                },
                tree: tree_dir,
                rel: PathBuf::new(),
                fix: Fix::Node(Tree::new().root),
            });
            continue;
        };
        let mut tree = Tree::from_layers(&indexes).with_context(|| format!("merging the layers of deployment {id}"))?;
        tree.relocate_etc()?;
        let mut walker = walk::Walker { store: &store, id: &id, tree: &tree_dir, found: &mut deployed, paths: 0 };
        walker.dir(&tree.root, &mut PathBuf::new());
        checked.paths += walker.paths;
    }
    let boot = boot::check(d, &state)?;
    checked.boot_entries = state.deployments.len();
    checked.kernels = boot::kernels(d, &state)?;
    Ok(Found { store, deployed, boot, checked })
}

/// An image the sysroot knows, and where it came from.
struct Source {
    imgref: String,
    manifest: Digest,
    layers: Vec<Digest>,
}

/// Checks, repairs what can be repaired, checks again. `registry` says how
/// to reach registries; the tracked image's recorded transport options are
/// added for it.
pub async fn repair(d: &Deployer, registry: &RegistryOptions) -> Result<Report> {
    let first = check_all(d)?;
    let mut report = Report { checked: first.checked.clone(), damaged: first.damage(), ..Report::default() };
    if report.damaged.is_empty() {
        report.unrepaired = Some(Vec::new());
        return Ok(report);
    }
    repair_store(d, registry, &first.store, &mut report.repair_errors).await?;
    // The deployments against the repaired store.
    let second = check_all(d)?;
    for dd in &second.deployed {
        if dd.rel.as_os_str().is_empty() {
            continue;
        }
        if let Err(e) = rewrite(d, dd, &second.store) {
            report.repair_errors.push(format!("{}: {e:#}", dd.damage.path.display()));
        }
    }
    // The boot partition against the repaired deployments (its kernels are copied from their trees).
    let state = d.load_state()?;
    boot::repair(d, &state, &boot::check(d, &state)?, &mut report.repair_errors)?;
    let last = check_all(d)?;
    report.unrepaired = Some(last.damage());
    Ok(report)
}

/// Fetches again and re-imports what the store lost: damaged layers (and the
/// layers of damaged objects), manifests and configs, from each image's source.
async fn repair_store(
    d: &Deployer,
    registry: &RegistryOptions,
    found: &StoreCheck,
    errors: &mut Vec<String>,
) -> Result<()> {
    let mut layers: BTreeSet<Digest> = BTreeSet::new();
    let mut blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut orphans: Vec<ObjectId> = Vec::new();
    for f in &found.found {
        match &f.damage {
            StoreDamage::Blob { digest } => {
                blobs.insert(digest.clone());
            }
            StoreDamage::LayerIndex { diff_id } => {
                layers.insert(diff_id.clone());
            }
            StoreDamage::Object { id, layers: named } if named.is_empty() => orphans.push(id.clone()),
            StoreDamage::Object { layers: named, .. } => layers.extend(named.iter().cloned()),
        }
    }
    // A damaged object no index names is garbage: removing it repairs it.
    for id in orphans {
        crate::fsutil::remove_file_if_present(&d.store.object_path(&id))?;
    }
    if layers.is_empty() && blobs.is_empty() {
        return Ok(());
    }
    let state = d.load_state()?;
    let mut sources = Vec::new();
    for id in state.all() {
        let md = Metadata::load(&d.layout, &id)?;
        sources.push(Source { imgref: md.image.image.to_text(), manifest: md.image.image_digest, layers: md.layers });
    }
    for r in d.store.list_images()? {
        sources.push(Source { imgref: r.imgref, manifest: r.manifest_digest, layers: r.layers });
    }
    // Blobs an image needs: its manifest, and its config where the manifest can be read.
    let mut needed: BTreeSet<Digest> = BTreeSet::new();
    for src in &sources {
        needed.insert(src.manifest.clone());
        match d.store.read_blob(&src.manifest).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(m) => {
                let m: oci_spec::image::ImageManifest = m;
                needed.extend(crate::oci::descriptor_digest(m.config()).ok());
            }
            // Its config is unknown: keep every damaged blob for the fetch.
            None => needed.extend(blobs.iter().cloned()),
        }
    }
    // A damaged blob no image needs is garbage: removing it repairs it.
    for b in blobs.clone().iter().filter(|b| !needed.contains(*b)) {
        crate::fsutil::remove_file_if_present(&crate::store::blobs::blob_path(d.store.dir(), b))?;
        blobs.remove(b);
    }
    // Every source tried for a layer or blob, with why it failed.
    let mut last_error: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for src in &sources {
        let wanted_layers: Vec<&Digest> = src.layers.iter().filter(|l| layers.contains(*l)).collect();
        let manifest_bad = blobs.contains(&src.manifest);
        if wanted_layers.is_empty() && blobs.is_empty() {
            continue;
        }
        match repair_from(d, registry, &state, src, &layers, &blobs).await {
            Ok(done) => {
                for l in done.layers {
                    layers.remove(&l);
                }
                for b in done.blobs {
                    blobs.remove(&b);
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                let mut note = |d: &Digest| {
                    let v = last_error.entry(d.clone()).or_default();
                    if !v.contains(&msg) {
                        v.push(msg.clone());
                    }
                };
                wanted_layers.into_iter().for_each(&mut note);
                if manifest_bad {
                    note(&src.manifest);
                }
            }
        }
    }
    for l in &layers {
        let why = last_error
            .get(l)
            .map(|v| v.join("; "))
            .unwrap_or_else(|| "no image the sysroot knows has this layer".into());
        errors.push(format!("layer {l} cannot be fetched again: {why}"));
    }
    for b in &blobs {
        let why = last_error
            .get(b)
            .map(|v| v.join("; "))
            .unwrap_or_else(|| "no image the sysroot knows has this blob".into());
        errors.push(format!("blob {b} cannot be fetched again: {why}"));
    }
    Ok(())
}

struct Repaired {
    layers: Vec<Digest>,
    blobs: Vec<Digest>,
}

/// Repairs what of `layers` and `blobs` belongs to the image `src`, from its source.
async fn repair_from(
    d: &Deployer,
    registry: &RegistryOptions,
    state: &crate::deploy::state::State,
    src: &Source,
    layers: &BTreeSet<Digest>,
    blobs: &BTreeSet<Digest>,
) -> Result<Repaired> {
    let imgref: ImageRef = src.imgref.parse().with_context(|| format!("the image reference {:?}", src.imgref))?;
    let mut opts = registry.clone();
    if let Some(spec) = state.spec.as_ref().filter(|s| s.image == src.imgref) {
        spec.transport_options.apply(&mut opts, false);
    }
    let gone = |e: anyhow::Error| e.context(format!("the source of {imgref} is gone or unreachable"));
    let source = crate::oci::open_source(&imgref, &opts).map_err(gone)?;
    let mut done = Repaired { layers: Vec::new(), blobs: Vec::new() };
    // The manifest: the store's copy, or the source's (by digest).
    let manifest_bytes = match d.store.read_blob(&src.manifest) {
        Ok(b) => b,
        Err(_) => {
            let raw = source
                .fetch_manifest(&src.manifest.to_string())
                .await
                .map_err(gone)?
                .with_context(|| format!("the source of {imgref} no longer has its manifest {}", src.manifest))?;
            d.store.put_blob(&src.manifest, &raw.bytes)?;
            done.blobs.push(src.manifest.clone());
            raw.bytes
        }
    };
    let manifest: oci_spec::image::ImageManifest =
        serde_json::from_slice(&manifest_bytes).with_context(|| format!("parsing manifest {}", src.manifest))?;
    let config = crate::oci::descriptor_digest(manifest.config())?;
    if blobs.contains(&config) {
        let bytes = source.fetch_small_blob(manifest.config()).await.map_err(gone)?;
        d.store.put_blob(&config, &bytes)?;
        done.blobs.push(config);
    }
    anyhow::ensure!(
        manifest.layers().len() == src.layers.len(),
        "manifest {} has {} layers, the record {}",
        src.manifest,
        manifest.layers().len(),
        src.layers.len()
    );
    for (desc, diff_id) in manifest.layers().iter().zip(&src.layers) {
        if !layers.contains(diff_id) {
            continue;
        }
        let blob_digest = crate::oci::descriptor_digest(desc)?;
        let spec = LayerSpec {
            blob_digest: blob_digest.clone(),
            size: desc.size(),
            media_type: desc.media_type().to_string(),
            diff_id: diff_id.clone(),
        };
        let reader = source
            .open_blob(desc, 0)
            .await
            .map_err(gone)
            .with_context(|| format!("fetching layer {blob_digest} again"))?;
        // Once the source answers, the layer's damaged objects go, so that the
        // import writes them anew (an object of the right size would
        // otherwise be trusted).
        if let Ok(index) = d.store.layer_index(diff_id) {
            for e in &index.entries {
                if let crate::store::EntryKind::File { object, .. } = &e.kind {
                    if !d.store.verify_object(object).unwrap_or(false) {
                        crate::fsutil::remove_file_if_present(&d.store.object_path(object))?;
                    }
                }
            }
        }
        d.store.forget_layer(diff_id, Some(&blob_digest))?;
        let store = d.store.clone();
        tokio::task::spawn_blocking(move || store.import_layer(&spec, &mut reader.into_sync(), &mut |_| {}))
            .await
            .context("the layer import panicked")??;
        done.layers.push(diff_id.clone());
    }
    d.store.sync()?;
    Ok(done)
}

/// Rewrites one damaged deployed path from the (repaired) store, or removes
/// it when the image does not have it.
fn rewrite(d: &Deployer, dd: &DeployedDamage, store: &StoreCheck) -> Result<()> {
    let path = dd.tree.join(&dd.rel);
    let current = std::fs::symlink_metadata(&path).ok();
    let expected = match &dd.fix {
        Fix::Remove => return crate::deploy::stage::remove_any(&path),
        Fix::Node(n) => n,
    };
    // A directory only its owner, mode or xattrs are wrong about keeps its content.
    if let (NodeKind::Dir(_), Some(m)) = (&expected.kind, &current) {
        if m.is_dir() {
            let meta = &expected.meta;
            std::os::unix::fs::lchown(&path, Some(meta.uid), Some(meta.gid))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(meta.mode & 0o7777))?;
            return walk::restore_xattrs(&path, &meta.xattrs);
        }
    }
    if let NodeKind::File { object, .. } = &expected.kind {
        anyhow::ensure!(store.inodes.contains_key(object), "its object {object} could not be repaired");
    }
    let name = dd.rel.file_name().context("a deployed path has a name")?.to_string_lossy().into_owned();
    // The node is written, through the checkout, into a fresh directory in
    // the stateroot's directory (where `cleanup` removes what a killed run
    // leaves: deploy/leftovers.rs), then renamed into place.
    let scratch = d.layout.dir.join(format!("{}fsck-{}", crate::fsutil::TMP_PREFIX, std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let mut root = Tree::new();
    if let NodeKind::Dir(children) = &mut root.root.kind {
        children.insert(name.clone(), expected.clone());
    }
    checkout_tree(&d.store, &root, &scratch)?;
    let result = (|| -> Result<()> {
        if current.as_ref().is_some_and(|m| m.is_dir()) {
            // The damaged directory goes aside, into the scratch directory, before it is removed.
            let old = scratch.join(format!("{}old", crate::fsutil::TMP_PREFIX));
            std::fs::rename(&path, &old)?;
            std::fs::rename(scratch.join(&name), &path)?;
        } else {
            std::fs::rename(scratch.join(&name), &path).with_context(|| format!("replacing {}", path.display()))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
