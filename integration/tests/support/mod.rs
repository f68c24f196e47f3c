//! Shared test harness: a real `docker-registry` on a random loopback port,
//! images built by real umoci and pushed by real skopeo, temp sysroots, and a
//! runner for the built `hostctl` binary. Processes are stopped by PID on drop.
#![allow(dead_code)]

pub mod chunked;
pub mod etcd;
pub mod fleet;
pub mod hostile;
pub mod http1;
pub mod images;
pub mod registry;
pub mod rekor;
pub mod tmpfs;
pub mod tokenserver;
pub mod tsa;
pub mod x509;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `hostctl` binary cargo built for these tests.
pub fn hostctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hostctl"))
}

/// Runs `hostctl` with `args` and its stdout a pipe whose reader has gone
/// (`hostctl … | head -0`); returns the exit status and stderr.
pub fn hostctl_with_stdout_gone(args: &[&str]) -> Output {
    // rustix rather than std::io::pipe, which is newer than the crate's
    // rust-version, or libc::pipe2, which needs unsafe (forbidden crate-wide).
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe2");
    drop(reader);
    Command::new(hostctl_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("HOSTCTL_BOOTED")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

/// Runs `hostctl` with `args` against `sysroot`; returns the output whatever the exit code.
pub fn hostctl(sysroot: &Path, args: &[&str]) -> Output {
    hostctl_env(sysroot, &[], args)
}

/// Like [`hostctl`], with extra environment variables. The machine's
/// containers-certs.d(5) directories and registries.conf files are not
/// consulted unless `env` sets `HOSTCTL_CERTS_D` or `CONTAINERS_REGISTRIES_CONF`.
pub fn hostctl_env(sysroot: &Path, env: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> Output {
    let mut cmd = Command::new(hostctl_bin());
    cmd.arg("--sysroot")
        .arg(sysroot)
        .args(args)
        .env_remove("RUST_LOG")
        .env("HOSTCTL_CERTS_D", "")
        .env("CONTAINERS_REGISTRIES_CONF", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running hostctl")
}

/// Runs `hostctl` and panics with its stderr unless it succeeded; returns stdout.
pub fn hostctl_ok(sysroot: &Path, args: &[&str]) -> String {
    let out = hostctl(sysroot, args);
    assert!(
        out.status.success(),
        "hostctl {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs an external tool and panics with its output unless it succeeded.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether an external tool is on PATH (tests that need it fail loudly without it:
/// the test command installs everything).
pub fn require_tool(name: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file())).unwrap_or(false);
    assert!(found, "{name} is not installed; run the README's test command, which installs it");
}

/// A tree as path → (kind, mode, uid, gid, content or link target).
pub type TreeSnapshot = std::collections::BTreeMap<String, (String, u32, u32, u32, Vec<u8>)>;

/// Lists a tree as path → (kind, mode, uid, gid, content or target) for comparison.
pub fn tree_snapshot(root: &Path) -> TreeSnapshot {
    fn walk(root: &Path, dir: &Path, out: &mut TreeSnapshot) {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let m = p.symlink_metadata().unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let (kind, data) = if m.is_dir() {
                ("dir", Vec::new())
            } else if m.file_type().is_symlink() {
                ("symlink", std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes())
            } else {
                ("file", std::fs::read(&p).unwrap())
            };
            out.insert(rel, (kind.into(), m.mode() & 0o7777, m.uid(), m.gid(), data));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = TreeSnapshot::new();
    walk(root, root, &mut out);
    out
}

/// Bytes that do not compress (an xorshift stream from `seed`), so a blob is
/// as long as its content.
pub use hostctl::util::noise;

/// Text of `len` printable characters that does not compress much (xorshift).
pub fn noise_text(len: usize, seed: u64) -> String {
    noise(len, seed).into_iter().map(|b| char::from(b'!' + b % 90)).collect()
}
