//! `hostctl image pull` against a real registry and OCI layouts.

use crate::support::images::{write_tree, Compression, Layout};
use crate::support::registry::{FaultProxy, Faults, Registry};
use crate::support::{hostctl, hostctl_ok};

#[test]
fn pull_umoci_image_from_plain_registry_then_again_downloads_nothing() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write_tree(&tree, &[("etc/os-release", "ID=test\n"), ("usr/bin/hello", "#!/bin/sh\necho hi\n")]);
    let layout = Layout::new(&work.path().join("layout"), "v1");
    layout.add_layer(&tree).label("org.opencontainers.image.version", "1.0");
    layout.push(&reg.image("os:v1"), Compression::Gzip);

    let sysroot = tempfile::tempdir().unwrap();
    let image = reg.image("os:v1");
    let out = hostctl_ok(sysroot.path(), &["--tls-verify=false", "image", "pull", "--json", &image]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layersDownloaded"], 1, "{out}");

    let out = hostctl_ok(sysroot.path(), &["--tls-verify=false", "image", "pull", "--json", &image]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layersDownloaded"], 0, "second pull downloaded again: {out}");
    assert_eq!(v["bytesDownloaded"], 0);

    let list = hostctl_ok(sysroot.path(), &["image", "list", "--json"]);
    assert!(list.contains("os:v1"), "{list}");
    let inspect = hostctl(sysroot.path(), &["image", "inspect", "--json", &image]);
    assert!(inspect.status.success());
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["image"]["version"], "1.0");
}

/// The same image pushed gzip-, zstd- and un-compressed: each pulls, the
/// layers' diff_ids agree, and once one copy is in the store the other two
/// download nothing (layers are found by diff_id, whatever their compression).
#[test]
fn gzip_zstd_and_plain_copies_pull_to_the_same_layers_and_dedupe_by_diff_id() {
    // One registry per copy: skopeo would otherwise mount the blob it already
    // pushed to the registry instead of recompressing it.
    let regs = [Registry::start(), Registry::start(), Registry::start()];
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    write_tree(&tree, &[("usr/share/doc/big.txt", big.as_str()), ("etc/hostname", "box\n")]);
    let layout = Layout::new(&work.path().join("layout"), "v1");
    layout.add_layer(&tree);
    let copies = [("gz:v1", Compression::Gzip), ("zst:v1", Compression::Zstd), ("plain:v1", Compression::None)];
    let images: Vec<String> = copies.iter().zip(&regs).map(|((repo, _), reg)| reg.image(repo)).collect();
    for ((_, compression), image) in copies.iter().zip(&images) {
        layout.push(image, *compression);
    }

    let mut diff_ids = Vec::new();
    let mut media_types = Vec::new();
    for image in &images {
        let sysroot = tempfile::tempdir().unwrap();
        let out = hostctl_ok(sysroot.path(), &["--tls-verify=false", "image", "pull", "--json", image]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["layersDownloaded"], 1, "{image}: {out}");
        diff_ids.push(v["layers"][0]["diffId"].as_str().unwrap().to_string());
        media_types.push(v["layers"][0]["mediaType"].as_str().unwrap().to_string());
    }
    assert!(diff_ids.iter().all(|d| d == &diff_ids[0]), "{diff_ids:?}");
    assert!(
        media_types[0].ends_with("gzip") && media_types[1].ends_with("zstd") && media_types[2].ends_with(".tar"),
        "{media_types:?}"
    );

    let shared = tempfile::tempdir().unwrap();
    for (i, image) in images.iter().enumerate() {
        let out = hostctl_ok(shared.path(), &["--tls-verify=false", "image", "pull", "--json", image]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let want = if i == 0 { 1 } else { 0 };
        assert_eq!(v["layersDownloaded"], want, "{image}: {out}");
    }
}

/// A three-layer image (add, change, delete) from umoci pulls every layer,
/// records the deletion as a whiteout, and inspect lists the layers in order.
#[test]
fn multi_layer_image_with_a_whiteout_pulls_every_layer_in_order() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = Layout::new(&work.path().join("layout"), "v1");
    let t1 = work.path().join("t1");
    write_tree(&t1, &[("etc/a.conf", "a=1\n"), ("etc/gone.conf", "bye\n")]);
    let t2 = work.path().join("t2");
    write_tree(&t2, &[("etc/a.conf", "a=2\n"), ("usr/bin/tool", "#!/bin/sh\n")]);
    layout.add_layer(&t1).add_layer(&t2).add_whiteout("etc/gone.conf");
    layout.push(&reg.image("multi:v1"), Compression::Gzip);

    let sysroot = tempfile::tempdir().unwrap();
    let image = reg.image("multi:v1");
    let out = hostctl_ok(sysroot.path(), &["--tls-verify=false", "image", "pull", "--json", &image]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layersDownloaded"], 3, "{out}");
    let inspect: serde_json::Value =
        serde_json::from_str(&hostctl_ok(sysroot.path(), &["image", "inspect", "--json", &image])).unwrap();
    let listed: Vec<&str> =
        inspect["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    let pulled: Vec<&str> = v["layers"].as_array().unwrap().iter().map(|l| l["blobDigest"].as_str().unwrap()).collect();
    assert_eq!(listed, pulled);

    // The last layer's index records the deletion as a whiteout of etc/gone.conf.
    let last_diff_id = v["layers"][2]["diffId"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let index =
        std::fs::read_to_string(sysroot.path().join(format!("hostctl/repo/layers/{last_diff_id}.json"))).unwrap();
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let whiteouts: Vec<&str> = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["type"] == "whiteout")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(whiteouts, ["etc/gone.conf"], "{index}");
}

/// `image pull` writes the store, so it takes the sysroot lock like every
/// mutating command: while another holder has it, the pull waits, then fails
/// with exit code 3 and a clear message (here after 0 s).
#[test]
fn pull_waits_for_the_sysroot_lock_then_fails_with_exit_3() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write_tree(&tree, &[("etc/hostname", "box\n")]);
    let layout = Layout::new(&work.path().join("layout"), "v1");
    layout.add_layer(&tree);
    layout.push(&reg.image("os:v1"), Compression::Gzip);

    let sysroot = tempfile::tempdir().unwrap();
    let held = hostctl::sysroot::Sysroot::open(sysroot.path()).unwrap().lock(std::time::Duration::ZERO).unwrap();
    let out = std::process::Command::new(crate::support::hostctl_bin())
        .arg("--sysroot")
        .arg(sysroot.path())
        .args(["--tls-verify=false", "image", "pull", &reg.image("os:v1")])
        .env("HOSTCTL_LOCK_TIMEOUT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds the lock"));
    drop(held);
    hostctl_ok(sysroot.path(), &["--tls-verify=false", "image", "pull", &reg.image("os:v1")]);
}

