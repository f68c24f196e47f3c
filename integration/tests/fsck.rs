//! `hostctl fsck [--repair]` against real damage: objects corrupted,
//! truncated, deleted and chmod-ed, deployed files replaced, deleted and
//! rewritten in place through their hard link, a directory's mode changed, a
//! symlink retargeted, xattrs of directories and symlinks changed, extra
//! files in `/usr`, the boot partition's kernels and entries damaged; each
//! reported by path (exit 8), repaired from the image's source (a real
//! registry, an OCI layout) or the deployment (exit 9), and refused with
//! exit 10 once the source is gone.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::deploy::{entries, hc, hc_ok, push_small, status, Podman, SwitchedToV1};
use crate::support::images::{write_tree, Compression, Layout};
use crate::support::registry::Registry;

/// The deployed tree of the booted deployment and the store's object path of
/// the deployed file `rel` (found by its inode).
fn booted_tree(sys: &Path) -> PathBuf {
    let id = status(sys)["status"]["booted"]["id"].as_str().unwrap().to_string();
    sys.join("hostctl/deploy/default").join(id)
}

fn object_of(sys: &Path, deployed: &Path) -> PathBuf {
    let ino = std::fs::metadata(deployed).unwrap().ino();
    let objects = sys.join("hostctl/repo/objects");
    for fan in std::fs::read_dir(&objects).unwrap() {
        for o in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            let o = o.unwrap();
            if o.metadata().unwrap().ino() == ino {
                return o.path();
            }
        }
    }
    panic!("no object for {}", deployed.display())
}

fn fsck(sys: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut a = vec!["fsck"];
    a.extend_from_slice(args);
    let out = hc(sys, &[], &a);
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out.status.code(), stdout, stderr)
}

