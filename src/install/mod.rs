//! Installation, an orchestrator above `deploy/` and `boot/`.
//!
//! `hostctl install`: a new sysroot with one deployment of an image, its boot
//! entry and systemd-boot, either on a disk (or disk image file) that is
//! partitioned for it (`to-disk`), or in a root file system another tool has
//! prepared and mounted (`to-filesystem`). See docs/install.md.
//!
//! The sysroot is built by the same code as `hostctl switch` (pull, stage,
//! finalise), into a staging directory for `to-disk`; the boot directory
//! receives the kernel, the BLS entry, `loader/loader.conf` and systemd-boot
//! taken from the image itself (`usr/lib/systemd/boot/efi/systemd-bootx64.efi`
//! installed as the removable-media path `EFI/BOOT/BOOTX64.EFI`, so no EFI
//! variable has to be written).

pub mod bound;
pub mod device;
pub mod disk;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::boot::entry::DEFAULT_ROOT_KARG;
use crate::deploy::stage::{Deployer, StageOptions};
use crate::deploy::state::{Spec, State, TransportOptions};
use crate::deploy::upgrade::Update;
use crate::fsutil;
use crate::host::disk::DiskTools;
use crate::host::loopdev::LoopDevices;
use crate::imgref::ImageRef;
use crate::pull::PullOptions;
use crate::sysroot::Sysroot;

/// Where systemd-boot lives in an image.
pub const SYSTEMD_BOOT_EFI: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// What to install.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The image to install.
    pub source: ImageRef,
    /// What the installed system follows for upgrades [default: `source`].
    pub target_imgref: Option<String>,
    /// Kernel arguments of this host (before the image's kargs.d ones).
    pub kargs: Vec<String>,
    /// How long to wait for another hostctl holding the new sysroot's lock.
    pub lock_wait: std::time::Duration,
    /// Pull the image's bound images into the new system's podman storage,
    /// with these settings ([`bound`]); `None` leaves them to its first boot.
    pub bound_images: Option<crate::host::podman::PullSettings>,
}

/// What was installed.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    /// The deployment's id.
    pub deployment: String,
    /// The root file system's UUID, when hostctl made the file system (`to-disk`).
    pub root_uuid: Option<String>,
    /// Kernel arguments of this host (before the image's kargs.d ones).
    pub kargs: Vec<String>,
}

/// Creates the sysroot at `root` with `boot` as its boot directory: deploys
/// `opts.source` and installs systemd-boot into `boot`. Refuses a sysroot that
/// already has deployments.
pub async fn build_sysroot(root: &Path, boot: &Path, opts: &InstallOptions, pull: &PullOptions) -> Result<String> {
    let sysroot = Sysroot::open(root)?;
    crate::format::check_sysroot(&sysroot.hostctl_dir())?;
    let _lock = sysroot.lock(opts.lock_wait)?;
    let mut state = State::load(&sysroot.state_path())?;
    if !state.all().is_empty() {
        bail!("{} already holds deployments; install only sets up new sysroots", root.display());
    }
    state.local_kargs = opts.kargs.clone();
    state.save(&sysroot.state_path())?;
    std::fs::create_dir_all(boot).with_context(|| format!("creating {}", boot.display()))?;
    let d = Deployer::open(&sysroot, boot)?;
    // The update steps, without a reboot: check, pull, stage, finalize. The
    // source is recorded as `switch` records it (absolute layout paths).
    let source = crate::oci::absolute_path(&opts.source)?;
    let mut u = Update::begin(&d)?;
    let check = u.check(&source, pull).await?;
    let image = u.pull(check, pull).await?;
    let spec = Some(Spec {
        image: source.to_string(),
        transport_options: TransportOptions::recorded(&source, &pull.registry)?,
    });
    let bound = opts.bound_images.clone().map(|pull| bound::TargetBoundImages { podman: Default::default(), pull });
    let hooks: Vec<&dyn crate::deploy::hooks::StageHook> =
        bound.iter().map(|h| h as &dyn crate::deploy::hooks::StageHook).collect();
    u.stage(&image, StageOptions { spec, locked: false }, &hooks)?;
    let id = u.finalize()?.now().map(|f| f.id).context("the deployment was not finalised")?;
    let mut s = d.load_state()?;
    if let Some(t) = &opts.target_imgref {
        let parsed = t.parse::<ImageRef>().with_context(|| format!("--target-imgref {t}"))?;
        let absolute = crate::oci::absolute_path(&parsed)?;
        s.spec = Some(Spec {
            image: if absolute == parsed { t.clone() } else { absolute.to_string() },
            transport_options: TransportOptions::recorded(&absolute, &pull.registry)?,
        });
    }
    if let Some(spec) = &mut s.spec {
        // --cert-dir and --authfile name files of the installing system, not
        // of the installed one: only --tls-verify=false is kept for it.
        spec.transport_options.cert_dir = None;
        spec.transport_options.authfile = None;
    }
    d.save_state(&s)?;
    install_systemd_boot(&d.layout.tree(&id), boot)?;
    Ok(id.into())
}

