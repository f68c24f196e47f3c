//! Layers written by real tools in the shapes other unpackers accept (issue
//! #10), pulled from a real registry and switched to with the real CLI: GNU
//! tar `-P` (absolute names and hard-link targets), Python's `tarfile` (a
//! directory symlink written through in the same layer, a symlink where a
//! lower layer had a directory, a directory where it had a file) and GNU tar
//! naming one deep file (an implied directory over a lower layer's file).
//! Each lands where containerd (and umoci) put it, inside the deployment.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::deploy::{deploy_dir, hc_json};
use crate::support::hostile::{self, LayerCompression};
use crate::support::images::{push_with_skopeo, Compression};
use crate::support::registry::Registry;
use crate::support::{require_tool, run};

const KERNEL: &str = "usr/lib/modules/6.1.0-test/vmlinuz";
/// A name no host has, so that a write through a symlink out of the
/// deployment would be seen.
const UNIQUE: &str = "hostctl-issue10-tar-compat";

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Layer 1, by GNU tar with `-P`: every name and the hard link's target are
/// absolute (`/usr/bin/b` -> `/usr/bin/a`).
fn gnu_tar_absolute_layer(work: &Path) -> Vec<u8> {
    let base = work.join("base");
    write(&base, KERNEL, "kernel");
    write(&base, "usr/bin/a", "tool a\n");
    std::fs::hard_link(base.join("usr/bin/a"), base.join("usr/bin/b")).unwrap();
    write(&base, "etc/hostname", "h\n");
    write(&base, "usr/lib/keep", "k");
    write(&base, "lib/old", "old");
    write(&base, "opt/app", "a file, later a directory");
    write(&base, "opt/tool", "a file, later an implied directory");
    let b = base.to_str().unwrap();
    let out = work.join("l1.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-P", "-c", "-f"])
        .arg(&out)
        .arg(format!("--transform=s,^{b},,"))
        .args(["etc", "usr", "lib", "opt"].map(|d| format!("{b}/{d}"))));
    let tar = std::fs::read(&out).unwrap();
    // GNU tar really wrote absolute names and an absolute hard-link target.
    let listing = String::from_utf8(run(Command::new("tar").args(["-tvPf"]).arg(&out)).stdout).unwrap();
    assert!(listing.contains(" /usr/bin/"), "{listing}");
    assert!(listing.contains("link to /usr/bin/"), "{listing}");
    tar
}

/// Layer 2, by Python's `tarfile`.
fn python_tarfile_layer(work: &Path) -> Vec<u8> {
    let out = work.join("l2.tar");
    let script = format!(
        r#"
import io, sys, tarfile
t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
def sym(name, target):
    i = tarfile.TarInfo(name); i.type = tarfile.SYMTYPE; i.linkname = target; t.addfile(i)
def reg(name, data):
    i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o644; t.addfile(i, io.BytesIO(data))
def dir(name):
    i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
sym("ulib", "/usr/lib")                       # a directory symlink ...
reg("ulib/{UNIQUE}", b"through ulib\n")       # ... written through in the same layer
sym("up", "../../..")                         # climbing above the root ...
reg("up/{UNIQUE}-up", b"through up\n")        # ... stops at the root
sym("lib", "usr/lib")                         # a symlink where layer 1 had a directory
reg("lib/new", b"through lib\n")
dir("opt/app")                                # a directory where layer 1 had a file
reg("opt/app/conf", b"conf\n")
t.close()
"#
    );
    run(Command::new("python3").arg("-c").arg(script).arg(&out));
    std::fs::read(&out).unwrap()
}

/// Layer 3, by GNU tar naming one deep file (no directory entries): its
/// parent `opt/tool` is a file in layer 1.
fn gnu_tar_deep_file_layer(work: &Path) -> Vec<u8> {
    let top = work.join("top");
    write(&top, "opt/tool/bin/x", "x\n");
    let out = work.join("l3.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-c", "-f"])
        .arg(&out)
        .arg("-C")
        .arg(&top)
        .arg("opt/tool/bin/x"));
    std::fs::read(&out).unwrap()
}