#[test]
fn fsck_reports_each_damaged_path_repairs_it_from_the_registry_and_refuses_once_the_registry_is_gone() {
    let mut reg = Registry::start();
    let pm = Podman::new();
    let files = [
        ("usr/bin/rewritten", "through the deployment"),
        ("usr/bin/truncated", "truncate me"),
        ("usr/lib/deleted", "delete my object"),
        ("usr/share/chmodded", "chmod me"),
        ("usr/share/replaced", "replace me"),
        ("usr/share/gone", "delete me from the deployment"),
        ("usr/share/corrupt", "corrupt my object"),
    ];
    let image = push_small(&reg, &pm, "1.0", &files, "os:latest");
    let sys = tempfile::tempdir().unwrap();
    let sys = sys.path();
    hc_ok(sys, &["switch", &image]);
    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(0), "a fresh deployment is intact: {out}{err}");
    assert!(out.contains("Checked ") && out.contains("1 deployment(s)"), "{out}");

    let tree = booted_tree(sys);
    let t = |rel: &str| tree.join(rel);
    let corrupt_obj = object_of(sys, &t("usr/share/corrupt"));
    let truncated_obj = object_of(sys, &t("usr/bin/truncated"));
    let deleted_obj = object_of(sys, &t("usr/lib/deleted"));
    let chmodded_obj = object_of(sys, &t("usr/share/chmodded"));
    let rewritten_obj = object_of(sys, &t("usr/bin/rewritten"));
    // The damage.
    std::fs::write(&corrupt_obj, "CORRUPT my object").unwrap(); // same size
    std::fs::OpenOptions::new().write(true).open(&truncated_obj).unwrap().set_len(3).unwrap();
    std::fs::remove_file(&deleted_obj).unwrap();
    std::fs::set_permissions(t("usr/share/chmodded"), std::fs::Permissions::from_mode(0o4777)).unwrap();
    std::fs::remove_file(t("usr/share/replaced")).unwrap();
    std::fs::write(t("usr/share/replaced"), "replace me").unwrap();
    std::fs::remove_file(t("usr/share/gone")).unwrap();
    std::fs::write(t("usr/bin/rewritten"), "THROUGH the deployment").unwrap(); // in place, via the hard link
    std::fs::set_permissions(t("usr/lib"), std::fs::Permissions::from_mode(0o700)).unwrap();

    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(8), "{out}{err}");
    for (path, problem) in [
        (corrupt_obj.clone(), "content does not match"),
        (truncated_obj.clone(), "size 3 where 11 was recorded"),
        (deleted_obj.clone(), "missing"),
        (chmodded_obj.clone(), "mode 4777 where 644 was recorded"),
        (rewritten_obj.clone(), "content does not match"),
        (t("usr/share/corrupt"), "is damaged"),
        (t("usr/bin/truncated"), "is damaged"),
        (t("usr/lib/deleted"), "is missing from the store"),
        (t("usr/share/chmodded"), "is damaged"),
        (t("usr/share/replaced"), "not a hard link of its object"),
        (t("usr/share/gone"), "missing"),
        (t("usr/bin/rewritten"), "is damaged"),
        (t("usr/lib"), "mode 700 where 755 was recorded"),
    ] {
        let line = out.lines().find(|l| l.starts_with(&format!("damaged: {} (", path.display())));
        let line = line.unwrap_or_else(|| panic!("{} not reported:\n{out}", path.display()));
        assert!(line.contains(problem), "{line}");
    }
    assert!(err.contains("13 damaged path(s) found"), "{err}");
    let (_, json, _) = fsck(sys, &["--json"]);
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["damaged"].as_array().unwrap().len(), 13, "{report:#}");
    assert!(report.get("unrepaired").is_none(), "a check changes nothing: {report:#}");

    let (code, out, err) = fsck(sys, &["--repair"]);
    assert_eq!(code, Some(9), "{out}{err}");
    assert!(err.starts_with("repaired 13 damaged path(s)"), "{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("repaired: ")).count(), 13, "{out}");
    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(0), "all repaired: {out}{err}");
    for (rel, content) in files {
        let m = std::fs::metadata(t(rel)).unwrap();
        assert_eq!(std::fs::read_to_string(t(rel)).unwrap(), content, "{rel}");
        assert_eq!(m.ino(), std::fs::metadata(object_of(sys, &t(rel))).unwrap().ino(), "{rel} is a hard link again");
        assert_eq!(m.mode() & 0o7777, 0o644, "{rel}");
    }
    assert_eq!(std::fs::metadata(t("usr/lib")).unwrap().mode() & 0o7777, 0o755);
    hc_ok(sys, &["cleanup"]);

    // The registry gone: what needs it is refused, and said so; what does not is repaired.
    reg.kill();
    let corrupt_obj = object_of(sys, &t("usr/share/corrupt"));
    std::fs::write(&corrupt_obj, "CORRUPT my object").unwrap();
    std::fs::set_permissions(t("usr/lib"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, out, err) = fsck(sys, &["--repair"]);
    assert_eq!(code, Some(10), "{out}{err}");
    assert!(err.contains("2 of 3 damaged path(s) could not be repaired"), "{err}");
    assert!(err.contains("gone or unreachable"), "{err}");
    assert!(out.contains(&format!("not repaired: {} (object)", corrupt_obj.display())), "{out}");
    assert!(out.contains(&format!("repaired: {} (deployed)", t("usr/lib").display())), "{out}");
    assert_eq!(std::fs::read_to_string(&corrupt_obj).unwrap(), "CORRUPT my object", "left as it was");
}

