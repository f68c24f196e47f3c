//! `hostctl usr-overlay` with real mounts, in a mount namespace of its own
//! (`unshare -m`, so nothing leaks to the machine): the booted deployment's
//! `/usr` becomes writable, the writes land on the tmpfs, a second call is
//! refused, and outside the namespace (as after a reboot) the deployment's
//! files are as they were, which `fsck` confirms.

use std::process::Command;

use crate::deploy::{hc, status};
use crate::format::unpack_v1_fixture;
use crate::support::{hostctl_bin, require_tool, run};

#[test]
fn usr_overlay_takes_writes_on_a_tmpfs_and_leaves_the_deployment_untouched() {
    require_tool("unshare");
    let (_dir, sys, _layout) = unpack_v1_fixture();
    let id = status(&sys)["status"]["booted"]["id"].as_str().unwrap().to_string();
    let usr = sys.join("hostctl/deploy/default").join(&id).join("usr");
    let hostctl = hostctl_bin();
    let script = format!(
        "set -e; h='{h}'; s='{s}'; u='{u}'
         \"$h\" --sysroot \"$s\" usr-overlay
         echo new > \"$u/bin/new\"
         echo changed > \"$u/bin/hello\"
         cat \"$u/bin/hello\"
         cat \"$s/run/hostctl/usr-overlay/upper/bin/new\"
         if \"$h\" --sysroot \"$s\" usr-overlay 2>&1; then echo second-call-succeeded; fi",
        h = hostctl.display(),
        s = sys.display(),
        u = usr.display()
    );
    let out = run(Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is now a writable overlay of deployment"), "{text}");
    assert!(text.contains("changed\nnew\n"), "writes went to the overlay and its upper dir: {text}");
    assert!(text.contains("is an overlay already"), "{text}");
    assert!(!text.contains("second-call-succeeded"), "{text}");
    // Outside the namespace: the image's /usr, whole.
    assert!(!usr.join("bin/new").exists());
    assert_eq!(std::fs::read_to_string(usr.join("bin/hello")).unwrap(), "#!/bin/sh\necho hello\n");
    let out = hc(&sys, &[], &["fsck"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Nothing booted: refused, nothing mounted.
    let out = Command::new(hostctl_bin())
        .args(["--sysroot"])
        .arg(&sys)
        .args(["usr-overlay"])
        .env("HOSTCTL_BOOTED", "none")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running on a booted hostctl deployment"));
}
