//! The pull pipeline: resolve a reference to a platform manifest, check it
//! against the trust policy, fetch its config, and stream every layer the store
//! lacks into the store with bounded parallelism (a blob the manifest lists
//! more than once, once).
//!
//! Network I/O is async; each layer's decompression, hashing and object writes
//! run on a blocking thread fed by the download stream, so no layer is ever
//! held in memory.

mod partial;

use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::digest::Digest;
use crate::imgref::ImageRef;
use crate::oci::platform::Platform;
use crate::oci::{descriptor_digest, open_source, ImageSource, RegistryOptions, ResolvedManifest};
use crate::progress::Progress;
use crate::store::import::Compression;
use crate::store::toc::TocLocation;
use crate::store::{ImageRecord, LayerSpec, Store};
use crate::sysroot::Sysroot;
use crate::trust::{ImageVerifier, Verdict};

/// Layers downloaded at once unless configured otherwise.
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 3;

/// Options for one pull.
#[derive(Clone)]
pub struct PullOptions {
    /// How to reach registries.
    pub registry: RegistryOptions,
    /// The platform to pick from an index.
    pub platform: Platform,
    /// Where progress goes.
    pub progress: Progress,
    /// Checked after the manifest is fetched, before any layer is committed.
    /// Required, so that no caller can skip the trust policy by omission
    /// (`trust::AcceptAnything` says so explicitly where that is meant).
    pub verifier: Arc<dyn ImageVerifier>,
}

impl PullOptions {
    /// Defaults (host platform, no progress, default registry options) with `verifier`.
    pub fn new(verifier: Arc<dyn ImageVerifier>) -> Self {
        PullOptions {
            registry: RegistryOptions::default(),
            platform: Platform::host(),
            progress: Progress::hidden(),
            verifier,
        }
    }
}

/// One layer of a pulled image.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PulledLayer {
    /// The compressed blob's digest.
    pub blob_digest: Digest,
    /// The uncompressed tar's digest (`rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The blob's size, in bytes.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
    /// False when the store already had it.
    pub downloaded: bool,
    /// Bytes of it fetched in this pull: its size when read whole, the
    /// TOC and the missing files' ranges when pulled partially.
    pub bytes_fetched: u64,
    /// Built from its zstd:chunked TOC with only the missing files fetched.
    pub partial: bool,
}

/// An image now held by the store.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The image pulled.
    pub imgref: ImageRef,
    /// The manifest's digest.
    pub manifest_digest: Digest,
    /// The index's digest, when the reference named an index.
    pub index_digest: Option<Digest>,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config's digest.
    pub config_digest: Digest,
    /// The image config.
    pub config: ImageConfiguration,
    /// The layers, in order.
    pub layers: Vec<PulledLayer>,
    /// Compressed bytes fetched for layers in this pull.
    pub bytes_downloaded: u64,
    /// What the trust policy said.
    pub verdict: Verdict,
}

/// An image's source and its resolved platform manifest: nothing fetched
/// beyond the manifest yet.
#[derive(Clone)]
pub struct Resolved {
    /// The image reference.
    pub imgref: ImageRef,
    /// Where its blobs come from.
    pub source: Arc<dyn ImageSource>,
    /// The manifest it resolved to.
    pub manifest: ResolvedManifest,
}

/// Where `imgref`'s bytes come from, for "waiting for …" messages:
/// `registry HOST[:PORT]`, or the layout's path.
pub fn source_name(imgref: &ImageRef) -> String {
    match imgref {
        ImageRef::Registry(r) => format!("registry {}", r.registry),
        ImageRef::OciDir { path, .. } | ImageRef::OciArchive { path, .. } => path.display().to_string(),
    }
}

/// What an interrupted pull leaves behind (docs/cli.md).
pub const PULL_INTERRUPTED: &str =
    "nothing was deployed; layers already pulled stay in the store and the next pull fetches only the rest";

/// Resolves `imgref` to its platform manifest without pulling anything
/// (`upgrade --check`: one round trip when the tag is a plain manifest).
pub async fn resolve(imgref: &ImageRef, opts: &PullOptions) -> Result<Resolved> {
    let source: Arc<dyn ImageSource> = Arc::from(open_source(imgref, &opts.registry)?);
    let what = format!("{} (the manifest of {imgref})", source_name(imgref));
    let manifest = opts
        .progress
        .waiting(what, source.resolve(&opts.platform))
        .await
        .with_context(|| format!("resolving {imgref} for {}", opts.platform))?;
    Ok(Resolved { imgref: imgref.clone(), source, manifest })
}