/// On the format-1 fixture, whose images came from an OCI layout: a symlink
/// retargeted, a directory (with its files) deleted, a file's owner changed
/// through its hard link, a layer index and a config blob corrupted; all
/// reported, all repaired from the layout; then, the layout removed, a
/// damaged object is refused with the source named.
#[test]
fn fsck_repairs_symlinks_directories_owners_and_indexes_from_an_oci_layout_and_names_a_removed_one() {
    let (_dir, sys, layout) = crate::format::unpack_v1_fixture();
    let sys = sys.as_path();
    // The fixture's deployments name the layout where it was made (gone);
    // pulling the same image from where it is unpacked records a second source.
    hc_ok(sys, &["image", "pull", &format!("oci:{}:v2", layout.display())]);
    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(0), "the fixture is intact: {out}{err}");
    let tree = booted_tree(sys);
    let t = |rel: &str| tree.join(rel);
    std::fs::remove_file(t("usr/bin/hi")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", t("usr/bin/hi")).unwrap();
    std::fs::remove_dir_all(t("usr/share/doc")).unwrap();
    std::os::unix::fs::chown(t("usr/bin/hello"), Some(1234), None).unwrap();

    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(8), "{out}{err}");
    for (path, problem) in [
        (t("usr/bin/hi"), "points to /etc/shadow where hello was recorded"),
        (t("usr/share/doc"), "missing"),
        (t("usr/bin/hello"), "is damaged"),
    ] {
        let line = out.lines().find(|l| l.starts_with(&format!("damaged: {} (", path.display())));
        let line = line.unwrap_or_else(|| panic!("{} not reported:\n{out}", path.display()));
        assert!(line.contains(problem), "{line}");
    }
    assert!(out.contains("owner 1234:0 where 0:0 was recorded"), "{out}");

    let (code, out, err) = fsck(sys, &["--repair"]);
    assert_eq!(code, Some(9), "{out}{err}");
    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(std::fs::read_link(t("usr/bin/hi")).unwrap(), Path::new("hello"));
    let private = std::fs::symlink_metadata(t("usr/share/doc/private")).unwrap();
    assert_eq!((private.uid(), private.mode() & 0o7777), (1000, 0o600));
    assert_eq!(std::fs::read_to_string(t("usr/share/doc/private")).unwrap(), "secret\n");
    assert_eq!(std::fs::metadata(t("usr/bin/hello")).unwrap().uid(), 0);

    // A layer index that cannot be read: reported, and the deployments built
    // from it cannot be checked until it is fetched again.
    let layers = sys.join("hostctl/repo/layers");
    let index = std::fs::read_dir(&layers).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_file()).unwrap();
    std::fs::write(&index, "{not json").unwrap();
    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(8), "{out}{err}");
    assert!(out.contains(&format!("damaged: {} (layer-index): parsing layer index", index.display())), "{out}");
    assert!(out.contains("not checked: a layer index of its image is damaged"), "{out}");
    let (code, out, err) = fsck(sys, &["--repair"]);
    assert_eq!(code, Some(9), "{out}{err}");
    assert_eq!(fsck(sys, &[]).0, Some(0));

    // The layout gone: the damaged object stays, and the message names the source.
    std::fs::remove_dir_all(&layout).unwrap();
    std::fs::write(t("usr/bin/hello"), "#!/bin/sh\necho HELLO\n").unwrap();
    let (code, out, err) = fsck(sys, &["--repair"]);
    assert_eq!(code, Some(10), "{out}{err}");
    assert!(err.contains(&format!("the source of oci:{}", layout.display())) && err.contains("gone"), "{err}");
    assert!(out.contains("could not repair: layer sha256:"), "{out}");
}

/// The kernel directory (`/hostctl/default/<checksum>`) a boot entry's text names.
fn kernel_dir_of(boot: &Path, entry_text: &str) -> PathBuf {
    let linux = entry_text.lines().find_map(|l| l.strip_prefix("linux ")).unwrap();
    boot.join(linux.trim_start_matches('/')).parent().unwrap().to_path_buf()
}

/// The line fsck printed for `path`, which must say `problem`.
fn assert_reported(out: &str, tag: &str, path: &Path, problem: &str) {
    let line = out.lines().find(|l| l.starts_with(&format!("{tag}: {} (", path.display())));
    let line = line.unwrap_or_else(|| panic!("{} not reported as {tag}:\n{out}", path.display()));
    assert!(line.contains(problem), "{line}");
}

