//! `hostctl image pull` against a real registry and OCI layouts.

use crate::support::images::{write_tree, Compression, Layout};
use crate::support::registry::Registry;
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
    assert_eq!(v["layers_downloaded"], 1, "{out}");

    let out = hostctl_ok(sysroot.path(), &["--tls-verify=false", "image", "pull", "--json", &image]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layers_downloaded"], 0, "second pull downloaded again: {out}");
    assert_eq!(v["bytes_downloaded"], 0);

    let list = hostctl_ok(sysroot.path(), &["image", "list", "--json"]);
    assert!(list.contains("os:v1"), "{list}");
    let inspect = hostctl(sysroot.path(), &["image", "inspect", "--json", &image]);
    assert!(inspect.status.success());
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["version"], "1.0");
}
