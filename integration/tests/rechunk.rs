//! `hostctl image rechunk` on images made by real tools: umoci builds a small
//! Debian-like image (dpkg file lists, a diversion, merged-/usr symlinks, a
//! hard link across packages, a path in two lists, a whiteout in a later
//! layer), skopeo pushes it to a real registry. The rechunked image is pulled
//! by hostctl and checked out beside the source, tar entries are read back
//! from its layers, and two builds that differ in one package are compared
//! layer by layer.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hostctl::deploy::checkout::{checkout, CheckoutOptions};
use hostctl::digest::Digest;
use hostctl::store::Store;
use serde_json::Value;

use crate::support::images::{push_with_skopeo, write_tree, Compression, Layout};
use crate::support::registry::Registry;
use crate::support::{hostctl, hostctl_env, tree_snapshot, TreeSnapshot};

/// The base tree: four packages (alpha, beta, dash, gamma), their lists, a
/// diversion of /bin/sh by dash, and files no package lists.
fn base_tree(root: &Path, beta_version: &str) {
    write_tree(
        root,
        &[
            ("usr/bin/alpha", "alpha binary\n"),
            ("usr/lib/alpha.so", "alpha library\n"),
            ("usr/share/shared-file", "listed by alpha and beta\n"),
            ("usr/bin/beta", beta_version),
            ("usr/bin/sh", "dash's sh\n"),
            ("usr/bin/sh.distrib", "beta's sh, diverted\n"),
            ("usr/share/gamma/data", &"gamma ".repeat(2000)),
            ("etc/unowned.conf", "local=1\n"),
            ("etc/doomed.conf", "deleted by the next layer\n"),
            ("var/lib/dpkg/status", "Package: alpha\n"),
            ("var/lib/dpkg/diversions", "/bin/sh\n/bin/sh.distrib\ndash\n"),
            (
                "var/lib/dpkg/info/alpha.list",
                "/.\n/usr\n/usr/bin\n/usr/bin/alpha\n/lib/alpha.so\n/usr/share/shared-file\n",
            ),
            ("var/lib/dpkg/info/alpha.md5sums", "0  usr/bin/alpha\n"),
            (
                "var/lib/dpkg/info/beta.list",
                "/usr\n/usr/bin/beta\n/usr/bin/beta-alias\n/usr/share/shared-file\n/bin/sh\n",
            ),
            ("var/lib/dpkg/info/dash.list", "/bin/sh\n"),
            ("var/lib/dpkg/info/gamma.list", "/usr/share/gamma\n/usr/share/gamma/data\n"),
        ],
    );
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    // beta's alias is a hard link to alpha's binary: one inode, two packages.
    std::fs::hard_link(root.join("usr/bin/alpha"), root.join("usr/bin/beta-alias")).unwrap();
    std::fs::set_permissions(root.join("usr/bin/alpha"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// An image of two layers: the base tree, then a layer that deletes
/// `etc/doomed.conf` (umoci writes a whiteout).
fn build_image(work: &Path, name: &str, beta_version: &str) -> Layout {
    let tree = work.join(format!("tree-{name}"));
    base_tree(&tree, beta_version);
    let layout = Layout::new(&work.join(format!("layout-{name}")), "1");
    layout.add_layer(&tree).add_whiteout("etc/doomed.conf");
    layout
}

/// Rechunks `src` into `dst` (SOURCE_DATE_EPOCH unset, so clamped to the image's created time).
fn rechunk(src: &str, dst: &str, extra: &[&str]) -> String {
    rechunk_at(src, dst, extra, "")
}

/// Rechunks `src` into `dst` with SOURCE_DATE_EPOCH=`epoch`; returns the manifest digest.
fn rechunk_at(src: &str, dst: &str, extra: &[&str], epoch: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let mut args = vec!["--tls-verify=false", "image", "rechunk", src, dst];
    args.extend_from_slice(extra);
    let out = hostctl_env(scratch.path(), &[("SOURCE_DATE_EPOCH", epoch.as_ref())], &args);
    assert!(out.status.success(), "rechunk {src}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// The manifest tagged `tag` in the layout at `dir`.
fn manifest(dir: &Path, tag: &str) -> Value {
    let index = read_json(&dir.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    read_json(&blob(dir, desc["digest"].as_str().unwrap()))
}

fn diff_ids(dir: &Path, tag: &str) -> Vec<Digest> {
    let m = manifest(dir, tag);
    let config = read_json(&blob(dir, m["config"]["digest"].as_str().unwrap()));
    config["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().parse().unwrap()).collect()
}

fn layer_digests(dir: &Path, tag: &str) -> Vec<String> {
    manifest(dir, tag)["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// (path, entry type, link target) of every entry of every layer, by layer.
fn layer_entries(dir: &Path, tag: &str) -> Vec<Vec<(String, tar::EntryType, Option<String>)>> {
    layer_digests(dir, tag)
        .iter()
        .map(|d| {
            let f = std::fs::File::open(blob(dir, d)).unwrap();
            let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
            t.entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
                    (
                        e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string(),
                        e.header().entry_type(),
                        link,
                    )
                })
                .collect()
        })
        .collect()
}

type Snapshot = TreeSnapshot;

/// Pulls `image` into `sysroot` with hostctl and checks out its layers (as a
/// deployment does, /etc left in place) into `dest`.
fn deploy(sysroot: &Path, image: &str, layout: &Path, tag: &str, dest: &Path) -> Snapshot {
    let out = hostctl(sysroot, &["image", "pull", image]);
    assert!(out.status.success(), "pull {image}: {}", String::from_utf8_lossy(&out.stderr));
    let store = Store::open_dir(&sysroot.join("hostctl/repo")).unwrap();
    let layers = diff_ids(layout, tag).iter().map(|d| store.layer_index(d).unwrap()).collect::<Vec<_>>();
    checkout(&store, &layers, dest, &CheckoutOptions::default()).unwrap();
    tree_snapshot(dest)
}

/// The layer (by index) holding `path`.
fn layer_of(entries: &[Vec<(String, tar::EntryType, Option<String>)>], path: &str) -> usize {
    let found: Vec<usize> =
        entries.iter().enumerate().filter(|(_, l)| l.iter().any(|e| e.0 == path)).map(|(i, _)| i).collect();
    assert_eq!(found.len(), 1, "{path} is in layers {found:?}");
    found[0]
}

#[test]
fn rechunk_twice_gives_identical_digests_and_deploys_the_same_tree_as_the_source() {
    crate::support::require_tool("umoci");
    let work = tempfile::tempdir().unwrap();
    let src = build_image(work.path(), "v1", "beta 1\n");
    let (out1, out2) = (work.path().join("out1"), work.path().join("out2"));
    let d1 = rechunk(&src.oci_ref(), &format!("oci:{}:r", out1.display()), &[]);
    let d2 = rechunk(&src.oci_ref(), &format!("oci:{}:r", out2.display()), &[]);
    assert!(d1.starts_with("sha256:"), "{d1}");
    assert_eq!(d1, d2, "same input, same output");
    assert_eq!(layer_digests(&out1, "r"), layer_digests(&out2, "r"));
    // Nothing of the work directory is left in the layout.
    let leftovers: Vec<_> = std::fs::read_dir(&out1).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 3, "{leftovers:?}"); // blobs, index.json, oci-layout

    // Grouping: one layer per package (4) + directories + unowned paths (etc, var/lib/dpkg, /).
    let entries = layer_entries(&out1, "r");
    let alpha = layer_of(&entries, "usr/bin/alpha");
    assert_eq!(layer_of(&entries, "usr/lib/alpha.so"), alpha, "/lib/alpha.so resolved through lib -> usr/lib");
    assert_eq!(
        layer_of(&entries, "usr/share/shared-file"),
        alpha,
        "a path in two lists goes to the first package by name"
    );
    assert_eq!(layer_of(&entries, "var/lib/dpkg/info/alpha.md5sums"), alpha, "dpkg's records go with their package");
    let beta = layer_of(&entries, "usr/bin/beta");
    assert_ne!(alpha, beta);
    assert_eq!(layer_of(&entries, "usr/bin/sh.distrib"), beta, "beta's /bin/sh is diverted to /bin/sh.distrib");
    assert_eq!(layer_of(&entries, "usr/bin/beta-alias"), beta, "a hard link across packages goes with its own list");
    let dash = layer_of(&entries, "usr/bin/sh");
    assert!(dash != alpha && dash != beta);
    assert_eq!(layer_of(&entries, "usr/share/gamma"), 0, "directories are in the first layer");
    assert_ne!(
        layer_of(&entries, "etc/unowned.conf"),
        layer_of(&entries, "var/lib/dpkg/status"),
        "unowned by directory"
    );
    for layer in &entries {
        for (path, kind, link) in layer {
            assert!(!path.contains(".wh."), "no whiteout is written: {path}");
            assert_ne!(path, "etc/doomed.conf", "the deleted file is gone");
            if kind.is_hard_link() {
                let target = link.as_deref().unwrap();
                assert!(layer.iter().any(|e| e.0 == target), "hard link {path} -> {target} stays in its layer");
            }
        }
    }
    let dirs_sorted: Vec<&String> = entries[0].iter().map(|e| &e.0).collect();
    assert_eq!(dirs_sorted[0], ".", "the root first");

    // A deployment of each is the same tree (modes, owners, contents, links).
    let sysroot = tempfile::tempdir().unwrap();
    let a = deploy(sysroot.path(), &src.oci_ref(), &src.dir, "1", &work.path().join("deploy-src"));
    let b = deploy(sysroot.path(), &format!("oci:{}:r", out1.display()), &out1, "r", &work.path().join("deploy-r"));
    assert_eq!(a, b);
    assert_eq!(a["usr/bin/alpha"].1, 0o4755);
    assert_eq!(a["tmp"].1, 0o1777);
    assert!(!a.contains_key("etc/doomed.conf"));
    // Both names of the cross-package hard link share one object in the deployment.
    let ino = |p: &str| std::fs::metadata(work.path().join("deploy-r").join(p)).unwrap().ino();
    assert_eq!(ino("usr/bin/alpha"), ino("usr/bin/beta-alias"));

    // The config keeps the source's and gets one history entry per layer.
    let m = manifest(&out1, "r");
    let config = read_json(&blob(&out1, m["config"]["digest"].as_str().unwrap()));
    assert_eq!(config["history"].as_array().unwrap().len(), entries.len());
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), entries.len());
    assert!(config["history"][0]["created_by"].as_str().unwrap().contains("rechunk"));
}

#[test]
fn two_builds_differing_in_one_package_share_every_other_layer() {
    crate::support::require_tool("umoci");
    let work = tempfile::tempdir().unwrap();
    let v1 = build_image(work.path(), "v1", "beta 1\n");
    let v2 = build_image(work.path(), "v2", "beta 2, patched\n");
    let out = work.path().join("out");
    // Both builds wrote every file just now: a reproducible build clamps
    // them to one SOURCE_DATE_EPOCH, as Debian's builds do.
    rechunk_at(&v1.oci_ref(), &format!("oci:{}:v1", out.display()), &[], "1700000000");
    rechunk_at(&v2.oci_ref(), &format!("oci:{}:v2", out.display()), &[], "1700000000");
    let (l1, l2) = (layer_digests(&out, "v1"), layer_digests(&out, "v2"));
    assert_eq!(l1.len(), l2.len());
    let changed: Vec<usize> = (0..l1.len()).filter(|i| l1[*i] != l2[*i]).collect();
    let beta = layer_of(&layer_entries(&out, "v2"), "usr/bin/beta");
    assert_eq!(changed, [beta], "only beta's layer differs");
    // Both tags live in the one layout.
    assert_eq!(read_json(&out.join("index.json"))["manifests"].as_array().unwrap().len(), 2);
}

#[test]
fn rechunk_from_a_registry_gives_the_same_image_as_from_the_layout() {
    crate::support::require_tool("umoci");
    let work = tempfile::tempdir().unwrap();
    let src = build_image(work.path(), "v1", "beta 1\n");
    let reg = Registry::start();
    let image = reg.image("os:1");
    push_with_skopeo(&src.oci_ref(), &image, Compression::Zstd, &[]);
    let from_layout =
        rechunk(&src.oci_ref(), &format!("oci:{}", work.path().join("a").display()), &["--max-layers", "3"]);
    let from_registry = rechunk(
        &format!("docker://{image}"),
        &format!("oci:{}", work.path().join("b").display()),
        &["--max-layers", "3"],
    );
    assert_eq!(from_layout, from_registry);
    let layers = read_json(&work.path().join("b/index.json"));
    assert_eq!(layers["manifests"].as_array().unwrap().len(), 1);
    let m = read_json(&blob(&work.path().join("b"), layers["manifests"][0]["digest"].as_str().unwrap()));
    assert_eq!(m["layers"].as_array().unwrap().len(), 3, "--max-layers 3: directories + 1 own + 1 bucket");
}

#[test]
fn rechunk_clamps_mtimes_to_source_date_epoch() {
    crate::support::require_tool("umoci");
    let work = tempfile::tempdir().unwrap();
    let src = build_image(work.path(), "v1", "beta 1\n");
    let out = work.path().join("out");
    let scratch = tempfile::tempdir().unwrap();
    let args = ["image", "rechunk", &src.oci_ref(), &format!("oci:{}:t", out.display()), "--compression", "zstd"];
    let o = hostctl_env(scratch.path(), &[("SOURCE_DATE_EPOCH", "1000".as_ref())], &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = manifest(&out, "t");
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
        let f = std::fs::File::open(blob(&out, l["digest"].as_str().unwrap())).unwrap();
        let mut t = tar::Archive::new(zstd::Decoder::new(f).unwrap());
        for e in t.entries().unwrap() {
            let e = e.unwrap();
            assert!(e.header().mtime().unwrap() <= 1000, "{:?}", e.path());
        }
    }
}

/// `image rechunk SRC docker://REG/REPO:TAG` pushes what it would write to a
/// layout: the same manifest digest; skopeo copies it back out of the
/// registry (checking every blob's digest) and the layers are the layout's.
/// A second push finds every blob there. Destinations it cannot write are
/// usage errors.
#[test]
fn rechunk_to_a_registry_pushes_the_image_it_writes_to_a_layout() {
    crate::support::require_tool("umoci");
    crate::support::require_tool("skopeo");
    let work = tempfile::tempdir().unwrap();
    let src = build_image(work.path(), "v1", "beta 1\n");
    let reg = Registry::start();
    let layout = work.path().join("a");
    let to_layout = rechunk_at(&src.oci_ref(), &format!("oci:{}:t", layout.display()), &[], "1700000000");
    let dest = reg.image("rechunked:1");
    let to_registry = rechunk_at(&src.oci_ref(), &format!("docker://{dest}"), &[], "1700000000");
    assert_eq!(to_layout, to_registry, "the same image, wherever it is written");
    let back = work.path().join("back");
    let copied = std::process::Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{dest}"),
            &format!("oci:{}:t", back.display()),
        ])
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    assert_eq!(manifest(&back, "t"), manifest(&layout, "t"), "the registry holds the rechunked manifest");
    assert_eq!(read_json(&back.join("index.json"))["manifests"][0]["digest"], to_layout.as_str());
    // Pushed again (by digest only: no tag), every blob is found there already.
    let again = rechunk_at(&src.oci_ref(), &format!("docker://{}", reg.image("rechunked")), &[], "1700000000");
    assert_eq!(again, to_layout);

    let scratch = tempfile::tempdir().unwrap();
    for (dst, why) in [
        (format!("docker://{dest}@{to_layout}"), "not to a digest"),
        (format!("oci-archive:{}", work.path().join("x.tar").display()), "not an archive"),
    ] {
        let out = hostctl(scratch.path(), &["image", "rechunk", "oci:/nonexistent:x", &dst]);
        assert_eq!(out.status.code(), Some(2), "{dst}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{dst}: {err}");
    }
    let out = hostctl(scratch.path(), &["image", "rechunk", "oci:/a", "oci:/b", "--max-layers", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `--compression zstd:chunked`: every layer carries a TOC (the descriptor's
/// annotations pin it), real tools read the blobs as plain `tar+zstd`
/// (skopeo copies the image back, checking every digest; podman pulls it),
/// and hostctl upgrading from v1 to v2 (two builds differing in one
/// package) downloads only a part of the one layer that changed, by range,
/// and deploys the same tree as from the gzip rechunk of v2.
#[test]
fn rechunk_to_zstd_chunked_is_pulled_partially_and_deploys_what_the_gzip_rechunk_does() {
    crate::support::require_tool("umoci");
    crate::support::require_tool("skopeo");
    crate::support::require_tool("podman");
    let work = tempfile::tempdir().unwrap();
    let v1 = build_image(work.path(), "v1", "beta 1\n");
    let v2 = build_image(work.path(), "v2", "beta 2, patched\n");
    let reg = Registry::start();
    let zc = ["--compression", "zstd:chunked"];
    let (i1, i2) = (reg.image("os:v1"), reg.image("os:v2"));
    rechunk_at(&v1.oci_ref(), &format!("docker://{i1}"), &zc, "1700000000");
    rechunk_at(&v2.oci_ref(), &format!("docker://{i2}"), &zc, "1700000000");
    let gz = work.path().join("gz");
    rechunk_at(&v2.oci_ref(), &format!("oci:{}:v2", gz.display()), &[], "1700000000");

    // Every layer is tar+zstd with its TOC located and pinned.
    let back = work.path().join("back");
    for (image, tag) in [(&i1, "v1"), (&i2, "v2")] {
        let copied = std::process::Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false", &format!("docker://{image}")])
            .arg(format!("oci:{}:{tag}", back.display()))
            .output()
            .unwrap();
        assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    }
    for l in manifest(&back, "v2")["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
        let a = &l["annotations"];
        assert!(a["io.github.containers.zstd-chunked.manifest-checksum"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(
            a["io.containers.zstd-chunked.manifest-position"],
            a["io.github.containers.zstd-chunked.manifest-position"]
        );
    }
    let (l1, l2) = (layer_digests(&back, "v1"), layer_digests(&back, "v2"));
    let changed: Vec<usize> = (0..l1.len()).filter(|i| l1[*i] != l2[*i]).collect();
    assert_eq!(changed.len(), 1, "only beta's layer differs: {changed:?}");
    let changed_size = manifest(&back, "v2")["layers"][changed[0]]["size"].as_u64().unwrap();

    // podman pulls it, with partial pulls off and on, and sees v2's files.
    for partial in ["false", "true"] {
        let storage = tempfile::tempdir().unwrap();
        let conf = storage.path().join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n[storage.options]\n\
                 pull_options = {{enable_partial_images = \"{partial}\", use_hard_links = \"false\", ostree_repos = \"\"}}\n",
                storage.path().join("root").display(),
                storage.path().join("run").display()
            ),
        )
        .unwrap();
        let podman = |args: &[&str]| {
            let out =
                std::process::Command::new("podman").env("CONTAINERS_STORAGE_CONF", &conf).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "podman {args:?} (partial {partial}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        podman(&["pull", "-q", "--tls-verify=false", &i2]);
        let mnt = podman(&["image", "mount", &i2]);
        let beta = std::fs::read_to_string(Path::new(mnt.trim()).join("usr/bin/beta"));
        podman(&["image", "unmount", &i2]);
        assert_eq!(beta.unwrap(), "beta 2, patched\n", "partial pulls {partial}");
    }

    // hostctl: v1, then v2 by range.
    let sys = tempfile::tempdir().unwrap();
    let out = hostctl(sys.path(), &["--tls-verify=false", "image", "pull", &i1]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = hostctl(sys.path(), &["--tls-verify=false", "image", "pull", "--json", &i2]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["layersDownloaded"], 1, "{report}");
    let fetched = report["bytesDownloaded"].as_u64().unwrap();
    assert!(fetched < changed_size, "v2 fetched {fetched} bytes of its {changed_size}-byte changed layer: {report}");

    let store = Store::open_dir(&sys.path().join("hostctl/repo")).unwrap();
    let layers = diff_ids(&back, "v2").iter().map(|d| store.layer_index(d).unwrap()).collect::<Vec<_>>();
    let dest = work.path().join("tree-zc");
    checkout(&store, &layers, &dest, &CheckoutOptions::default()).unwrap();
    let gz_tree = deploy(
        tempfile::tempdir().unwrap().path(),
        &format!("oci:{}:v2", gz.display()),
        &gz,
        "v2",
        &work.path().join("tree-gz"),
    );
    assert_eq!(tree_snapshot(&dest), gz_tree);
}
