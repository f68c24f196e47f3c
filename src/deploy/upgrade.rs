//! The update flow as explicit steps: check → pull → stage → finalize →
//! reboot. `upgrade` and `switch` run them all through [`deploy`];
//! `install` and a caller with work of its own between steps (the fleet
//! agent: a reboot lock between finalize and reboot, a report after the
//! health checks) run them one at a time through [`Update`]:
//!
//! ```text
//! let mut u = Update::begin(&d)?;             // reconcile, find the booted deployment
//! let c = u.check(&imgref, &opts).await?;     // 1. check: resolve, compare with what the host runs
//! if c.update_available() {
//!     let image = u.pull(c, &opts).await?;    // 2. pull: trust, config (once), space, layers
//!     u.stage(&image, stage_opts, &hooks)?;   // 3. stage: checkout, /var, the stage hooks
//! }
//! let f = u.finalize()?;                      // 4. finalize: now, or at shutdown on an armed host
//! if f.boots_next() {
//!     u.reboot(&reboot)?;                     // 5. reboot
//! }
//! ```
//!
//! The caller holds the sysroot lock from [`Update::begin`] on. A staging
//! that a later step of the same [`Update`] fails on is undone, so the host
//! stays on what it had.

use std::time::Instant;

use anyhow::{Context, Result};
use oci_spec::image::ImageConfiguration;
use serde::Serialize;

use crate::deploy::cleanup::{self, CleanupReport};
use crate::deploy::deployment::{DeploymentId, Metadata};
use crate::deploy::finalize::{self, Finalization};
use crate::deploy::hooks::StageHook;
use crate::deploy::preflight::{self, MissingLayer};
use crate::deploy::stage::{remove_any, Deployer, Finalized, StageOptions, Staged};
use crate::deploy::state::{self, Spec, State, TransportOptions};
use crate::digest::Digest;
use crate::host::reboot::Reboot;
use crate::imgref::ImageRef;
use crate::oci::identity::ImageReference;
use crate::oci::{ImageSource, ResolvedManifest};
use crate::progress::Progress;
use crate::pull::{self, Prepared, PullOptions, PulledImage, Resolved, PULL_INTERRUPTED};

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
    /// The image followed.
    pub image: ImageReference,
    /// The manifest digest (`imageDigest`, as bootc and `status` call it).
    #[serde(rename = "imageDigest")]
    pub manifest_digest: Digest,
    /// False when the image was already deployed (a no-op).
    pub changed: bool,
    /// Layers downloaded (those not in the store already).
    pub layers_downloaded: usize,
    /// Bytes downloaded, compressed.
    pub bytes_downloaded: u64,
    /// The deployment staged; `None` when the image was already deployed.
    pub staged: Option<Staged>,
    /// The deployment finalised now; `None` when none was, or it is left to shutdown.
    pub finalized: Option<Finalized>,
    /// What cleanup removed; `None` when it did not run.
    pub cleanup: Option<CleanupReport>,
    /// `--apply` and the new deployment boots next: the host reboots now.
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
    /// The image followed.
    pub image: ImageReference,
    /// The latest manifest differs from the deployed one.
    pub update_available: bool,
    /// The deployed manifest's digest, when known.
    pub current_digest: Option<Digest>,
    /// The latest manifest's digest.
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

/// What step 1 found: the image resolved to its platform manifest, and the
/// digest the host is on. Only the manifest has been fetched.
pub struct UpdateCheck {
    /// The image resolved to its latest manifest.
    pub image: Resolved,
    /// The deployed manifest's digest, when known.
    pub current: Option<Digest>,
}

impl UpdateCheck {
    /// The resolved manifest's digest.
    pub fn latest(&self) -> &Digest {
        &self.image.manifest.raw.digest
    }

    /// Whether the image differs from what the host is on.
    pub fn update_available(&self) -> bool {
        self.current.as_ref() != Some(self.latest())
    }
}

/// Step 1 without the lock: resolves `imgref` and compares it with the
/// deployment the host is on (one manifest round trip).
pub async fn check_update(
    d: &Deployer,
    booted: Option<&str>,
    imgref: &ImageRef,
    opts: &PullOptions,
) -> Result<UpdateCheck> {
    let current = current_digest(d, booted)?;
    let image = pull::resolve(imgref, opts).await?;
    Ok(UpdateCheck { image, current })
}

