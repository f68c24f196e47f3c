//! The `switch` and `upgrade` flows: resolve, check space, pull what is
//! missing, stage, finalise, clean up, and optionally reboot.
//!
//! The caller holds the sysroot lock. In this version the staged deployment is
//! finalised right away; a shutdown service will call
//! [`Deployer::finalize_staged`] instead so that `/etc` edits made after
//! staging are kept.

use std::sync::Arc;

use anyhow::{Context, Result};
use oci_spec::image::ImageConfiguration;
use serde::Serialize;

use crate::deploy::cleanup::{self, CleanupReport};
use crate::deploy::deployment::Metadata;
use crate::deploy::preflight::{self, MissingLayer};
use crate::deploy::reboot::Reboot;
use crate::deploy::stage::{remove_any, Deployer, Finalized, StageOptions, Staged};
use crate::deploy::state::{self, Spec, TransportOptions};
use crate::digest::Digest;
use crate::imgref::ImageRef;
use crate::oci::identity::ImageReference;
use crate::oci::{open_source, ImageSource, ResolvedManifest};
use crate::pull::{descriptor_digest, pull_resolved, source_name, PullOptions, PULL_INTERRUPTED};

/// What an interrupt leaves behind once the image is in the store (docs/cli.md).
const DEPLOY_INTERRUPTED: &str = "the image is in the store; `hostctl status` shows whether the deployment \
     was staged, and the next hostctl command removes a half-written one";

/// How far `upgrade`/`switch` go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowOptions {
    /// Stage but do not finalise (`--download-only`).
    pub download_only: bool,
    /// Reboot when something was staged (`--apply`).
    pub apply: bool,
}

/// What a `switch` or `upgrade` did.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowReport {
    pub image: ImageReference,
    /// The manifest digest (`imageDigest`, as bootc and `status` call it).
    #[serde(rename = "imageDigest")]
    pub manifest_digest: Digest,
    /// False when the image was already deployed (a no-op).
    pub changed: bool,
    pub layers_downloaded: usize,
    pub bytes_downloaded: u64,
    pub staged: Option<Staged>,
    pub finalized: Option<Finalized>,
    pub cleanup: Option<CleanupReport>,
    pub rebooting: bool,
    /// Staged on a running system whose `hostctl-finalize-staged.service`
    /// finalises at shutdown (so /etc edits made until then are kept).
    #[serde(default)]
    pub finalize_at_shutdown: bool,
    /// Seconds spent staging and finalising (after the download).
    pub stage_seconds: f64,
}

/// The result of `upgrade --check`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub image: ImageReference,
    pub update_available: bool,
    pub current_digest: Option<Digest>,
    pub latest_digest: Digest,
    /// The update's version label (only fetched when there is an update).
    pub latest_version: Option<String>,
}

/// The manifest digest the host is on: the staged deployment's, else the booted one's, else the default's.
fn current_digest(d: &Deployer, booted: Option<&str>) -> Result<Option<Digest>> {
    let state = d.load_state()?;
    let r = state::roles(&state, booted);
    match r.staged.or(r.booted).or(r.default) {
        Some(id) => Ok(Some(Metadata::load(&d.layout, &id)?.image.image_digest)),
        None => Ok(None),
    }
}

/// `upgrade --check`: one manifest round trip when nothing changed.
pub async fn check(d: &Deployer, imgref: &ImageRef, opts: &PullOptions) -> Result<CheckReport> {
    let booted = d.booted()?;
    let current = current_digest(d, booted.as_deref())?;
    let source: Arc<dyn ImageSource> = Arc::from(open_source(imgref, &opts.registry)?);
    let what = format!("{} (the manifest of {imgref})", source_name(imgref));
    let resolved = opts
        .progress
        .waiting(what, source.resolve(&opts.platform))
        .await
        .with_context(|| format!("resolving {imgref}"))?;
    let latest = resolved.raw.digest.clone();
    let update_available = current.as_ref() != Some(&latest);
    let latest_version = if update_available {
        let config = fetch_config(source.as_ref(), &resolved).await?;
        // An update built for another platform is not one this host can take.
        crate::oci::platform::check_config(&config, &opts.platform).with_context(|| imgref.to_string())?;
        crate::oci::image_version(&config)
    } else {
        None
    };
    Ok(CheckReport {
        image: imgref.into(),
        update_available,
        current_digest: current,
        latest_digest: latest,
        latest_version,
    })
}