/// A truncated initramfs, an altered kernel, an edited, a missing and a stray boot entry.
#[test]
fn fsck_finds_damaged_kernels_and_boot_entries_and_repair_rewrites_them_from_the_deployments() {
    let v = SwitchedToV1::new();
    let sys = v.sys.path();
    // v2 ships an initramfs: its kernel directory is another one than v1's.
    let v2 = v.push("2.0", &[("usr/lib/modules/6.1.0-test/initramfs.img", "initramfs of v2")]);
    hc_ok(sys, &["switch", &v2]);
    let boot = sys.join("boot");
    let before = entries(&boot);
    assert_eq!(before.len(), 2, "{before:?}");
    let (v2_entry, v1_entry) = (before[0].clone(), before[1].clone());
    let (k2, k1) = (kernel_dir_of(&boot, &v2_entry.2), kernel_dir_of(&boot, &v1_entry.2));
    assert_ne!(k1, k2);
    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2 boot entr(ies), 2 kernel(s)"), "{out}");

    let entries_dir = boot.join("loader/entries");
    std::fs::OpenOptions::new().write(true).open(k2.join("initramfs.img")).unwrap().set_len(5).unwrap();
    std::fs::write(k1.join("vmlinuz"), "KERNEL").unwrap(); // same size
    let v2_path = entries_dir.join(&v2_entry.0);
    std::fs::write(&v2_path, v2_entry.2.replace("\noptions ", "\noptions init=/bin/sh ")).unwrap();
    std::fs::remove_file(entries_dir.join(&v1_entry.0)).unwrap();
    let stray = entries_dir.join("hostctl-default-1-abc.9.conf");
    std::fs::write(&stray, "title stray\nlinux /hostctl/default/x/vmlinuz\noptions quiet\n").unwrap();

    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(8), "{out}{err}");
    for (path, problem) in [
        (k2.join("initramfs.img"), "(kernel): truncated: 5 bytes where the deployment's copy has 15"),
        (k1.join("vmlinuz"), "(kernel): altered: its content differs from the deployment's copy"),
        (v2_path.clone(), "(boot-entry): its `options` line differs from what the deployment records"),
        (entries_dir.join(format!("hostctl-default-*-{}.conf", v1_entry.1)), "(boot-entry): missing"),
        (stray.clone(), "(boot-entry): names deployment abc.9, which state.json does not list"),
    ] {
        assert_reported(&out, "damaged", &path, problem);
    }
    assert!(err.contains("5 damaged path(s) found"), "{err}");

    let (code, out, err) = fsck(sys, &["--repair"]);
    assert_eq!(code, Some(9), "{out}{err}");
    assert_reported(&out, "repaired", &k2.join("initramfs.img"), "truncated");
    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(0), "all repaired: {out}{err}");
    assert_eq!(std::fs::read_to_string(k2.join("initramfs.img")).unwrap(), "initramfs of v2");
    assert_eq!(std::fs::read_to_string(k1.join("vmlinuz")).unwrap(), "kernel");
    // The same entries, in the same order, with the same text (new file names: entries are never edited in place).
    let after = entries(&boot);
    let ids_texts =
        |e: &[(String, String, String)]| e.iter().map(|(_, id, t)| (id.clone(), t.clone())).collect::<Vec<_>>();
    assert_eq!(ids_texts(&after), ids_texts(&before));
    assert!(!stray.exists());
}

