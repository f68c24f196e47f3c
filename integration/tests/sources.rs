//! Where images come from, as a new user meets it (issue #11): an image for
//! another platform is refused before anything is written, and a truncated
//! archive says so. A real registry, images made by umoci, pushed and
//! archived by skopeo.

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

/// Members of a tar file as GNU tar lists them: (header offset, size, name).
fn tar_members(archive: &Path) -> Vec<(u64, u64, String)> {
    let out = run(Command::new("tar").args(["--list", "--verbose", "--block-number", "--file"]).arg(archive));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // block N: perms owner size date time name
            let block: u64 = f.get(1)?.trim_end_matches(':').parse().ok()?;
            Some((block * 512, f.get(4)?.parse().ok()?, f.get(7)?.trim_start_matches("./").to_string()))
        })
        .collect()
}

/// Issue #11 bug 6: a truncated `oci-archive:` was reported as "not an OCI
/// image layout". Cut inside a blob, inside a header and at a member boundary.
#[test]
fn pull_of_a_truncated_oci_archive_says_it_is_truncated_and_where() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    // Incompressible, so the layer blob is the biggest member by far.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: String = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    write_tree(&tree, &[("usr/share/noise", &noise), ("etc/motd", "one\n")]);
    let layout = Layout::new(&work.path().join("layout"), "v1");
    layout.add_layer(&tree);
    let archive = work.path().join("os.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(layout.oci_ref())
        .arg(format!("oci-archive:{}:v1", archive.display())));
    let whole = std::fs::read(&archive).unwrap();
    let members = tar_members(&archive);
    let (layer_at, layer_size, layer_name) = members.iter().max_by_key(|m| m.1).unwrap().clone();
    assert!(layer_name.starts_with("blobs/sha256/") && layer_size > 200_000, "{members:?}");
    let reference = format!("oci-archive:{}:v1", archive.display());
    let pull = |cut: usize| {
        std::fs::write(&archive, &whole[..cut]).unwrap();
        let sys = tempfile::tempdir().unwrap();
        let out = hc_in(work.path(), sys.path(), &[], &["image", "pull", &reference]);
        if cut < whole.len() {
            assert_eq!(object_count(sys.path()), 0, "cut at {cut}: nothing written");
        }
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // Inside the layer blob.
    let data_at = layer_at + 512;
    let cut = (data_at + layer_size / 2) as usize;
    let (code, err) = pull(cut);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("not an OCI image layout"), "{err}");
    assert!(err.contains(&format!("reading OCI archive {}", archive.display())), "{err}");
    let want = format!(
        "truncated: it ends at byte {cut}, inside member {layer_name} ({layer_size} bytes at offset {data_at}; {} of them present)",
        cut as u64 - data_at
    );
    assert!(err.contains(&want), "{err}\nwanted: {want}");

    // Inside a header (the second member's).
    let (second_at, _, _) = members[1].clone();
    let first_name = members[0].2.clone();
    let cut = second_at as usize + 100;
    let (code, err) = pull(cut);
    assert_eq!(code, Some(1), "{err}");
    let want = format!(
        "truncated: it ends at byte {cut}, inside the tar header at offset {second_at} after member {first_name}"
    );
    assert!(err.contains(&want), "{err}\nwanted: {want}");

    // At the boundary before the last member (skopeo writes oci-layout last):
    // read, but the file then missing says why it may be.
    let (last_at, _, _) = members.last().unwrap().clone();
    let before_last = &members[members.len() - 2].2;
    let (code, err) = pull(last_at as usize);
    assert_eq!(code, Some(1), "{err}");
    let want = format!(
        "the archive may be truncated: it ends at byte {last_at}, right after member {before_last}, without the end-of-archive marker"
    );
    assert!(err.contains(&want), "{err}\nwanted: {want}");

    // The whole archive pulls.
    let (code, err) = pull(whole.len());
    assert_eq!(code, Some(0), "{err}");
}
