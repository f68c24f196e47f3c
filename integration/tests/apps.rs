//! Apps on the host's real tools: what `app update` and its rollback rest on
//! (podman pulls, inspects and re-tags by ID; hostctl's one-request digest
//! check agrees with podman's digest) against a real registry, with images
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
    let ctx = tempfile::tempdir().unwrap();
    write_tree(ctx.path(), &[("www/index.html", page)]);
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
