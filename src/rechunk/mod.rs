//! `hostctl image rechunk`: rewriting an OS image into content-stable layers,
//! so that two builds that share a Debian package share that layer's digest
//! and an upgrade downloads only the layers of what changed.
//!
//! The source image is pulled into a temporary store (so every digest is
//! checked and its layers' whiteouts and links are resolved exactly as a
//! deployment resolves them), merged into one tree, and every path is given a
//! group: the package whose dpkg file list names it ([`owners`]), or else its
//! directory. Groups are assigned to layers by a rule that depends on each
//! group's name and the size ranking alone ([`plan`]), and every layer is
//! written reproducibly ([`tarball`]): entries in tree order, numeric owners,
//! mtimes clamped to `SOURCE_DATE_EPOCH` or the image's `created` time, fixed
//! compression (gzip, zstd, or zstd:chunked: [`zstd_chunked`]). The image is written to an OCI layout ([`output`]) with its
//! config's `rootfs` and `history` rewritten and the rest of it kept.
//!
//! A deployment of the rechunked image is the same tree as one of the
//! source: the same paths, kinds, owners, modes, xattrs and contents (objects
//! do not record mtimes). Hard links of the source become one object each
//! way; in the rechunked image a hard link never crosses a layer (files of
//! one content in two layers are written twice), and a hard-linked symlink,
//! device or fifo is written as separate entries.

pub mod output;
pub mod owners;
pub mod plan;
pub mod push;
pub mod tarball;
pub mod zstd_chunked;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::deploy::tree::{Node, NodeKind, Tree};
use crate::digest::Digest;
use crate::imgref::ImageRef;
use crate::pull::PullOptions;
use crate::store::Store;
use plan::{Group, LayerKey};
pub use tarball::Compression;

/// How to rechunk.
#[derive(Clone, Debug)]
pub struct Options {
    /// Layers at most (the directory layer included).
    pub max_layers: usize,
    /// Layer compression.
    pub compression: Compression,
    /// Clamp mtimes to this instead of the image's `created` time (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
}

/// One layer written.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerSummary {
    /// What it holds (`package coreutils`, `bucket 3`, `directories`).
    pub holds: String,
    /// Its blob digest.
    pub digest: Digest,
    /// Its blob size.
    pub size: u64,
    /// Its diff_id.
    pub diff_id: Digest,
    /// Tar entries in it.
    pub entries: usize,
    /// Groups in it.
    pub groups: Vec<String>,
    /// Its descriptor's annotations (zstd:chunked: where its TOC is).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What `rechunk` wrote.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rechunked {
    /// The source's manifest digest.
    pub source_digest: Digest,
    /// The new manifest's digest.
    pub manifest_digest: Digest,
    /// Packages found in the image's dpkg records.
    pub packages: usize,
    /// Paths two packages' lists both name (each given to the first by name).
    pub contested_paths: usize,
    /// The mtime every entry was clamped to.
    pub clamp: Option<i64>,
    /// The layers, bottom first.
    pub layers: Vec<LayerSummary>,
}

/// The tree's nodes in depth-first name order, with their paths; the root is `.`.
fn flatten(tree: &Tree) -> Vec<(String, &Node)> {
    fn walk<'a>(prefix: &str, node: &'a Node, out: &mut Vec<(String, &'a Node)>) {
        let Some(children) = node.children() else { return };
        for (name, child) in children {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            out.push((path.clone(), child));
            walk(&path, child, out);
        }
    }
    let mut out = vec![(".".to_string(), &tree.root)];
    walk("", &tree.root, &mut out);
    out
}

/// The image config `config` with its layers replaced by `layers`.
fn rewrite_config(mut config: Value, layers: &[LayerSummary]) -> Value {
    let created = config.get("created").cloned();
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
    });
    config["history"] = layers
        .iter()
        .map(|l| {
            let mut h = json!({
                "created_by": format!("hostctl image rechunk: {}", l.holds),
                "comment": l.groups.join(" "),
            });
            if let Some(c) = &created {
                h["created"] = c.clone();
            }
            h
        })
        .collect();
    config
}