/// Pulls `imgref` into the store of `sysroot`: only the layers it lacks are downloaded.
pub async fn pull(sysroot: &Sysroot, imgref: &ImageRef, opts: &PullOptions) -> Result<PulledImage> {
    let store = Store::open(sysroot)?;
    opts.progress.set_phase(format!("pulling {imgref}"), PULL_INTERRUPTED);
    let resolved = resolve(imgref, opts).await?;
    let prepared = prepare(resolved, opts).await?;
    fetch_layers(&store, prepared, opts).await
}

/// A resolved image that the trust policy accepted, with its config fetched
/// (once) and its layers listed: everything a caller needs to decide
/// whether there is room for it before any layer data is fetched.
pub struct Prepared {
    resolved: Resolved,
    /// What the trust policy said.
    pub verdict: Verdict,
    /// The config's digest.
    pub config_digest: Digest,
    config_bytes: Vec<u8>,
    /// The image config.
    pub config: ImageConfiguration,
    /// The layers in manifest order, with their descriptors.
    pub layers: Vec<(Descriptor, LayerSpec)>,
}

impl Prepared {
    /// The layers a pull fetches when the store has none of them: each blob
    /// once, in manifest order (see [`earlier_copies`]).
    pub fn distinct_layers(&self) -> impl Iterator<Item = &(Descriptor, LayerSpec)> {
        let repeats = earlier_copies(self.layers.iter().map(|(_, spec)| spec));
        self.layers.iter().zip(repeats).filter(|(_, r)| r.is_none()).map(|(l, _)| l)
    }
}

/// Checks `resolved` against the trust policy, then fetches and checks its
/// config. Nothing is written.
pub async fn prepare(image: Resolved, opts: &PullOptions) -> Result<Prepared> {
    let Resolved { imgref, source, manifest: resolved } = &image;
    let manifest_digest = resolved.raw.digest.clone();
    let progress = &opts.progress;
    progress.event(
        "manifest",
        json!({ "image": crate::oci::identity::ImageReference::from(imgref), "digest": manifest_digest.to_string(),
                "message": format!("Resolved {imgref} to {manifest_digest}") }),
    );

    let from = source_name(imgref);
    let verdict = progress
        .waiting(
            format!("{from} (the signatures of {imgref})"),
            opts.verifier.verify(imgref, resolved, source.as_ref()),
        )
        .await?;

    let manifest = resolved.manifest.clone();
    let config_desc = manifest.config();
    let config_digest = descriptor_digest(config_desc)?;
    let config_bytes = progress
        .waiting(format!("{from} (the config of {imgref})"), source.fetch_small_blob(config_desc))
        .await
        .context("fetching the image config")?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).with_context(|| format!("parsing image config {config_digest}"))?;
    // Before any layer: an image built for another machine is refused here,
    // for single manifests too (an index entry was chosen by its platform,
    // but its config is what the binaries are built for).
    crate::oci::platform::check_config(&config, &opts.platform).with_context(|| imgref.to_string())?;
    let diff_ids = config.rootfs().diff_ids();
    ensure!(
        diff_ids.len() == manifest.layers().len(),
        "image config {config_digest} lists {} diff_ids but the manifest has {} layers",
        diff_ids.len(),
        manifest.layers().len()
    );

    let mut specs = Vec::new();
    for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let media_type = desc.media_type().to_string();
        check_layer_media_type(&media_type)?;
        let size = Some(desc.size()).filter(|s| *s > 0);
        let Some(size) = size else { bail!("layer {} has an invalid size {}", desc.digest(), desc.size()) };
        specs.push((
            desc.clone(),
            LayerSpec {
                blob_digest: descriptor_digest(desc)?,
                size,
                media_type,
                diff_id: diff_id.parse().with_context(|| format!("diff_id {diff_id} in config"))?,
            },
        ));
    }
    Ok(Prepared { resolved: image, verdict, config_digest, config_bytes, config, layers: specs })
}

