//! zstd:chunked layers against a real registry: read whole (the layer made of
//! many zstd frames and skippable frames, bootc#2408), pulled partially
//! (images pushed by real podman with `--compression-format zstd:chunked`,
//! and hand-made ones), the two compared tree for tree, and hostile TOCs and
//! registries.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hostctl::deploy::checkout::{checkout, CheckoutOptions};
use hostctl::digest::Digest;
use hostctl::store::{LayerIndex, Store};
use hostctl::sysroot::Sysroot;
use serde_json::Value;

use crate::support::chunked::{chunked_layer, sha256, upload, upload_layers, ChunkedLayer};
use crate::support::images::write_tree;
use crate::support::registry::{FaultProxy, Faults, Registry};
use crate::support::{hostctl, require_tool, run};

/// `hostctl image pull --json` (with `flags` first); the JSON and stderr.
fn pull(sysroot: &Path, image: &str, flags: &[&str]) -> (Value, String) {
    let mut args = vec!["--tls-verify=false", "-v"];
    args.extend_from_slice(flags);
    args.extend(["image", "pull", "--json", image]);
    let out = hostctl(sysroot, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pull {image} failed: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn layer0(v: &Value) -> (bool, u64) {
    (v["layers"][0]["partial"].as_bool().unwrap(), v["layers"][0]["bytesFetched"].as_u64().unwrap())
}

/// The image's layer indexes in the store of `sysroot`.
fn indexes(sysroot: &Path, image: &str) -> (Store, Vec<LayerIndex>) {
    let store = Store::open(&Sysroot::open(sysroot).unwrap()).unwrap();
    let record = store.list_images().unwrap().into_iter().find(|r| r.imgref == image).expect("recorded");
    let idx = record.layers.iter().map(|d| store.layer_index(d).unwrap()).collect();
    (store, idx)
}

/// What a checkout of `image` holds: path → kind, mode, owner, content digest.
fn tree(sysroot: &Path, image: &str) -> BTreeMap<String, String> {
    let (store, idx) = indexes(sysroot, image);
    let dest = sysroot.join(format!("checkout-{}", Digest::of(image.as_bytes()).short()));
    checkout(&store, &idx, &dest, &CheckoutOptions { relocate_etc: false }).unwrap();
    let mut out = BTreeMap::new();
    let mut links: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = dest.join(&rel);
        let md = std::fs::symlink_metadata(&full).unwrap();
        let what = if md.is_dir() {
            for e in std::fs::read_dir(&full).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            "dir".to_string()
        } else if md.is_symlink() {
            format!("-> {}", std::fs::read_link(&full).unwrap().display())
        } else {
            links.entry(md.ino()).or_default().push(rel.display().to_string());
            format!("file {}", Digest::of(&std::fs::read(&full).unwrap()).short())
        };
        out.insert(rel.display().to_string(), format!("{what} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid()));
    }
    let groups: BTreeSet<Vec<String>> = links.into_values().filter(|g| g.len() > 1).collect();
    out.insert("(hard links)".into(), format!("{groups:?}"));
    std::fs::remove_dir_all(&dest).unwrap();
    out
}

/// Objects in the store that no layer index refers to (nothing a failed
/// partial pull made may stay).
fn stray_objects(sysroot: &Path) -> Vec<PathBuf> {
    let store = Store::open(&Sysroot::open(sysroot).unwrap()).unwrap();
    let mut used = BTreeSet::new();
    for entry in std::fs::read_dir(store.dir().join("layers")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let index: LayerIndex = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            for e in index.entries {
                if let hostctl::store::EntryKind::File { object, .. } = e.kind {
                    used.insert(store.object_path(&object));
                }
            }
        }
    }
    let mut stray = Vec::new();
    for fan in std::fs::read_dir(store.dir().join("objects")).unwrap() {
        for obj in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            let p = obj.unwrap().path();
            if !used.contains(&p) {
                stray.push(p);
            }
        }
    }
    stray
}

fn files() -> Vec<(String, Vec<u8>, u32)> {
    vec![
        ("etc/hostname".into(), b"box\n".to_vec(), 0o644),
        ("etc/big.txt".into(), (0..30_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect(), 0o600),
        ("etc/tool".into(), b"#!/bin/sh\necho tool\n".to_vec(), 0o755),
        ("etc/same-as-hostname".into(), b"box\n".to_vec(), 0o644),
    ]
}

fn layer_of(files: &[(String, Vec<u8>, u32)], edit: impl FnOnce(&mut Value)) -> ChunkedLayer {
    let refs: Vec<(&str, &[u8], u32)> = files.iter().map(|(p, c, m)| (p.as_str(), c.as_slice(), *m)).collect();
    chunked_layer(&refs, edit)
}

#[test]
fn zstd_chunked_layer_of_many_frames_and_skippable_frames_is_read_whole_bootc_2408() {
    let reg = Registry::start();
    let host = reg.image("x").split('/').next().unwrap().to_string();
    let layer = layer_of(&files(), |_| {});
    upload(&host, "frames", "v1", &layer, &layer.annotations);
    let image = reg.image("frames:v1");

    let whole = tempfile::tempdir().unwrap();
    let (v, _) = pull(whole.path(), &image, &["--require-full-layer-digest"]);
    assert_eq!(layer0(&v), (false, layer.blob.len() as u64), "{v}");
    let got = tree(whole.path(), &image);
    // Every file, not only the first frame's: the decoder went on past frame ends and skippable frames.
    for (path, content, mode) in files() {
        let want = format!("file {} {mode:o} 0:0", Digest::of(&content).short());
        assert_eq!(got.get(&path), Some(&want), "{path}: {got:#?}");
    }
    let (_, idx) = indexes(whole.path(), &image);
    assert_eq!(idx[0].diff_id.to_string(), sha256(&layer.tar), "diff_id checked over the whole stream");

    let partial = tempfile::tempdir().unwrap();
    let (v, _) = pull(partial.path(), &image, &[]);
    assert!(layer0(&v).0, "{v}");
    assert_eq!(tree(partial.path(), &image), got, "partial and whole pulls disagree");
}

/// Builds a tree with podman (import of a tar, in a private storage) and
/// pushes it as zstd:chunked.
fn podman_push_chunked(storage: &Path, tree: &Path, dest: &str) {
    std::fs::create_dir_all(storage).unwrap();
    let tar = storage.join("layer.tar");
    // Blocking factor 1: podman 4.3's zstd:chunked stream drops the padding
    // that GNU tar adds up to a 10 KiB record, but its config keeps the
    // diff_id of the padded tar, which a full pull then rightly refuses.
    run(Command::new("tar").arg("-C").arg(tree).args(["--numeric-owner", "-b1", "-cf"]).arg(&tar).arg("."));
    let root = [
        format!("--root={}", storage.join("root").display()),
        format!("--runroot={}", storage.join("run").display()),
        "--storage-driver=vfs".into(),
    ];
    run(Command::new("podman").args(&root).args(["import", "-q"]).arg(&tar).arg("localhost/chunked:latest"));
    run(Command::new("podman").args(&root).args([
        "push",
        "-q",
        "--tls-verify=false",
        "--compression-format",
        "zstd:chunked",
        "localhost/chunked:latest",
        &format!("docker://{dest}"),
    ]));
}

#[test]
fn podman_zstd_chunked_image_pulled_partially_checks_out_like_a_full_pull_and_v2_fetches_only_its_changes() {
    require_tool("podman");
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    let pkgs: Vec<(String, String)> = (0..40)
        .map(|i| (format!("usr/share/pkg{i}/data.txt"), (0..2000).map(|l| format!("pkg {i} line {l}\n")).collect()))
        .collect();
    let mut files: Vec<(&str, &str)> = pkgs.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    files.extend([("etc/hostname", "box\n"), ("usr/bin/tool", "#!/bin/sh\necho v1\n")]);
    write_tree(&src, &files);
    std::os::unix::fs::symlink("tool", src.join("usr/bin/tool-link")).unwrap();
    std::fs::hard_link(src.join("etc/hostname"), src.join("etc/hostname.hard")).unwrap();
    podman_push_chunked(&work.path().join("podman"), &src, &reg.image("os:v1"));

    let (v1, v2) = (reg.image("os:v1"), reg.image("os:v2"));
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, _) = pull(a.path(), &v1, &[]);
    let (pb, _) = pull(b.path(), &v1, &["--require-full-layer-digest"]);
    assert!(layer0(&pa).0 && !layer0(&pb).0, "{pa}\n{pb}");
    assert_eq!(tree(a.path(), &v1), tree(b.path(), &v1), "partial and full pulls of v1 disagree");

    // v2: one package's file changed, one file added.
    std::fs::write(src.join("usr/share/pkg7/data.txt"), "pkg 7, version 2\n").unwrap();
    std::fs::write(src.join("usr/bin/new"), "new in v2\n").unwrap();
    podman_push_chunked(&work.path().join("podman2"), &src, &v2);
    let (pa2, _) = pull(a.path(), &v2, &[]);
    let (partial, fetched) = layer0(&pa2);
    let size = pa2["layers"][0]["size"].as_u64().unwrap();
    assert!(partial, "{pa2}");
    // The TOC and two small files, not the layer.
    assert!(fetched * 4 < size, "v2 fetched {fetched} of {size} bytes: {pa2}");
    let c = tempfile::tempdir().unwrap();
    pull(c.path(), &v2, &["--require-full-layer-digest"]);
    assert_eq!(tree(a.path(), &v2), tree(c.path(), &v2), "partial and full pulls of v2 disagree");
    // The store that pulled v1 whole knows its contents too (hashed while it
    // unpacked them): its partial pull of v2 fetches the changes as well.
    let (pb2, _) = pull(b.path(), &v2, &[]);
    let (partial_b, fetched_b) = layer0(&pb2);
    assert!(
        partial_b && fetched_b * 4 < size,
        "after a full pull of v1, v2 fetched {fetched_b} of {size} bytes: {pb2}"
    );
    assert_eq!(tree(b.path(), &v2), tree(c.path(), &v2), "v2 on top of a full v1 disagrees");

    // The old guarantee on demand: a layer built from its TOC is read whole again.
    let (again, _) = pull(a.path(), &v2, &["--require-full-layer-digest"]);
    assert_eq!(again["layersDownloaded"], 1, "{again}");
    let (_, idx) = indexes(a.path(), &v2);
    assert_eq!(idx[0].toc_digest, None, "the verified index replaced the TOC-built one");
    let (after, _) = pull(a.path(), &v2, &[]);
    assert_eq!(after["layersDownloaded"], 0, "a verified index serves partial pulls too: {after}");
}

/// An edit of the TOC (given the blob's size) or of the annotations.
enum Lie {
    Toc(fn(&mut Value, usize)),
    Annotations(fn(&mut Value, usize)),
}

#[test]
fn hostile_zstd_chunked_tocs_are_refused_and_the_layer_is_read_whole_with_nothing_wrong_kept() {
    let reg = Registry::start();
    let host = reg.image("x").split('/').next().unwrap().to_string();
    let base = files();
    let truth = layer_of(&base, |_| {});
    const CHECKSUM: &str = "io.github.containers.zstd-chunked.manifest-checksum";
    const POSITION: &str = "io.github.containers.zstd-chunked.manifest-position";
    // Entry 1 is etc/hostname, 2 etc/big.txt, 3 etc/tool, 4 a copy of etc/hostname.
    // (the lie, what the refusal says)
    let lies: Vec<(&str, Lie, &str)> = vec![
        ("digest", Lie::Toc(|toc, _| toc["entries"][3]["digest"] = sha256(b"other\n").into()), "file \"etc/tool\""),
        (
            "offset",
            Lie::Toc(|toc, _| {
                let (o, e) = (toc["entries"][2]["offset"].clone(), toc["entries"][2]["endOffset"].clone());
                toc["entries"][3]["offset"] = o;
                toc["entries"][3]["endOffset"] = e;
            }),
            "overlap",
        ),
        ("size", Lie::Toc(|toc, _| toc["entries"][2]["size"] = 1000.into()), "decompresses to more bytes"),
        ("size, larger", Lie::Toc(|toc, _| toc["entries"][3]["size"] = 25.into()), "decompresses to fewer bytes"),
        (
            "overlap",
            Lie::Toc(|toc, _| {
                let end = toc["entries"][2]["endOffset"].as_u64().unwrap();
                toc["entries"][3]["offset"] = (end - 5).into();
            }),
            "overlap",
        ),
        (
            "outside the blob",
            Lie::Toc(|toc, size| toc["entries"][2]["endOffset"] = (size as u64 + 100).into()),
            "outside the",
        ),
        ("TOC checksum", Lie::Annotations(|a, _| a[CHECKSUM] = sha256(b"not the TOC").into()), "zstd:chunked TOC"),
        (
            "TOC position outside the blob",
            Lie::Annotations(|a, size| a[POSITION] = format!("{}:10:10:1", size - 5).into()),
            "lies outside",
        ),
    ];
    let want_tree = {
        let clean = tempfile::tempdir().unwrap();
        upload(&host, "truth", "v1", &truth, &truth.annotations);
        pull(clean.path(), &reg.image("truth:v1"), &["--require-full-layer-digest"]);
        tree(clean.path(), &reg.image("truth:v1"))
    };
    for (i, (name, lie, says)) in lies.iter().enumerate() {
        let size = truth.blob.len();
        let layer = match lie {
            Lie::Toc(edit) => layer_of(&base, |toc| edit(toc, size)),
            Lie::Annotations(_) => layer_of(&base, |_| {}),
        };
        let mut annotations = layer.annotations.clone();
        if let Lie::Annotations(edit) = lie {
            edit(&mut annotations, layer.blob.len());
        }
        let repo = format!("lie{i}");
        upload(&host, &repo, "v1", &layer, &annotations);
        let image = reg.image(&format!("{repo}:v1"));
        let sysroot = tempfile::tempdir().unwrap();
        let (v, stderr) = pull(sysroot.path(), &image, &[]);
        assert!(!layer0(&v).0, "{name}: the lying TOC was used: {v}");
        assert!(stderr.contains(says), "{name}: want {says:?} in:\n{stderr}");
        assert_eq!(tree(sysroot.path(), &image), want_tree, "{name}: the tree is not the tar's");
        let (_, idx) = indexes(sysroot.path(), &image);
        assert_eq!(idx[0].toc_digest, None, "{name}: index built from the TOC");
        assert_eq!(stray_objects(sysroot.path()), Vec::<PathBuf>::new(), "{name}: objects of the refused pull kept");
    }
}

#[test]
fn registry_that_ignores_range_gets_the_zstd_chunked_layer_read_whole() {
    let reg = Registry::start();
    let host = reg.image("x").split('/').next().unwrap().to_string();
    let layer = layer_of(&files(), |_| {});
    upload(&host, "norange", "v1", &layer, &layer.annotations);
    let proxy =
        FaultProxy::start(&host, Faults { path_match: "/blobs/".into(), strip_range: true, ..Faults::default() });
    let image = format!("{}/norange:v1", proxy.addr);
    let sysroot = tempfile::tempdir().unwrap();
    let (v, stderr) = pull(sysroot.path(), &image, &[]);
    assert_eq!(layer0(&v), (false, layer.blob.len() as u64), "{v}");
    assert!(stderr.contains("does not serve byte ranges"), "{stderr}");
    let direct = tempfile::tempdir().unwrap();
    pull(direct.path(), &reg.image("norange:v1"), &[]);
    let mut want = tree(direct.path(), &reg.image("norange:v1"));
    let mut got = tree(sysroot.path(), &image);
    want.remove("(hard links)");
    got.remove("(hard links)");
    assert_eq!(got, want);
    assert_eq!(stray_objects(sysroot.path()), Vec::<PathBuf>::new());
}

#[test]
fn hand_made_layers_with_the_toc_only_in_annotations_of_either_prefix_pull_partially() {
    let reg = Registry::start();
    let host = reg.image("x").split('/').next().unwrap().to_string();
    let layer = layer_of(&files(), |_| {});
    // podman 4.x writes the older `io.containers.` prefix.
    let mut old = serde_json::Map::new();
    for (k, v) in layer.annotations.as_object().unwrap() {
        old.insert(k.replace("io.github.containers.", "io.containers."), v.clone());
    }
    upload(&host, "old", "v1", &layer, &Value::Object(old));
    let sysroot = tempfile::tempdir().unwrap();
    let (v, _) = pull(sysroot.path(), &reg.image("old:v1"), &[]);
    assert!(layer0(&v).0, "{v}");
}

#[test]
fn podman_zstd_chunked_v2_appending_to_a_large_file_fetches_only_its_changed_chunks() {
    require_tool("podman");
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    write_tree(&src, &[("etc/hostname", "box\n"), ("usr/bin/tool", "#!/bin/sh\necho v1\n")]);
    // Incompressible, and large enough for podman's chunker to cut it into many chunks.
    let mut big = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open("/dev/urandom").unwrap(), 6 << 20),
        &mut big,
    )
    .unwrap();
    std::fs::create_dir_all(src.join("usr/lib/firmware")).unwrap();
    std::fs::write(src.join("usr/lib/firmware/blob.bin"), &big).unwrap();
    podman_push_chunked(&work.path().join("podman"), &src, &reg.image("os:v1"));
    let (v1, v2) = (reg.image("os:v1"), reg.image("os:v2"));
    let a = tempfile::tempdir().unwrap();
    let (p1, _) = pull(a.path(), &v1, &[]);
    assert!(layer0(&p1).0, "{p1}");
    let (_, idx) = indexes(a.path(), &v1);
    let lists: Vec<usize> = idx[0].chunks.values().map(Vec::len).collect();
    assert!(lists.len() == 1 && lists[0] > 4, "the big file's chunks are recorded, and only its: {lists:?}");

    // v2 appends a line to the big file: only its last chunk changed.
    big.extend_from_slice(b"# v2\n");
    std::fs::write(src.join("usr/lib/firmware/blob.bin"), &big).unwrap();
    podman_push_chunked(&work.path().join("podman2"), &src, &v2);
    let (p2, stderr) = pull(a.path(), &v2, &[]);
    let (partial, fetched) = layer0(&p2);
    assert!(partial, "{p2}");
    eprintln!("v2 fetched {fetched} bytes for a changed file of {} bytes in {} chunks", big.len(), lists[0]);
    assert!(fetched * 8 < big.len() as u64, "v2 fetched {fetched} bytes for a changed file of {}: {stderr}", big.len());
    assert!(stderr.contains("copied from stored chunks"), "{stderr}");
    let full = tempfile::tempdir().unwrap();
    pull(full.path(), &v2, &["--require-full-layer-digest"]);
    assert_eq!(tree(a.path(), &v2), tree(full.path(), &v2), "partial and full pulls of v2 disagree");
}

