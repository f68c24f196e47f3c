//! OCI layout sources (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`) on layouts
//! written by the real tools: umoci builds them, skopeo copies them into
//! directories and archives; hostctl resolves tags and streams blobs from them.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use hostctl::digest::Digest;
use hostctl::oci::layout::OciLayoutSource;
use hostctl::oci::platform::Platform;
use hostctl::oci::ImageSource;

use crate::support::images::{write_tree, Layout};
use crate::support::{hostctl, hostctl_ok, run};

/// One layout with two tags, each with its own layer and version label.
fn two_tag_layout(root: &Path) -> Layout {
    let dir = root.join("layout");
    for (tag, version) in [("v1", "1.0"), ("v2", "2.0")] {
        let tree = root.join(format!("tree-{tag}"));
        write_tree(&tree, &[("etc/os-release", &format!("ID=test\nVERSION_ID={version}\n")), ("usr/bin/x", tag)]);
        Layout::new(&dir, tag).add_layer(&tree).label("org.opencontainers.image.version", version);
    }
    Layout { dir, tag: "v1".into() }
}

fn inspect(sysroot: &Path, image: &str) -> serde_json::Value {
    let out = hostctl_ok(sysroot, &["image", "inspect", "--remote", "--json", image]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect {image}: {e}: {out}"))
}

fn skopeo_copy(src: &str, dest: &str) {
    crate::support::require_tool("skopeo");
    run(Command::new("skopeo").args(["copy", "--quiet", src, dest]));
}

#[test]
fn umoci_layout_with_two_tags_resolves_each_and_a_missing_tag_lists_them() {
    let work = tempfile::tempdir().unwrap();
    let layout = two_tag_layout(work.path());
    let sysroot = tempfile::tempdir().unwrap();
    let dir = layout.dir.display();
    let v1 = inspect(sysroot.path(), &format!("oci:{dir}:v1"));
    let v2 = inspect(sysroot.path(), &format!("oci:{dir}:v2"));
    assert_eq!(v1["image"]["version"], "1.0", "{v1}");
    assert_eq!(v2["image"]["version"], "2.0", "{v2}");
    assert_ne!(v1["image"]["imageDigest"], v2["image"]["imageDigest"]);

    let out = hostctl(sysroot.path(), &["image", "inspect", "--remote", &format!("oci:{dir}:v3")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no image tagged \"v3\"") && err.contains("tags: v1, v2"), "{err}");

    let out = hostctl(sysroot.path(), &["image", "inspect", "--remote", &format!("oci:{dir}")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("holds 2 images") && err.contains("v1, v2"), "{err}");
}

#[test]
fn skopeo_layout_and_archive_resolve_to_the_same_manifest_and_stream_verified_layers() {
    let work = tempfile::tempdir().unwrap();
    let layout = two_tag_layout(work.path());
    let copied = work.path().join("copied");
    let archive_dir = work.path().join("archives");
    std::fs::create_dir(&archive_dir).unwrap();
    let archive = archive_dir.join("os.tar");
    skopeo_copy(&format!("oci:{}:v2", layout.dir.display()), &format!("oci:{}:stable", copied.display()));
    skopeo_copy(&format!("oci:{}:v2", layout.dir.display()), &format!("oci-archive:{}:stable", archive.display()));

    let sysroot = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let from_dir = inspect(sysroot.path(), &format!("oci:{}:stable", copied.display()));
    let out = Command::new(crate::support::hostctl_bin())
        .args(["--sysroot"])
        .arg(sysroot.path())
        .args(["image", "inspect", "--remote", "--json", &format!("oci-archive:{}", archive.display())])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_archive: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_dir["image"]["imageDigest"], from_archive["image"]["imageDigest"]);
    assert_eq!(from_archive["image"]["version"], "2.0");
    // Nothing was extracted: no temp files, nothing beside the archive.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let beside: Vec<_> = std::fs::read_dir(&archive_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, ["os.tar"]);

    // Layer bytes come straight out of the tar and hash to their digests.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for src in [
            OciLayoutSource::open_archive(&archive, Some("stable")).unwrap(),
            OciLayoutSource::open_dir(&copied, None).unwrap(),
        ] {
            let resolved = src.resolve(&Platform::host()).await.unwrap();
            assert_eq!(resolved.raw.digest.to_string(), from_dir["image"]["imageDigest"]);
            for layer in resolved.manifest.layers() {
                let reader = src.open_blob(layer, 0).await.unwrap();
                let bytes = tokio::task::spawn_blocking(move || {
                    let mut v = Vec::new();
                    reader.into_sync().read_to_end(&mut v).unwrap();
                    v
                })
                .await
                .unwrap();
                assert_eq!(Digest::of(&bytes).to_string(), layer.digest().to_string(), "{}", src.describe());
                assert_eq!(bytes.len() as u64, layer.size());
            }
            let by_tag = src.fetch_manifest("stable").await.unwrap().expect("tag stable");
            assert_eq!(by_tag.digest, resolved.raw.digest);
        }
    });
}

