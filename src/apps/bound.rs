//! Logically bound images: Quadlet `.container`/`.image` files an OS image
//! carries (in `/usr/share/containers/systemd/`) and links from
//! `/usr/lib/hostctl/bound-images.d/` or bootc's `/usr/lib/bootc/bound-images.d/`.
//!
//! [`BoundImagesHook`] runs when a deployment is staged: it pulls every bound
//! image of the new tree into podman's storage and pins each unit to the
//! digest it got, with a Quadlet drop-in written into the tree's `/usr/etc`
//! (`NAME.container.d/90-hostctl-bound-image.conf`, `Image=repo@sha256:...`)
//! and a record ([`BOUND_IMAGES_RECORD`]). The `/etc` merge carries the
//! drop-in into the deployment's own `/etc`, so each deployment runs the
//! images it was staged with: booting the rollback deployment runs the old
//! digest although podman's storage is shared and the tag has moved on.
//! A failed pull or a refusal by the trust policy fails the staging.
//!
//! [`cleanup_images`] removes bound images nothing uses any more.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::quadlet::UnitFile;
use crate::deploy::hooks::{read_bound_images, BoundImage, StageHook, BOUND_IMAGES_RECORD};
use crate::deploy::stage::{Deployer, Staged};
use crate::host::podman::{Podman, PullSettings};

/// The directories of links to bound units, hostctl's first.
pub const BOUND_DIRS: [&str; 2] = ["usr/lib/hostctl/bound-images.d", "usr/lib/bootc/bound-images.d"];

/// hostctl's state directory under a root (`/var/lib/hostctl`): the ledger of pulled bound images.
pub const STATE_DIR: &str = "var/lib/hostctl";

/// The drop-in file that pins a bound unit, in `NAME.container.d/` (or `.image.d/`).
pub const PIN_DROPIN: &str = "90-hostctl-bound-image.conf";

/// A bound unit found in a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundUnit {
    /// The link's file name (`web.container`): the unit's name for Quadlet.
    pub unit: String,
    /// The reference in its `Image=`.
    pub image: String,
}

impl BoundUnit {
    /// `Container` or `Image`: the section of its `Image=`.
    fn section(&self) -> &'static str {
        if self.unit.ends_with(".image") {
            "Image"
        } else {
            "Container"
        }
    }
}

/// systemd's specifier syntax in a value: `%%` is a `%`, any other `%x` is
/// refused (bootc's rule: hostctl cannot know what systemd would expand it to).
fn unescape_specifiers(value: &str) -> Result<String> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(_) => {
                bail!("{value:?} uses a systemd specifier, which a bound image cannot (the pull happens before boot)")
            }
            None => bail!("{value:?} ends with an unterminated %"),
        }
    }
    Ok(out)
}