/// `upgrade --check`: one manifest round trip when nothing changed.
pub async fn check(d: &Deployer, imgref: &ImageRef, opts: &PullOptions) -> Result<CheckReport> {
    let booted = d.booted()?;
    let c = check_update(d, booted.as_deref(), imgref, opts).await?;
    let latest_version = if c.update_available() {
        let config = fetch_config(c.image.source.as_ref(), &c.image.manifest).await?;
        // An update built for another platform is not one this host can take.
        crate::oci::platform::check_config(&config, &opts.platform).with_context(|| imgref.to_string())?;
        crate::oci::image_version(&config)
    } else {
        None
    };
    Ok(CheckReport {
        image: imgref.into(),
        update_available: c.update_available(),
        latest_digest: c.latest().clone(),
        current_digest: c.current,
        latest_version,
    })
}

async fn fetch_config(source: &dyn ImageSource, resolved: &ResolvedManifest) -> Result<ImageConfiguration> {
    let bytes = source.fetch_small_blob(resolved.manifest.config()).await.context("fetching the image config")?;
    serde_json::from_slice(&bytes).context("parsing the image config")
}

/// One update of a stateroot, step by step (see the module documentation).
pub struct Update<'a> {
    d: &'a Deployer,
    /// The state after reconciling, before this update changed anything.
    before: State,
    booted: Option<String>,
    /// The deployment this update staged, undone if a later step fails.
    staged_here: Option<DeploymentId>,
    /// Where the steps report their phase (the pull options' sink from `check` on).
    progress: Progress,
}

impl<'a> Update<'a> {
    /// Brings the sysroot in line with `state.json` (after a crash) and finds
    /// the booted deployment. The caller holds the lock.
    pub fn begin(d: &'a Deployer) -> Result<Self> {
        let before = d.reconcile()?;
        let booted = d.booted()?;
        Ok(Update { d, before, booted, staged_here: None, progress: Progress::hidden() })
    }

    /// The deployment running now, if known.
    pub fn booted(&self) -> Option<&str> {
        self.booted.as_deref()
    }

    /// A deployment staged (unfinalised) before this update began.
    pub fn pending(&self) -> Option<&str> {
        self.before.staged_unfinalized()
    }

    /// Step 1, check: see [`check_update`]. An interrupt from here until
    /// [`stage`](Self::stage) says that nothing was deployed.
    pub async fn check(&mut self, imgref: &ImageRef, opts: &PullOptions) -> Result<UpdateCheck> {
        self.progress = opts.progress.clone();
        self.progress.set_phase(format!("pulling {imgref}"), PULL_INTERRUPTED);
        check_update(self.d, self.booted(), imgref, opts).await
    }

    /// Makes `spec` the tracked image (`switch` to what is already deployed).
    pub fn track(&self, spec: Spec) -> Result<()> {
        let mut s = self.d.load_state()?;
        if s.spec.as_ref() != Some(&spec) {
            s.spec = Some(spec);
            self.d.save_state(&s)?;
        }
        Ok(())
    }

    /// Step 2, pull: the trust policy is checked first, then the config is
    /// fetched (once), then the space the missing layers need, and only then
    /// are they downloaded into the store.
    pub async fn pull(&self, check: UpdateCheck, opts: &PullOptions) -> Result<PulledImage> {
        let prepared = pull::prepare(check.image, opts).await?;
        self.preflight(&prepared)?;
        pull::fetch_layers(&self.d.store, prepared, opts).await
    }

