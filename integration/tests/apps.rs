//! Apps on the host's real tools: what `app update` and its rollback rest on
//! (podman pulls, inspects and re-tags by ID; hostctl's one-request digest
//! check agrees with podman's digest; the rollback removes the image the
//! failed update pulled) against a real registry, with images
//! built by real podman; and bad input refused by the CLI before anything is
//! written. Quadlet and systemd units need podman >= 4.4 and systemd as PID 1,
//! which this host lacks: unit activation is proven in the VM scenario
//! (integration/vm/e2e.sh, boots 1-3).

use std::path::Path;
use std::process::Command;

use hostctl::apps::update::{RegistryDigest, RemoteDigest};
use hostctl::host::podman::{Podman, PodmanCli, PullSettings};
use hostctl::oci::RegistryOptions;

use crate::support::images::write_tree;
use crate::support::registry::Registry;
use crate::support::{hostctl, require_tool, run};

/// Options for a podman with its own storage under `dir` (hermetic, parallel-safe).
fn storage_args(dir: &Path) -> Vec<String> {
    vec![
        format!("--root={}", dir.join("root").display()),
        format!("--runroot={}", dir.join("run").display()),
        "--storage-driver=vfs".into(),
    ]
}

/// Builds a busybox httpd image serving `page` (FROM scratch) and pushes it to `dest`.
fn build_push_app(builder: &Path, page: &str, dest: &str) {
    build_push_app_with(builder, page, 0, dest)
}

/// [`build_push_app`] with `blob` bytes of incompressible data in `/www/blob` too.
fn build_push_app_with(builder: &Path, page: &str, blob: usize, dest: &str) {
    let ctx = tempfile::tempdir().unwrap();
    write_tree(ctx.path(), &[("www/index.html", page)]);
    if blob > 0 {
        std::fs::write(ctx.path().join("www/blob"), crate::support::noise(blob, 0x9e37_79b9)).unwrap();
    }
    std::fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("busybox-static is installed (integration/setup.sh)");
    std::fs::write(
        ctx.path().join("Containerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    let tag = format!("localhost/hostctl-apps-test:{}", std::process::id());
    run(Command::new("podman").args(storage_args(builder)).args(["build", "-q", "-t", &tag]).arg(ctx.path()));
    run(Command::new("podman").args(storage_args(builder)).args([
        "push",
        "-q",
        "--tls-verify=false",
        &tag,
        &format!("docker://{dest}"),
    ]));
}

/// Apps under `root` on `podman` and `units`, waiting briefly (systemd is a
/// fake here), pulling insecurely from the test registry.
fn test_apps<'a>(
    root: &Path,
    podman: &'a PodmanCli,
    units: &'a hostctl::host::units::FakeUnits,
    registry: Option<&'a dyn hostctl::apps::remote::RemoteImages>,
) -> hostctl::apps::Apps<'a> {
    hostctl::apps::Apps {
        root: root.to_path_buf(),
        podman,
        units,
        pull: PullSettings { tls_verify: false, ..Default::default() },
        wait: hostctl::host::units::WaitPolicy {
            timeout: std::time::Duration::from_secs(5),
            settle: std::time::Duration::from_millis(10),
            poll: std::time::Duration::from_millis(1),
        },
        journal_lines: 5,
        registry,
    }
}

fn insecure() -> RegistryOptions {
    RegistryOptions {
        insecure: true,
        cert_dir: None,
        certs_d: vec![],
        registries_conf: vec![],
        authfile: None,
        max_concurrent_downloads: None,
        require_full_layer_digest: false,
    }
}

