//! `hostctl install to-disk DEVICE|FILE` and `hostctl install to-filesystem PATH`
//! (docs/install.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::output::{outln, print_json};
use super::upgrade::pull_options;
use super::GlobalArgs;
use crate::host::disk::ExternalTools;
use crate::host::loopdev::Losetup;
use crate::imgref::ImageRef;
use crate::install::{self, InstallOptions, Installed, Target};

#[derive(Debug, Subcommand)]
pub enum InstallCommand {
    /// Partition a disk or disk image file (GPT: ESP + root) and install the image on it.
    ToDisk(ToDiskArgs),
    /// Install into a root file system that is already made and mounted (ESP at --boot-dir).
    ToFilesystem(ToFilesystemArgs),
}

/// Options shared by both targets.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The image to install.
    #[arg(long, value_name = "IMAGE")]
    pub source_imgref: ImageRef,
    /// The image the installed system follows for `hostctl upgrade` [default: --source-imgref].
    #[arg(long, value_name = "IMAGE")]
    pub target_imgref: Option<String>,
    /// An extra kernel argument of this host (repeatable), e.g. `--karg quiet`.
    #[arg(long = "karg", value_name = "ARG")]
    pub kargs: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ToDiskArgs {
    /// A block device, or a disk image file (created if missing).
    pub device: PathBuf,
    /// Attach the image file to a loop device and install through it.
    #[arg(long)]
    pub via_loopback: bool,
    /// Size of a disk image file that is created or grown (e.g. 8G).
    #[arg(long, default_value = "8G")]
    pub size: String,
    /// Size of the EFI system partition in MiB.
    #[arg(long, default_value_t = 512)]
    pub esp_size_mib: u64,
    /// Overwrite a block device that holds a partition table (everything on it is lost).
    #[arg(long)]
    pub wipe: bool,
    /// Directory for the staging sysroot [default: beside the image file, else /var/tmp].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct ToFilesystemArgs {
    /// The mounted root file system (becomes the sysroot).
    pub path: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
}

fn options(g: &GlobalArgs, s: &SourceArgs) -> InstallOptions {
    InstallOptions {
        bound_images: Some(super::app::pull_settings(g)),
        source: s.source_imgref.clone(),
        target_imgref: s.target_imgref.clone(),
        kargs: s.kargs.clone(),
        lock_wait: super::lock_wait(),
    }
}

fn report(json: bool, r: &Installed) -> Result<()> {
    if json {
        return print_json(r);
    }
    outln!("Installed deployment {}", r.deployment)?;
    outln!("Kernel arguments: {}", r.kargs.join(" "))?;
    Ok(())
}

pub async fn run(g: &GlobalArgs, c: InstallCommand) -> Result<()> {
    let pull = pull_options(g)?;
    match c {
        InstallCommand::ToFilesystem(a) => {
            let boot = g.boot_dir.clone().unwrap_or_else(|| a.path.join("boot"));
            let r = install::to_filesystem(&a.path, &boot, &options(g, &a.source), &pull).await?;
            report(a.source.json, &r)
        }
        InstallCommand::ToDisk(a) => {
            let size = install::parse_size(&a.size)?;
            let meta = std::fs::metadata(&a.device).ok();
            let is_block = meta.as_ref().is_some_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_block_device()
            });
            // A block device is checked before anything is pulled or written.
            if is_block {
                let size = install::block_size(&a.device)?;
                install::device::check(&a.device, size, a.esp_size_mib, a.wipe)?;
            }
            let parent = a.device.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let base = a.work_dir.clone().unwrap_or_else(|| {
                if is_block {
                    PathBuf::from("/var/tmp")
                } else {
                    parent.to_path_buf()
                }
            });
            let work = tempfile::Builder::new()
                .prefix(".hostctl-install-")
                .tempdir_in(&base)
                .with_context(|| format!("creating a work directory in {}", base.display()))?;
            let (o, w, esp) = (&options(g, &a.source), work.path(), a.esp_size_mib);
            let r = if is_block {
                // The partitions are named after the kernel's name of the
                // disk: a link (/dev/disk/by-id/…) has `-part1`, not `1`.
                let dev =
                    std::fs::canonicalize(&a.device).with_context(|| format!("resolving {}", a.device.display()))?;
                let target = Target::Device {
                    esp: install::partition_path(&dev, 1),
                    root: install::partition_path(&dev, 2),
                    path: dev,
                };
                install::to_disk(&target, w, esp, o, &pull, &ExternalTools, &Losetup).await
            } else if a.via_loopback {
                install::to_disk_via_loopback(&a.device, size, w, esp, o, &pull, &ExternalTools, &Losetup).await
            } else {
                let target = Target::File { path: a.device.clone(), size };
                install::to_disk(&target, w, esp, o, &pull, &ExternalTools, &Losetup).await
            };
            report(a.source.json, &r?)
        }
    }
}