/// Regression (the partial path of `repeated_layer_in_a_manifest_is_fetched_once`):
/// a zstd:chunked layer listed twice is pulled partially once; the repeat
/// fetches nothing, so the blob gets exactly the requests a one-copy image
/// gets, and the tree is the one-copy image's.
#[test]
fn repeated_zstd_chunked_layer_is_pulled_partially_once() {
    let reg = Registry::start();
    let host = reg.image("x").split('/').next().unwrap().to_string();
    let layer = layer_of(&files(), |_| {});
    let base = layer_of(&[("etc/os-release".into(), b"ID=test\n".to_vec(), 0o644)], |_| {});
    let a = (&base, &base.annotations);
    let b = (&layer, &layer.annotations);
    upload_layers(&host, "once", "v1", &[a, b]);
    upload_layers(&host, "twice", "v1", &[a, b, b]);
    let proxy = FaultProxy::start(&host, Faults { path_match: sha256(&layer.blob), ..Faults::default() });
    let gets = |from: usize| proxy.matching_requests()[from..].iter().filter(|r| r.starts_with("get ")).count();

    let once = tempfile::tempdir().unwrap();
    let (v, _) = pull(once.path(), &format!("{}/once:v1", proxy.addr), &[]);
    assert!(v["layers"][1]["partial"].as_bool().unwrap(), "{v}");
    let once_gets = gets(0);
    assert!(once_gets > 0);

    let twice = tempfile::tempdir().unwrap();
    let image = format!("{}/twice:v1", proxy.addr);
    let seen = proxy.matching_requests().len();
    let (v, _) = pull(twice.path(), &image, &[]);
    assert_eq!(gets(seen), once_gets, "requests for the repeated blob: {:#?}", &proxy.matching_requests()[seen..]);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{v}");
    let flags = |l: &Value| (l["downloaded"].as_bool(), l["partial"].as_bool(), l["bytesFetched"].as_u64());
    assert_eq!((flags(&layers[1]).0, flags(&layers[1]).1), (Some(true), Some(true)), "{v}");
    assert_eq!(flags(&layers[2]), (Some(false), Some(false), Some(0)), "{v}");
    assert_eq!(v["layersDownloaded"], 2, "{v}");
    let fetched: u64 = layers.iter().map(|l| l["bytesFetched"].as_u64().unwrap()).sum();
    assert_eq!(v["bytesDownloaded"], fetched, "{v}");
    let mut want = tree(once.path(), &format!("{}/once:v1", proxy.addr));
    let mut got = tree(twice.path(), &image);
    want.remove("(hard links)");
    got.remove("(hard links)");
    assert_eq!(got, want);
}
