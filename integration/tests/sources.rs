//! Where images come from, as a new user meets it (issue #11): an image for
//! another platform is refused before anything is written, a relative layout
//! path and the transport options of `switch` are remembered for `upgrade`,
//! and a truncated archive says so. Real registries (plain and TLS with Basic
//! auth), images made by umoci, pushed and archived by skopeo.

use std::path::{Path, PathBuf};
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

/// Issue #11 bug 2: `switch oci:./layout:v1` recorded the path as typed, so
/// `upgrade` from another directory (or the update timer) failed.
#[test]
fn switch_with_a_relative_oci_path_then_upgrade_check_from_another_directory() {
    let work = tempfile::tempdir().unwrap();
    let layout_dir = work.path().join("media/layout");
    os_layout(work.path(), &layout_dir, "stable", "one\n");
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    let elsewhere = tempfile::tempdir().unwrap();

    ok(hc_in(work.path(), s, &[], &["switch", "oci:./media/layout:stable"]), "switch");
    let absolute = format!("oci:{}:stable", layout_dir.display());
    let st = json(hc_in(elsewhere.path(), s, &[], &["status", "--json"]), "status");
    let layout = serde_json::json!({"image": format!("{}:stable", layout_dir.display()), "transport": "oci"});
    assert_eq!(st["spec"]["image"], layout, "{st}");
    assert_eq!(st["status"]["booted"]["image"]["image"], layout, "{st}");

    let c = json(hc_in(elsewhere.path(), s, &[], &["upgrade", "--check", "--json"]), "upgrade --check");
    assert_eq!(c["updateAvailable"], false, "{c}");
    // A new release under the same tag is found from there, and deployed.
    os_layout(work.path(), &layout_dir, "stable", "two\n");
    let c = json(hc_in(elsewhere.path(), s, &[], &["upgrade", "--check", "--json"]), "upgrade --check");
    assert_eq!(c["updateAvailable"], true, "{c}");
    let r = json(hc_in(Path::new("/"), s, &[], &["upgrade", "--json"]), "upgrade");
    assert_eq!(r["changed"], true, "{r}");

    // `image pull` records the absolute path too, and `image inspect` finds it by the relative one.
    ok(hc_in(work.path(), s, &[], &["image", "pull", "oci:media/layout:stable"]), "image pull");
    let list = ok(hc_in(elsewhere.path(), s, &[], &["image", "list"]), "image list");
    assert!(list.contains(&absolute) && !list.contains("oci:media"), "{list}");
    let v = json(hc_in(work.path(), s, &[], &["image", "inspect", "--json", "oci:media/layout:stable"]), "inspect");
    assert_eq!(v["image"]["image"], layout, "{v}");
}

/// `auth.json` for `registry` with `user`/`password`, in `dir`.
fn auth_json(dir: &Path, registry: &str, user: &str, password: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("auth.json");
    std::fs::write(&path, format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    path
}

/// An HTTPS registry (a test CA nobody trusts, Basic auth) holding a
/// deployable `os:latest`, and the work directory with `auth.json`.
fn tls_registry_with_os() -> (Registry, tempfile::TempDir) {
    let reg = Registry::start_tls_basic("alice", "pw");
    let work = tempfile::tempdir().unwrap();
    let layout = os_layout(work.path(), &work.path().join("layout"), "v1", "one\n");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "alice:pw"])
        .arg(layout.oci_ref())
        .arg(format!("docker://{}", reg.image("os:latest"))));
    auth_json(work.path(), &reg.addr, "alice", "pw");
    (reg, work)
}