/// Whether `image` names its registry (a bound image is pulled without a
/// terminal, where short-name resolution cannot ask which registry).
fn fully_qualified(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// Reads the bound unit a link points at, resolved inside `root`.
fn read_link(root: &Path, dir: &str, name: &str) -> Result<BoundUnit> {
    let link = root.join(dir).join(name);
    let meta = std::fs::symlink_metadata(&link)?;
    if !meta.file_type().is_symlink() {
        bail!("{}: not a symbolic link (link the unit file from here)", link.display());
    }
    if !(name.ends_with(".container") || name.ends_with(".image")) {
        bail!("{}: a bound unit must be a .container or .image file", link.display());
    }
    let target = std::fs::read_link(&link)?;
    // An absolute target names a path in the image, not on this host.
    let file = match target.strip_prefix("/") {
        Ok(rel) => root.join(rel),
        Err(_) => root.join(dir).join(&target),
    };
    if !file.canonicalize().is_ok_and(|f| f.starts_with(root.canonicalize().unwrap_or_else(|_| root.to_path_buf()))) {
        bail!("{} -> {}: the unit file is not in the image", link.display(), target.display());
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {} ({})", file.display(), name))?;
    let unit = UnitFile::parse(&text).with_context(|| format!("parsing {}", file.display()))?;
    let b = BoundUnit { unit: name.to_string(), image: String::new() };
    let section = b.section();
    if section == "Image" && unit.last("Image", "AuthFile").is_some() {
        bail!("{name}: AuthFile= is not supported for a bound image (the host's auth.json is used)");
    }
    let Some(raw) = unit.last(section, "Image") else {
        bail!("{name}: no Image= in its [{section}] section");
    };
    let image = unescape_specifiers(&raw).with_context(|| format!("{name}: Image="))?;
    if image.ends_with(".image") || image.ends_with(".build") {
        bail!("{name}: Image={image} names a Quadlet unit; bind that .image file instead");
    }
    if !fully_qualified(&image) {
        bail!("{name}: Image={image} must name its registry (REGISTRY/REPOSITORY[:TAG|@DIGEST])");
    }
    Ok(BoundUnit { image, ..b })
}

/// The bound units of the tree `root`, by unit name. The same name in both
/// directories must be the same unit.
pub fn scan(root: &Path) -> Result<Vec<BoundUnit>> {
    let mut out: Vec<BoundUnit> = Vec::new();
    for dir in BOUND_DIRS {
        let mut names = Vec::new();
        for entry in crate::fsutil::read_dir_if_present(&root.join(dir))? {
            match entry.file_name().into_string() {
                Ok(n) => names.push(n),
                Err(n) => bail!("{}: a non-UTF-8 file name {n:?}", root.join(dir).display()),
            }
        }
        names.sort();
        for name in names {
            let b = read_link(root, dir, &name).with_context(|| format!("bound image link /{dir}/{name}"))?;
            match out.iter().find(|o| o.unit == b.unit) {
                Some(o) if *o == b => {}
                Some(o) => bail!("{} is bound twice with different images ({} and {})", b.unit, o.image, b.image),
                None => out.push(b),
            }
        }
    }
    Ok(out)
}

/// `repo@digest` for `image` (`repo[:tag][@digest]`).
pub fn pinned_reference(image: &str, digest: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match without_digest[last_slash..].rfind(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    };
    format!("{repo}@{digest}")
}

/// Pulls `b`'s image and returns its record: the digest podman got, and the
/// reference pinned to it (also pulled, so that podman's storage knows the
/// image by that name even after the tag moves on).
pub fn pull_one(podman: &dyn Podman, settings: &PullSettings, b: &BoundUnit) -> Result<BoundImage> {
    podman.pull(&b.image, settings).with_context(|| format!("pulling bound image {} ({})", b.image, b.unit))?;
    let info =
        podman.image(&b.image)?.with_context(|| format!("{} is not in podman's storage after its pull", b.image))?;
    let digest = match b.image.split_once('@') {
        Some((_, d)) => d.to_string(),
        None if !info.digest.is_empty() => info.digest.clone(),
        None => bail!("podman does not know the digest of {} (pulled for {})", b.image, b.unit),
    };
    let pinned = pinned_reference(&b.image, &digest);
    if pinned != b.image {
        podman.pull(&pinned, settings).with_context(|| format!("pulling bound image {pinned} ({})", b.unit))?;
    }
    Ok(BoundImage { unit: b.unit.clone(), image: b.image.clone(), digest, pinned })
}

/// The drop-in that pins `b`'s unit to `pinned`.
pub fn pin_dropin(b: &BoundImage) -> String {
    let section = if b.unit.ends_with(".image") { "Image" } else { "Container" };
    let mut s = format!(
        "# Written by hostctl when this deployment was staged: {} was {} then.\n\
         # Each deployment runs the bound images it was staged with (docs/apps.md).\n[{section}]\nImage={}\n",
        b.image, b.digest, b.pinned
    );
    if section == "Image" {
        // The image is in podman's storage: the .image unit must not need the
        // registry at boot. Quadlet's `[Image]` has no pull policy (podman
        // 5.4: "unsupported key 'Policy'") and `podman image pull` takes no
        // `--policy`, so the pull is skipped when the pinned image is there:
        // an ExecCondition= that exits 1 skips the unit without failing it.
        // (A reference holds no quote: [a-z0-9._/:@-] and the digest.)
        s.push_str(&format!("\n[Service]\nExecCondition=/bin/sh -c '! podman image exists {}'\n", b.pinned));
    }
    s
}

/// Writes the pins and the record into the deployment tree `tree`'s `/usr/etc`.
pub fn write_pins(tree: &Path, images: &[BoundImage]) -> Result<()> {
    let etc = tree.join("usr/etc/containers/systemd");
    for b in images {
        let dir = etc.join(format!("{}.d", b.unit));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::fsutil::write_atomic(&dir.join(PIN_DROPIN), pin_dropin(b).as_bytes())?;
    }
    let record = tree.join(BOUND_IMAGES_RECORD);
    if let Some(parent) = record.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    crate::fsutil::write_json_atomic(&record, &images)
}

/// Every bound image hostctl ever pulled, so that `cleanup` knows which of
/// podman's images are its to remove (`/var/lib/hostctl/bound-images.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PulledLedger {
    /// `repo@digest` references, sorted.
    pub pulled: BTreeSet<String>,
}

impl PulledLedger {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("bound-images.json")
    }

    /// The ledger under `state_dir`; none yet is empty.
    pub fn load(state_dir: &Path) -> Result<PulledLedger> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PulledLedger::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes it atomically.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
        crate::fsutil::write_json_atomic(&Self::path(state_dir), self)
    }
}

