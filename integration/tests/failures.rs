//! What a user sees when a command cannot finish, against a real registry
//! (behind the fault-injecting proxy where a failure is needed) in temp
//! sysroots: a full disk (a size-limited tmpfs), a registry that dies, lies
//! or hangs, Ctrl-C / SIGTERM, `kill -9` and the temporaries it leaves, a
//! nearly full ESP — and that progress output (bars, JSON) tells the
//! outcome every time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::deploy::{hc, hc_json, hc_ok, push_small, status, Podman};
use crate::support::hostctl_bin;
use crate::support::registry::{FaultProxy, Faults, Registry};
use crate::support::run;
use crate::support::tmpfs::Tmpfs;

/// Every `.tmp-*` below `root`, and every entry of the store's scratch directory.
fn temporaries(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let in_scratch = dir.ends_with("hostctl/repo/tmp");
            if name.starts_with(".tmp-") || in_scratch {
                found.push(e.path());
            }
            if e.file_type().map(|t| t.is_dir() && !t.is_symlink()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    found
}

/// `skopeo copy` of `from` to `to` in the registry (re-points a tag).
fn retag(from: &str, to: &str) {
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{from}"))
        .arg(format!("docker://{to}")));
}

/// The digest of the largest layer of `image` (from its manifest, read by skopeo).
fn largest_layer(image: &str) -> String {
    let out =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{image}")));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = m["layers"].as_array().unwrap();
    let big = layers.iter().max_by_key(|l| l["size"].as_u64().unwrap()).unwrap();
    big["digest"].as_str().unwrap().to_string()
}

/// The JSON lines of a `--progress=json` run.
fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// The promises of `--progress=json`: exactly one terminal event (`done` or
/// `error`), last; one `finish` for every transfer that started. Returns the
/// terminal event and the final status of each transfer.
fn check_outcome(events: &[Value]) -> (Value, Vec<(String, String)>) {
    let terminal: Vec<&Value> = events.iter().filter(|e| e["event"] == "done" || e["event"] == "error").collect();
    assert_eq!(terminal.len(), 1, "one terminal event: {events:#?}");
    assert_eq!(events.last(), Some(terminal[0]), "the terminal event comes last: {events:#?}");
    let mut finals = Vec::new();
    for start in events.iter().filter(|e| e["event"] == "start") {
        let name = start["name"].as_str().unwrap();
        let ends: Vec<&Value> = events.iter().filter(|e| e["event"] == "finish" && e["name"] == name).collect();
        assert_eq!(ends.len(), 1, "one finish for {name}: {events:#?}");
        finals.push((name.to_string(), ends[0]["status"].as_str().unwrap().to_string()));
    }
    (terminal[0].clone(), finals)
}

/// A hostctl run in the background whose output lines arrive on channels.
struct Running {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    out_lines: Vec<String>,
    err_lines: Vec<String>,
}

