//! Authoring and operating commands end to end on images built by real
//! umoci: `container lint` against unpacked images that break each check,
//! `config-diff` on a temp sysroot, `image rm` / `image prune` then `cleanup`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::images::{write_tree, Layout};
use crate::support::{hostctl, hostctl_bin, hostctl_env, hostctl_ok, run};

/// A tree that passes every check: one kernel with its initramfs, hostctl
/// with its hook and enabled units, the API directories, an empty /boot.
fn good_tree(root: &Path) {
    write_tree(
        root,
        &[
            ("usr/lib/modules/6.12.1/vmlinuz", "kernel"),
            ("usr/lib/modules/6.12.1/initramfs.img", "initramfs"),
            ("usr/lib/hostctl/kargs.d/10-base.toml", "kargs = [\"console=ttyS0\"]\n"),
            ("usr/bin/hostctl", "#!/bin/sh\n"),
            ("usr/share/initramfs-tools/hooks/hostctl", "#!/bin/sh\n"),
            ("usr/lib/systemd/system/hostctl-finalize-staged.service", "[Unit]\n"),
            ("usr/lib/systemd/system/hostctl-health.service", "[Unit]\n"),
            ("usr/share/containers/systemd/web.container", "[Container]\nImage=quay.io/example/web:1\n"),
            ("etc/hostname", "host\n"),
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
        ],
    );
    for d in ["dev", "proc", "sys", "run", "tmp", "var", "boot", "sysroot", "usr/lib/hostctl/bound-images.d"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    symlink("/run", root.join("var/run")).unwrap();
    let wants = root.join("usr/lib/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    for u in ["hostctl-finalize-staged.service", "hostctl-health.service"] {
        symlink(format!("../{u}"), wants.join(u)).unwrap();
    }
    symlink("/usr/share/containers/systemd/web.container", root.join("usr/lib/hostctl/bound-images.d/web.container"))
        .unwrap();
}

/// Breaks every check but etc-merge (which needs /etc not to be a directory).
fn break_everything(r: &Path) {
    write_tree(
        r,
        &[
            ("usr/lib/modules/6.1.0/vmlinuz", "a second kernel, without initramfs"),
            ("boot/vmlinuz-6.12.1", "a kernel in /boot"),
            ("usr/lib/hostctl/kargs.d/20-bad.toml", "kargs = \"not a list\"\n"),
            ("usr/etc/motd", "both /etc and /usr/etc"),
            ("run/app.pid", "1"),
            ("tmp/build.o", "x"),
            ("var/lib/app/state", "seeded once"),
            ("var/log/build.log", "a build log"),
            ("etc/a.conf", "linked"),
            ("etc/hostname", ""),
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:500:500::/:/bin/false\n"),
            ("etc/app/secret", "owned by a dynamic id"),
            ("usr/bin/tool", "setuid"),
            ("usr/share/containers/systemd/noimage.container", "[Container]\nExec=true\n"),
            ("usr/lib/hostctl/agent.d/50-fleet.toml", "strategy = \"fleet_lock\"\n[fleet_lock]\nslots = 2\n"),
        ],
    );
    std::fs::hard_link(r.join("etc/a.conf"), r.join("etc/b.conf")).unwrap();
    std::os::unix::fs::chown(r.join("etc/app/secret"), Some(500), Some(500)).unwrap();
    std::fs::set_permissions(r.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(r.join("tmp").join(OsStr::from_bytes(b"caf\xe9")), "").unwrap();
    std::fs::remove_dir(r.join("proc")).unwrap();
    std::fs::remove_dir(r.join("sysroot")).unwrap();
    std::fs::remove_file(r.join("var/run")).unwrap();
    std::fs::create_dir(r.join("var/run")).unwrap();
    std::fs::remove_file(r.join("usr/lib/systemd/system/multi-user.target.wants/hostctl-health.service")).unwrap();
    symlink(
        "/usr/share/containers/systemd/noimage.container",
        r.join("usr/lib/hostctl/bound-images.d/noimage.container"),
    )
    .unwrap();
}

/// `umoci unpack`s the layout's image into `dir` and returns its rootfs.
fn unpack(layout: &Layout, dir: &Path) -> PathBuf {
    let image = format!("{}:{}", layout.dir.display(), layout.tag);
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(dir));
    dir.join("rootfs")
}

fn lint(args: &[&str]) -> Output {
    Command::new(hostctl_bin()).args(["container", "lint"]).args(args).env_remove("RUST_LOG").output().unwrap()
}

/// The names of the checks the JSON report says failed.
fn failed(out: &Output) -> BTreeSet<String> {
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn container_lint_reports_each_broken_check_by_name_in_umoci_images() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    good_tree(&tree);
    let layout = Layout::new(&t.path().join("layout"), "v1");
    layout.add_layer(&tree);

    // The good image passes, warnings fatal or not.
    let good = unpack(&layout, &t.path().join("good"));
    let out = lint(&["--rootfs", good.to_str().unwrap(), "--json", "--fatal-warnings"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(failed(&out).is_empty());

    // A layer that breaks every check but etc-merge: each is reported by name.
    layout.change_rootfs(break_everything);
    let bad = unpack(&layout, &t.path().join("bad"));
    let out = lint(&["--rootfs", bad.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let all: BTreeSet<String> = String::from_utf8(lint(&["--list"]).stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().into())
        .collect();
    let want: BTreeSet<String> = all.iter().filter(|n| *n != "etc-merge").cloned().collect();
    assert_eq!(failed(&out), want);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container lint: 10 error(s)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The terminal form names each check and its findings.
    let out = lint(&["--rootfs", bad.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "error kernel:",
        "2 kernels (6.1.0, 6.12.1)",
        "/boot/vmlinuz-6.12.1",
        "/usr/lib/hostctl/kargs.d/20-bad.toml: parsing",
        "/proc is missing",
        "/var/lib/app (1 file)",
        "/etc/a.conf, /etc/b.conf are one file",
        "user app (500) in /etc/passwd",
        "/etc/app/secret (owner 500:500)",
        "/tmp/caf\\xe9: the name is not UTF-8",
        "/usr/bin/tool (setuid, mode 4755)",
        "hostctl-health.service is not enabled",
        "noimage.container has no Image=",
        "error agent-toml:",
        "/usr/lib/hostctl/agent.d/50-fleet.toml:3: unknown field `slots`",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    // Only info left after skipping the failures: passes even with --fatal-warnings.
    let mut args = vec!["--rootfs".to_string(), bad.display().to_string(), "--fatal-warnings".into()];
    for n in want.iter().filter(|n| *n != "setuid") {
        args.extend(["--skip".to_string(), n.clone()]);
    }
    let out = lint(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Warnings alone fail only with --fatal-warnings.
    let warn_only = ["--skip", "kernel", "--skip", "kargs", "--skip", "api-base-directories", "--skip", "sysroot"];
    let rest =
        ["--skip", "var-run", "--skip", "etc-usretc", "--skip", "utf8", "--skip", "hostctl", "--skip", "bound-images"];
    let rest_too = ["--skip", "agent-toml"];
    let mut a: Vec<&str> = vec!["--rootfs", bad.to_str().unwrap()];
    a.extend(warn_only);
    a.extend(rest);
    a.extend(rest_too);
    assert!(lint(&a).status.success());
    a.push("--fatal-warnings");
    assert_eq!(lint(&a).status.code(), Some(1));

    // An /etc that is not a directory: etc-merge.
    layout.change_rootfs(|r| {
        std::fs::remove_dir_all(r.join("etc")).unwrap();
        symlink("usr/etc", r.join("etc")).unwrap();
    });
    let worse = unpack(&layout, &t.path().join("worse"));
    let out = lint(&["--rootfs", worse.to_str().unwrap(), "--json"]);
    assert!(failed(&out).contains("etc-merge"), "{}", String::from_utf8_lossy(&out.stdout));

    // Bad command lines: exit 2.
    assert_eq!(lint(&["--skip", "no-such-check"]).status.code(), Some(2));
    let out = lint(&["--rootfs", t.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("opening the rootfs"));
}

/// An OCI layout `tag` with a kernel, /etc defaults and `marker` in /usr.
fn os_layout(dir: &Path, tag: &str, marker: &str) -> Layout {
    let tree = tempfile::tempdir().unwrap();
    write_tree(
        tree.path(),
        &[
            ("usr/lib/modules/6.1.0-test/vmlinuz", "kernel"),
            ("usr/lib/modules/6.1.0-test/initramfs.img", "initramfs"),
            ("usr/share/marker", marker),
            ("etc/passwd", "root:x:0:0\n"),
            ("etc/motd", "hello\n"),
            ("etc/ssh/sshd_config", "Port 22\n"),
            ("etc/issue", "Debian\n"),
        ],
    );
    let l = Layout::new(dir, tag);
    l.add_layer(tree.path());
    l
}

fn json(out: String) -> Value {
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn config_diff_lists_what_the_booted_etc_changed_against_the_image() {
    let t = tempfile::tempdir().unwrap();
    let l = os_layout(&t.path().join("layout"), "v1", "1");
    let s = t.path().join("sysroot");
    std::fs::create_dir(&s).unwrap();
    let r = json(hostctl_ok(&s, &["switch", "--json", &l.oci_ref()]));
    let id = r["staged"]["id"].as_str().unwrap().to_string();
    let etc = s.join("hostctl/deploy/default").join(&id).join("etc");

    assert_eq!(hostctl_ok(&s, &["config-diff"]), "");
    std::fs::write(etc.join("passwd"), "root:x:0:0\nalice:x:1000:1000\n").unwrap();
    std::fs::set_permissions(etc.join("issue"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(etc.join("motd")).unwrap();
    std::fs::remove_dir_all(etc.join("ssh")).unwrap();
    write_tree(&etc, &[("sudoers.d/alice", "alice ALL=(ALL) ALL\n")]);

    let v = json(hostctl_ok(&s, &["config-diff", "--json"]));
    assert_eq!(v["deployment"], id.as_str());
    assert_eq!(v["added"], serde_json::json!(["sudoers.d", "sudoers.d/alice"]));
    assert_eq!(v["removed"], serde_json::json!(["motd", "ssh"]));
    assert_eq!(
        v["modified"],
        serde_json::json!([{"path": "issue", "changes": ["mode"]}, {"path": "passwd", "changes": ["content"]}])
    );
    let text = hostctl_ok(&s, &["config-diff"]);
    assert_eq!(
        text,
        "A /etc/sudoers.d\nA /etc/sudoers.d/alice\nM /etc/issue (mode)\nM /etc/passwd (content)\nD /etc/motd\nD /etc/ssh\n"
    );
    // Nothing booted: a clear error.
    let out = hostctl_env(&s, &[("HOSTCTL_BOOTED", OsStr::new("none"))], &["config-diff"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no booted deployment"));
}

fn store_images(s: &Path) -> Vec<String> {
    json(hostctl_ok(s, &["image", "list", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"]["image"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn image_rm_refuses_a_deployed_image_and_cleanup_reclaims_what_rm_and_prune_forgot() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("layout");
    let v1 = os_layout(&dir, "v1", "one");
    let v2 = os_layout(&dir, "v2", "two");
    let v3 = os_layout(&dir, "v3", "three");
    let s = t.path().join("sysroot");
    std::fs::create_dir(&s).unwrap();
    hostctl_ok(&s, &["switch", &v1.oci_ref()]);
    hostctl_ok(&s, &["image", "pull", &v2.oci_ref()]);
    hostctl_ok(&s, &["image", "pull", &v3.oci_ref()]);
    let name = |l: &Layout| format!("{}:{}", l.dir.display(), l.tag);
    assert_eq!(store_images(&s), [name(&v1), name(&v2), name(&v3)]);

    // The deployed image is refused, and nothing is removed with it.
    let out = hostctl(&s, &["image", "rm", &v2.oci_ref(), &v1.oci_ref()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("image {} ", v1.oci_ref())) && err.contains("is used by deployment"), "{err}");
    assert_eq!(store_images(&s).len(), 3);
    let out = hostctl(&s, &["image", "rm", "oci:/no/such/layout:v9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no image oci:/no/such/layout:v9 in the store"));

    // rm forgets v2; cleanup then collects its layer and object.
    let removed = json(hostctl_ok(&s, &["image", "rm", "--json", &v2.oci_ref()]));
    assert_eq!(removed[0]["image"]["image"], name(&v2).as_str());
    assert_eq!(store_images(&s), [name(&v1), name(&v3)]);
    let c = json(hostctl_ok(&s, &["cleanup", "--json"]));
    assert_eq!(c["store"]["layers"], 1, "{c}");
    assert!(c["store"]["objects"].as_u64().unwrap() >= 1, "{c}");

    // prune forgets everything no deployment uses (v3), keeps v1.
    let pruned = json(hostctl_ok(&s, &["image", "prune", "--json"]));
    assert_eq!(pruned.as_array().unwrap().len(), 1, "{pruned}");
    assert_eq!(store_images(&s), [name(&v1)]);
    let c = json(hostctl_ok(&s, &["cleanup", "--json"]));
    assert_eq!(c["store"]["layers"], 1, "{c}");
    // Nothing left to prune; the deployment still has everything it needs.
    assert_eq!(json(hostctl_ok(&s, &["image", "prune", "--json"])), serde_json::json!([]));
    assert_eq!(json(hostctl_ok(&s, &["cleanup", "--json"]))["store"]["objects"], 0);
}

/// podman with its own storage under `dir` (hermetic, parallel-safe).
fn podman(dir: &Path) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", "/etc/hostctl-test/containers.conf")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--storage-driver")
        .arg("vfs");
    c
}

/// `podman build` of `containerfile` (with `files` in its context); the output, whatever the result.
fn build(dir: &Path, containerfile: &str, files: &[(&str, &str)]) -> Output {
    let ctx = tempfile::tempdir().unwrap();
    write_tree(ctx.path(), files);
    std::fs::write(ctx.path().join("Containerfile"), containerfile).unwrap();
    podman(dir).args(["build", "--pull=never", "-t", "localhost/lint-test:built"]).arg(ctx.path()).output().unwrap()
}

#[test]
fn container_lint_as_a_podman_build_step_passes_a_good_image_and_fails_the_build_on_an_error() {
    crate::support::require_tool("podman");
    crate::support::require_tool("strip");
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    good_tree(&tree);
    // hostctl (without debug info: a smaller image) and the libraries it links.
    run(Command::new("strip").arg("--strip-debug").arg("-o").arg(tree.join("usr/bin/hostctl")).arg(hostctl_bin()));
    let ldd = run(Command::new("ldd").arg(hostctl_bin()));
    for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = tree.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dest).unwrap();
    }
    let tar = t.path().join("base.tar");
    run(Command::new("tar").arg("--numeric-owner").arg("-C").arg(&tree).arg("-cf").arg(&tar).arg("."));
    run(podman(t.path()).arg("import").arg("-q").arg(&tar).arg("localhost/lint-test:base"));

    // RUN in exec form (the base has no shell). Inside the build, what podman
    // mounts (/proc, /dev, /etc/hostname, /etc/resolv.conf, /run/.containerenv)
    // is skipped: the good image passes, warnings fatal.
    let lint_step = "RUN [\"/usr/bin/hostctl\", \"container\", \"lint\", \"--fatal-warnings\"]\n";
    let out = build(t.path(), &format!("FROM localhost/lint-test:base\n{lint_step}"), &[]);
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    let all = hostctl::lint::checks().len();
    assert!(log.contains(&format!("/: {all} checks passed, 0 errors, 0 warnings, 0 infos, 0 skipped")), "{log}");

    // A second kernel fails the build, naming the check.
    let out = build(
        t.path(),
        &format!("FROM localhost/lint-test:base\nCOPY vmlinuz /usr/lib/modules/6.1.0/vmlinuz\n{lint_step}"),
        &[("vmlinuz", "an old kernel")],
    );
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("error kernel:") && log.contains("2 kernels (6.1.0, 6.12.1)"), "{log}");
}
