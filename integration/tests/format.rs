//! The versioned on-disk format (docs/store.md, "Format versions"): a sysroot
//! written by the hostctl of format 1 (the committed fixture
//! integration/fixtures/sysroot-v1.tar.gz, made by make-sysroot-v1.sh) is
//! read, migrated and deployed from by this build; a sysroot of a newer
//! format is refused with exit 7 and left exactly as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::deploy::{hc, hc_json, hc_ok};
use crate::support::images::Layout;
use crate::support::{require_tool, run};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/fixtures/sysroot-v1.tar.gz");

/// The fixture unpacked into a temp dir: `sysroot/` and the OCI layout `layout/` its images came from.
pub(crate) fn unpack_v1_fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("tar").args(["--numeric-owner", "--xattrs", "-xzf", FIXTURE, "-C"]).arg(dir.path()));
    let (sys, layout) = (dir.path().join("sysroot"), dir.path().join("layout"));
    (dir, sys, layout)
}

/// Every path under `root` with its type, mode, owner, size and content
/// hash (mtimes left out: a read does not change them anyway).
fn fingerprint(root: &Path) -> String {
    let out = run(Command::new("find").arg(root).args(["-printf", "%P %y %m %U %G %s %l\n"]));
    let mut lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    lines.sort();
    let sums = run(Command::new("sh")
        .arg("-c")
        .arg(format!("cd '{}' && find . -type f -print0 | sort -z | xargs -0 -r sha256sum", root.display())));
    lines.join("\n") + &String::from_utf8(sums.stdout).unwrap()
}

#[test]
fn a_sysroot_written_by_format_1_is_read_migrated_and_upgraded_by_this_build() {
    require_tool("umoci");
    let (_dir, sys, layout) = unpack_v1_fixture();
    let marker = sys.join("hostctl/repo/format.json");
    assert!(!marker.exists(), "the fixture is format 1: no marker");

    // Read as it is: the default entry's deployment (v2) and the rollback (v1).
    let st = hc_json(&sys, &["status", "--json"]);
    let booted = &st["status"]["booted"];
    assert_eq!(booted["image"]["version"], "2.0", "{st:#}");
    assert_eq!(st["status"]["rollback"]["image"]["version"], "1.0", "{st:#}");
    let list: Value = serde_json::from_str(&hc_ok(&sys, &["image", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");

    // Opening the store migrated it to the current format, atomically.
    let m: Value = serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
    assert_eq!(m["version"], 2, "{m}");
    assert!(m["written_by"].as_str().unwrap().starts_with("hostctl "), "{m}");

    // And it deploys from it: v3 is v2 plus a layer, built by umoci in the fixture's layout.
    run(Command::new("umoci").args(["tag", "--image", &format!("{}:v2", layout.display()), "v3"]));
    let v3 = Layout { dir: layout.clone(), tag: "v3".into() };
    v3.change_rootfs(|rootfs| std::fs::write(rootfs.join("usr/bin/version"), "three\n").unwrap());
    hc_ok(&sys, &["switch", &v3.oci_ref()]);
    let st = hc_json(&sys, &["status", "--json"]);
    // A temp sysroot boots its default entry (docs/deployments.md): the new deployment.
    let id = st["status"]["booted"]["id"].as_str().unwrap_or_else(|| panic!("nothing booted: {st:#}")).to_string();
    assert_eq!(st["status"]["rollback"]["image"]["version"], "2.0", "{st:#}");
    let tree = sys.join("hostctl/deploy/default").join(&id);
    assert_eq!(std::fs::read_to_string(tree.join("usr/bin/version")).unwrap(), "three\n");
    assert_eq!(std::fs::read_to_string(tree.join("etc/local.conf")).unwrap(), "local edit\n", "/etc merged");
    assert_eq!(std::fs::read_to_string(tree.join("usr/bin/hello")).unwrap(), "#!/bin/sh\necho hello\n");
    hc_ok(&sys, &["cleanup"]);
}

#[test]
fn a_sysroot_of_a_newer_format_is_refused_with_exit_7_and_left_untouched() {
    for (file, newer) in [
        ("hostctl/repo/format.json", r#"{"version":3,"written_by":"hostctl 9.9.9"}"#.to_string()),
        ("hostctl/state.json", String::new()),
    ] {
        let (_dir, sys, layout) = unpack_v1_fixture();
        let path = sys.join(file);
        let newer = if newer.is_empty() {
            let mut s: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            s["version"] = 2.into();
            s["a_field_of_version_2"] = true.into();
            s.to_string()
        } else {
            newer
        };
        std::fs::write(&path, &newer).unwrap();
        let before = fingerprint(&sys);
        let v2 = format!("oci:{}:v2", layout.display());
        for args in [&["switch", v2.as_str()][..], &["cleanup"], &["rollback"], &["status"], &["image", "list"]] {
            let out = hc(&sys, &[], args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(7), "{file}: {args:?}: {err}");
            assert!(err.contains("format version") && err.contains("nothing was changed"), "{args:?}: {err}");
            assert!(err.contains(&path.display().to_string()), "names the file: {err}");
        }
        assert_eq!(fingerprint(&sys), before, "{file}: the sysroot changed");
        assert!(!sys.join("hostctl/lock").exists(), "not even the lock file was made");
    }
}
