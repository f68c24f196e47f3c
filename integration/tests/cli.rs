//! Conventions every command keeps: what a script sees on stdout and in the
//! exit code when the reader of stdout goes away.

use crate::support::hostctl_with_stdout_gone;

/// `hostctl … | head -0`: the reader of stdout has gone before the command
/// prints. Like coreutils, hostctl then exits 0 without a message or a panic,
/// and that quiet exit is reserved for stdout (a registry's broken pipe is an
/// error: src/error.rs tests that).
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let sysroot = tempfile::tempdir().unwrap();
    let sysroot = sysroot.path().to_str().unwrap();
    for args in [
        &["--sysroot", sysroot, "status"][..],
        &["--sysroot", sysroot, "status", "--json"],
        &["--sysroot", sysroot, "image", "list"],
        &["--sysroot", sysroot, "image", "list", "--json"],
        &["completions", "bash"],
    ] {
        let out = hostctl_with_stdout_gone(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "hostctl {args:?}: {stderr}");
        assert!(stderr.is_empty(), "hostctl {args:?}: {stderr}");
    }
}
