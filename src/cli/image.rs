//! `hostctl image pull | inspect | list` (and `rm | prune`, in image_rm.rs).

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Serialize;
use serde_json::json;

use super::output::{outln, print_json};
use super::GlobalArgs;
use crate::digest::Digest;
use crate::imgref::ImageRef;
use crate::oci::identity::{ImageIdentity, ImageReference};
use crate::oci::{descriptor_digest, open_source};
use crate::pull::PullOptions;
use crate::store::{ImageRecord, Store};
use crate::util::human_bytes;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image into the store, downloading only the layers it lacks.
    Pull(PullArgs),
    /// Show an image's manifest digest, config, layers and labels.
    Inspect(InspectArgs),
    /// List the images the store holds.
    List(ListArgs),
    /// Forget images no deployment uses (`cleanup` then reclaims their layers).
    Rm(super::image_rm::RmArgs),
    /// Forget every image no deployment uses (`cleanup` then reclaims their layers).
    Prune(super::image_rm::PruneArgs),
    /// Rewrite an OS image into content-stable layers, one per Debian package group.
    Rechunk(super::image_rechunk::RechunkArgs),
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference: [registry:|docker://|oci:|oci-archive:]NAME[:TAG][@DIGEST].
    pub image: ImageRef,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image reference; the store's copy is shown when it holds one, unless --remote.
    pub image: ImageRef,
    /// Fetch the manifest and config from the source even if the store has the image.
    #[arg(long)]
    pub remote: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &GlobalArgs, c: ImageCommand) -> Result<()> {
    match c {
        ImageCommand::Pull(a) => pull(g, a).await,
        ImageCommand::Inspect(a) => inspect(g, a).await,
        ImageCommand::List(a) => list(g, a),
        ImageCommand::Rm(a) => super::image_rm::rm(g, a),
        ImageCommand::Prune(a) => super::image_rm::prune(g, a),
        ImageCommand::Rechunk(a) => super::image_rechunk::rechunk(g, a).await,
    }
}

async fn pull(g: &GlobalArgs, a: PullArgs) -> Result<()> {
    let sysroot = g.open_sysroot()?;
    // Pulling writes the store: keep `cleanup` (which collects objects no
    // index references yet) and other writers out until the index is committed.
    let _lock = sysroot.lock(super::lock_wait())?;
    let progress = g.progress();
    let opts = PullOptions {
        registry: g.registry_options(),
        platform: g.platform(),
        progress: progress.clone(),
        verifier: g.verifier()?,
    };
    let started = std::time::Instant::now();
    // The store records the reference: a layout's path is recorded absolute.
    let image = crate::oci::absolute_path(&a.image)?;
    let pulled = crate::pull::pull(&sysroot, &image, &opts).await?;
    let secs = started.elapsed().as_secs_f64();
    let downloaded = pulled.layers.iter().filter(|l| l.downloaded).count();
    let identity = ImageIdentity::new(
        &pulled.imgref,
        pulled.manifest_digest.clone(),
        pulled.config_digest.clone(),
        &pulled.config,
    );
    let summary = json!({
        "image": identity,
        "layers": pulled.layers,
        "layersDownloaded": downloaded,
        "bytesDownloaded": pulled.bytes_downloaded,
        "verdict": pulled.verdict,
        "seconds": (secs * 1000.0).round() / 1000.0,
    });
    if progress.is_json() {
        progress.done(summary);
    } else if a.json {
        print_json(&summary)?;
    } else {
        eprintln!(
            "Pulled {} ({} of {} layers downloaded, {}) in {:.1}s",
            pulled.imgref,
            downloaded,
            pulled.layers.len(),
            human_bytes(pulled.bytes_downloaded),
            secs
        );
        outln!("{}", pulled.manifest_digest)?;
    }
    Ok(())
}

/// What `image inspect` shows: the image's identity as `status` shows a
/// deployment's (`image`), then what only inspect shows.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectOutput {
    pub image: ImageIdentity,
    pub media_type: Option<String>,
    pub os: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub layers: Vec<InspectLayer>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectLayer {
    pub digest: Digest,
    pub diff_id: Option<String>,
    pub size: u64,
    pub media_type: String,
}