impl Running {
    fn start(sysroot: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(hostctl_bin())
            .arg("--sysroot")
            .arg(sysroot)
            .arg("--tls-verify=false")
            .args(args)
            .env_remove("RUST_LOG")
            .env("HOSTCTL_CERTS_D", "")
            .env("CONTAINERS_REGISTRIES_CONF", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Running { child, stdout, stderr, out_lines: Vec::new(), err_lines: Vec::new() }
    }

    /// Waits up to `limit` for a line (stdout or stderr) that satisfies `want`.
    fn wait_for(&mut self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            while let Ok(l) = self.stdout.try_recv() {
                self.out_lines.push(l.clone());
                if want(&l) {
                    return Some(l);
                }
            }
            while let Ok(l) = self.stderr.try_recv() {
                self.err_lines.push(l.clone());
                if want(&l) {
                    return Some(l);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn signal(&self, sig: &str) {
        run(Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()));
    }

    /// Waits for the exit; returns the code and all of stdout and stderr.
    fn finish(&mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "hostctl did not exit: {:?}", self.err_lines);
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        self.out_lines.extend(self.stdout.try_iter());
        self.err_lines.extend(self.stderr.try_iter());
        (status.code(), self.out_lines.join("\n"), self.err_lines.join("\n"))
    }
}

impl Drop for Running {
    /// A test that failed half-way does not leave its hostctl running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Regression (issue #11, bug 4): a full disk during `image pull` exited 1
/// (the ENOSPC cause was lost on the way out of the layer import); every
/// command that fills the disk (those that pull: `image pull`, `switch`,
/// `upgrade`, `install`) must exit 6, say so, leave no temporaries and
/// succeed once there is room.
#[test]
fn full_disk_during_image_pull_switch_upgrade_or_install_exits_6_and_the_next_try_succeeds() {
    let reg = Registry::start();
    let pm = Podman::new();
    let small = push_small(&reg, &pm, "1", &[("etc/motd", "one\n")], "os:small");
    // 24 MiB that compress to almost nothing: the space preflight (which
    // counts compressed sizes three times) lets them through, the disk does not.
    let zeros = "0".repeat(24 << 20);
    // (With a boot loader, so that `install` can finish once there is room.)
    let efi = ("usr/lib/systemd/boot/efi/systemd-bootx64.efi", "an EFI program");
    let big = push_small(&reg, &pm, "2", &[("etc/motd", "two\n"), ("usr/share/big", &zeros), efi], "os:big");
    let cur = reg.image("os:cur");

    for command in ["image pull", "switch", "upgrade", "install to-filesystem"] {
        let fs = Tmpfs::mount("16m");
        let s = fs.path();
        let root = s.to_str().unwrap();
        let args: Vec<&str> = match command {
            "image pull" => vec!["image", "pull", &big],
            "switch" => vec!["switch", &big],
            "install to-filesystem" => vec!["install", "to-filesystem", root, "--source-imgref", &big],
            _ => {
                retag(&small, &cur);
                hc_ok(s, &["switch", &cur]);
                retag(&big, &cur);
                vec!["upgrade"]
            }
        };
        let out = hc(s, &[], &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{command}: exit code for a full disk: {err}");
        assert!(err.contains("No space left on device"), "{command}: {err}");
        assert!(err.contains("hint: the disk is full"), "{command}: {err}");
        assert_eq!(temporaries(s), Vec::<PathBuf>::new(), "{command}: temporaries left");

        fs.grow("128m");
        let out = hc(s, &[], &args);
        assert!(out.status.success(), "{command} with room: {}", String::from_utf8_lossy(&out.stderr));
        match command {
            "image pull" => {
                let again = hc_json(s, &["image", "pull", "--json", &big]);
                assert_eq!(again["layersDownloaded"], 0, "the store kept the layers: {again}");
            }
            _ => {
                let st = status(s);
                let id = st["status"]["booted"]["id"].as_str().unwrap().to_string();
                let tree = s.join("hostctl/deploy/default").join(&id);
                assert_eq!(std::fs::read_to_string(tree.join("etc/motd")).unwrap(), "two\n", "{command}");
                assert_eq!(std::fs::metadata(tree.join("usr/share/big")).unwrap().len(), 24 << 20);
            }
        }
        assert_eq!(temporaries(s), Vec::<PathBuf>::new(), "{command}: temporaries after success");
    }
}

/// Regression (issue #11, bug 5): `--progress=bar` drew nothing when stderr
/// was not a terminal, though the help says "bars on stderr"; `auto` stays
/// terminal-only.
#[test]
fn progress_bar_asked_for_is_drawn_when_stderr_is_not_a_terminal() {
    let reg = Registry::start();
    let pm = Podman::new();
    let image = push_small(&reg, &pm, "1", &[("usr/share/data", &crate::support::noise_text(300_000, 3))], "os:1");
    let sys = tempfile::tempdir().unwrap();
    let out = hc(sys.path(), &[], &["--progress=bar", "image", "pull", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("\x1b[") && err.contains("] ") && err.contains("done"), "no bars drawn: {err:?}");

    let sys = tempfile::tempdir().unwrap();
    let out = hc(sys.path(), &[], &["image", "pull", &image]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("\x1b[") && !err.contains("done"), "auto drew bars: {err:?}");
}

/// Regression (issue #11, bug 5): with `--progress=json`, a pull that failed
/// had no final event, and layers that had started never finished.
#[test]
fn progress_json_ends_with_one_error_event_when_the_registry_dies_mid_layer() {
    let reg = Registry::start();
    let pm = Podman::new();
    let files = [("usr/share/a", crate::support::noise_text(1_500_000, 5)), ("etc/motd", "m\n".to_string())];
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let direct = push_small(&reg, &pm, "1", &files, "os:1");
    let faults = Faults {
        path_match: format!("/blobs/{}", largest_layer(&direct)),
        cuts: 1,
        cut_after: 400_000,
        down_after_cuts: true,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&reg.addr, faults);
    let sys = tempfile::tempdir().unwrap();
    let image = format!("{}/os:1", proxy.addr);
    let out = hc(sys.path(), &[], &["--progress=json", "image", "pull", &image]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let ev = events(&out.stdout);
    let (terminal, finals) = check_outcome(&ev);
    assert_eq!(terminal["event"], "error", "{terminal}");
    assert_eq!(terminal["exitCode"], 1, "{terminal}");
    assert!(terminal["message"].as_str().unwrap().contains("blob"), "{terminal}");
    assert!(finals.iter().any(|(_, s)| s == "failed"), "the cut layer failed: {finals:?}");
}

/// Regression (issue #11, bug 5): the same on a digest mismatch (exit 5).
#[test]
fn progress_json_ends_with_one_error_event_on_a_digest_mismatch() {
    let reg = Registry::start();
    let pm = Podman::new();
    let image = push_small(&reg, &pm, "1", &[("usr/share/a", &crate::support::noise_text(400_000, 9))], "os:1");
    // Flip bytes in the middle of the largest blob the registry stores (the layer).
    let mut blobs = Vec::new();
    let mut stack = vec![reg.data_dir()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name() == "data" {
                blobs.push((e.metadata().unwrap().len(), e.path()));
            }
        }
    }
    let (len, path) = blobs.into_iter().max().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[len as usize / 2..len as usize / 2 + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();

    let sys = tempfile::tempdir().unwrap();
    let out = hc(sys.path(), &[], &["--progress=json", "image", "pull", &image]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let (terminal, finals) = check_outcome(&events(&out.stdout));
    assert_eq!((terminal["event"].as_str(), terminal["exitCode"].as_i64()), (Some("error"), Some(5)));
    assert!(terminal["message"].as_str().unwrap().contains("digest mismatch"), "{terminal}");
    assert!(finals.iter().any(|(_, s)| s == "failed"), "{finals:?}");
}

/// An image with one layer holding `size` incompressible bytes, and a proxy
/// in front of the registry that hangs after `after` bytes of that layer.
struct Hanging {
    reg: Registry,
    proxy: FaultProxy,
    image_direct: String,
    image_via_proxy: String,
}

/// What a [`Hanging`] registry hangs on.
enum HangOn {
    Manifest,
    Layer,
}

fn hanging(size: usize, on: HangOn, after: u64) -> Hanging {
    let reg = Registry::start();
    let pm = Podman::new();
    let image_direct = push_small(&reg, &pm, "1", &[("usr/share/big", &crate::support::noise_text(size, 13))], "os:1");
    let path_match = match on {
        HangOn::Manifest => "/manifests/".to_string(),
        HangOn::Layer => format!("/blobs/{}", largest_layer(&image_direct)),
    };
    let faults = Faults { path_match, cuts: 1, cut_after: after, stall: true, ..Faults::default() };
    let proxy = FaultProxy::start(&reg.addr, faults);
    let image_via_proxy = format!("{}/os:1", proxy.addr);
    Hanging { reg, proxy, image_direct, image_via_proxy }
}

/// Regression (issue #11, bug 9): Ctrl-C mid-pull left a half-drawn bar and
/// no message. A registry that hangs mid-layer is named within a few
/// seconds; SIGINT then ends the pull with exit 130 and a message saying what
/// was interrupted, and the JSON stream still ends with its outcome.
#[test]
fn ctrl_c_during_a_stalled_pull_says_what_was_interrupted_and_exits_130() {
    let h = hanging(4 << 20, HangOn::Layer, 1 << 20);
    let sys = tempfile::tempdir().unwrap();
    let mut run = Running::start(sys.path(), &["--progress=json", "image", "pull", &h.image_via_proxy]);
    run.wait_for(Duration::from_secs(30), |l| l.contains(r#""event":"start""#)).expect("the layer starts");
    let started = Instant::now();
    let waiting = run
        .wait_for(Duration::from_secs(10), |l| l.contains(r#""event":"waiting""#))
        .unwrap_or_else(|| panic!("no waiting event: {:?} {:?}", run.out_lines, run.err_lines));
    assert!(started.elapsed() < Duration::from_secs(8), "named after {:?}", started.elapsed());
    assert!(waiting.contains(&format!("waiting for registry {}", h.proxy.addr)), "{waiting}");
    assert!(waiting.contains("no data for layer"), "{waiting}");

    run.signal("INT");
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, Some(130), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: interrupted by SIGINT while pulling layer "), "{stderr}");
    assert!(last.contains(" of 4.0 MiB)") && last.contains("nothing was deployed"), "{stderr}");
    let (terminal, finals) = check_outcome(&events(stdout.as_bytes()));
    assert_eq!((terminal["event"].as_str(), terminal["exitCode"].as_i64()), (Some("error"), Some(130)));
    let statuses: Vec<&str> = finals.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "interrupted").count(), 1, "{finals:?}");
    assert!(statuses.iter().all(|s| *s == "interrupted" || *s == "done"), "{finals:?}");

    // The store is fine: the next pull (from the registry itself) succeeds.
    let v = hc_json(sys.path(), &["image", "pull", "--json", &h.image_direct]);
    assert_eq!(v["layersDownloaded"], 1, "{v}");
    drop(h.reg);
}

/// Regression (issue #11, bug 9): an unresponsive registry gave 90 s of
/// silence. Without a terminal the wait is a log line within a few seconds;
/// SIGTERM ends the command with 143 and names the wait.
#[test]
fn unresponsive_registry_is_named_within_a_few_seconds_and_sigterm_exits_143() {
    let h = hanging(1000, HangOn::Manifest, 0);
    let sys = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut run = Running::start(sys.path(), &["image", "pull", &h.image_via_proxy]);
    let line = run
        .wait_for(Duration::from_secs(10), |l| l.contains("waiting for registry"))
        .unwrap_or_else(|| panic!("silence: {:?}", run.err_lines));
    assert!(started.elapsed() < Duration::from_secs(8), "named after {:?}", started.elapsed());
    assert!(line.contains(&format!("waiting for registry {} (the manifest of {})", h.proxy.addr, h.image_via_proxy)));
    run.signal("TERM");
    let (code, _, stderr) = run.finish();
    assert_eq!(code, Some(143), "{stderr}");
    let want = format!("error: interrupted by SIGTERM while waiting for registry {}", h.proxy.addr);
    assert!(stderr.lines().last().unwrap_or_default().starts_with(&want), "{stderr}");
}

/// Regression (issue #11, bug 7): a killed or failed pull left temporaries
/// (`repo/unsynced/.tmp-*`, objects being written) that survived `switch`
/// and `cleanup`. `kill -9` mid-layer, then `cleanup`: nothing temporary is
/// left and the next pull succeeds.
#[test]
fn kill_9_mid_layer_then_cleanup_leaves_no_temporaries_and_the_next_pull_succeeds() {
    // 8 MiB in one file: the object is being streamed to a temporary file when the registry hangs.
    let h = hanging(8 << 20, HangOn::Layer, 3 << 20);
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    let mut run = Running::start(s, &["--progress=json", "image", "pull", &h.image_via_proxy]);
    run.wait_for(Duration::from_secs(30), |l| l.contains(r#""event":"waiting""#))
        .unwrap_or_else(|| panic!("the pull never hung: {:?} {:?}", run.out_lines, run.err_lines));
    assert!(!temporaries(s).is_empty(), "a temporary is being written when the pull is killed");
    run.signal("KILL");
    let (code, _, _) = run.finish();
    assert_eq!(code, None, "killed by a signal");
    assert!(!temporaries(s).is_empty(), "kill -9 leaves the temporary behind");

    let r = hc_json(s, &["cleanup", "--json"]);
    assert_eq!(temporaries(s), Vec::<PathBuf>::new(), "{r}");
    // (cleanup also collected the small layer the killed pull had committed:
    // no image was recorded for it.)
    let v = hc_json(s, &["image", "pull", "--json", &h.image_direct]);
    assert_eq!(v["layersDownloaded"], 2, "{v}");
    let v = hc_json(s, &["image", "pull", "--json", &h.image_direct]);
    assert_eq!(v["layersDownloaded"], 0, "{v}");
    assert_eq!(temporaries(s), Vec::<PathBuf>::new());
}

/// Regression (issue #11, bug 8): the ESP space check counted a kernel that
/// was already there, so switching between two images with the same kernel
/// on a nearly full ESP was refused. Only a kernel that is new is counted.
#[test]
fn switching_between_images_with_the_same_kernel_on_a_nearly_full_esp_is_not_refused() {
    const VMLINUZ: &str = "usr/lib/modules/6.1.0-test/vmlinuz";
    let reg = Registry::start();
    let pm = Podman::new();
    let kernel = crate::support::noise_text(1_500_000, 21);
    let v1 = push_small(&reg, &pm, "1", &[(VMLINUZ, &kernel), ("etc/motd", "one\n")], "os:1");
    let v2 = push_small(&reg, &pm, "2", &[(VMLINUZ, &kernel), ("etc/motd", "two\n")], "os:2");
    let other = crate::support::noise_text(1_500_000, 22);
    let v3 = push_small(&reg, &pm, "3", &[(VMLINUZ, &other), ("etc/motd", "three\n")], "os:3");
    let sys = tempfile::tempdir().unwrap();
    let s = sys.path();
    let esp = Tmpfs::mount("4m");
    let boot = esp.path().to_str().unwrap();
    hc_ok(s, &["--boot-dir", boot, "switch", &v1]);
    // Leave less free than the kernel's size.
    let filler = esp.avail() - (1 << 20);
    run(Command::new("fallocate").arg("-l").arg(filler.to_string()).arg(esp.path().join("filler")));
    assert!(esp.avail() < kernel.len() as u64);

    let out = hc(s, &[], &["--boot-dir", boot, "switch", &v2]);
    assert!(out.status.success(), "the same kernel needs no room: {}", String::from_utf8_lossy(&out.stderr));

    // A kernel that is new is still checked (after the pull, with its real size).
    let out = hc(s, &[], &["--boot-dir", boot, "switch", &v3]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains(&format!("not enough space on {boot}")), "{err}");
    assert_eq!(temporaries(s), Vec::<PathBuf>::new());
}