    /// Room for the layers the store lacks, and on the boot partition, before
    /// a byte of layer data is fetched.
    fn preflight(&self, image: &Prepared) -> Result<()> {
        let d = self.d;
        let mut missing = Vec::new();
        for (desc, layer) in image.distinct_layers() {
            if !d.store.has_layer(&layer.blob_digest, &layer.diff_id) {
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
        Ok(())
    }

    /// Step 3, stage: checks `image` out as a new deployment, recorded as
    /// staged with `opts`, then runs `hooks` on it; a failing hook undoes
    /// the staging.
    pub fn stage(&mut self, image: &PulledImage, opts: StageOptions, hooks: &[&dyn StageHook]) -> Result<Staged> {
        self.progress.set_phase(format!("staging {}", image.imgref), DEPLOY_INTERRUPTED);
        let staged = self.d.stage(image, opts, self.booted())?;
        self.staged_here = Some(staged.id.clone());
        for h in hooks {
            if let Err(e) = h.staged(self.d, &staged) {
                self.undo_staging();
                return Err(e.context(format!("{} for deployment {}", h.name(), staged.id)));
            }
        }
        Ok(staged)
    }

    /// Step 4, finalize: merges /etc and writes the boot entry now, or
    /// leaves that to the shutdown service on a running host where it is
    /// armed (see [`finalize::finalize`]). A staging of this update that
    /// fails to finalise is undone.
    pub fn finalize(&mut self) -> Result<Finalization> {
        match finalize::finalize(self.d, self.booted()) {
            Ok(f) => Ok(f),
            Err(e) => {
                self.undo_staging();
                Err(e)
            }
        }
    }

    /// Removes deployments nothing needs and garbage-collects the store.
    pub fn cleanup(&self) -> Result<CleanupReport> {
        cleanup::cleanup(self.d, self.booted())
    }

    /// Step 5, reboot.
    pub fn reboot(&self, reboot: &dyn Reboot) -> Result<()> {
        reboot.reboot()
    }

    fn undo_staging(&mut self) {
        if let Some(id) = self.staged_here.take() {
            if let Err(e) = unstage(self.d, &id, &self.before) {
                tracing::warn!("could not undo the staging of {id}: {e:#}");
            }
        }
    }
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
    deploy_with(d, imgref, track, pull_opts, flow, reboot, &[]).await
}

/// [`deploy`] with `hooks` run on the staged deployment.
pub async fn deploy_with(
    d: &Deployer,
    imgref: &ImageRef,
    track: bool,
    pull_opts: &PullOptions,
    flow: FlowOptions,
    reboot: &dyn Reboot,
    hooks: &[&dyn StageHook],
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
    let mut u = Update::begin(d)?;

    // 1. Check.
    let check = u.check(imgref, pull_opts).await?;
    let mut report = FlowReport {
        image: imgref.into(),
        manifest_digest: check.latest().clone(),
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
    let started;
    if check.update_available() {
        // 2. Pull.
        let pulled = u.pull(check, pull_opts).await?;
        report.changed = true;
        report.layers_downloaded = pulled.layers.iter().filter(|l| l.downloaded).count();
        report.bytes_downloaded = pulled.bytes_downloaded;
        // 3. Stage. A download-only staging is locked in the same
        // state.json write: the shutdown service must not finalise it
        // behind the admin's back.
        started = Instant::now();
        report.staged = Some(u.stage(&pulled, StageOptions { spec, locked: flow.download_only }, hooks)?);
        if flow.download_only {
            report.stage_seconds = started.elapsed().as_secs_f64();
            report.cleanup = Some(u.cleanup()?);
            return Ok(report);
        }
    } else {
        // Already deployed as the staged or booted (or default) deployment:
        // nothing to fetch; a download-only staging of it is finalised now.
        if let Some(spec) = spec {
            u.track(spec)?;
        }
        if flow.download_only || u.pending().is_none() {
            return Ok(report);
        }
        report.changed = true;
        started = Instant::now();
    }

    // 4. Finalize.
    let finalization = u.finalize()?;
    report.stage_seconds = started.elapsed().as_secs_f64();
    report.finalize_at_shutdown = matches!(finalization, Finalization::AtShutdown { .. });
    // A pending staging left to the shutdown service needs no cleanup yet.
    if report.staged.is_some() || !report.finalize_at_shutdown {
        report.cleanup = Some(u.cleanup()?);
    }
    report.rebooting = flow.apply && finalization.boots_next();
    report.finalized = finalization.now();

    // 5. Reboot.
    if report.rebooting {
        u.reboot(reboot)?;
    }
    Ok(report)
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