/// Copies systemd-boot from the deployment `tree` to `boot` and writes
/// `loader/loader.conf` (kept if present).
pub fn install_systemd_boot(tree: &Path, boot: &Path) -> Result<()> {
    let efi = tree.join(SYSTEMD_BOOT_EFI);
    if !efi.is_file() {
        bail!("the image has no systemd-boot ({SYSTEMD_BOOT_EFI}); install systemd-boot-efi in it");
    }
    let bytes = std::fs::read(&efi).with_context(|| format!("reading {}", efi.display()))?;
    for dest in ["EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"] {
        let p = boot.join(dest);
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        fsutil::write_atomic(&p, &bytes)?;
    }
    let conf = boot.join("loader/loader.conf");
    std::fs::create_dir_all(boot.join("loader/entries"))?;
    if !conf.exists() {
        // No `default`: systemd-boot picks the first entry in its order, i.e.
        // hostctl's highest priority that is not marked bad (docs/boot.md).
        fsutil::write_atomic(&conf, b"timeout 0\neditor no\nauto-entries no\nauto-firmware no\n")?;
    }
    Ok(())
}

/// `install to-filesystem`: `root` is a mounted, empty root file system with
/// the ESP (or /boot) mounted at `boot`.
pub async fn to_filesystem(root: &Path, boot: &Path, opts: &InstallOptions, pull: &PullOptions) -> Result<Installed> {
    let mut opts = opts.clone();
    if !opts.kargs.iter().any(|k| k.starts_with("root=")) {
        opts.kargs.insert(0, DEFAULT_ROOT_KARG.to_string());
    }
    if !opts.kargs.iter().any(|k| k == "rw" || k == "ro") {
        opts.kargs.push("rw".into());
    }
    let id = build_sysroot(root, boot, &opts, pull).await?;
    Ok(Installed { deployment: id, root_uuid: None, kargs: opts.kargs })
}

/// A new random UUID (from the kernel).
pub fn random_uuid() -> Result<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/uuid").context("reading a random UUID")?;
    Ok(s.trim().to_string())
}

/// The target of `to-disk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A disk image file (created or grown to `size`).
    File {
        /// The image file.
        path: PathBuf,
        /// Its size, in bytes.
        size: u64,
    },
    /// A block device and its two partition devices.
    Device {
        /// The whole disk.
        path: PathBuf,
        /// Its ESP partition.
        esp: PathBuf,
        /// Its root partition.
        root: PathBuf,
    },
}

/// The partition device `n` of `dev` (`/dev/sda` → `/dev/sda1`, `/dev/loop0` → `/dev/loop0p1`).
pub fn partition_path(dev: &Path, n: u32) -> PathBuf {
    let s = dev.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// `install to-disk`: partitions `target`, builds the sysroot in a staging
/// directory (in `work`) and writes both file systems.
pub async fn to_disk(
    target: &Target,
    work: &Path,
    esp_mib: u64,
    opts: &InstallOptions,
    pull: &PullOptions,
    tools: &dyn DiskTools,
    loops: &dyn LoopDevices,
) -> Result<Installed> {
    let disk_size = match target {
        Target::File { path, size } => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            let cur = f.metadata()?.len();
            if cur < *size {
                f.set_len(*size)?;
            }
            cur.max(*size)
        }
        Target::Device { path, .. } => block_size(path)?,
    };
    let l = disk::layout(disk_size, esp_mib)?;
    let uuid = random_uuid()?;
    let mut o = opts.clone();
    o.kargs.retain(|k| !k.starts_with("root="));
    o.kargs.insert(0, format!("root=UUID={uuid}"));
    if !o.kargs.iter().any(|k| k == "rw" || k == "ro") {
        o.kargs.insert(1, "rw".into());
    }
    let (root_dir, esp_dir) = (work.join("root"), work.join("esp"));
    std::fs::create_dir_all(&root_dir)?;
    std::fs::create_dir_all(&esp_dir)?;
    let id = build_sysroot(&root_dir, &esp_dir, &o, pull).await?;
    tracing::info!("sysroot built; writing the disk");
    match target {
        Target::File { path, .. } => {
            tools.partition(path, &l)?;
            let esp_img = work.join("esp.img");
            tools.make_esp(&esp_img, l.esp_size, &esp_dir)?;
            disk::copy_into(&esp_img, path, l.esp_offset)?;
            std::fs::remove_file(&esp_img)?;
            let root_img = work.join("root.img");
            tools.make_root(&root_img, l.root_size, &root_dir, &uuid)?;
            disk::copy_into(&root_img, path, l.root_offset)?;
            std::fs::remove_file(&root_img)?;
        }
        Target::Device { path, esp, root } => {
            tools.partition(path, &l)?;
            settle(path, &[esp, root], loops)?;
            tools.make_esp(esp, l.esp_size, &esp_dir)?;
            tools.make_root(root, l.root_size, &root_dir, &uuid)?;
        }
    }
    Ok(Installed { deployment: id, root_uuid: Some(uuid), kargs: o.kargs })
}

