//! Where images come from, as a new user meets it (issue #11): an image for
//! another platform is refused before anything is written. A real registry,
//! images made by umoci and pushed by skopeo.

use std::path::Path;
use std::process::{Command, Output};

use hostctl::oci::platform::Platform;
use serde_json::Value;

use crate::support::images::{write_tree, Layout};
use crate::support::registry::Registry;
use crate::support::{hostctl_bin, run};

/// Runs hostctl on `sysroot` from the directory `cwd`, with `env`; nothing
/// implied (no `--tls-verify=false`), the machine's certs.d and
/// registries.conf out of the way unless `env` sets them.
fn hc_in(cwd: &Path, sysroot: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(hostctl_bin());
    c.current_dir(cwd)
        .arg("--sysroot")
        .arg(sysroot)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("HOSTCTL_BOOTED")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOSTCTL_CERTS_D", "")
        .env("CONTAINERS_REGISTRIES_CONF", "");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running hostctl")
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn json(out: Output, what: &str) -> Value {
    let text = ok(out, what);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
}

/// A deployable OS image (a kernel, /etc, a tool) as tag `tag` of the layout
/// `dir`, built by umoci.
fn os_layout(work: &Path, dir: &Path, tag: &str, motd: &str) -> Layout {
    let tree = work.join(format!("tree-{tag}"));
    write_tree(
        &tree,
        &[
            ("usr/lib/modules/6.1.0-test/vmlinuz", "kernel"),
            ("etc/hostname", "h\n"),
            ("etc/motd", motd),
            ("usr/bin/tool", "t"),
        ],
    );
    let layout = Layout::new(dir, tag);
    layout.add_layer(&tree).label("org.opencontainers.image.version", tag);
    layout
}

/// A platform that is not the host's: what a wrong-architecture image is built for.
fn foreign() -> Platform {
    let arm: Platform = "linux/arm64".parse().unwrap();
    if Platform::host().accepts(&arm) {
        "linux/amd64".parse().unwrap()
    } else {
        arm
    }
}

/// Files under the store's objects directory (none: nothing was downloaded).
fn object_count(sysroot: &Path) -> usize {
    fn walk(d: &Path) -> usize {
        std::fs::read_dir(d)
            .map(|rd| rd.map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk(&p) } else { 1 }).sum::<usize>())
            .unwrap_or(0)
    }
    walk(&sysroot.join("hostctl/repo/objects"))
}

fn assert_nothing_staged(sysroot: &Path, what: &str) {
    assert_eq!(object_count(sysroot), 0, "{what}: no layer was downloaded");
    let deployments = sysroot.join("hostctl/deploy/default");
    let left: Vec<_> = std::fs::read_dir(&deployments)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).filter(|n| n != "var").collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what}: deployments left: {left:?}");
    let state = std::fs::read_to_string(sysroot.join("hostctl/state.json")).unwrap_or_default();
    assert!(!state.contains("\"spec\""), "{what}: the image was tracked: {state}");
    let entries = sysroot.join("boot/loader/entries");
    assert!(!entries.exists() || entries.read_dir().unwrap().next().is_none(), "{what}: boot entries written");
}

/// Issue #11 bug 1: `switch --platform linux/arm64` of an amd64 image (a single
/// manifest, no index to choose from) staged it, unbootable, with exit 0.
#[test]
fn switch_with_platform_of_another_architecture_is_refused_and_nothing_is_staged() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = os_layout(work.path(), &work.path().join("layout"), "v1", "one\n");
    layout.push(&reg.image("os:v1"), crate::support::images::Compression::Gzip);
    let image = reg.image("os:v1");
    let (host, wanted) = (Platform::host().to_string(), foreign().to_string());
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();

    for verb in [&["switch"][..], &["image", "pull"]] {
        let mut args = vec!["--tls-verify=false", "--platform", &wanted];
        args.extend_from_slice(verb);
        args.push(&image);
        let out = hc_in(work.path(), s, &[], &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{verb:?}: {err}");
        assert!(err.contains(&format!("image is {host}, wanted {wanted}")), "{verb:?}: {err}");
        assert!(err.contains(&image), "{verb:?} names the image: {err}");
        assert_nothing_staged(s, &format!("{verb:?}"));
    }
    let list = ok(hc_in(work.path(), s, &[], &["image", "list", "--json"]), "image list");
    assert!(!list.contains("os:v1"), "{list}");

    // The same image for the host's platform (the default) deploys.
    ok(hc_in(work.path(), s, &[], &["--tls-verify=false", "switch", &image]), "switch");
    let st = json(hc_in(work.path(), s, &[], &["status", "--json"]), "status");
    assert_eq!(st["status"]["deployments"].as_array().unwrap().len(), 1, "{st}");
}

/// The other half of bug 1: on a host of another architecture the default
/// platform gave the same result. An `oci:` image whose config says another
/// architecture (umoci, no platform in index.json) is refused by default.
#[test]
fn switch_to_a_layout_built_for_another_architecture_is_refused_by_default() {
    let work = tempfile::tempdir().unwrap();
    let layout = os_layout(work.path(), &work.path().join("layout"), "v1", "one\n");
    let wanted = foreign();
    run(Command::new("umoci")
        .args(["config", "--image", &format!("{}:v1", layout.dir.display())])
        .arg(format!("--architecture={}", wanted.architecture))
        .arg(format!("--os={}", wanted.os)));
    let sys = tempfile::tempdir().unwrap();
    let out = hc_in(work.path(), sys.path(), &[], &["switch", &layout.oci_ref()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("image is {wanted}, wanted {}", Platform::host())), "{err}");
    assert_nothing_staged(sys.path(), "switch");
    // Asked for by its platform, it is pulled (an image for another machine).
    let wanted = wanted.to_string();
    ok(hc_in(work.path(), sys.path(), &[], &["--platform", &wanted, "image", "pull", &layout.oci_ref()]), "pull");
}
