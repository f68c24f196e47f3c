//! `hostctl install` on the host side, against a real registry: into a
//! prepared root (`to-filesystem`), and onto a disk image written both
//! through files (`to-disk FILE`) and through a loop device
//! (`to-disk --via-loopback`), checked by reading the partition table with
//! sgdisk, mounting the root read-only and copying the ESP out with mtools. (Booting the result is
//! integration/vm/e2e.sh's job.)

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::deploy::{deploy_dir, entries, hc, hc_json, push_small, status, Podman};
use crate::support::registry::Registry;
use crate::support::{require_tool, run};

const EFI: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const EFI_BYTES: &str = "MZ systemd-boot stand-in";

/// An installable image: kernel, systemd-boot and a kernel argument from kargs.d.
fn push_installable(reg: &Registry, pm: &Podman) -> String {
    push_small(
        reg,
        pm,
        "1.0",
        &[(EFI, EFI_BYTES), ("usr/lib/hostctl/kargs.d/10-test.toml", "kargs = [\"console=ttyS0\"]\n")],
        "os:1",
    )
}

/// What every installed sysroot holds: one deployment, systemd-boot in the
/// ESP, loader.conf, and one uncounted entry with the host's and the image's
/// kernel arguments.
fn assert_installed(root: &Path, esp: &Path, id: &str, root_karg: &str) {
    assert!(deploy_dir(root).join(id).join("usr/bin/tool").is_file(), "deployment {id} checked out");
    for p in ["EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"] {
        assert_eq!(std::fs::read_to_string(esp.join(p)).unwrap(), EFI_BYTES, "{p}");
    }
    assert!(std::fs::read_to_string(esp.join("loader/loader.conf")).unwrap().contains("timeout"));
    let e = entries(esp);
    assert_eq!(e.len(), 1, "{e:?}");
    let (name, eid, text) = &e[0];
    assert_eq!(eid, id);
    assert!(!name.contains('+'), "the first entry has nothing to fall back to, so it is not counted: {name}");
    let options = text.lines().find_map(|l| l.strip_prefix("options ")).unwrap();
    for karg in [root_karg, "rw", "quiet", "console=ttyS0", &format!("hostctl=/hostctl/deploy/default/{id}")] {
        assert!(options.split(' ').any(|o| o == karg), "{karg} missing from: {options}");
    }
}

#[test]
fn to_filesystem_sets_up_a_prepared_root() {
    let reg = Registry::start();
    let pm = Podman::new();
    let image = push_installable(&reg, &pm);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let args = [
        "install",
        "to-filesystem",
        r.to_str().unwrap(),
        "--source-imgref",
        &image,
        "--target-imgref",
        "registry.example.com/os:stable",
        "--karg",
        "quiet",
        "--json",
    ];
    let out = hc_json(r, &args);
    let id = out["deployment"].as_str().unwrap().to_string();
    assert_installed(r, &r.join("boot"), &id, "root=LABEL=hostctl-root");
    let st = status(r);
    assert_eq!(
        st["spec"]["image"]["image"], "registry.example.com/os:stable",
        "the installed host follows --target-imgref"
    );
    assert_eq!(st["status"]["deployments"][0]["id"], id.as_str());

    // A root that already holds deployments is refused, and left as it was.
    let again = hc(r, &[], &args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds deployments"));
    assert_eq!(entries(&r.join("boot")).len(), 1);
}

/// A partition of a disk image: (first byte, size in bytes, GPT type code).
fn partition(disk: &Path, n: u32) -> (u64, u64, String) {
    let out = run(Command::new("sgdisk").arg("-i").arg(n.to_string()).arg(disk));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}"));
        line[name.len()..].trim().to_string()
    };
    let first: u64 = field("First sector:").split(' ').next().unwrap().parse().unwrap();
    let size: u64 = field("Partition size:").split(' ').next().unwrap().parse().unwrap();
    (first * 512, size * 512, field("Partition GUID code:"))
}