#[test]
fn fsck_reports_changed_xattrs_and_extra_files_repair_fixes_them_and_cleanup_takes_a_killed_repairs_scratch() {
    let reg = Registry::start();
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    write_tree(
        &tree,
        &[
            ("usr/lib/modules/6.1.0-test/vmlinuz", "kernel"),
            ("usr/bin/hello", "#!/bin/sh\necho hello\n"),
            ("usr/lib/app/data", "data"),
            ("usr/share/doc/readme", "read me"),
            ("etc/motd", "hello\n"),
        ],
    );
    std::os::unix::fs::symlink("hello", tree.join("usr/bin/hi")).unwrap();
    rustix::fs::setxattr(tree.join("usr/lib/app"), "user.origin", b"image", rustix::fs::XattrFlags::empty()).unwrap();
    let layout = Layout::new(&t.path().join("layout"), "v1");
    layout.add_layer(&tree);
    let image = reg.image("os:latest");
    layout.push(&image, Compression::Gzip);
    let sys = tempfile::tempdir().unwrap();
    let sys = sys.path();
    hc_ok(sys, &["switch", &image]);
    let dep = booted_tree(sys);
    let d = |rel: &str| dep.join(rel);
    let xattr = |p: &Path, name: &str| {
        let mut buf = [0u8; 64];
        rustix::fs::lgetxattr(p, name, &mut buf[..]).ok().map(|n| buf[..n].to_vec())
    };
    assert_eq!(xattr(&d("usr/lib/app"), "user.origin").as_deref(), Some(&b"image"[..]), "the image records the xattr");
    assert_eq!(fsck(sys, &[]).0, Some(0));

    // Changed xattrs on two directories and a symlink.
    rustix::fs::lsetxattr(d("usr/lib/app"), "user.origin", b"tampered", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::lsetxattr(d("usr/share"), "user.evil", b"1", rustix::fs::XattrFlags::empty()).unwrap();
    // (user.* is not allowed on symlinks; trusted.* is, as root.)
    rustix::fs::lsetxattr(d("usr/bin/hi"), "trusted.evil", b"1", rustix::fs::XattrFlags::empty()).unwrap();
    // Extra entries below /usr, and what a killed `fsck --repair` of an earlier hostctl left there.
    std::fs::write(d("usr/bin/backdoor"), "#!/bin/sh\n").unwrap();
    std::fs::create_dir_all(d("usr/lib/app/cache/deep")).unwrap();
    std::fs::create_dir_all(d("usr/share/.tmp-fsck-4242")).unwrap();
    std::fs::write(d("usr/share/.tmp-fsck-4242/readme"), "half a repair").unwrap();
    // Not the image's to judge: the host's /etc, staging's additions to usr/etc, state outside /usr.
    std::fs::write(d("etc/local.conf"), "mine\n").unwrap();
    std::fs::write(d("usr/etc/added-by-staging"), "pin\n").unwrap();
    std::fs::create_dir_all(d("root")).unwrap();
    std::fs::write(d("root/notes"), "admin's\n").unwrap();
    // What a killed `fsck --repair` leaves now: its scratch directory in the stateroot.
    let scratch = dep.parent().unwrap().join(".tmp-fsck-4242");
    std::fs::create_dir_all(scratch.join("hi")).unwrap();

    let (code, out, err) = fsck(sys, &[]);
    assert_eq!(code, Some(8), "{out}{err}");
    for (path, problem) in [
        (d("usr/lib/app"), "xattr user.origin differs from the recorded value"),
        (d("usr/share"), "has xattr user.evil, which was not recorded"),
        (d("usr/bin/hi"), "has xattr trusted.evil, which was not recorded"),
        (d("usr/bin/backdoor"), "not in the image (an extra entry)"),
        (d("usr/lib/app/cache"), "not in the image (an extra entry)"),
        (d("usr/share/.tmp-fsck-4242"), "left by a killed `fsck --repair`"),
    ] {
        assert_reported(&out, "damaged", &path, problem);
    }
    assert!(err.contains("6 damaged path(s) found"), "{out}{err}");

    let (code, out, err) = fsck(sys, &["--repair"]);
    assert_eq!(code, Some(9), "{out}{err}");
    assert_eq!(fsck(sys, &[]).0, Some(0));
    assert_eq!(xattr(&d("usr/lib/app"), "user.origin").as_deref(), Some(&b"image"[..]));
    assert_eq!(xattr(&d("usr/share"), "user.evil"), None);
    assert_eq!(xattr(&d("usr/bin/hi"), "trusted.evil"), None);
    assert_eq!(std::fs::read_link(d("usr/bin/hi")).unwrap(), Path::new("hello"));
    for gone in ["usr/bin/backdoor", "usr/lib/app/cache", "usr/share/.tmp-fsck-4242"] {
        assert!(std::fs::symlink_metadata(d(gone)).is_err(), "{gone} is still there");
    }
    assert_eq!(
        std::fs::read_to_string(d("usr/lib/app/data")).unwrap(),
        "data",
        "a repaired directory keeps its content"
    );
    for kept in ["etc/local.conf", "usr/etc/added-by-staging", "root/notes"] {
        assert!(d(kept).is_file(), "{kept} was removed");
    }
    // The killed run's scratch is not the tree's; cleanup removes it.
    assert!(scratch.exists());
    hc_ok(sys, &["cleanup"]);
    assert!(!scratch.exists());
}