/// Issue #11 bug 3: `switch --tls-verify=false REG/os` then `upgrade --check`
/// failed on HTTPS: the option was not remembered with the tracked image.
#[test]
fn switch_with_tls_verify_false_then_upgrade_check_succeeds() {
    let (reg, work) = tls_registry_with_os();
    let image = reg.image("os:latest");
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    let elsewhere = tempfile::tempdir().unwrap();
    let w = work.path();

    // A relative --authfile, recorded absolute.
    ok(hc_in(w, s, &[], &["switch", "--tls-verify=false", "--authfile", "auth.json", &image]), "switch");
    let st = json(hc_in(elsewhere.path(), s, &[], &["status", "--json"]), "status");
    let t = &st["spec"]["transportOptions"];
    assert_eq!(t["tlsVerify"], false, "{st}");
    assert_eq!(t["authfile"], w.join("auth.json").to_str().unwrap(), "{st}");
    assert!(t["certDir"].is_null(), "{st}");
    let human = ok(hc_in(elsewhere.path(), s, &[], &["status"]), "status");
    assert!(human.contains("--tls-verify=false") && human.contains("--authfile="), "{human}");

    // From another directory, without any option: as switch was told.
    let c = json(hc_in(elsewhere.path(), s, &[], &["upgrade", "--check", "--json"]), "upgrade --check");
    assert_eq!(c["updateAvailable"], false, "{c}");
    // An option given to upgrade wins for that run: verifying fails (the test
    // CA is not trusted), which shows what made the run above pass.
    let out = hc_in(elsewhere.path(), s, &[], &["--tls-verify=true", "upgrade", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // So does --cert-dir with the CA: verified TLS, credentials still from the record.
    let ca = reg.cert_dir.as_ref().unwrap().to_str().unwrap();
    let c = json(
        hc_in(elsewhere.path(), s, &[], &["--tls-verify=true", "--cert-dir", ca, "upgrade", "--check", "--json"]),
        "upgrade --check --cert-dir",
    );
    assert_eq!(c["updateAvailable"], false, "{c}");
    // The record is unchanged by those runs, and a plain `upgrade` works.
    let st = json(hc_in(elsewhere.path(), s, &[], &["status", "--json"]), "status");
    assert_eq!(st["spec"]["transportOptions"]["tlsVerify"], false, "{st}");
    let r = json(hc_in(elsewhere.path(), s, &[], &["upgrade", "--json"]), "upgrade");
    assert_eq!(r["changed"], false, "{r}");

    // A new switch records its own options: with --cert-dir instead.
    ok(hc_in(w, s, &[], &["switch", "--cert-dir", ca, "--authfile", "auth.json", &image]), "switch --cert-dir");
    let st = json(hc_in(elsewhere.path(), s, &[], &["status", "--json"]), "status");
    let t = &st["spec"]["transportOptions"];
    assert_eq!((t["tlsVerify"].as_bool(), t["certDir"].as_str()), (Some(true), Some(ca)), "{st}");
    let c = json(hc_in(elsewhere.path(), s, &[], &["upgrade", "--check", "--json"]), "upgrade --check");
    assert_eq!(c["updateAvailable"], false, "{c}");
}

/// registries.conf `insecure = true` still works with nothing remembered.
#[test]
fn registries_conf_insecure_still_reaches_an_https_registry_for_switch_and_upgrade_check() {
    let (reg, work) = tls_registry_with_os();
    let image = reg.image("os:latest");
    let conf = work.path().join("registries.conf");
    std::fs::write(&conf, format!("[[registry]]\nlocation = \"{}\"\ninsecure = true\n", reg.addr)).unwrap();
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap())];
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    let auth = work.path().join("auth.json");
    let auth = auth.to_str().unwrap();
    ok(hc_in(work.path(), s, &env, &["switch", "--authfile", auth, &image]), "switch");
    let st = json(hc_in(work.path(), s, &env, &["status", "--json"]), "status");
    assert_eq!(st["spec"]["transportOptions"]["tlsVerify"], true, "{st}");
    let c = json(hc_in(work.path(), s, &env, &["upgrade", "--check", "--json"]), "upgrade --check");
    assert_eq!(c["updateAvailable"], false, "{c}");
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