/// The rest of a pull once the image is [`prepare`]d: every layer the store
/// lacks is streamed into it, then the config, manifest and image record.
pub async fn fetch_layers(store: &Store, prepared: Prepared, opts: &PullOptions) -> Result<PulledImage> {
    let Prepared { resolved, verdict, config_digest, config_bytes, config, layers: specs } = prepared;
    let Resolved { imgref, source, manifest: resolved } = resolved;
    let imgref = &imgref;
    let manifest_digest = resolved.raw.digest.clone();
    let manifest = resolved.manifest.clone();
    let progress = &opts.progress;
    let from = source_name(imgref);

    // Before deciding which layers are present: layers an earlier boot
    // committed but never synced are checked (rare: after a crash).
    let recovery = store.recover().context("checking layers left unsynced by an earlier boot")?;
    if recovery.layers_checked > 0 {
        let message = match recovery.layers_dropped.len() {
            0 => format!("Checked {} layer(s) left unsynced by an earlier boot: intact", recovery.layers_checked),
            n => format!(
                "Checked {} layer(s) left unsynced by an earlier boot: {n} lost {} object(s) and will be downloaded again",
                recovery.layers_checked, recovery.objects_lost
            ),
        };
        if recovery.layers_dropped.is_empty() {
            tracing::info!("{message}");
        } else {
            tracing::warn!("{message}");
        }
        progress.event("recovered", json!({ "recovery": recovery, "message": message }));
    }

    let concurrency = opts.registry.max_concurrent_downloads.unwrap_or(DEFAULT_CONCURRENT_DOWNLOADS).max(1);
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut layers = Vec::new();
    let require_full = opts.registry.require_full_layer_digest;
    let repeats = earlier_copies(specs.iter().map(|(_, spec)| spec));
    for (i, ((desc, spec), repeat)) in specs.into_iter().zip(repeats).enumerate() {
        // Checked before the store: the first copy may already be in by now,
        // and the repeat is reported the same way whether it is or not.
        if let Some(first) = repeat {
            progress.event(
                "layer-repeated",
                json!({ "digest": spec.blob_digest.to_string(), "of": first,
                        "message": format!("Layer {} repeats layer {} of the manifest: fetched once",
                                           spec.blob_digest.short(), first + 1) }),
            );
            layers.push(PulledLayer {
                blob_digest: spec.blob_digest,
                diff_id: spec.diff_id,
                size: spec.size,
                media_type: spec.media_type,
                downloaded: false,
                bytes_fetched: 0,
                partial: false,
            });
            continue;
        }
        let toc = if require_full { None } else { toc_location(&desc, &spec) };
        let present =
            store.has_layer_for(&spec.blob_digest, &spec.diff_id, toc.as_ref().map(|t| &t.digest), require_full);
        // A layer indexed from another TOC (or whose index must be replaced
        // by a verified one) is read whole: a partial pull never replaces an index.
        let toc = toc.filter(|_| !store.has_layer(&spec.blob_digest, &spec.diff_id));
        layers.push(PulledLayer {
            blob_digest: spec.blob_digest.clone(),
            diff_id: spec.diff_id.clone(),
            size: spec.size,
            media_type: spec.media_type.clone(),
            downloaded: !present,
            bytes_fetched: 0,
            partial: false,
        });
        if present {
            progress.event(
                "layer-exists",
                json!({ "digest": spec.blob_digest.to_string(),
                        "message": format!("Layer {} already in the store", spec.blob_digest.short()) }),
            );
            continue;
        }
        let (store, source, progress, limit) = (store.clone(), source.clone(), progress.clone(), limit.clone());
        let from = from.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore never closed");
            if let Some(loc) = toc {
                match partial::pull_layer(&store, &source, &desc, &spec, &loc, &progress, &from).await {
                    Ok(Some(fetched)) => return anyhow::Ok((i, fetched, true)),
                    Ok(None) => {}
                    Err(e) if crate::error::is_no_space(&e) || crate::interrupt::is_ending() => return Err(e),
                    Err(e) => tracing::warn!(
                        "layer {}: partial pull failed, fetching the whole layer instead: {e:#}",
                        spec.blob_digest
                    ),
                }
            }
            let size = spec.size;
            let reader = progress
                .waiting(format!("{from} (layer {})", spec.blob_digest), source.open_blob(&desc, 0))
                .await
                .with_context(|| format!("opening layer {}", spec.blob_digest))?;
            let handle = tokio::task::spawn_blocking(move || {
                let mut transfer = progress.transfer(spec.blob_digest.short(), spec.size, &from);
                let mut reader = reader.into_sync();
                let started = std::time::Instant::now();
                let result = store.import_layer(&spec, &mut reader, &mut |n| transfer.inc(n));
                if result.is_ok() {
                    let secs = started.elapsed().as_secs_f64();
                    let size = crate::util::human_bytes(spec.size);
                    tracing::info!("layer {} ({size}, {}) imported in {secs:.1}s", spec.blob_digest, spec.media_type);
                }
                transfer.finish(if result.is_ok() { "done" } else { "failed" });
                // The store's errors already name the layer and its digests.
                result
            });
            handle.await.context("layer import task panicked")??;
            anyhow::Ok((i, size, false))
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done.context("layer task failed")? {
            Ok((i, fetched, partial)) => (layers[i].bytes_fetched, layers[i].partial) = (fetched, partial),
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }

    store.put_blob(&config_digest, &config_bytes)?;
    store.put_blob(&manifest_digest, &resolved.raw.bytes)?;
    if let Some(index) = &resolved.index_digest {
        progress.event("index", json!({ "digest": index.to_string() }));
    }
    store.record_image(&ImageRecord {
        imgref: imgref.to_string(),
        manifest_digest: manifest_digest.clone(),
        config_digest: config_digest.clone(),
        index_digest: resolved.index_digest.clone(),
        pulled_at: crate::util::now_rfc3339(),
        layers: layers.iter().map(|l| l.diff_id.clone()).collect(),
    })?;
    let bytes_downloaded = layers.iter().map(|l| l.bytes_fetched).sum();
    tracing::info!(
        "{imgref}: manifest {manifest_digest}, config {config_digest}, {} layer(s), {} downloaded",
        layers.len(),
        layers.iter().filter(|l| l.downloaded).count()
    );
    Ok(PulledImage {
        imgref: imgref.clone(),
        manifest_digest,
        index_digest: resolved.index_digest,
        manifest,
        config_digest,
        config,
        layers,
        bytes_downloaded,
        verdict,
    })
}

/// For each layer in manifest order, the position of the first earlier
/// layer with the same blob and diff_id, if any. Builders write such repeats
/// (buildah, for two steps with identical diffs); a pull fetches the blob
/// once, and a checkout applies it at each position, as other tools do.
pub fn earlier_copies<'a>(layers: impl IntoIterator<Item = &'a LayerSpec>) -> Vec<Option<usize>> {
    let mut first = std::collections::HashMap::new();
    layers
        .into_iter()
        .enumerate()
        .map(|(i, l)| match first.entry((&l.blob_digest, &l.diff_id)) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
                None
            }
        })
        .collect()
}