#[test]
fn hostile_index_naming_a_path_instead_of_a_digest_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let layout = two_tag_layout(work.path());
    let index_path = layout.dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = "sha256:../../../../../../etc/shadow".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let sysroot = tempfile::tempdir().unwrap();
    let out = hostctl(sysroot.path(), &["image", "inspect", "--remote", &format!("oci:{}:v1", layout.dir.display())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("index.json is not a valid OCI index"), "{err}");
}

#[test]
fn hostile_blob_symlinked_to_an_absolute_path_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let layout = two_tag_layout(work.path());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let blob = layout.dir.join("blobs/sha256").join(&digest);
    let outside = work.path().join("outside-manifest");
    std::fs::rename(&blob, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &blob).unwrap();
    let sysroot = tempfile::tempdir().unwrap();
    let out = hostctl(sysroot.path(), &["image", "inspect", "--remote", &format!("oci:{}:v1", layout.dir.display())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("leads outside the layout directory"), "{err}");
}

#[test]
fn pull_from_layout_and_archive_end_to_end_then_again_downloads_nothing() {
    let work = tempfile::tempdir().unwrap();
    let layout = two_tag_layout(work.path());
    let archive = work.path().join("os.tar");
    skopeo_copy(&format!("oci:{}:v2", layout.dir.display()), &format!("oci-archive:{}:v2", archive.display()));

    let sysroot = tempfile::tempdir().unwrap();
    let dir_ref = format!("oci:{}:v1", layout.dir.display());
    let out = hostctl_ok(sysroot.path(), &["image", "pull", "--json", &dir_ref]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layersDownloaded"], 1, "{out}");

    let archive_ref = format!("oci-archive:{}:v2", archive.display());
    let out = hostctl_ok(sysroot.path(), &["image", "pull", "--json", &archive_ref]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layersDownloaded"], 1, "{out}");
    let out = hostctl_ok(sysroot.path(), &["image", "pull", "--json", &archive_ref]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layersDownloaded"], 0, "second pull downloaded again: {out}");

    let list = hostctl_ok(sysroot.path(), &["image", "list", "--json"]);
    // Listed as bootc's {image, transport}.
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let listed: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}:{}", r["image"]["transport"], r["image"]["image"]))
        .collect();
    assert!(
        listed.contains(&format!("\"oci\":\"{}:v1\"", layout.dir.display()))
            && listed.contains(&format!("\"oci-archive\":\"{}:v2\"", archive.display())),
        "{listed:?}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&hostctl_ok(sysroot.path(), &["image", "inspect", "--json", &archive_ref])).unwrap();
    assert_eq!(v["image"]["version"], "2.0");
}

#[test]
fn pull_of_a_tampered_archive_layer_fails_and_records_nothing() {
    let work = tempfile::tempdir().unwrap();
    let layout = two_tag_layout(work.path());
    let archive = work.path().join("os.tar");
    skopeo_copy(&format!("oci:{}:v1", layout.dir.display()), &format!("oci-archive:{}", archive.display()));
    // Corrupt the layer inside the archive in place: flip a byte in the biggest blob.
    let src = OciLayoutSource::open_archive(&archive, None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resolved = rt.block_on(src.resolve(&Platform::host())).unwrap();
    let layer = resolved.manifest.layers()[0].clone();
    let bytes = std::fs::read(&archive).unwrap();
    let blob = rt
        .block_on(async {
            let r = src.open_blob(&layer, 0).await.unwrap();
            tokio::task::spawn_blocking(move || {
                let mut v = Vec::new();
                r.into_sync().read_to_end(&mut v).unwrap();
                v
            })
            .await
        })
        .unwrap();
    let at = bytes.windows(blob.len()).position(|w| w == blob.as_slice()).expect("layer bytes are in the tar");
    let mut bad = bytes.clone();
    bad[at + blob.len() / 2] ^= 0xff;
    std::fs::write(&archive, bad).unwrap();

    let sysroot = tempfile::tempdir().unwrap();
    let out = hostctl(sysroot.path(), &["image", "pull", &format!("oci-archive:{}", archive.display())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "tampered layer must be an integrity failure: {err}");
    assert!(err.contains("digest mismatch") || err.contains("diff_id") || err.contains("corrupt"), "{err}");
    let list = hostctl_ok(sysroot.path(), &["image", "list", "--json"]);
    assert!(!list.contains("oci-archive"), "{list}");
}