/// The stage hook: pulls and pins the new deployment's bound images.
pub struct BoundImagesHook<'a> {
    /// The podman whose storage the apps run from.
    pub podman: &'a dyn Podman,
    /// Registry settings for the pulls (the same files as for OS images).
    pub pull: PullSettings,
    /// hostctl's state directory under `/var` (`/var/lib/hostctl`), for the ledger.
    pub state_dir: PathBuf,
}

impl StageHook for BoundImagesHook<'_> {
    fn name(&self) -> &str {
        "pulling bound images"
    }

    fn staged(&self, d: &Deployer, staged: &Staged) -> Result<()> {
        self.pin_tree(&d.layout.tree(&staged.id)).map(drop)
    }
}

impl BoundImagesHook<'_> {
    /// Pulls and pins the bound images of the deployment tree `tree`.
    pub fn pin_tree(&self, tree: &Path) -> Result<Vec<BoundImage>> {
        let units = scan(tree)?;
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let mut images = Vec::new();
        for b in &units {
            let r = pull_one(self.podman, &self.pull, b);
            // Recorded before a later failure, so that `cleanup` can remove it.
            if let Ok(img) = &r {
                let mut ledger = PulledLedger::load(&self.state_dir)?;
                if ledger.pulled.insert(img.pinned.clone()) {
                    ledger.save(&self.state_dir)?;
                }
            }
            let img = r?;
            tracing::info!("bound image {} ({}) pinned to {}", img.image, img.unit, img.digest);
            images.push(img);
        }
        write_pins(tree, &images)?;
        Ok(images)
    }
}

/// What [`cleanup_images`] did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageCleanup {
    /// The bound images removed from podman's storage (`repo@digest`).
    pub removed: Vec<String>,
    /// Those kept although nothing of hostctl uses them, and why.
    pub kept: Vec<String>,
}

/// Removes from podman's storage the bound images hostctl pulled that no
/// deployment in `trees` (booted, staged, rollback, pinned: what cleanup
/// kept) and no installed app (`app_images`: the image IDs of the apps'
/// containers and references) uses. Images hostctl did not pull as bound
/// images are never touched; one podman refuses to remove (a container of
/// someone else's uses it) is kept and said so.
pub fn cleanup_images(
    podman: &dyn Podman,
    state_dir: &Path,
    trees: &[PathBuf],
    app_images: &[String],
) -> Result<ImageCleanup> {
    let mut ledger = PulledLedger::load(state_dir)?;
    let mut report = ImageCleanup::default();
    if ledger.pulled.is_empty() {
        return Ok(report);
    }
    let mut used_refs = BTreeSet::new();
    for t in trees {
        for b in read_bound_images(t)? {
            used_refs.insert(b.pinned);
        }
    }
    // Image IDs in use: by the deployments' pins and by the apps.
    let mut used_ids = BTreeSet::new();
    for r in used_refs.iter().chain(app_images.iter()) {
        if let Some(i) = podman.image(r)? {
            used_ids.insert(i.id);
        }
    }
    for r in ledger.pulled.clone() {
        if used_refs.contains(&r) {
            continue;
        }
        let Some(info) = podman.image(&r)? else {
            ledger.pulled.remove(&r); // gone already
            continue;
        };
        if used_ids.contains(&info.id) {
            continue;
        }
        if !podman.containers_of_image(&info.id)?.is_empty() {
            report.kept.push(format!("{r}: a container uses it"));
            continue;
        }
        match podman.remove_image(&info.id) {
            Ok(()) => {
                ledger.pulled.remove(&r);
                report.removed.push(r);
            }
            Err(e) => report.kept.push(format!("{r}: {e:#}")),
        }
    }
    ledger.save(state_dir)?;
    Ok(report)
}

#[cfg(test)]
mod tests;