#[test]
fn switch_to_an_image_whose_layers_gnu_tar_and_python_wrote_lands_where_containerd_puts_it() {
    require_tool("tar");
    require_tool("python3");
    let work = tempfile::tempdir().unwrap();
    let layers =
        [gnu_tar_absolute_layer(work.path()), python_tarfile_layer(work.path()), gnu_tar_deep_file_layer(work.path())];
    let layout = work.path().join("layout");
    hostile::hand_layout(&layout, "v1", &layers, LayerCompression::Gzip);
    let reg = Registry::start();
    let image = reg.image("tools:v1");
    push_with_skopeo(&hostile::oci_ref(&layout, "v1"), &image, Compression::Gzip, &[]);

    let sys = tempfile::tempdir().unwrap();
    let r = hc_json(sys.path(), &["switch", "--json", &image]);
    let tree = deploy_dir(sys.path()).join(r["staged"]["id"].as_str().unwrap());
    let read = |p: &str| std::fs::read_to_string(tree.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let link = |p: &str| std::fs::read_link(tree.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));

    // Absolute names (GNU tar -P) are relative to the layer root.
    assert_eq!(read(KERNEL), "kernel");
    assert_eq!(read("usr/bin/a"), "tool a\n");
    let (a, b) = (tree.join("usr/bin/a").metadata().unwrap(), tree.join("usr/bin/b").metadata().unwrap());
    assert_eq!(a.ino(), b.ino(), "the absolute hard link is a hard link");
    // Through a symlink of the same layer: ulib -> /usr/lib, then ulib/NAME.
    assert_eq!(link("ulib").to_str(), Some("/usr/lib"));
    assert_eq!(read(&format!("usr/lib/{UNIQUE}")), "through ulib\n");
    assert_eq!(read("usr/lib/keep"), "k");
    // up -> ../../.. stops at the deployment's root.
    assert_eq!(read(&format!("{UNIQUE}-up")), "through up\n");
    // A symlink replaced layer 1's lib directory; what went through it is in usr/lib.
    assert_eq!(link("lib").to_str(), Some("usr/lib"));
    assert_eq!(read("usr/lib/new"), "through lib\n");
    assert!(!tree.join("usr/lib/old").exists());
    // A directory replaced layer 1's file opt/app, and an implied one opt/tool.
    assert_eq!(read("opt/app/conf"), "conf\n");
    assert_eq!(read("opt/tool/bin/x"), "x\n");

    // Nothing was written outside the deployment.
    for p in [format!("/usr/lib/{UNIQUE}"), format!("/{UNIQUE}-up")] {
        assert!(!Path::new(&p).exists(), "{p} was written on the host");
    }
    for p in [format!("usr/lib/{UNIQUE}"), format!("{UNIQUE}-up")] {
        assert!(!sys.path().join(&p).exists(), "{p} was written in the sysroot outside the deployment");
    }

    // umoci, the reference unpacker of the checkout tests, unpacks the first
    // two layers to the same paths. (umoci 0.4.7, Debian's, refuses layer 3
    // with "mkdir parent: not a directory"; umoci#546 made later versions
    // replace the file, as hostctl does: see integration/tests/tar_table.rs.)
    require_tool("umoci");
    let two = work.path().join("two-layers");
    hostile::hand_layout(&two, "v1", &layers[..2], LayerCompression::Plain);
    let unpacked = work.path().join("umoci");
    run(Command::new("umoci").args(["raw", "unpack", "--image"]).arg(format!("{}:v1", two.display())).arg(&unpacked));
    let outside_etc_and_layer3 = |k: &String| {
        !(k == "etc"
            || k.starts_with("etc/")
            || k == "usr/etc"
            || k.starts_with("usr/etc/")
            || k.starts_with("opt/tool"))
    };
    let want: Vec<(String, char)> = kinds(&unpacked).into_iter().filter(|(k, _)| outside_etc_and_layer3(k)).collect();
    let got: Vec<(String, char)> = kinds(&tree).into_iter().filter(|(k, _)| outside_etc_and_layer3(k)).collect();
    assert_eq!(got, want);
}

/// Every path under `root` with its kind (`d`, `f`, `l`), sorted.
fn kinds(root: &Path) -> Vec<(String, char)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, char)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let k = if m.is_dir() {
                'd'
            } else if m.is_symlink() {
                'l'
            } else {
                'f'
            };
            out.push((p.strip_prefix(root).unwrap().display().to_string(), k));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