/// The zstd:chunked TOC of a layer, if its descriptor locates one (annotations
/// that are there but malformed are a warning: the layer is read whole).
fn toc_location(desc: &Descriptor, spec: &LayerSpec) -> Option<TocLocation> {
    if crate::store::import::Compression::from_media_type(&spec.media_type).ok()? != Compression::Zstd {
        return None;
    }
    match crate::store::toc::location(desc.annotations().as_ref(), spec.size) {
        Ok(loc) => loc,
        Err(e) => {
            tracing::warn!("layer {}: {e:#}; reading the whole layer", spec.blob_digest);
            None
        }
    }
}

/// Layer media types hostctl can unpack; anything else (foreign layers,
/// encrypted layers, artifacts) is refused before a byte is downloaded.
pub fn check_layer_media_type(media_type: &str) -> Result<()> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(()),
        other => bail!("unsupported layer media type {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(blob: char, diff_id: char) -> LayerSpec {
        LayerSpec {
            blob_digest: format!("sha256:{}", blob.to_string().repeat(64)).parse().unwrap(),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_id: format!("sha256:{}", diff_id.to_string().repeat(64)).parse().unwrap(),
        }
    }

    #[test]
    fn earlier_copies_points_repeats_at_the_first_copy() {
        // (blob, diff_id) of each layer, and the earlier copy each repeats.
        type Case<'a> = (&'a [(char, char)], &'a [Option<usize>]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&[('a', '1'), ('b', '2')], &[None, None]),
            // buildah's two steps with identical diffs, and a third copy.
            (&[('a', '1'), ('b', '2'), ('b', '2'), ('a', '1'), ('b', '2')], &[None, None, Some(1), Some(0), Some(1)]),
            // Same blob with another diff_id, or another blob of the same
            // diff_id (another compression): not the same layer.
            (&[('a', '1'), ('a', '2'), ('b', '1')], &[None, None, None]),
        ];
        for (layers, want) in cases {
            let specs: Vec<LayerSpec> = layers.iter().map(|(b, d)| layer(*b, *d)).collect();
            assert_eq!(earlier_copies(&specs), *want, "{layers:?}");
        }
    }
}