/// Regression: a manifest listing one layer blob twice (buildah writes this
/// for two steps with identical diffs) had the blob fetched twice, by two
/// concurrent tasks. It is fetched once, counted once as downloaded, and the
/// image keeps all its layers, in order, and deploys.
#[test]
fn repeated_layer_in_a_manifest_is_fetched_once() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    write_tree(
        &base,
        &[("usr/lib/modules/6.1.0-test/vmlinuz", "kernel"), ("etc/hostname", "box\n"), ("usr/bin/tool", "t")],
    );
    let small = work.path().join("small");
    write_tree(&small, &[("usr/share/stamp", "same diff\n")]);
    let layout = Layout::new(&work.path().join("layout"), "v1");
    layout.add_layer(&base).add_layer(&small).repeat_last_layer();
    layout.push(&reg.image("dup:v1"), Compression::Gzip);

    let proxy = FaultProxy::start(&reg.addr, Faults { path_match: "/blobs/".into(), ..Faults::default() });
    let image = format!("{}/dup:v1", proxy.addr);
    let sysroot = tempfile::tempdir().unwrap();
    let s = sysroot.path();
    let out = hostctl_ok(s, &["--tls-verify=false", "--progress=json", "image", "pull", &image]);
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let v = events.last().unwrap();
    assert_eq!(v["event"], "done", "{out}");
    let repeats: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "layer-repeated").collect();
    assert_eq!(repeats.len(), 1, "{out}");
    assert_eq!(repeats[0]["of"], 1, "{out}");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{out}");
    let repeated = layers[2]["blobDigest"].as_str().unwrap();
    assert_eq!(
        (layers[1]["blobDigest"].as_str(), layers[1]["diffId"].clone()),
        (Some(repeated), layers[2]["diffId"].clone())
    );
    assert_eq!(v["layersDownloaded"], 2, "{out}");
    assert_eq!((&layers[1]["downloaded"], &layers[2]["downloaded"]), (&true.into(), &false.into()), "{out}");
    assert_eq!(layers[2]["bytesFetched"], 0, "{out}");
    let fetched: u64 = layers.iter().map(|l| l["bytesFetched"].as_u64().unwrap()).sum();
    assert_eq!(v["bytesDownloaded"], fetched, "{out}");
    let gets: Vec<String> = proxy
        .matching_requests()
        .into_iter()
        .filter(|r| r.starts_with("get ") && r.lines().next().unwrap().contains(&repeated.to_lowercase()))
        .collect();
    assert_eq!(gets.len(), 1, "the repeated blob was requested {} times: {gets:#?}", gets.len());

    let inspect: serde_json::Value =
        serde_json::from_str(&hostctl_ok(s, &["image", "inspect", "--json", &image])).unwrap();
    let listed: Vec<&str> =
        inspect["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    let pulled: Vec<&str> = layers.iter().map(|l| l["blobDigest"].as_str().unwrap()).collect();
    assert_eq!(listed, pulled);

    // Deploys: the layer applied twice gives the tree it gives once.
    crate::deploy::hc_ok(s, &["switch", &image]);
    let deployments = crate::deploy::status(s)["status"]["deployments"].clone();
    assert_eq!(deployments.as_array().map(Vec::len), Some(1), "{deployments}");
    let id = deployments[0]["id"].as_str().unwrap();
    let root = crate::deploy::deploy_dir(s).join(id);
    assert_eq!(std::fs::read_to_string(root.join("usr/share/stamp")).unwrap(), "same diff\n");
    assert_eq!(std::fs::read_to_string(root.join("usr/bin/tool")).unwrap(), "t");
    // And fsck, which walks the image's layers again, finds nothing wrong.
    crate::deploy::hc_ok(s, &["fsck"]);
}