/// Builds the inspect view from a manifest and its config.
pub fn inspect_view(
    image: &ImageRef,
    manifest_digest: Digest,
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<InspectOutput> {
    let labels: std::collections::BTreeMap<String, String> =
        config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default().into_iter().collect();
    let diff_ids = config.rootfs().diff_ids();
    let layers = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Ok(InspectLayer {
                digest: descriptor_digest(d)?,
                diff_id: diff_ids.get(i).cloned(),
                size: d.size(),
                media_type: d.media_type().to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(InspectOutput {
        image: ImageIdentity::new(image, manifest_digest, descriptor_digest(manifest.config())?, config),
        media_type: manifest.media_type().as_ref().map(|m| m.to_string()),
        os: config.os().to_string(),
        labels,
        layers,
    })
}

async fn inspect(g: &GlobalArgs, a: InspectArgs) -> Result<()> {
    // As `image pull` recorded it: a layout's path absolute.
    let image = crate::oci::absolute_path(&a.image)?;
    let name = image.to_string();
    let mut view = None;
    let sysroot = g.open_sysroot()?;
    // A sysroot without a store has nothing to show; don't create one to look.
    if !a.remote && sysroot.repo_dir().is_dir() {
        let store = Store::open(&sysroot)?;
        if let Some(rec) = store.list_images()?.into_iter().find(|r| r.imgref == name) {
            let manifest: ImageManifest = serde_json::from_slice(&store.read_blob(&rec.manifest_digest)?)
                .with_context(|| format!("parsing stored manifest {}", rec.manifest_digest))?;
            let config: ImageConfiguration = serde_json::from_slice(&store.read_blob(&rec.config_digest)?)
                .with_context(|| format!("parsing stored config {}", rec.config_digest))?;
            view = Some(inspect_view(&image, rec.manifest_digest, &manifest, &config)?);
        }
    }
    let view = match view {
        Some(v) => v,
        None => {
            let source = open_source(&image, &g.registry_options())?;
            let resolved = source.resolve(&g.platform()).await.with_context(|| format!("resolving {name}"))?;
            let bytes =
                source.fetch_small_blob(resolved.manifest.config()).await.context("fetching the image config")?;
            let config: ImageConfiguration = serde_json::from_slice(&bytes).context("parsing the image config")?;
            inspect_view(&image, resolved.raw.digest, &resolved.manifest, &config)?
        }
    };
    if a.json {
        return print_json(&view);
    }
    let mut out = super::output::stdout();
    let id = &view.image;
    writeln!(out, "Image:        {}", id.image)?;
    writeln!(out, "Digest:       {}", id.image_digest)?;
    writeln!(out, "Config:       {}", id.config_digest)?;
    writeln!(out, "Version:      {}", id.version.as_deref().unwrap_or("-"))?;
    writeln!(out, "Created:      {}", id.timestamp.as_deref().unwrap_or("-"))?;
    writeln!(out, "Platform:     {}/{}", view.os, id.architecture.as_deref().unwrap_or("-"))?;
    writeln!(out, "Labels:")?;
    for (k, v) in &view.labels {
        writeln!(out, "  {k}={v}")?;
    }
    writeln!(out, "Layers:")?;
    for l in &view.layers {
        writeln!(out, "  {}  {:>10}  {}", l.digest, human_bytes(l.size), l.media_type)?;
    }
    Ok(())
}

/// One image of `image list --json`: the store's record, named as every
/// other JSON output names things.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedImage {
    image: ImageReference,
    image_digest: Digest,
    config_digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    index_digest: Option<Digest>,
    pulled_at: String,
    /// diff_ids in layer order.
    layers: Vec<Digest>,
}

impl From<&ImageRecord> for ListedImage {
    fn from(r: &ImageRecord) -> Self {
        ListedImage {
            image: ImageReference::from_text(&r.imgref),
            image_digest: r.manifest_digest.clone(),
            config_digest: r.config_digest.clone(),
            index_digest: r.index_digest.clone(),
            pulled_at: r.pulled_at.clone(),
            layers: r.layers.clone(),
        }
    }
}

fn list(g: &GlobalArgs, a: ListArgs) -> Result<()> {
    let sysroot = g.open_sysroot()?;
    // A sysroot without a store holds no images; don't create one to say so.
    let images = if sysroot.repo_dir().is_dir() { Store::open(&sysroot)?.list_images()? } else { Vec::new() };
    if a.json {
        return print_json(&images.iter().map(ListedImage::from).collect::<Vec<_>>());
    }
    let mut out = super::output::stdout();
    writeln!(out, "{:<50} {:<19} {:<7} PULLED", "IMAGE", "DIGEST", "LAYERS")?;
    for r in images {
        writeln!(
            out,
            "{:<50} {:<19} {:<7} {}",
            r.imgref,
            format!("sha256:{}", r.manifest_digest.short()),
            r.layers.len(),
            r.pulled_at
        )?;
    }
    Ok(())
}