/// A partition mounted read-only through its own loop device; unmounted on drop.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(disk: &Path, (offset, size, _): &(u64, u64, String), fstype: &str) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", fstype, "-o"])
            .arg(format!("ro,loop,offset={offset},sizelimit={size}"))
            .arg(disk)
            .arg(dir.path()));
        Mounted { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Loop devices still attached to `file`.
fn loops_of(file: &Path) -> String {
    String::from_utf8_lossy(&run(Command::new("losetup").arg("-j").arg(file)).stdout).into_owned()
}

fn install_to_disk_and_check(via_loopback: bool) {
    for tool in ["sgdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "losetup"] {
        require_tool(tool);
    }
    let reg = Registry::start();
    let pm = Podman::new();
    let image = push_installable(&reg, &pm);
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("disk.img");
    let disk_s = disk.to_str().unwrap();
    let mut args = vec!["install", "to-disk", disk_s, "--size", "1G", "--esp-size-mib", "64"];
    if via_loopback {
        args.push("--via-loopback");
    }
    args.extend(["--source-imgref", &image, "--karg", "quiet", "--json"]);
    let out = hc_json(work.path(), &args);
    let id = out["deployment"].as_str().unwrap().to_string();
    let uuid = out["rootUuid"].as_str().unwrap().to_string();
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 1 << 30);
    assert_eq!(loops_of(&disk), "", "no loop device is left attached");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(leftovers, std::slice::from_ref(&disk), "the staging directory is removed");

    let esp = partition(&disk, 1);
    let root = partition(&disk, 2);
    assert!(esp.2.starts_with("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "ESP type: {}", esp.2);
    assert!(root.2.starts_with("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), "root (x86-64) type: {}", root.2);
    assert_eq!(esp.1, 64 << 20);
    // The ESP is copied out with mtools (a kernel may lack vfat), the root mounted.
    let esp_copy = tempfile::tempdir().unwrap();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-n", "-i"])
        .arg(format!("{}@@{}", disk.display(), esp.0))
        .args(["::/EFI", "::/loader", "::/hostctl"])
        .arg(esp_copy.path()));
    let root_fs = Mounted::new(&disk, &root, "ext4");
    assert_installed(root_fs.path(), esp_copy.path(), &id, &format!("root=UUID={uuid}"));
    let blkid =
        run(Command::new("blkid").args(["-p", "-o", "value", "-s", "UUID", "-O"]).arg(root.0.to_string()).arg(&disk));
    assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), uuid, "the root file system has the UUID root= names");
}

#[test]
fn to_disk_image_file_has_a_gpt_esp_and_root() {
    install_to_disk_and_check(false);
}

#[test]
fn to_disk_via_loopback_has_a_gpt_esp_and_root() {
    install_to_disk_and_check(true);
}

/// A disk image file attached to a loop device for one test; detached on drop.
struct LoopDisk {
    _dir: tempfile::TempDir,
    dev: String,
    mount: Option<PathBuf>,
}

impl LoopDisk {
    fn new(size: &str) -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        run(Command::new("truncate").args(["-s", size]).arg(&file));
        let out = run(Command::new("losetup").args(["--show", "-f"]).arg(&file));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        LoopDisk { _dir: dir, dev, mount: None }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if let Some(m) = &self.mount {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// `install to-disk` onto a real block device refuses, before anything is
/// pulled or written, a disk that is mounted, too small, or holds a partition
/// table (unless `--wipe`), each with an error that says so.
#[test]
fn to_disk_refuses_a_mounted_too_small_or_partitioned_disk_and_writes_nothing() {
    for tool in ["losetup", "sgdisk", "mkfs.ext4"] {
        require_tool(tool);
    }
    let work = tempfile::tempdir().unwrap();
    // No image is needed: every refusal comes before the pull.
    let missing = format!("oci:{}/no-such-layout", work.path().display());
    let install = |dev: &str, extra: &[&str]| {
        let mut args = vec!["install", "to-disk", dev, "--esp-size-mib", "64", "--source-imgref", &missing];
        args.extend_from_slice(extra);
        let out = hc(work.path(), &[], &args);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let head = |dev: &str| {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(std::fs::File::open(dev).unwrap(), 1 << 20), &mut b)
            .unwrap();
        b
    };

    let small = LoopDisk::new("100M");
    let (code, err) = install(&small.dev, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is too small for a 64 MiB ESP"), "{err}");

    let parted = LoopDisk::new("1G");
    run(Command::new("sgdisk").args(["-n=1:2048:+10M", "-c=1:precious"]).arg(&parted.dev));
    let before = head(&parted.dev);
    let (code, err) = install(&parted.dev, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("holds a partition table (Gpt)") && err.contains("pass --wipe"), "{err}");
    assert_eq!(head(&parted.dev), before, "the table is untouched");
    // With --wipe it goes on (and fails later, at the pull of the missing layout).
    let (code, err) = install(&parted.dev, &["--wipe"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("pass --wipe") && err.contains("no-such-layout"), "{err}");
    assert_eq!(head(&parted.dev), before, "a failed pull writes nothing either");

    let mut mounted = LoopDisk::new("1G");
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&mounted.dev));
    let point = work.path().join("mnt");
    std::fs::create_dir(&point).unwrap();
    run(Command::new("mount").arg(&mounted.dev).arg(&point));
    mounted.mount = Some(point.clone());
    for extra in [&[][..], &["--wipe"]] {
        let (code, err) = install(&mounted.dev, extra);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(&format!("is mounted at {}", point.display())), "{err}");
    }
}

/// `install to-disk /dev/disk/by-id/…`: a disk named by a link. Its
/// partitions are the kernel's (`/dev/loop3p1`), not the link's name with a
/// number appended; before the fix the disk was partitioned and then the
/// install waited for `…/disk1` and failed.
#[test]
fn to_disk_onto_a_block_device_named_by_a_link_installs_onto_its_partitions() {
    for tool in ["sgdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "losetup", "partx"] {
        require_tool(tool);
    }
    let reg = Registry::start();
    let pm = Podman::new();
    let image = push_installable(&reg, &pm);
    let work = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new("1G");
    let link = work.path().join("virtio-e2edisk2");
    std::os::unix::fs::symlink(&disk.dev, &link).unwrap();
    let link_s = link.to_str().unwrap();
    let args = ["install", "to-disk", link_s, "--esp-size-mib", "64", "--source-imgref", &image, "--json"];
    let out = hc_json(work.path(), &args);
    let uuid = out["rootUuid"].as_str().unwrap().to_string();
    let dev = Path::new(&disk.dev);
    let root = partition(dev, 2);
    assert!(root.2.starts_with("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), "root (x86-64) type: {}", root.2);
    let blkid =
        run(Command::new("blkid").args(["-p", "-o", "value", "-s", "UUID", "-O"]).arg(root.0.to_string()).arg(dev));
    assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), uuid, "the root file system was written");
    let _ = Command::new("partx").arg("-d").arg(dev).status();
}
