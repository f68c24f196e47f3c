//! Image references on the command line, as a user types them: an IPv6
//! registry, and names that docker and podman refuse.

use std::process::Command;

use crate::support::images::{write_tree, Compression, Layout};
use crate::support::registry::Registry;
use crate::support::{hostctl, hostctl_ok, run};

/// A registry at an IPv6 literal (`[::1]:PORT`), named with and without the
/// `docker://` transport: the image pushed there is pulled, under the
/// digest the registry reports, and listed under its bracketed name.
#[test]
fn pull_from_a_registry_at_an_ipv6_literal() {
    let reg = Registry::start_ipv6();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write_tree(&tree, &[("etc/os-release", "ID=test\n")]);
    let layout = Layout::new(&work.path().join("layout"), "v1");
    layout.add_layer(&tree);
    let image = reg.image("os:v1");
    assert!(image.starts_with("[::1]:"), "{image}");
    // skopeo 1.9's reference parser predates IPv6 literals: it copies the
    // image out uncompressed and curl uploads it (support::images).
    layout.push(&image, Compression::None);
    let head = run(Command::new("curl")
        .args(["-sSfI", "-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
        .arg(format!("http://{}/v2/os/manifests/v1", reg.addr)));
    let headers = String::from_utf8_lossy(&head.stdout).to_lowercase();
    let expected =
        headers.lines().find_map(|l| l.strip_prefix("docker-content-digest: ")).expect("digest header").trim();

    for reference in [image.clone(), format!("docker://{image}")] {
        let sysroot = tempfile::tempdir().unwrap();
        let out = hostctl_ok(sysroot.path(), &["--tls-verify=false", "image", "pull", "--json", &reference]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["image"]["imageDigest"], expected, "{reference}: {out}");
        let list = hostctl_ok(sysroot.path(), &["image", "list", "--json"]);
        assert!(list.contains(&image), "{reference}: {list}");
    }
}

/// Names that distribution/reference refuses are a command-line error
/// (exit 2) naming the part at fault, before anything is fetched.
#[test]
fn pull_of_a_malformed_reference_names_the_bad_part() {
    let sysroot = tempfile::tempdir().unwrap();
    let sha512 = format!("quay.io/os@sha512:{}", "f".repeat(128));
    for (reference, names) in [
        ("dock..er/os", "invalid registry host \"dock..er\""),
        ("docker./os", "invalid registry host \"docker.\""),
        ("-docker.io/os", "label \"-docker\""),
        ("[fe80::1%eth0]:5000/os", "zone index \"%eth0\""),
        ("[2001:db8::1]:65536/os", "port 65536 is out of range"),
        ("quay.io/Fedora/os", "path component \"Fedora\" has uppercase letters"),
        ("quay.io/os:-v1", "invalid tag \"-v1\""),
        (sha512.as_str(), "digest algorithm \"sha512\" is not supported"),
    ] {
        let out = hostctl(sysroot.path(), &["image", "pull", "--", reference]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{reference}: {stderr}");
        assert!(stderr.contains(names), "{reference}: {stderr}");
    }
}