#[tokio::test]
async fn app_update_check_pull_and_rollback_retag_on_real_podman() {
    require_tool("podman");
    let reg = Registry::start();
    let builder = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let podman = PodmanCli { global: storage_args(host.path()), ..PodmanCli::default() };
    let pull = PullSettings { tls_verify: false, ..Default::default() };
    let web = reg.image("apps/web:stable");
    let remote = RegistryDigest(insecure());

    build_push_app(builder.path(), "v1\n", &web);
    assert!(podman.image(&web).unwrap().is_none(), "nothing pulled yet");
    podman.pull(&web, &pull).unwrap();
    let v1 = podman.image(&web).unwrap().expect("pulled");
    // hostctl's one manifest request names the digest podman pulled.
    let d1 = remote.digest(&web).await.unwrap();
    assert_eq!(v1.digest, d1);
    assert!(v1.digests().contains(&d1));

    // The tag moves: the check sees it, the pull takes it.
    build_push_app(builder.path(), "v2\n", &web);
    let d2 = remote.digest(&web).await.unwrap();
    assert_ne!(d1, d2);
    assert!(!v1.digests().contains(&d2), "an update is seen");
    podman.pull(&web, &pull).unwrap();
    let v2 = podman.image(&web).unwrap().unwrap();
    assert_ne!(v2.id, v1.id);
    assert_eq!(v2.digest, d2);

    // The rollback: the previous image is still there by ID and goes back under the name.
    assert_eq!(podman.image(&v1.id).unwrap().unwrap().id, v1.id);
    podman.tag(&v1.id, &web).unwrap();
    assert_eq!(podman.image(&web).unwrap().unwrap().id, v1.id);
    assert!(podman.containers_of_image(&v1.id).unwrap().is_empty());
    assert!(podman.container("hostctl-no-such-container").unwrap().is_none());
    podman.remove_volume("hostctl-no-such-volume").unwrap();

    // An image that does not exist, and a registry that is down.
    let err = podman.pull(&reg.image("apps/none:1"), &pull).unwrap_err();
    assert_eq!(hostctl::error::exit_code(&err), 1, "{err:#}");
    let mut reg = reg;
    reg.kill();
    assert!(remote.digest(&web).await.is_err());
}

#[test]
fn app_install_refuses_bad_input_before_writing_anything() {
    let sys = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let bad_syntax = files.path().join("web.container");
    std::fs::write(&bad_syntax, "[Container\nImage=127.0.0.1:5000/web:1\n").unwrap();
    let not_quadlet = files.path().join("web.txt");
    std::fs::write(&not_quadlet, "[Container]\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["install".into(), "--file".into(), bad_syntax.display().to_string()], "line 1: bad section header"),
        (vec!["install".into(), "--file".into(), not_quadlet.display().to_string()], "ends in .container"),
        (vec!["install".into(), "../web".into(), "127.0.0.1:5000/web:1".into()], "app name \"../web\" is not valid"),
        (
            vec!["install".into(), "web".into(), "127.0.0.1:5000/web:1".into(), "--publish".into(), "99999:80".into()],
            "not a port number",
        ),
        (
            vec!["install".into(), "web".into(), "127.0.0.1:5000/web:1".into(), "--volume".into(), "data".into()],
            "--volume \"data\"",
        ),
        (vec!["status".into(), "web".into()], "no app web is installed"),
        (vec!["update".into(), "web".into()], "no app web is installed"),
    ];
    for (args, expect) in cases {
        let mut all = vec!["app".to_string()];
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = hostctl(sys.path(), &refs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: expected {expect:?} in {err}");
    }
    assert_eq!(std::fs::read_dir(sys.path()).unwrap().count(), 0, "nothing written under the sysroot");
}

/// podman storage of its own for the hostctl under test (hermetic): a
/// containers-storage.conf(5) that `CONTAINERS_STORAGE_CONF` points at.
fn storage_conf(dir: &Path) -> std::path::PathBuf {
    let conf = dir.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("root").display(),
            dir.join("run").display()
        ),
    )
    .unwrap();
    conf
}

/// An OS image (oci: layout) with a kernel and a bound app `hello.container`
/// running `image`, linked from bootc's directory.
fn os_with_bound_app(dir: &Path, tag: &str, image: &str) -> String {
    os_with_bound_app_and(dir, tag, image, &[])
}

/// [`os_with_bound_app`] with `extra` files in the image too.
fn os_with_bound_app_and(dir: &Path, tag: &str, image: &str, extra: &[(&str, &str)]) -> String {
    let tree = tempfile::tempdir().unwrap();
    let unit = format!("[Container]\nImage={image}\nPublishPort=8081:8081\n");
    let mut files = vec![
        ("usr/lib/modules/6.1.0-test/vmlinuz", "kernel"),
        ("etc/hostname", "h\n"),
        ("usr/share/my-os/version", tag),
        ("usr/share/containers/systemd/hello.container", unit.as_str()),
    ];
    files.extend_from_slice(extra);
    write_tree(tree.path(), &files);
    let links = tree.path().join("usr/lib/bootc/bound-images.d");
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink("/usr/share/containers/systemd/hello.container", links.join("hello.container")).unwrap();
    let layout = crate::support::images::Layout::new(&dir.join("layout"), tag);
    layout.add_layer(tree.path());
    layout.oci_ref()
}