/// `to-disk --via-loopback`: grows `file` to `size`, attaches it to a loop
/// device, installs through the device and detaches it whatever happened.
#[allow(clippy::too_many_arguments)]
pub async fn to_disk_via_loopback(
    file: &Path,
    size: u64,
    work: &Path,
    esp_mib: u64,
    opts: &InstallOptions,
    pull: &PullOptions,
    tools: &dyn DiskTools,
    loops: &dyn LoopDevices,
) -> Result<Installed> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    if f.metadata()?.len() < size {
        f.set_len(size)?;
    }
    let dev = loops.attach(file)?;
    let target = Target::Device { esp: partition_path(&dev, 1), root: partition_path(&dev, 2), path: dev.clone() };
    let r = to_disk(&target, work, esp_mib, opts, pull, tools, loops).await;
    if let Err(e) = loops.detach(&dev) {
        tracing::warn!("{e:#}");
    }
    r
}

/// Waits for the partition device nodes of `dev` to appear. Without udev (a
/// container, an installer environment) the kernel may not have re-read the
/// new table: after 2 s, `partx -u` tells it, then it waits up to 10 s more.
fn settle(dev: &Path, paths: &[&PathBuf], loops: &dyn LoopDevices) -> Result<()> {
    let wait = |limit: std::time::Duration| {
        let start = std::time::Instant::now();
        while !paths.iter().all(|p| p.exists()) {
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        true
    };
    if wait(std::time::Duration::from_secs(2)) {
        return Ok(());
    }
    tracing::info!("partition devices of {} did not appear; asking the kernel with partx", dev.display());
    loops.rescan_partitions(dev)?;
    if !wait(std::time::Duration::from_secs(10)) {
        bail!("partition devices {paths:?} of {} did not appear", dev.display());
    }
    Ok(())
}

/// The size of a block device in bytes.
pub fn block_size(dev: &Path) -> Result<u64> {
    use std::io::Seek;
    let mut f = std::fs::File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    Ok(f.seek(std::io::SeekFrom::End(0))?)
}

/// Parses a size such as `8G`, `512M`, `1048576` (binary units).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("unknown size unit in {s:?} (K, M, G, T)"),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("size {s:?}"))?;
    n.checked_mul(mul).with_context(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_partition_names() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("3X").is_err() && parse_size("G").is_err());
        assert_eq!(partition_path(Path::new("/dev/sda"), 2), Path::new("/dev/sda2"));
        assert_eq!(partition_path(Path::new("/dev/loop3"), 1), Path::new("/dev/loop3p1"));
        assert_eq!(partition_path(Path::new("/dev/nvme0n1"), 1), Path::new("/dev/nvme0n1p1"));
    }

    #[test]
    fn systemd_boot_comes_from_the_image() {
        let t = tempfile::tempdir().unwrap();
        let (tree, boot) = (t.path().join("tree"), t.path().join("boot"));
        assert!(install_systemd_boot(&tree, &boot).unwrap_err().to_string().contains("no systemd-boot"));
        std::fs::create_dir_all(tree.join(SYSTEMD_BOOT_EFI).parent().unwrap()).unwrap();
        std::fs::write(tree.join(SYSTEMD_BOOT_EFI), b"MZ-efi").unwrap();
        install_systemd_boot(&tree, &boot).unwrap();
        assert_eq!(std::fs::read(boot.join("EFI/BOOT/BOOTX64.EFI")).unwrap(), b"MZ-efi");
        assert!(std::fs::read_to_string(boot.join("loader/loader.conf")).unwrap().contains("timeout 0"));
    }
}