async fn fetch_config(source: &dyn ImageSource, resolved: &ResolvedManifest) -> Result<ImageConfiguration> {
    let bytes = source.fetch_small_blob(resolved.manifest.config()).await.context("fetching the image config")?;
    serde_json::from_slice(&bytes).context("parsing the image config")
}

/// Pulls `imgref` and stages it; `track` makes it the tracked image (switch).
pub async fn deploy(
    d: &Deployer,
    imgref: &ImageRef,
    track: bool,
    pull_opts: &PullOptions,
    flow: FlowOptions,
    reboot: &dyn Reboot,
) -> Result<FlowReport> {
    // Recorded references name their layout by an absolute path, so that
    // `upgrade` works from any directory and from the update timer.
    let imgref = &crate::oci::absolute_path(imgref)?;
    let spec = match track {
        true => Some(Spec {
            image: imgref.to_string(),
            transport_options: TransportOptions::recorded(imgref, &pull_opts.registry)?,
        }),
        false => None,
    };
    let state0 = d.reconcile()?;
    let booted = d.booted()?;
    let progress = &pull_opts.progress;
    progress.set_phase(format!("pulling {imgref}"), PULL_INTERRUPTED);
    let source: Arc<dyn ImageSource> = Arc::from(open_source(imgref, &pull_opts.registry)?);
    let what = format!("{} (the manifest of {imgref})", source_name(imgref));
    let resolved = progress
        .waiting(what, source.resolve(&pull_opts.platform))
        .await
        .with_context(|| format!("resolving {imgref}"))?;
    let digest = resolved.raw.digest.clone();

    // Already deployed as the staged or booted (or default) deployment:
    // nothing to fetch; a download-only staging of it is finalised now.
    if current_digest(d, booted.as_deref())?.as_ref() == Some(&digest) {
        if let Some(spec) = spec {
            let mut s = d.load_state()?;
            if s.spec.as_ref() != Some(&spec) {
                s.spec = Some(spec);
                d.save_state(&s)?;
            }
        }
        // Nothing downloaded; the arms below say what else happened.
        let nothing = FlowReport {
            image: imgref.into(),
            manifest_digest: digest,
            changed: false,
            layers_downloaded: 0,
            bytes_downloaded: 0,
            staged: None,
            finalized: None,
            cleanup: None,
            rebooting: false,
            finalize_at_shutdown: false,
            stage_seconds: 0.0,
        };
        let pending = state0.staged_unfinalized().map(str::to_string);
        return match pending {
            Some(id) if !flow.download_only && crate::boot::install::finalize_at_shutdown_armed(d.sysroot.root()) => {
                // A running host: unlock a download-only staging and leave it
                // to the shutdown service, which merges /etc at the last moment.
                let mut s = d.load_state()?;
                s.staged_locked = false;
                d.save_state(&s)?;
                if flow.apply {
                    reboot.reboot()?;
                }
                tracing::info!("deployment {id} is finalised at shutdown");
                Ok(FlowReport { changed: true, rebooting: flow.apply, finalize_at_shutdown: true, ..nothing })
            }
            Some(id) if !flow.download_only => {
                let started = std::time::Instant::now();
                let f = d.finalize_staged(booted.as_deref()).with_context(|| format!("finalising deployment {id}"))?;
                let stage_seconds = started.elapsed().as_secs_f64();
                let cleanup = cleanup::cleanup(d, booted.as_deref())?;
                let rebooting = flow.apply && f.is_some();
                if rebooting {
                    reboot.reboot()?;
                }
                Ok(FlowReport {
                    changed: true,
                    finalized: f,
                    cleanup: Some(cleanup),
                    rebooting,
                    stage_seconds,
                    ..nothing
                })
            }
            _ => Ok(nothing),
        };
    }

    // Preflight, before a byte of layer data is fetched.
    let what = format!("{} (the config of {imgref})", source_name(imgref));
    let config = progress.waiting(what, fetch_config(source.as_ref(), &resolved)).await?;
    // The platform first: a wrong-architecture image is refused as such, not
    // as one that does not fit.
    crate::oci::platform::check_config(&config, &pull_opts.platform).with_context(|| imgref.to_string())?;
    let diff_ids = config.rootfs().diff_ids();
    let mut missing = Vec::new();
    for (i, desc) in resolved.manifest.layers().iter().enumerate() {
        let blob = descriptor_digest(desc)?;
        let present = match diff_ids.get(i).and_then(|s| s.parse::<Digest>().ok()) {
            Some(diff_id) => d.store.has_layer(&blob, &diff_id),
            None => false,
        };
        if !present {
            missing.push(MissingLayer {
                compressed_size: desc.size(),
                compressed: preflight::is_compressed(desc.media_type().as_ref()),
            });
        }
    }
    // The kernel is not counted here: which kernel the image has is only
    // known once its layers are in, and a kernel already on the boot
    // partition is not written again. Staging checks the boot partition for
    // the kernel's real size, and only when it is new.
    let store_free = preflight::free(&d.sysroot.hostctl_dir())?;
    let boot_free = preflight::free(&d.boot)?;
    preflight::check(preflight::store_need(&missing), &store_free, 0, &boot_free)?;

    let pulled = pull_resolved(&d.store, imgref, source, resolved, pull_opts).await?;
    progress.set_phase(format!("staging {imgref}"), DEPLOY_INTERRUPTED);
    let started = std::time::Instant::now();
    // A download-only staging is locked in the same state.json write: the
    // shutdown service must not finalise it behind the admin's back.
    let staged = d.stage(&pulled, StageOptions { spec, locked: flow.download_only }, booted.as_deref())?;
    let defer = !flow.download_only && crate::boot::install::finalize_at_shutdown_armed(d.sysroot.root());
    let finalized = if flow.download_only || defer {
        None
    } else {
        match d.finalize_staged(booted.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                // Leave nothing half-staged: back to the state before this command.
                if let Err(e2) = unstage(d, &staged.id, &state0) {
                    tracing::warn!("could not undo the staging of {}: {e2:#}", staged.id);
                }
                return Err(e.context(format!("finalising deployment {}", staged.id)));
            }
        }
    };
    let stage_seconds = started.elapsed().as_secs_f64();
    let cleanup = cleanup::cleanup(d, booted.as_deref())?;
    let rebooting = flow.apply && (finalized.is_some() || defer);
    if rebooting {
        reboot.reboot()?;
    }
    Ok(FlowReport {
        image: imgref.into(),
        manifest_digest: digest,
        changed: true,
        layers_downloaded: pulled.layers.iter().filter(|l| l.downloaded).count(),
        bytes_downloaded: pulled.bytes_downloaded,
        staged: Some(staged),
        finalized,
        cleanup: Some(cleanup),
        rebooting,
        finalize_at_shutdown: defer,
        stage_seconds,
    })
}

/// Puts `before` back and removes the deployment `id` (after a failed finalisation).
fn unstage(d: &Deployer, id: &str, before: &state::State) -> Result<()> {
    let mut s = before.clone();
    // Keep the serial moving forward so the id is never reused.
    s.next_serial = d.load_state()?.next_serial.max(s.next_serial);
    d.save_state(&s)?;
    remove_any(&d.layout.tree(id))?;
    remove_any(&d.layout.metadata(id))?;
    d.write_boot_entries(&s)
}