/// The staging of an OS image with a bound app pulls the app's image into
/// podman's storage and pins the unit by digest in that deployment; a bound
/// image that does not exist, or that the trust policy refuses (exit 4),
/// fails the switch with nothing staged; `cleanup` removes the bound image
/// no deployment uses any more, and only that one.
#[test]
fn bound_images_are_pulled_and_pinned_when_staging_and_a_missing_or_refused_one_stages_nothing() {
    use crate::deploy::{deploy_dir, hc};
    require_tool("podman");
    let reg = Registry::start();
    let (builder, store, layouts, sys) = (tmp(), tmp(), tmp(), tmp());
    let s = sys.path();
    let bound = reg.image("apps/bound:stable");
    build_push_app(builder.path(), "bound A", &bound);
    let conf = storage_conf(store.path());
    let conf = conf.to_str().unwrap();
    let env = [("CONTAINERS_STORAGE_CONF", conf)];
    let podman = PodmanCli { global: storage_args(store.path()), ..PodmanCli::default() };
    let digest_a = podman_digest_of(&reg, "apps/bound:stable");

    let v1 = os_with_bound_app(layouts.path(), "1", &bound);
    let out = hc(s, &env, &["switch", "--json", &v1]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = hc_json_env(s, &env, &["status", "--json"]);
    let b = &st["status"]["booted"]["boundImages"][0];
    assert_eq!((b["unit"].as_str(), b["digest"].as_str()), (Some("hello.container"), Some(digest_a.as_str())), "{st}");
    let pinned_a = b["pinned"].as_str().unwrap().to_string();
    assert_eq!(pinned_a, format!("{}@{digest_a}", reg.image("apps/bound")));
    assert_eq!(podman.image(&pinned_a).unwrap().expect("pulled by hostctl").digest, digest_a);
    let id1 = st["status"]["booted"]["id"].as_str().unwrap().to_string();
    let pin = std::fs::read_to_string(
        deploy_dir(s).join(&id1).join("etc/containers/systemd/hello.container.d/90-hostctl-bound-image.conf"),
    )
    .unwrap();
    assert!(pin.contains(&format!("[Container]\nImage={pinned_a}\n")), "{pin}");

    // A bound image that does not exist: exit 1, nothing staged.
    let none = os_with_bound_app(layouts.path(), "2", &reg.image("apps/none:1"));
    let before = std::fs::read_dir(deploy_dir(s)).unwrap().count();
    let out = hc(s, &env, &["switch", &none]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pulling bound images") && err.contains("apps/none:1"), "{err}");
    assert_eq!(std::fs::read_dir(deploy_dir(s)).unwrap().count(), before, "nothing staged");
    assert!(hc_json_env(s, &env, &["status", "--json"])["status"]["staged"].is_null());

    // Refused by the trust policy (podman applies the same policy.json): exit 4, nothing staged.
    let policy = store.path().join("policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"default":[{{"type":"insecureAcceptAnything"}}],"transports":{{"docker":{{"{}":[{{"type":"reject"}}]}}}}}}"#,
            reg.image("apps")
        ),
    )
    .unwrap();
    let v2 = os_with_bound_app(layouts.path(), "3", &bound);
    let out = hc(s, &env, &["--policy", policy.to_str().unwrap(), "switch", &v2]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(std::fs::read_dir(deploy_dir(s)).unwrap().count(), before, "nothing staged");

    // The tag moves on: the next deployments pin B; A stays pinned by v1 until it goes.
    build_push_app(builder.path(), "bound B", &bound);
    let digest_b = podman_digest_of(&reg, "apps/bound:stable");
    assert_ne!(digest_a, digest_b);
    for tag in ["4", "5"] {
        let out = hc(s, &env, &["switch", &os_with_bound_app(layouts.path(), tag, &bound)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let st = hc_json_env(s, &env, &["status", "--json"]);
    assert_eq!(st["status"]["booted"]["boundImages"][0]["digest"].as_str(), Some(digest_b.as_str()), "{st}");
    let r = hc_json_env(s, &env, &["cleanup", "--json"]);
    assert_eq!(r["appImages"]["removed"], serde_json::json!([pinned_a]), "{r}");
    assert!(podman.image(&pinned_a).unwrap().is_none(), "A removed");
    assert!(podman.image(&format!("{}@{digest_b}", reg.image("apps/bound"))).unwrap().is_some(), "B kept");
    // Images hostctl did not pull as bound images are never touched.
    let r = hc_json_env(s, &env, &["cleanup", "--json"]);
    assert_eq!(r["appImages"]["removed"], serde_json::json!([]), "{r}");
}

/// `install to-filesystem` of an OS image with a bound app: the app's image
/// lands in the new system's podman storage (its stateroot's
/// `/var/lib/containers/storage`, with the driver its storage.conf names), by
/// digest, and the unit is pinned to it in the new `/etc`, so that the first
/// boot runs it with the registry unreachable. The new system's podman, with
/// its own run paths, reads that storage (podman's database, which records
/// the installing podman's paths, is not left behind), and the host's own
/// podman storage is untouched.
#[test]
fn install_to_filesystem_pulls_the_bound_images_into_the_new_systems_podman_storage() {
    use crate::deploy::{deploy_dir, hc};
    require_tool("podman");
    let reg = Registry::start();
    let (builder, layouts, root, host_store, later) = (tmp(), tmp(), tmp(), tmp(), tmp());
    let bound = reg.image("apps/bound:stable");
    build_push_app(builder.path(), "bound at install", &bound);
    let digest = podman_digest_of(&reg, "apps/bound:stable");
    let os = os_with_bound_app_and(
        layouts.path(),
        "1",
        &bound,
        &[
            ("usr/lib/systemd/boot/efi/systemd-bootx64.efi", "MZ"),
            ("usr/share/containers/storage.conf", "[storage]\ndriver = \"vfs\"\n"),
        ],
    );
    let r = root.path();
    // The host's own podman storage, which the install must leave alone.
    let conf = storage_conf(host_store.path());
    let env = [("CONTAINERS_STORAGE_CONF", conf.to_str().unwrap())];
    let out = hc(r, &env, &["install", "to-filesystem", r.to_str().unwrap(), "--source-imgref", &os, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["deployment"].as_str().unwrap().to_string();

    let pinned = format!("{}@{digest}", reg.image("apps/bound"));
    let dropin = deploy_dir(r).join(&id).join("etc/containers/systemd/hello.container.d/90-hostctl-bound-image.conf");
    let pin = std::fs::read_to_string(&dropin).unwrap_or_else(|e| panic!("{}: {e}", dropin.display()));
    assert!(pin.contains(&format!("[Container]\nImage={pinned}\n")), "{pin}");
    let st = hc_json_env(r, &[], &["status", "--json"]);
    assert_eq!(st["status"]["deployments"][0]["boundImages"][0]["pinned"].as_str(), Some(pinned.as_str()), "{st}");

    // The new system's podman: its storage, its own run root and tmpdir, its driver.
    let storage = deploy_dir(r).join("var/lib/containers/storage");
    assert!(storage.join("vfs-images").is_dir(), "pulled with the target's driver (vfs)");
    let target = PodmanCli {
        global: vec![
            format!("--root={}", storage.display()),
            format!("--runroot={}", later.path().join("run").display()),
            format!("--tmpdir={}", later.path().join("libpod").display()),
            "--storage-driver=vfs".into(),
        ],
        ..PodmanCli::default()
    };
    let img = target.image(&pinned).unwrap().expect("the bound image is in the new system's storage by digest");
    assert_eq!(img.digest, digest);
    // cleanup on the new system knows it pulled it.
    let ledger = std::fs::read_to_string(deploy_dir(r).join("var/lib/hostctl/bound-images.json")).unwrap();
    assert!(ledger.contains(&pinned), "{ledger}");
    // Nothing went into the installing host's storage.
    let host = PodmanCli { global: storage_args(host_store.path()), ..PodmanCli::default() };
    assert!(host.image(&pinned).unwrap().is_none(), "the host's podman storage is untouched");
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The manifest digest `repo_tag` has in `reg` now (one request, hostctl's client).
fn podman_digest_of(reg: &Registry, repo_tag: &str) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(RegistryDigest(insecure()).digest(&reg.image(repo_tag))).unwrap()
}

fn hc_json_env(sysroot: &Path, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
    let out = crate::deploy::hc(sysroot, env, args);
    assert!(out.status.success(), "hostctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Two app commands at once: while one holds the apps lock, another that
/// changes an app fails with exit code 3 (after HOSTCTL_LOCK_TIMEOUT), and
/// one that only reads is not held up.
#[test]
fn an_app_command_while_another_runs_fails_locked_and_reading_is_not_blocked() {
    let sys = tmp();
    write_tree(sys.path(), &[("etc/containers/systemd/web.container", "[Container]\nImage=127.0.0.1:5000/web:1\n")]);
    let lock = sys.path().join("var/lib/hostctl/apps.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let held = hostctl::sysroot::lock_file(&lock, std::time::Duration::ZERO).unwrap();
    let env = [("HOSTCTL_LOCK_TIMEOUT", std::ffi::OsStr::new("0"))];
    let out = crate::support::hostctl_env(sys.path(), &env, &["app", "remove", "web"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("apps.lock"), "{err}");
    // Reading does not wait (it then needs systemd, which this host lacks).
    let out = crate::support::hostctl_env(sys.path(), &env, &["app", "list", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() != Some(3) && !err.contains("apps.lock"), "{err}");
    drop(held);
    // Free again: it runs (and fails further on, as this host has no systemd).
    let out = crate::support::hostctl_env(sys.path(), &env, &["app", "remove", "web"]);
    assert_ne!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `app update`'s rollback on real podman (systemd is the recording fake:
/// this host has none), against a real registry: the image the failed
/// update pulled, nameless after the rollback re-tagged the previous one,
/// is removed, and no dangling image is left; one that a container still
/// uses is kept, recorded, and removed by `app remove --purge` once that
/// container is gone.
#[tokio::test]
async fn a_rollback_on_real_podman_removes_the_failed_image_or_keeps_it_for_purge() {
    use hostctl::apps::install::remove;
    use hostctl::apps::record::AppRecord;
    use hostctl::apps::update::{update, UpdateOptions};
    use hostctl::host::units::{state, FakeUnits, JobResult};

    require_tool("podman");
    let reg = Registry::start();
    let (builder, host, root) = (tmp(), tmp(), tmp());
    let podman = PodmanCli { global: storage_args(host.path()), ..PodmanCli::default() };
    let units = FakeUnits::new();
    let web = reg.image("apps/web:stable");
    write_tree(
        root.path(),
        &[("etc/containers/systemd/web.container", &format!("[Container]\nImage={web}\nContainerName=web\n"))],
    );
    let apps = test_apps(root.path(), &podman, &units, None);
    let remote = RegistryDigest(insecure());
    let podman_run = |args: &[&str]| run(Command::new("podman").args(storage_args(host.path())).args(args));
    let dangling = || {
        let out = run(Command::new("podman").args(storage_args(host.path())).args([
            "images",
            "-q",
            "--filter",
            "dangling=true",
        ]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    // v1 runs as the app's container (no network: this host has none set up for podman).
    build_push_app(builder.path(), "v1\n", &web);
    podman.pull(&web, &apps.pull).unwrap();
    let v1 = podman.image(&web).unwrap().unwrap();
    podman_run(&["run", "-d", "--network=none", "--name", "web", &v1.id]);

    // v2 does not come up: rolled back, and v2 is gone from podman's storage.
    build_push_app(builder.path(), "v2\n", &web);
    units.on_next_start("web.service", JobResult::Failed("Job failed".into()), vec![state("failed", "failed")]);
    let r = update(&apps, &remote, &["web".to_string()], UpdateOptions::default()).await.unwrap();
    let reason = r[0].reason.clone().unwrap_or_default();
    assert_eq!(r[0].updated, "rolled back", "{reason}");
    assert!(reason.contains("removed the image it pulled"), "{reason}");
    let d2 = r[0].to_digest.clone().unwrap();
    assert_eq!(podman.image(&web).unwrap().unwrap().id, v1.id, "v1 back under the tag");
    assert_eq!(dangling(), "", "no nameless image left");
    assert!(AppRecord::load(&apps.records_dir(), "web").unwrap().failed_images.is_empty());
    assert!(d2.starts_with("sha256:"));

    // v3 does not come up either, and a stopped container uses it: kept, recorded.
    build_push_app(builder.path(), "v3\n", &web);
    podman.pull(&web, &apps.pull).unwrap();
    let v3 = podman.image(&web).unwrap().unwrap();
    podman_run(&["create", "--network=none", "--name", "debug", &v3.id]);
    podman.tag(&v1.id, &web).unwrap(); // as before the update: the tag names what runs
    units.on_next_start("web.service", JobResult::Failed("Job failed".into()), vec![state("failed", "failed")]);
    let r = update(&apps, &remote, &["web".to_string()], UpdateOptions::default()).await.unwrap();
    let reason = r[0].reason.clone().unwrap_or_default();
    assert_eq!(r[0].updated, "rolled back", "{reason}");
    assert!(reason.contains("kept the image it pulled") && reason.contains("container debug uses it"), "{reason}");
    let rec = AppRecord::load(&apps.records_dir(), "web").unwrap();
    assert_eq!(rec.failed_images.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [v3.id.as_str()]);
    assert!(podman.image(&v3.id).unwrap().is_some());

    // remove --purge, once the container is gone: v3 goes; v1, which the app's container runs, stays.
    podman_run(&["rm", "debug"]);
    let rm = remove(&apps, "web", true).unwrap();
    assert_eq!(rm.failed_images_removed, [v3.id.as_str()], "{rm:?}");
    assert!(podman.image(&v3.id).unwrap().is_none());
    assert_eq!(rm.image_removed, None, "the running container keeps v1");
    assert_eq!(dangling(), "");
    podman_run(&["rm", "-f", "-t", "0", "web"]);
}

/// A full disk while pulling an app image (issue 13), on real podman
/// against a real registry (systemd is the recording fake): `app update` to
/// an image whose layers cannot fit on the filesystem of podman's storage is
/// refused by the space check before podman downloads anything: exit code 6
/// with the hint, the app's image and podman's storage as they were, not a
/// byte taken; `--download-only` alike. With room, the same pull goes through.
#[tokio::test]
async fn an_app_update_that_cannot_fit_is_refused_before_podman_downloads_and_goes_through_with_room() {
    use hostctl::apps::remote::RegistryImages;
    use hostctl::apps::update::{failure, update, UpdateOptions};
    use hostctl::host::units::FakeUnits;

    require_tool("podman");
    let reg = Registry::start();
    let (builder, root) = (tmp(), tmp());
    let fs = crate::support::tmpfs::Tmpfs::mount("32m");
    let podman = PodmanCli { global: storage_args(fs.path()), ..PodmanCli::default() };
    let units = FakeUnits::new();
    let registry = RegistryImages { options: insecure(), verifier: None };
    let web = reg.image("apps/web:stable");
    write_tree(
        root.path(),
        &[("etc/containers/systemd/web.container", &format!("[Container]\nImage={web}\nContainerName=web\n"))],
    );
    let apps = test_apps(root.path(), &podman, &units, Some(&registry));
    let remote = RegistryDigest(insecure());
    let images = || {
        let out = run(Command::new("podman").args(storage_args(fs.path())).args(["images", "-a", "-q", "--no-trunc"]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    build_push_app(builder.path(), "v1\n", &web);
    podman.pull(&web, &apps.pull).unwrap();
    let v1 = podman.image(&web).unwrap().unwrap();
    // v2 adds 12 MiB that do not compress: 3 x 12 MiB unpacked (the
    // estimate) does not fit in what is left of 32 MiB.
    build_push_app_with(builder.path(), "v2\n", 12 << 20, &web);
    let (before, free) = (images(), fs.avail());
    assert!(free < 3 * (12 << 20), "the tmpfs leaves {free} bytes: too many for the test");
    let r = update(&apps, &remote, &["web".to_string()], UpdateOptions::default()).await.unwrap();
    let reason = r[0].reason.clone().unwrap_or_default();
    assert_eq!(r[0].updated, "failed", "{reason}");
    assert!(reason.contains("not pulling") && reason.contains("missing layer(s)"), "{reason}");
    let err = anyhow::Error::new(failure(&r).expect("the update failed"));
    assert_eq!(hostctl::error::exit_code(&err), 6, "{err:#}");
    let hint = hostctl::error::hint(&err).unwrap_or_default();
    assert!(hint.starts_with("there is not enough free space"), "{hint}");
    assert_eq!(images(), before, "podman's storage as it was");
    assert_eq!(podman.image(&web).unwrap().unwrap().id, v1.id, "the app's image as it was");
    assert!(fs.avail() + (64 << 10) >= free, "bytes taken: {} -> {}", free, fs.avail());
    // --download-only is refused the same way.
    let opts = UpdateOptions { download_only: true, ..Default::default() };
    let r = update(&apps, &remote, &["web".to_string()], opts).await.unwrap();
    assert_eq!(r[0].updated, "failed", "{:?}", r[0].reason);

    // With room, the same pull goes through (download only: this host has
    // no systemd to restart the app under).
    fs.grow("160m");
    let opts = UpdateOptions { download_only: true, ..Default::default() };
    let r = update(&apps, &remote, &["web".to_string()], opts).await.unwrap();
    assert_eq!(r[0].updated, "pending", "{:?}", r[0].reason);
    let v2 = podman.image(&web).unwrap().unwrap();
    assert_eq!(Some(v2.digest.as_str()), r[0].to_digest.as_deref());
    assert_ne!(v2.id, v1.id);
}

/// `app install` skips podman's pull only when podman holds the registry's
/// image under the name already (read from podman's storage files, as
/// `podman image inspect` tells it) and hostctl's policy check accepts it:
/// a real registry, podman storage and cosign signatures. The tag moving on,
/// an unsigned image or no policy to ask: a pull, as before.
#[test]
fn the_look_before_an_install_skips_the_pull_only_for_the_registrys_image_signed_as_the_policy_asks() {
    use hostctl::apps::remote::{RegistryImages, RemoteImages};

    require_tool("podman");
    let env = crate::trust::Env::new();
    let pubkey = env.cosign_keys("release");
    let policy = env.policy("policy.json", "apps/web", crate::trust::key_policy(&pubkey, "matchRepository"));
    let verifier = hostctl::trust::verifier_from_policy(env.sysroot.path(), Some(&policy), false).unwrap();
    let checked = RegistryImages { options: insecure(), verifier: Some(verifier) };
    let unchecked = RegistryImages { options: insecure(), verifier: None };
    let storage = tmp();
    let podman = PodmanCli { global: storage_args(storage.path()), ..PodmanCli::default() };
    let settings = PullSettings { tls_verify: false, ..Default::default() };
    let web = env.reg.image("apps/web:stable");

    let v1 = env.push("apps/web:stable", &[("www/index.html", "v1\n")]);
    env.cosign_sign("release", "apps/web", &v1);
    // The look at podman's own lists, without podman: absent, then as podman says.
    assert_eq!(podman.image_quick(&web).unwrap(), None);
    podman.pull(&web, &settings).unwrap();
    let local = podman.image(&web).unwrap().unwrap();
    let quick = podman.image_quick(&web).unwrap().unwrap();
    assert_eq!((&quick.id, &quick.digest, quick.digests()), (&local.id, &local.digest, local.digests()));
    assert_eq!(podman.image_quick(&env.reg.image("apps/web:other")).unwrap(), None);
    let look = checked.look(&web).unwrap();
    assert_eq!(look.digests, [v1]);
    assert!(look.accepted.as_ref().is_some_and(|v| v.signature_verified), "{look:?}");
    assert!(look.pull_changes_nothing(&local).is_some(), "the registry's image, signed: {look:?} against {local:?}");
    assert!(unchecked.look(&web).unwrap().pull_changes_nothing(&local).is_none(), "no policy asked");

    // The tag moves on to an unsigned image, then that image is signed.
    let v2 = env.push("apps/web:stable", &[("www/index.html", "v2\n")]);
    let look = checked.look(&web).unwrap();
    assert_eq!((look.digests.as_slice(), look.accepted.is_none()), ([v2.clone()].as_slice(), true), "unsigned");
    assert!(look.pull_changes_nothing(&local).is_none());
    env.cosign_sign("release", "apps/web", &v2);
    let look = checked.look(&web).unwrap();
    assert!(
        look.accepted.is_some() && look.pull_changes_nothing(&local).is_none(),
        "signed, but not what podman holds"
    );
    podman.pull(&web, &settings).unwrap();
    assert!(look.pull_changes_nothing(&podman.image(&web).unwrap().unwrap()).is_some(), "pulled: held now");
}