/// Rechunks `src` into the OCI layout at `dst` (tagged `tag`).
pub async fn rechunk(
    src: &ImageRef,
    dst: &Path,
    tag: Option<&str>,
    pull: &PullOptions,
    opts: &Options,
) -> Result<Rechunked> {
    let layout = output::LayoutWriter::create(dst)?;
    let work = tempfile::Builder::new()
        .prefix(".hostctl-rechunk-")
        .tempdir_in(dst)
        .with_context(|| format!("creating a work directory in {}", dst.display()))?;
    let store = Store::open_dir(&work.path().join("repo"))?;
    let resolved = crate::pull::resolve(src, pull).await?;
    let prepared = crate::pull::prepare(resolved, pull).await?;
    let pulled = crate::pull::fetch_layers(&store, prepared, pull).await?;
    let config_bytes = store.read_blob(&pulled.config_digest)?;
    let config: Value = serde_json::from_slice(&config_bytes).context("parsing the image config")?;
    let clamp = opts
        .source_date_epoch
        .or_else(|| config.get("created")?.as_str()?.parse::<jiff::Timestamp>().ok().map(|t| t.as_second()));

    let store2 = store.clone();
    let diff_ids: Vec<Digest> = pulled.layers.iter().map(|l| l.diff_id.clone()).collect();
    let (max_layers, compression, work_dir) = (opts.max_layers, opts.compression, work.path().to_path_buf());
    let (summaries, packages, contested) = tokio::task::spawn_blocking(move || {
        write_layers(&store2, &diff_ids, max_layers, compression, clamp, &work_dir)
    })
    .await
    .context("the rechunking thread")??;

    for (l, file) in &summaries {
        if file.exists() {
            layout.put_file(file, &l.digest)?;
        }
    }
    let layers: Vec<LayerSummary> = summaries.into_iter().map(|(l, _)| l).collect();
    let config = serde_json::to_vec(&rewrite_config(config, &layers))?;
    let config_digest = layout.put_bytes(&config)?;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": output::MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": layers.iter().map(|l| {
            let mut d = json!({"mediaType": opts.compression.media_type(), "digest": l.digest.to_string(), "size": l.size});
            if !l.annotations.is_empty() {
                d["annotations"] = json!(l.annotations);
            }
            d
        }).collect::<Vec<_>>(),
    });
    if let Some(a) = pulled.manifest.annotations().as_ref().filter(|a| !a.is_empty()) {
        manifest["annotations"] = json!(a);
    }
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = layout.put_bytes(&manifest)?;
    layout.set_manifest(tag, &manifest_digest, manifest.len() as u64)?;
    Ok(Rechunked {
        source_digest: pulled.manifest_digest,
        manifest_digest,
        packages,
        contested_paths: contested,
        clamp,
        layers,
    })
}

type Written = (Vec<(LayerSummary, std::path::PathBuf)>, usize, usize);
/// A layer being planned: its entries in order and the names of its groups.
type Planned<'a> = (Vec<(&'a str, &'a Node)>, std::collections::BTreeSet<String>);

/// Merges the pulled layers, plans and writes the new ones into `work`.
fn write_layers(
    store: &Store,
    diff_ids: &[Digest],
    max_layers: usize,
    compression: Compression,
    clamp: Option<i64>,
    work: &Path,
) -> Result<Written> {
    let indexes = diff_ids.iter().map(|d| store.layer_index(d)).collect::<Result<Vec<_>>>()?;
    let tree = Tree::from_layers(&indexes)?;
    drop(indexes);
    let owners = owners::read(&tree, store)?;
    let nodes = flatten(&tree);
    let mut sizes: BTreeMap<Group, u64> = BTreeMap::new();
    let mut groups: Vec<Option<Group>> = Vec::with_capacity(nodes.len());
    for (path, node) in &nodes {
        let group = match &node.kind {
            NodeKind::Dir(_) => None,
            kind => {
                let g = plan::group_of(path, &owners);
                let size = match kind {
                    NodeKind::File { size, .. } => *size,
                    _ => 0,
                };
                *sizes.entry(g.clone()).or_default() += size + 512;
                Some(g)
            }
        };
        groups.push(group);
    }
    let plan = plan::plan(&sizes, max_layers);
    let mut layers: BTreeMap<LayerKey, Planned> = BTreeMap::new();
    layers.entry(LayerKey::Base).or_default();
    for ((path, node), group) in nodes.iter().zip(&groups) {
        let key = group.as_ref().map_or(LayerKey::Base, |g| plan.layer_of[g].clone());
        let layer = layers.entry(key).or_default();
        layer.0.push((path.as_str(), *node));
        if let Some(g) = group {
            layer.1.insert(g.to_string());
        }
    }
    let mut out = Vec::new();
    for (i, (key, (entries, groups))) in layers.iter().enumerate() {
        let file = work.join(format!("layer-{i}"));
        let w = tarball::write_layer(store, entries, clamp.unwrap_or(i64::MAX), compression, &file)
            .with_context(|| format!("writing the layer of {key}"))?;
        tracing::info!("layer {} ({key}): {} entries, {} bytes, {}", i + 1, entries.len(), w.size, w.blob_digest);
        let summary = LayerSummary {
            holds: key.to_string(),
            digest: w.blob_digest,
            size: w.size,
            diff_id: w.diff_id,
            entries: entries.len(),
            groups: groups.iter().cloned().collect(),
            annotations: w.annotations,
        };
        out.push((summary, file));
    }
    Ok((out, owners.packages.len(), owners.contested))
}
