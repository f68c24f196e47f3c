//! Deployments end to end, in temp sysroots against a real registry: switch,
//! /etc edits, upgrade with the three-way merge, rollback, pins, cleanup,
//! space checks on small tmpfs sysroots, and SIGKILL at random instants.
//!
//! Booted detection in temp sysroots follows docs/deployments.md: the default
//! boot entry's deployment counts as booted unless `HOSTCTL_BOOTED` says otherwise.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::images::write_tree;
use crate::support::registry::Registry;
use crate::support::tmpfs::Tmpfs;
use crate::support::{hostctl_bin, require_tool, run, tree_snapshot};

/// Runs hostctl on `sysroot` with extra environment variables.
pub(crate) fn hc(sysroot: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(hostctl_bin());
    c.arg("--sysroot").arg(sysroot).arg("--tls-verify=false").args(args).env_remove("RUST_LOG");
    c.env_remove("HOSTCTL_BOOTED");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running hostctl")
}

pub(crate) fn hc_ok(sysroot: &Path, args: &[&str]) -> String {
    let out = hc(sysroot, &[], args);
    assert!(
        out.status.success(),
        "hostctl {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn hc_json(sysroot: &Path, args: &[&str]) -> Value {
    let out = hc_ok(sysroot, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

pub(crate) fn status(sysroot: &Path) -> Value {
    hc_json(sysroot, &["status", "--json"])
}

pub(crate) fn deploy_dir(sysroot: &Path) -> PathBuf {
    sysroot.join("hostctl/deploy/default")
}

/// Boot entries of the default stateroot, default first: (file name, deployment id, text).
pub(crate) fn entries(boot: &Path) -> Vec<(String, String, String)> {
    let dir = boot.join("loader/entries");
    let mut v: Vec<(u64, String, String, String)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| e.unwrap())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let rest = name.strip_prefix("hostctl-default-")?.strip_suffix(".conf")?;
                    // A boot counter (`+3`, `+2-1`: docs/boot.md) is not part of the id.
                    let rest = rest.split_once('+').map_or(rest, |(r, _)| r);
                    let (prio, id) = rest.split_once('-')?;
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    Some((prio.parse().ok()?, name.clone(), id.to_string(), text))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v.into_iter().map(|(_, n, id, t)| (n, id, t)).collect()
}

/// Every boot entry points at an existing deployment tree and kernel files.
fn assert_entries_bootable(sysroot: &Path, boot: &Path) {
    for (name, id, text) in entries(boot) {
        assert!(deploy_dir(sysroot).join(&id).join("etc").is_dir(), "{name}: deployment {id} has no tree or /etc");
        for line in text.lines() {
            if let Some(p) = line.strip_prefix("linux ").or_else(|| line.strip_prefix("initrd ")) {
                assert!(boot.join(p.trim_start_matches('/')).is_file(), "{name}: {p} missing");
            }
        }
        assert!(text.contains(&format!("hostctl=/hostctl/deploy/default/{id}")), "{name}: {text}");
    }
}

/// A podman with its own storage under a temp dir (hermetic, parallel-safe).
pub(crate) struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub(crate) fn new() -> Podman {
        require_tool("podman");
        Podman { dir: tempfile::tempdir().unwrap() }
    }

    /// `program` (podman or buildah) on this podman's storage.
    fn on_storage(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("CONTAINERS_CONF", "/etc/hostctl-test/containers.conf")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--storage-driver")
            .arg("vfs");
        c
    }

    fn cmd(&self) -> Command {
        self.on_storage("podman")
    }

    /// buildah sharing this podman's storage.
    fn buildah(&self) -> Command {
        self.on_storage("buildah")
    }

    /// `podman build` of `containerfile` with the files of `ctx_files`, pushed to `dest`.
    fn build_push(&self, containerfile: &str, ctx_files: &[(&str, &str)], dest: &str) {
        let ctx = tempfile::tempdir().unwrap();
        write_tree(ctx.path(), ctx_files);
        std::fs::write(ctx.path().join("Containerfile"), containerfile).unwrap();
        let tag = format!("localhost/hostctl-test:{}", std::process::id());
        run(self.cmd().args(["build", "-q", "--tls-verify=false", "-t", &tag]).arg(ctx.path()));
        run(self.cmd().args(["push", "-q", "--tls-verify=false", &tag, &format!("docker://{dest}")]));
    }
}

const KERNEL: &str = "usr/lib/modules/6.1.0-test/vmlinuz";
const INITRD: &str = "usr/lib/modules/6.1.0-test/initramfs.img";

/// The base image, built `FROM scratch` by podman (the issue asks for images
/// built by podman or buildah from a base): /etc files, a kernel, kargs.d and
/// a /var seed.
fn push_base(reg: &Registry, pm: &Podman) -> String {
    let image = reg.image("base:1");
    pm.build_push(
        "FROM scratch\nCOPY tree/ /\n",
        &[
            ("tree/etc/os-release", "ID=test\nVERSION_ID=1\n"),
            ("tree/etc/app.conf", "a=1\n"),
            ("tree/etc/shared.conf", "x=1\n"),
            ("tree/etc/remove-me.conf", "old\n"),
            ("tree/etc/untouched.conf", "same\n"),
            (&format!("tree/{KERNEL}"), "kernel one"),
            (&format!("tree/{INITRD}"), "initramfs one"),
            ("tree/usr/lib/hostctl/kargs.d/10-console.toml", "kargs = [\"console=ttyS0\", \"quiet\"]\n"),
            ("tree/usr/bin/hello", "#!/bin/sh\necho hi\n"),
            ("tree/var/lib/seed", "seeded\n"),
        ],
        &image,
    );
    image
}

#[test]
fn lifecycle_switch_edit_upgrade_merge_rollback_pin_cleanup() {
    let reg = Registry::start();
    let pm = Podman::new();
    let base = push_base(&reg, &pm);
    let os = reg.image("os:latest");
    pm.build_push(
        &format!("FROM {base}\nCOPY motd /etc/motd\nLABEL org.opencontainers.image.version=1.0\n"),
        &[("motd", "welcome v1\n")],
        &os,
    );

    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    let boot = s.join("boot");

    // switch v1
    let r = hc_json(s, &["switch", "--json", &os]);
    assert_eq!(r["changed"], true, "{r}");
    let v1 = r["staged"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["finalized"]["id"], v1.as_str());
    let t1 = deploy_dir(s).join(&v1);
    assert_eq!(std::fs::read_to_string(t1.join("etc/motd")).unwrap(), "welcome v1\n");
    assert_eq!(std::fs::read_to_string(t1.join("usr/etc/app.conf")).unwrap(), "a=1\n");
    // /etc is a real copy; the tree's other files are hardlinks into the store.
    assert_eq!(std::fs::metadata(t1.join("etc/app.conf")).unwrap().nlink(), 1);
    assert!(std::fs::metadata(t1.join("usr/bin/hello")).unwrap().nlink() >= 2);
    assert_eq!(std::fs::read_to_string(deploy_dir(s).join("var/lib/seed")).unwrap(), "seeded\n");
    // Staging synced the store: no layer still waits for the disk.
    let unsynced = s.join("hostctl/repo/unsynced");
    assert_eq!(std::fs::read_dir(&unsynced).map(|d| d.count()).unwrap_or(0), 0, "{}", unsynced.display());
    let e = entries(&boot);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].1, v1);
    let text = &e[0].2;
    assert!(text.contains("title os 1.0 ("), "{text}");
    assert!(text.contains("root=") && text.contains("console=ttyS0 quiet"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("initrd /hostctl/default/")), "{text}");
    assert_entries_bootable(s, &boot);
    let st = status(s);
    assert_eq!(st["apiVersion"], "hostctl.dev/v2");
    assert_eq!(st["spec"]["image"]["image"], os.as_str());
    assert_eq!(st["spec"]["image"]["transport"], "registry");
    assert_eq!(st["status"]["booted"]["id"], v1.as_str());
    assert_eq!(st["status"]["booted"]["image"]["version"], "1.0");
    assert_eq!(st["status"]["booted"]["kernel"], "6.1.0-test");
    assert!(st["status"]["rollback"].is_null());
    let human = hc_ok(s, &["status"]);
    assert!(human.contains("Booted: ") && human.contains("version:  1.0"), "{human}");
    let yaml = hc_ok(s, &["status", "--format", "yaml"]);
    assert!(yaml.contains("apiVersion: hostctl.dev/v2"), "{yaml}");

    // No update yet: --check says so in one round trip; upgrade is a no-op.
    let c = hc_json(s, &["upgrade", "--check", "--json"]);
    assert_eq!(c["updateAvailable"], false, "{c}");
    let r = hc_json(s, &["upgrade", "--json"]);
    assert_eq!(r["changed"], false, "{r}");

    // The admin edits /etc (modify, add, delete) and /var.
    let etc = t1.join("etc");
    std::fs::write(etc.join("app.conf"), "a=local\n").unwrap();
    std::fs::write(etc.join("shared.conf"), "x=local\n").unwrap();
    std::fs::write(etc.join("local.conf"), "mine\n").unwrap();
    std::fs::remove_file(etc.join("remove-me.conf")).unwrap();
    std::fs::write(deploy_dir(s).join("var/lib/local"), "state\n").unwrap();

    // v2 changes some of the same files and ships a new /var seed that must not apply.
    pm.build_push(
        &format!("FROM {base}\nCOPY v2/ /\nLABEL org.opencontainers.image.version=2.0\n"),
        &[
            ("v2/etc/motd", "welcome v2\n"),
            ("v2/etc/shared.conf", "x=2\n"),
            ("v2/etc/os-release", "ID=test\nVERSION_ID=2\n"),
            ("v2/var/lib/seed", "v2\n"),
        ],
        &os,
    );
    let c = hc_json(s, &["upgrade", "--check", "--json"]);
    assert_eq!(c["updateAvailable"], true, "{c}");
    assert_eq!(c["latestVersion"], "2.0");
    assert_eq!(status(s)["status"]["booted"]["id"], v1.as_str(), "--check changes nothing");

    let r = hc_json(s, &["upgrade", "--json"]);
    let v2 = r["staged"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["layersDownloaded"], 1, "only the new layer is fetched: {r}");
    let conflicts: Vec<&str> =
        r["staged"]["conflicts"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(conflicts, ["shared.conf"], "conflicts listed before staging: {r}");
    let etc2 = deploy_dir(s).join(&v2).join("etc");
    let read = |p: &str| std::fs::read_to_string(etc2.join(p)).ok();
    assert_eq!(read("app.conf").as_deref(), Some("a=local\n"), "local change kept");
    assert_eq!(read("local.conf").as_deref(), Some("mine\n"), "local addition kept");
    assert_eq!(read("remove-me.conf"), None, "local deletion kept");
    assert_eq!(read("motd").as_deref(), Some("welcome v2\n"), "unmodified file follows the image");
    assert_eq!(read("os-release").as_deref(), Some("ID=test\nVERSION_ID=2\n"));
    assert_eq!(read("shared.conf").as_deref(), Some("x=local\n"), "conflict: the admin's version wins");
    assert_eq!(read("untouched.conf").as_deref(), Some("same\n"));
    assert_eq!(std::fs::read_to_string(deploy_dir(s).join("var/lib/seed")).unwrap(), "seeded\n");
    assert_eq!(std::fs::read_to_string(deploy_dir(s).join("var/lib/local")).unwrap(), "state\n");
    // Same kernel: one copy on the boot partition.
    assert_eq!(std::fs::read_dir(boot.join("hostctl/default")).unwrap().count(), 1);
    let e = entries(&boot);
    assert_eq!(e.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), [v2.as_str(), v1.as_str()]);
    assert!(e[0].2.contains("title os 2.0"), "{}", e[0].2);
    assert_entries_bootable(s, &boot);
    let st = status(s);
    assert_eq!(st["status"]["booted"]["id"], v2.as_str());
    assert_eq!(st["status"]["rollback"]["id"], v1.as_str());
    // Seen from a machine that has not rebooted yet: v2 is staged.
    let out = hc(s, &[("HOSTCTL_BOOTED", &v1)], &["status", "--json"]);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["status"]["booted"]["id"], v1.as_str());
    assert_eq!(st["status"]["staged"]["id"], v2.as_str());
    assert_eq!(hc_json(s, &["upgrade", "--json"])["changed"], false, "already deployed");

    // rollback, and back again.
    hc_ok(s, &["rollback"]);
    let e = entries(&boot);
    assert_eq!(e.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), [v1.as_str(), v2.as_str()]);
    let st = status(s);
    assert_eq!(st["status"]["booted"]["id"], v1.as_str());
    assert_eq!(st["status"]["rollback"]["id"], v2.as_str());
    hc_ok(s, &["rollback"]);
    assert_eq!(entries(&boot)[0].1, v2);

    // Pin v1, then v3: the pinned v1 stays, unpinned it goes with its layer.
    hc_ok(s, &["pin", &v1]);
    assert_eq!(status(s)["status"]["rollback"]["pinned"], true);
    let v1_layers: Vec<String> = {
        let m: Value =
            serde_json::from_slice(&std::fs::read(deploy_dir(s).join(format!("{v1}.json"))).unwrap()).unwrap();
        m["layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
    };
    pm.build_push(
        &format!("FROM {base}\nCOPY motd /etc/motd\nLABEL org.opencontainers.image.version=3.0\n"),
        &[("motd", "welcome v3\n")],
        &os,
    );
    let r = hc_json(s, &["upgrade", "--json"]);
    let v3 = r["staged"]["id"].as_str().unwrap().to_string();
    let st = status(s);
    let ids: Vec<&str> =
        st["status"]["deployments"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [v3.as_str(), v2.as_str(), v1.as_str()], "pinned v1 kept");
    hc_ok(s, &["unpin", &v1]);
    let r = hc_json(s, &["cleanup", "--json"]);
    assert_eq!(r["deploymentsRemoved"], serde_json::json!([v1]), "{r}");
    assert!(!deploy_dir(s).join(&v1).exists() && !deploy_dir(s).join(format!("{v1}.json")).exists());
    assert_eq!(entries(&boot).iter().map(|x| x.1.clone()).collect::<Vec<_>>(), [v3.clone(), v2.clone()]);
    assert_entries_bootable(s, &boot);
    // v1's own layer (its motd) is gone from the store; the shared base layer stays.
    let layer_file = |d: &str| s.join("hostctl/repo/layers").join(format!("{}.json", d.trim_start_matches("sha256:")));
    let (base_layer, v1_layer) = (&v1_layers[0], v1_layers.last().unwrap());
    assert!(layer_file(base_layer).exists(), "shared base layer kept");
    assert!(!layer_file(v1_layer).exists(), "v1's own layer collected");
    // Everything kept still checks out: the v2 tree is intact after gc.
    assert!(deploy_dir(s).join(&v2).join("usr/bin/hello").is_file());
    let out = hc(s, &[], &["pin", "abcdef.99"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no deployment"));
}

#[test]
fn deployed_tree_equals_umoci_raw_unpack_except_etc() {
    require_tool("umoci");
    require_tool("buildah");
    let reg = Registry::start();
    let pm = Podman::new();
    let base = reg.image("base:1");
    pm.build_push(
        "FROM scratch\nCOPY t1/ /\n",
        &[
            ("t1/etc/a.conf", "1\n"),
            ("t1/etc/gone", "x"),
            (&format!("t1/{KERNEL}"), "k"),
            ("t1/usr/share/doc/x", "doc"),
            ("t1/opt/old", "o"),
        ],
        &base,
    );
    // A second layer with whiteouts and a symlink, made by buildah from a mounted container.
    let image = reg.image("os:v1");
    let c =
        String::from_utf8(run(pm.buildah().args(["from", "--tls-verify=false", &format!("docker://{base}")])).stdout)
            .unwrap();
    let c = c.trim();
    let mnt = PathBuf::from(String::from_utf8(run(pm.buildah().args(["mount", c])).stdout).unwrap().trim());
    std::fs::remove_file(mnt.join("opt/old")).unwrap();
    std::fs::remove_file(mnt.join("etc/gone")).unwrap();
    write_tree(&mnt, &[("etc/b.conf", "2\n"), ("usr/share/doc/y", "doc2")]);
    std::os::unix::fs::symlink("../usr/share/doc", mnt.join("etc/doclink")).unwrap();
    run(pm.buildah().args(["umount", c]));
    run(pm.buildah().args(["commit", "-q", "--tls-verify=false", c, &format!("docker://{image}")]));
    run(pm.buildah().args(["rm", c]));

    let work = tempfile::tempdir().unwrap();
    let layout_dir = work.path().join("layout");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false", &format!("docker://{image}")])
        .arg(format!("oci:{}:v1", layout_dir.display())));
    let unpacked = work.path().join("unpacked");
    run(Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:v1", layout_dir.display()))
        .arg(&unpacked));
    let sys = tempfile::tempdir().unwrap();
    let r = hc_json(sys.path(), &["switch", "--json", &image]);
    let tree = deploy_dir(sys.path()).join(r["staged"]["id"].as_str().unwrap());

    // Map umoci's etc/ to usr/etc/ and drop the deployment's live etc/.
    let want: BTreeMap<_, _> = tree_snapshot(&unpacked)
        .into_iter()
        .map(|(k, v)| if k == "etc" || k.starts_with("etc/") { (format!("usr/{k}"), v) } else { (k, v) })
        .collect();
    let mut got = tree_snapshot(&tree);
    got.retain(|k, _| k != "etc" && !k.starts_with("etc/"));
    let want_keys: Vec<_> = want.keys().collect();
    let got_keys: Vec<_> = got.keys().collect();
    assert_eq!(got_keys, want_keys);
    for (k, v) in &want {
        assert_eq!(&got[k], v, "{k}");
    }
    assert!(!tree.join("opt/old").exists() && !tree.join("usr/etc/gone").exists(), "whiteouts applied");
    // The live /etc holds the same files as the defaults.
    assert_eq!(std::fs::read_to_string(tree.join("etc/b.conf")).unwrap(), "2\n");
    assert!(!tree.join("etc/gone").exists());
    assert!(tree.join("etc/doclink").symlink_metadata().unwrap().file_type().is_symlink());
}

/// Builds (podman, `FROM scratch`) and pushes a small image: a base layer
/// with a kernel, and `files` as a second layer.
pub(crate) fn push_small(
    reg: &Registry,
    pm: &Podman,
    tag: &str,
    files: &[(&str, &str)],
    dest_repo_tag: &str,
) -> String {
    let mut ctx: Vec<(String, String)> = vec![
        (format!("base/{KERNEL}"), "kernel".into()),
        ("base/etc/hostname".into(), "h\n".into()),
        ("base/usr/bin/tool".into(), "t".into()),
    ];
    ctx.extend(files.iter().map(|(p, c)| (format!("top/{p}"), c.to_string())));
    let ctx: Vec<(&str, &str)> = ctx.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let image = reg.image(dest_repo_tag);
    pm.build_push(
        &format!("FROM scratch\nCOPY base/ /\nCOPY top/ /\nLABEL org.opencontainers.image.version={tag}\n"),
        &ctx,
        &image,
    );
    image
}

/// A registry holding `os:latest` at version 1.0 (built by [`push_small`],
/// `/etc/motd` "one") and a temp sysroot switched to it.
pub(crate) struct SwitchedToV1 {
    pub(crate) reg: Registry,
    pub(crate) pm: Podman,
    pub(crate) sys: tempfile::TempDir,
}

impl SwitchedToV1 {
    pub(crate) fn new() -> SwitchedToV1 {
        let reg = Registry::start();
        let pm = Podman::new();
        let v1 = push_small(&reg, &pm, "1.0", &[("etc/motd", "one\n")], "os:latest");
        let sys = tempfile::tempdir().unwrap();
        hc_ok(sys.path(), &["switch", &v1]);
        SwitchedToV1 { reg, pm, sys }
    }

    /// Pushes version `tag` with `files` as the new `os:latest`.
    pub(crate) fn push(&self, tag: &str, files: &[(&str, &str)]) -> String {
        push_small(&self.reg, &self.pm, tag, files, "os:latest")
    }
}

fn tmp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn preflight_refuses_an_image_that_cannot_fit_before_downloading() {
    let reg = Registry::start();
    let pm = Podman::new();
    let big = crate::support::noise_text(12 << 20, 7);
    let image = push_small(&reg, &pm, "big", &[("usr/share/big", &big)], "big:1");
    let fs = Tmpfs::mount("8m");
    let out = hc(fs.path(), &[], &["switch", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("not enough space"), "{err}");
    let objects = fs.path().join("hostctl/repo/objects");
    let n = std::fs::read_dir(&objects).map(|r| r.count()).unwrap_or(0);
    assert_eq!(n, 0, "nothing downloaded");
    assert!(!fs.path().join("hostctl/state.json").exists());
}

#[test]
fn full_disk_while_staging_leaves_nothing_half_staged_and_booted_untouched() {
    let reg = Registry::start();
    let pm = Podman::new();
    let v1 = push_small(&reg, &pm, "v1", &[("etc/motd", "one\n")], "os:latest");
    let fs = Tmpfs::mount("40m");
    let s = fs.path();
    let r = hc_json(s, &["switch", "--json", &v1]);
    let id1 = r["staged"]["id"].as_str().unwrap().to_string();
    // v2 carries a large /etc file: the store holds it once (pulled first), but
    // the real /etc copy made at finalisation does not fit.
    let big = crate::support::noise_text(10 << 20, 11);
    let v2 = push_small(&reg, &pm, "v2", &[("etc/motd", "two\n"), ("etc/big.dat", &big)], "os:latest");
    hc_ok(s, &["image", "pull", &v2]);
    let free = {
        let out = run(Command::new("df").args(["--output=avail", "-B1"]).arg(s));
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    // Leave 6 MiB: more than the preflight margin, less than the /etc copy.
    let filler = free.saturating_sub(6 << 20);
    run(Command::new("fallocate").arg("-l").arg(filler.to_string()).arg(s.join("filler")));
    // The state minus the id serial (which keeps counting so ids are never reused).
    let state_of = |s: &Path| {
        let mut v: Value = serde_json::from_slice(&std::fs::read(s.join("hostctl/state.json")).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("next_serial");
        v
    };
    let state_before = state_of(s);
    let entries_before = entries(&s.join("boot"));

    let out = hc(s, &[], &["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "exit code for a full disk: {err}");
    assert!(err.contains("No space left") || err.contains("not enough space"), "{err}");
    assert_eq!(state_of(s), state_before, "state untouched");
    assert_eq!(entries(&s.join("boot")), entries_before, "boot entries untouched");
    assert!(tmp_leftovers(&deploy_dir(s)).is_empty(), "{:?}", tmp_leftovers(&deploy_dir(s)));
    let listed: Vec<String> = std::fs::read_dir(deploy_dir(s))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "var")
        .collect();
    let mut want = vec![id1.clone(), format!("{id1}.json")];
    want.sort();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, want, "no half-staged deployment");
    assert_eq!(std::fs::read_to_string(deploy_dir(s).join(&id1).join("etc/motd")).unwrap(), "one\n");
    assert_eq!(status(s)["status"]["booted"]["id"], id1.as_str());

    // With space again the upgrade goes through.
    std::fs::remove_file(s.join("filler")).unwrap();
    let r = hc_json(s, &["upgrade", "--json"]);
    assert_eq!(r["changed"], true);
    assert_entries_bootable(s, &s.join("boot"));
}

#[test]
fn sigkill_at_random_instants_keeps_the_previous_default_bootable() {
    let reg = Registry::start();
    let pm = Podman::new();
    let a = push_small(
        &reg,
        &pm,
        "a",
        &[("etc/motd", "a\n"), ("usr/share/a", &crate::support::noise_text(200_000, 1))],
        "os:a",
    );
    let b = push_small(
        &reg,
        &pm,
        "b",
        &[("etc/motd", "b\n"), ("usr/share/b", &crate::support::noise_text(200_000, 2))],
        "os:b",
    );
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    let boot = s.join("boot");
    // The host tracks os:cur, which is re-pointed at a or b between runs.
    let cur = reg.image("os:cur");
    let digest = |img: &str| {
        let out = run(Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{img}")));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let retag = |img: &str| {
        run(Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg(format!("docker://{img}"))
            .arg(format!("docker://{cur}")));
    };
    let (da, db) = (digest(&a), digest(&b));
    retag(&a);
    hc_ok(s, &["switch", &cur]);
    // Time one uninterrupted upgrade to spread the kill instants over it.
    retag(&b);
    let t = Instant::now();
    hc_ok(s, &["upgrade"]);
    let mut span = t.elapsed().max(Duration::from_millis(20));
    let mut tagged = db.clone();

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Until 50 runs were killed while running (at most 200 runs).
    let mut killed = 0;
    let mut runs = 0;
    for i in 0..200 {
        if killed >= 50 {
            break;
        }
        runs += 1;
        let before = status(s);
        let prev_default = entries(&boot)[0].1.clone();
        // Point os:cur at the image the default deployment is not.
        let on = before["status"]["booted"]["image"]["imageDigest"].as_str().unwrap().to_string();
        let (want, img) = if on == da { (&db, &b) } else { (&da, &a) };
        if &tagged != want {
            retag(img);
            tagged = want.clone();
        }
        let args: Vec<&str> = match i % 3 {
            0 => vec!["switch", &cur],
            1 => vec!["upgrade"],
            _ => vec!["cleanup"],
        };
        let delay = Duration::from_micros(rnd() % (span.as_micros() as u64 + 1));
        let mut child = Command::new(hostctl_bin())
            .arg("--sysroot")
            .arg(s)
            .arg("--tls-verify=false")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // Keep the delays spread over a run's real length on a machine
        // whose speed varies: shorter after a run that finished first.
        if child.try_wait().unwrap().is_none() {
            killed += 1;
            span = span.mul_f64(1.05);
        } else {
            span = span.mul_f64(0.9).max(Duration::from_millis(20));
        }
        let _ = child.kill(); // SIGKILL, by this child's PID only
        let _ = child.wait();

        // The previous default and its entry are intact, status works.
        let after = status(s);
        let ids: Vec<String> = after["status"]["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().into())
            .collect();
        assert!(ids.contains(&prev_default), "iteration {i} ({args:?} after {delay:?}): {prev_default} lost: {after}");
        let es = entries(&boot);
        assert!(es.iter().any(|e| e.1 == prev_default), "iteration {i}: entry of {prev_default} lost");
        assert_entries_bootable(s, &boot);
        assert!(deploy_dir(s).join(&prev_default).join("usr/bin/tool").is_file());
    }
    eprintln!("sigkill: {killed} of {runs} runs killed while running (kill delays spread over {span:?})");
    assert!(killed >= 50, "only {killed} of {runs} runs were killed while running; the delays are too long");
    // The next upgrade succeeds and leaves a clean sysroot.
    let on = status(s)["status"]["booted"]["image"]["imageDigest"].as_str().unwrap().to_string();
    retag(if on == da { &b } else { &a });
    let r = hc_json(s, &["upgrade", "--json"]);
    assert_eq!(r["changed"], true, "{r}");
    hc_ok(s, &["cleanup"]);
    assert!(tmp_leftovers(&deploy_dir(s)).is_empty());
    assert!(tmp_leftovers(&s.join("boot/loader/entries")).is_empty());
    assert_entries_bootable(s, &boot);
    assert_eq!(status(s)["status"]["deployments"].as_array().unwrap().len(), 2);
}

/// `image pull` commits its layers without waiting for the disk; the
/// shutdown service's `finalize-staged` syncs them, so that after a clean
/// shutdown the next boot's pull has nothing to re-check.
#[test]
fn finalize_staged_at_shutdown_syncs_layers_pulled_since_the_last_sync() {
    let t = SwitchedToV1::new();
    let s = t.sys.path();
    let unsynced = s.join("hostctl/repo/unsynced");
    let marks = || std::fs::read_dir(&unsynced).map(|d| d.count()).unwrap_or(0);
    assert_eq!(marks(), 0, "switch synced what it staged");
    t.push("2.0", &[("etc/motd", "two\n")]);
    hc_ok(s, &["image", "pull", &t.reg.image("os:latest")]);
    assert!(marks() > 0, "the pulled layers wait for a sync");
    let out = hc_ok(s, &["finalize-staged"]);
    assert!(out.contains("pulled since the last sync are on disk") && out.contains("nothing staged"), "{out}");
    assert_eq!(marks(), 0);
    let out = hc_ok(s, &["finalize-staged"]);
    assert!(!out.contains("since the last sync"), "nothing waits any more: {out}");
}

/// At shutdown `finalize-staged` writes to the journal; a line it cannot
/// write must not stop it: the store is synced and the staging finalised.
#[test]
fn finalize_staged_finishes_its_work_when_stdout_is_gone() {
    let t = SwitchedToV1::new();
    let s = t.sys.path();
    t.push("2.0", &[("etc/motd", "two\n")]);
    let staged = hc_json(s, &["upgrade", "--download-only", "--json"])["staged"]["id"].as_str().unwrap().to_string();
    // Unlocked, as on a running host after `upgrade`: the shutdown service finalises it.
    let state_file = s.join("hostctl/state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    state.as_object_mut().unwrap().remove("staged_locked");
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    // Layers pulled since the last sync: finalize-staged has a line to print first.
    t.push("3.0", &[("etc/motd", "three\n")]);
    hc_ok(s, &["image", "pull", &t.reg.image("os:latest")]);
    let unsynced = s.join("hostctl/repo/unsynced");
    assert!(std::fs::read_dir(&unsynced).unwrap().count() > 0);

    let out = crate::support::hostctl_with_stdout_gone(&["--sysroot", s.to_str().unwrap(), "finalize-staged"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_dir(&unsynced).unwrap().count(), 0, "the store was synced");
    assert_eq!(entries(&s.join("boot"))[0].1, staged, "the staging was finalised and boots next");
}

#[test]
fn download_only_stages_without_entry_then_upgrade_apply_finalises_and_reboots_once() {
    use hostctl::deploy::stage::Deployer;
    use hostctl::deploy::upgrade::{deploy, FlowOptions};
    use hostctl::host::reboot::RecordingReboot;
    use hostctl::pull::PullOptions;

    let t = SwitchedToV1::new();
    let s = t.sys.path();
    let id1 = entries(&s.join("boot"))[0].1.clone();
    t.push("2.0", &[("etc/motd", "two\n")]);

    // CLI: --download-only stages, writes no entry, keeps v1 the default.
    let r = hc_json(s, &["upgrade", "--download-only", "--json"]);
    let id2 = r["staged"]["id"].as_str().unwrap().to_string();
    assert!(r["finalized"].is_null(), "{r}");
    assert_eq!(entries(&s.join("boot")).iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), [id1.as_str()]);
    assert!(!deploy_dir(s).join(&id2).join("etc").exists(), "/etc is merged at finalisation");
    let st = status(s);
    assert_eq!(st["status"]["booted"]["id"], id1.as_str());
    assert_eq!(st["status"]["staged"]["id"], id2.as_str());
    assert_eq!(st["status"]["staged"]["finalized"], false);
    assert_eq!(st["status"]["stagedLocked"], true);
    // The shutdown service leaves a download-only staging alone.
    let out = hc_ok(s, &["finalize-staged"]);
    assert!(out.contains("--download-only") && out.contains("left unfinalised"), "{out}");
    assert_eq!(entries(&s.join("boot")).iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), [id1.as_str()]);
    assert_eq!(status(s)["status"]["stagedLocked"], true);
    // An /etc edit made after staging reaches the new deployment.
    std::fs::write(deploy_dir(s).join(&id1).join("etc/after-staging.conf"), "late\n").unwrap();

    // Library: upgrade --apply with a recording reboot finalises the pending deployment.
    let sysroot = hostctl::sysroot::Sysroot::open(s).unwrap();
    let _lock = sysroot.lock(Duration::ZERO).unwrap();
    let d = Deployer::open(&sysroot, &s.join("boot")).unwrap();
    let imgref = t.reg.image("os:latest").parse().unwrap();
    let opts = PullOptions {
        registry: hostctl::oci::RegistryOptions { insecure: true, ..Default::default() },
        ..PullOptions::new(std::sync::Arc::new(hostctl::trust::AcceptAnything))
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reboot = RecordingReboot::default();
    let apply = FlowOptions { download_only: false, apply: true };
    let r = rt.block_on(deploy(&d, &imgref, false, &opts, apply, &reboot)).unwrap();
    assert_eq!(r.finalized.as_ref().map(|f| f.id.as_str()), Some(id2.as_str()));
    assert!(r.rebooting);
    assert_eq!(*reboot.calls.lock().unwrap(), 1);
    assert_eq!(std::fs::read_to_string(deploy_dir(s).join(&id2).join("etc/after-staging.conf")).unwrap(), "late\n");
    assert_eq!(entries(&s.join("boot"))[0].1, id2);
    assert_eq!(status(s)["status"]["stagedLocked"], false);
    // Nothing new: no reboot.
    let r = rt.block_on(deploy(&d, &imgref, false, &opts, apply, &reboot)).unwrap();
    assert!(!r.changed && !r.rebooting);
    assert_eq!(*reboot.calls.lock().unwrap(), 1);
}

#[test]
fn a_second_mutating_command_fails_clearly_while_the_lock_is_held() {
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    let sysroot = hostctl::sysroot::Sysroot::open(s).unwrap();
    let held = sysroot.lock(Duration::ZERO).unwrap();
    for args in [&["rollback"][..], &["cleanup"], &["switch", "127.0.0.1:1/os:x"], &["pin", "abc.1"]] {
        let out = hc(s, &[("HOSTCTL_LOCK_TIMEOUT", "0")], args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("holds the lock"), "{err}");
    }
    // Status reads without the lock.
    assert!(hc(s, &[], &["status", "--json"]).status.success());
    drop(held);
    let out = hc(s, &[("HOSTCTL_LOCK_TIMEOUT", "0")], &["rollback"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rollback deployment"), "{out:?}");
}

#[test]
fn upgrade_check_is_one_manifest_request_when_nothing_changed() {
    use crate::support::registry::{FaultProxy, Faults};
    let reg = Registry::start();
    let pm = Podman::new();
    push_small(&reg, &pm, "1.0", &[("etc/motd", "one\n")], "os:latest");
    let proxy = FaultProxy::start(&reg.addr, Faults { path_match: "/v2/".into(), ..Faults::default() });
    let image = format!("{}/os:latest", proxy.addr);
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    hc_ok(s, &["switch", &image]);
    let before = proxy.matching_requests().len();
    let c = hc_json(s, &["upgrade", "--check", "--json"]);
    assert_eq!(c["updateAvailable"], false, "{c}");
    let reqs: Vec<String> = proxy.matching_requests().into_iter().skip(before).collect();
    let manifest_gets = reqs.iter().filter(|r| r.contains("/manifests/")).count();
    let blob_gets = reqs.iter().filter(|r| r.contains("/blobs/")).count();
    assert_eq!((manifest_gets, blob_gets), (1, 0), "{reqs:#?}");
    // With an update: its version is reported, and nothing is staged.
    push_small(&reg, &pm, "2.0", &[("etc/motd", "two\n")], "os:latest");
    let c = hc_json(s, &["upgrade", "--check", "--json"]);
    assert_eq!((c["updateAvailable"].as_bool(), c["latestVersion"].as_str()), (Some(true), Some("2.0")), "{c}");
    assert_eq!(status(s)["status"]["deployments"].as_array().unwrap().len(), 1);
}

#[test]
fn etc_kernel_tries_sets_the_boot_counter_of_new_entries() {
    let t = SwitchedToV1::new();
    let s = t.sys.path();
    let boot = s.join("boot");
    assert!(!entries(&boot)[0].0.contains('+'), "the first entry has nothing to fall back to: not counted");

    // The image ships /etc/kernel/tries: the new entry starts with 2 tries.
    t.push("2.0", &[("etc/kernel/tries", "2\n")]);
    hc_ok(s, &["upgrade"]);
    assert!(entries(&boot)[0].0.ends_with("+2.conf"), "{:?}", entries(&boot));
    assert_eq!(status(s)["status"]["deployments"][0]["bootEntry"]["triesLeft"], 2);

    // No file: the default of 3. The admin's own value (in the running /etc) wins over none.
    t.push("3.0", &[("etc/motd", "three\n")]);
    let id2 = entries(&boot)[0].1.clone();
    std::fs::remove_file(deploy_dir(s).join(&id2).join("etc/kernel/tries")).unwrap();
    hc_ok(s, &["upgrade"]);
    assert!(entries(&boot)[0].0.ends_with("+3.conf"), "{:?}", entries(&boot));
    let id3 = entries(&boot)[0].1.clone();
    std::fs::create_dir_all(deploy_dir(s).join(&id3).join("etc/kernel")).unwrap();
    std::fs::write(deploy_dir(s).join(&id3).join("etc/kernel/tries"), "1\n").unwrap();
    t.push("4.0", &[("etc/motd", "four\n")]);
    hc_ok(s, &["upgrade"]);
    assert!(entries(&boot)[0].0.ends_with("+1.conf"), "{:?}", entries(&boot));
}

/// An upgrade through a counting proxy: every blob (the config above all,
/// which the space check and the pull both need) is fetched once.
#[test]
fn upgrade_fetches_the_image_config_once() {
    use crate::support::registry::{FaultProxy, Faults};
    let reg = Registry::start();
    let pm = Podman::new();
    push_small(&reg, &pm, "1.0", &[("etc/motd", "one\n")], "os:latest");
    let proxy = FaultProxy::start(&reg.addr, Faults { path_match: "/v2/".into(), ..Faults::default() });
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    hc_ok(s, &["switch", &format!("{}/os:latest", proxy.addr)]);
    push_small(&reg, &pm, "2.0", &[("etc/motd", "two\n")], "os:latest");
    let before = proxy.matching_requests().len();
    hc_ok(s, &["upgrade"]);
    let mut blob_gets: Vec<String> = proxy
        .matching_requests()
        .into_iter()
        .skip(before)
        .filter_map(|r| r.lines().next().map(str::to_string))
        .filter(|l| l.starts_with("get ") && l.contains("/blobs/"))
        .collect();
    assert!(!blob_gets.is_empty(), "the upgrade fetched its config and layers");
    let all = blob_gets.clone();
    blob_gets.sort();
    blob_gets.dedup();
    assert_eq!(blob_gets.len(), all.len(), "a blob was fetched twice: {all:#?}");
}

/// What the fleet agent does: the update steps one at a time with its own
/// work between them, and the staging seam. A failing stage hook leaves the
/// host on what it had; a working one sees the staged tree.
#[test]
fn update_steps_run_one_at_a_time_and_a_failing_stage_hook_undoes_the_staging() {
    use hostctl::deploy::hooks::StageHook;
    use hostctl::deploy::stage::{Deployer, StageOptions, Staged};
    use hostctl::deploy::upgrade::Update;
    use hostctl::host::reboot::RecordingReboot;
    use hostctl::pull::PullOptions;
    use std::sync::Mutex;

    struct Hook(Option<&'static str>, Mutex<Vec<PathBuf>>);
    impl StageHook for Hook {
        fn name(&self) -> &str {
            "pulling bound images"
        }
        fn staged(&self, d: &Deployer, staged: &Staged) -> anyhow::Result<()> {
            self.1.lock().unwrap().push(d.layout.tree(&staged.id));
            match self.0 {
                Some(e) => anyhow::bail!("{e}"),
                None => Ok(()),
            }
        }
    }

    let t = SwitchedToV1::new();
    let s = t.sys.path();
    let id1 = entries(&s.join("boot"))[0].1.clone();
    t.push("2.0", &[("etc/motd", "two\n")]);
    let sysroot = hostctl::sysroot::Sysroot::open(s).unwrap();
    let _lock = sysroot.lock(Duration::ZERO).unwrap();
    let d = Deployer::open(&sysroot, &s.join("boot")).unwrap();
    let imgref = t.reg.image("os:latest").parse().unwrap();
    let opts = PullOptions {
        registry: hostctl::oci::RegistryOptions { insecure: true, ..Default::default() },
        ..PullOptions::new(std::sync::Arc::new(hostctl::trust::AcceptAnything))
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let state_before = std::fs::read(s.join("hostctl/state.json")).unwrap();

    // A hook that fails: the staging is undone.
    let failing = Hook(Some("registry unreachable"), Mutex::default());
    let mut u = Update::begin(&d).unwrap();
    let c = rt.block_on(u.check(&imgref, &opts)).unwrap();
    assert!(c.update_available());
    let image = rt.block_on(u.pull(c, &opts)).unwrap();
    let e = format!("{:#}", u.stage(&image, StageOptions::default(), &[&failing]).unwrap_err());
    assert!(e.contains("pulling bound images") && e.contains("registry unreachable"), "{e}");
    let seen = failing.1.lock().unwrap()[0].clone();
    assert!(!seen.exists(), "the failed staging's tree is gone");
    let state: Value = serde_json::from_slice(&std::fs::read(s.join("hostctl/state.json")).unwrap()).unwrap();
    let old: Value = serde_json::from_slice(&state_before).unwrap();
    for key in ["deployments", "staged", "pinned", "spec"] {
        assert_eq!(state[key], old[key], "{key}: {state}");
    }
    assert_eq!(entries(&s.join("boot"))[0].1, id1);

    // Step by step with a working hook, the caller's own work between.
    let working = Hook(None, Mutex::default());
    let mut u = Update::begin(&d).unwrap();
    let c = rt.block_on(u.check(&imgref, &opts)).unwrap();
    let image = rt.block_on(u.pull(c, &opts)).unwrap();
    assert!(image.layers.iter().all(|l| !l.downloaded), "the failed attempt's layers stayed in the store");
    let staged = u.stage(&image, StageOptions::default(), &[&working]).unwrap();
    assert_eq!(*working.1.lock().unwrap(), [deploy_dir(s).join(&staged.id)]);
    assert!(deploy_dir(s).join(&staged.id).join("usr/etc/motd").is_file());
    // (Here the agent takes its reboot lock.)
    let f = u.finalize().unwrap();
    assert!(f.boots_next());
    assert_eq!(entries(&s.join("boot"))[0].1, staged.id);
    let reboot = RecordingReboot::default();
    u.reboot(&reboot).unwrap();
    assert_eq!(*reboot.calls.lock().unwrap(), 1);
}
