//! The update agent and rollout metadata end to end, against a real registry
//! (Debian's docker-registry), images pushed by real skopeo, metadata signed
//! by real cosign, and the real lock server (`hostctl fleet server`) on a
//! real etcd.
//!
//! The fleet test runs 50 agents as tasks in this process, each with its own
//! temp sysroot, machine-id and clock; a reboot is simulated by running the
//! new default deployment's health checks (real scripts from the image) the
//! way `hostctl-health.service` does, with a failed check rolling back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hostctl::agent::clock::{Clock, ManualClock};
use hostctl::agent::config;
use hostctl::agent::run::Agent;
use hostctl::agent::state::{self, AgentState, Phase};
use hostctl::deploy::deployment::Metadata;
use hostctl::deploy::stage::Deployer;
use hostctl::fleet::waves::{eligibility, Position, Schedule};
use hostctl::host::reboot::Reboot;
use hostctl::host::systemd::BootControl;
use hostctl::sysroot::Sysroot;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::deploy::{hc, hc_json, hc_ok};
use crate::support::etcd::EtcdCluster;
use crate::support::fleet::{holders, status, FleetServer};
use crate::support::images::push_one_layer;
use crate::support::registry::{free_port, Registry};
use crate::support::{require_tool, run};

const KERNEL: &str = "usr/lib/modules/6.1.0-test/vmlinuz";
const CHECK: &str = "usr/lib/hostctl/health.d/10-check";
const PASSWORD: &str = "fleet-test";

/// Pushes a one-layer image (a kernel, an os-release naming `version`, and a
/// health check that exits `check_exit`) to `repo_tag` with skopeo; returns
/// its manifest digest.
fn push_image(reg: &Registry, work: &Path, repo_tag: &str, version: &str, check_exit: i32) -> String {
    let os_release = format!("ID=test\nVERSION_ID={version}\n");
    let check = format!("#!/bin/sh\nexit {check_exit}\n");
    let files =
        [(KERNEL, "kernel", 0o644), ("etc/os-release", os_release.as_str(), 0o644), (CHECK, check.as_str(), 0o755)];
    push_one_layer(&work.join(format!("layout-{version}")), &reg.image(repo_tag), version, &files)
}

/// A registry with `os:latest` at v1, a sysroot switched to it, then v2
/// pushed to the same tag (its digest in `v2`): a host with an update waiting.
struct OnV1 {
    reg: Registry,
    work: tempfile::TempDir,
    sys: tempfile::TempDir,
    v2: String,
}

fn on_v1_with_v2_pushed() -> OnV1 {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    let image = reg.image("os:latest");
    push_image(&reg, work.path(), "os:latest", "1", 0);
    hc_ok(sys.path(), &["switch", &image]);
    let v2 = push_image(&reg, work.path(), "os:latest", "2", 0);
    OnV1 { reg, work, sys, v2 }
}

/// `hostctl fleet release` as JSON.
fn release(sys: &Path, image: &str, waves: &str, start: &str, extra: &[&str]) -> Value {
    let mut args = vec!["fleet", "release", "--json", image, "--waves", waves, "--start", start];
    args.extend_from_slice(extra);
    hc_json(sys, &args)
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn agent_state(sys: &Path) -> Value {
    hc_json(sys, &["agent", "status", "--json"])["state"].clone()
}

/// The reason of the agent's last check (its last move to "update available").
fn check_reason(s: &Value) -> String {
    let h = s["history"].as_array().unwrap();
    let t = h.iter().rev().find(|t| t["to"] == "updateAvailable").expect("a check found the update");
    t["reason"].as_str().unwrap().to_string()
}

fn cosign(dir: &Path) -> Command {
    let mut c = Command::new("cosign");
    c.current_dir(dir).env("COSIGN_PASSWORD", PASSWORD).env("HOME", dir).env_remove("COSIGN_EXPERIMENTAL");
    c
}

/// Bad input: a malformed agent.toml is refused naming the file and line,
/// and the agent records nothing.
#[test]
fn malformed_agent_toml_is_refused_with_file_and_line() {
    let sys = tempfile::tempdir().unwrap();
    write(sys.path(), "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(sys.path(), "etc/hostctl/agent.toml", "strategy = \"fleet_lock\"\n[fleet_lock]\nurl = \"http://x:1\"\n");
    write(sys.path(), "etc/hostctl/agent.d/50-typo.toml", "\n[fleet_lock]\ngroup = \"a\"\nslots = 3\n");
    let out = hc(sys.path(), &[], &["agent", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("etc/hostctl/agent.d/50-typo.toml:4: unknown field `slots`"), "{err}");
    assert!(!state::path(sys.path()).exists(), "nothing recorded");
    // `agent status` still answers, with the configuration's error.
    let st = hc_json(sys.path(), &["agent", "status", "--json"]);
    assert!(st["configError"].as_str().unwrap().contains("50-typo.toml:4"), "{st}");
    assert_eq!(st["state"], Value::Null);
}

/// A user runs `hostctl status --json` (or `--format yaml`) on a host whose
/// agent has run: the document keeps bootc's key order (`staged`, `booted`,
/// `rollback`, `rollbackQueued`, `type`, then hostctl's additions) with the
/// agent's record last, as without the agent. It was merged through a
/// `serde_json::Value`, whose map sorted every key (`agent`, `bootNotes`,
/// `booted`, …): the VM scenario's check of bootc's structure (boot 6, after
/// the agent's passes) fails on it without the fix.
#[test]
fn status_json_keeps_bootcs_key_order_once_the_agent_has_run() {
    let sys = tempfile::tempdir().unwrap();
    let before = hc_ok(sys.path(), &["status", "--json"]);
    state::save(sys.path(), &AgentState::new(OffsetDateTime::now_utc())).unwrap();
    let after = hc_ok(sys.path(), &["status", "--json"]);
    // `before` without its two closing braces, then the record.
    let open = before.trim_end().strip_suffix('}').unwrap().trim_end().strip_suffix('}').unwrap().trim_end();
    assert!(after.starts_with(open), "the document changed before the agent's record:\n{before}\n{after}");
    assert!(after[open.len()..].starts_with(",\n    \"agent\": {\n      \"phase\": \"steady\""), "{after}");
    let yaml = hc_ok(sys.path(), &["status", "--format", "yaml"]);
    let at = |k: &str| yaml.find(&format!("\n  {k}:")).unwrap_or_else(|| panic!("{k} in {yaml}"));
    assert!(at("staged") < at("booted") && at("booted") < at("rollback") && at("rollback") < at("agent"), "{yaml}");
}

/// Bad input: the lock server is down. The agent stages the update, keeps
/// it staged (held back from the next boot), does not reboot, and retries
/// with a growing backoff; `status --json` shows it all.
#[test]
fn lock_server_down_keeps_the_staged_update_and_retries_with_backoff() {
    // The registry and the layouts live as long as the test does.
    let OnV1 { reg: _reg, work: _work, sys, v2 } = on_v1_with_v2_pushed();
    let dead = free_port();
    write(sys.path(), "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(
        sys.path(),
        "etc/hostctl/agent.toml",
        &format!("strategy = \"fleet_lock\"\n[fleet_lock]\nurl = \"http://127.0.0.1:{dead}\"\ngroup = \"web\"\n"),
    );
    let booted_before = hc_json(sys.path(), &["status", "--json"])["status"]["booted"]["id"].clone();
    hc_ok(sys.path(), &["agent", "--once"]);
    let s = agent_state(sys.path());
    assert_eq!(s["phase"], "waiting", "{s}");
    assert_eq!(s["target"]["manifestDigest"], v2.as_str());
    let reason = s["reason"].as_str().unwrap();
    assert!(reason.contains("the lock server is down") && reason.contains("not rebooting"), "{reason}");
    assert!(reason.contains("retrying in 10s (attempt 1)"), "{reason}");
    assert_eq!(s["holdsSlot"], false);
    assert!(s["lastError"].as_str().unwrap().contains("unreachable for pre-reboot"), "{s}");
    // Staged and held back: the next boot is still the old deployment.
    let st = hc_json(sys.path(), &["status", "--json"]);
    assert_eq!(st["status"]["staged"]["image"]["imageDigest"], v2.as_str(), "{st}");
    assert_eq!(st["status"]["stagedLocked"], true);
    assert_eq!(st["status"]["booted"]["id"], booted_before);
    assert_eq!(st["status"]["agent"]["phase"], "waiting");
    // The next attempt backs off further and keeps everything.
    hc_ok(sys.path(), &["agent", "--once"]);
    let s = agent_state(sys.path());
    assert_eq!(s["phase"], "waiting");
    assert_eq!(s["failures"], 2);
    assert!(s["reason"].as_str().unwrap().contains("retrying in 20s (attempt 2)"), "{s}");
    assert_eq!(hc_json(sys.path(), &["status", "--json"])["status"]["staged"]["image"]["imageDigest"], v2.as_str());
    let human = hc_ok(sys.path(), &["agent", "status"]);
    assert!(human.contains("Phase:     waiting") && human.contains("group web"), "{human}");

    // Killed after staging, before its record said so: the record says
    // "downloading"; the next run finds the staged deployment and goes on
    // from there without staging again.
    let staged_id = st["status"]["staged"]["id"].clone();
    let mut rec: Value = serde_json::from_slice(&std::fs::read(state::path(sys.path())).unwrap()).unwrap();
    rec["phase"] = "downloading".into();
    rec["target"]["deployment"] = Value::Null;
    std::fs::write(state::path(sys.path()), serde_json::to_vec(&rec).unwrap()).unwrap();
    hc_ok(sys.path(), &["agent", "--once"]);
    let s = agent_state(sys.path());
    assert_eq!(s["phase"], "waiting", "{s}");
    assert_eq!(s["target"]["deployment"], staged_id);
    let resumed = s["history"].as_array().unwrap().iter().any(|t| {
        t["to"] == "staged" && t["reason"].as_str().unwrap().contains("was staged before the agent restarted")
    });
    assert!(resumed, "{s}");
    assert_eq!(hc_json(sys.path(), &["status", "--json"])["status"]["staged"]["id"], staged_id, "not staged again");
}

/// Rollout metadata pushed by `fleet release` to Debian's registry (which
/// has no referrers API, so the referrers tag is used), signed by real
/// cosign: unsigned metadata is refused and the image not released; signed
/// metadata is used; a newer unsigned release and one carrying a signature
/// replayed from the signed one are refused, the signed one still counts.
#[test]
fn rollout_metadata_unsigned_signed_and_tampered() {
    require_tool("cosign");
    require_tool("curl");
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    let w = work.path();
    let image = reg.image("os:latest");
    run(cosign(w).args(["generate-key-pair", "--output-key-prefix", "release"]));
    let sign = |reference: &str| {
        run(cosign(w)
            .args(["sign", "-y", "--tlog-upload=false", "--allow-http-registry", "--allow-insecure-registry", "--key"])
            .arg(w.join("release.key"))
            .arg(reference));
    };
    let v1 = push_image(&reg, w, "os:latest", "1", 0);
    sign(&reg.image(&format!("os@{v1}")));
    let policy = w.join("policy.json");
    let p = serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {reg.image("os"): [
        {"type": "sigstoreSigned", "keyPath": w.join("release.pub"), "signedIdentity": {"type": "matchRepository"}}]}}});
    std::fs::write(&policy, serde_json::to_vec(&p).unwrap()).unwrap();
    let pol = policy.to_str().unwrap();
    hc_ok(sys.path(), &["--policy", pol, "switch", &image]);
    let v2 = push_image(&reg, w, "os:latest", "2", 0);
    sign(&reg.image(&format!("os@{v2}")));
    write(sys.path(), "etc/machine-id", "fedcba9876543210fedcba9876543210\n");
    write(sys.path(), "etc/hostctl/agent.toml", "require_release = true\ninterval = \"1s\"\n");
    let agent_once = || {
        std::thread::sleep(std::time::Duration::from_millis(1100)); // past the 1 s re-check interval
        hc_ok(sys.path(), &["--policy", pol, "agent", "--once"]);
        agent_state(sys.path())
    };

    // No metadata: not released.
    let s = agent_once();
    assert_eq!(s["phase"], "updateAvailable", "{s}");
    assert_eq!(s["target"]["release"], Value::Null);
    assert!(s["reason"].as_str().unwrap().contains("no verified rollout metadata and require_release is set"), "{s}");

    // Debian's docker-registry (Distribution 2.8) has no referrers API...
    let code = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/v2/os/referrers/{v2}", reg.image("").trim_end_matches('/')))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "404", "the registry grew a referrers API: test the API path");
    // ...so the release goes to the referrers tag schema.
    let start = "2099-01-01T01:00:00+01:00";
    let pushed = release(sys.path(), &image, "1h=10%,2h=100%", start, &["--halt-after", "5%"]);
    assert_eq!(pushed["referrers"], "tagSchema", "{pushed}");
    let signed_artifact = pushed["artifact"].as_str().unwrap().to_string();
    let signed_digest = pushed["artifactDigest"].as_str().unwrap().to_string();
    let tag = format!("sha256-{}", v2.strip_prefix("sha256:").unwrap());
    let index = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}", reg.image(&format!("os:{tag}")))));
    assert!(String::from_utf8_lossy(&index.stdout).contains(&signed_digest), "the referrers tag lists the artifact");

    // Unsigned: refused, logged, not released.
    let s = agent_once();
    assert_eq!(s["phase"], "updateAvailable", "{s}");
    assert_eq!(s["target"]["release"], Value::Null, "{s}");
    let reason = check_reason(&s);
    assert!(reason.contains(&format!("refused rollout metadata: {signed_digest}")), "{reason}");
    assert!(reason.contains("not signed"), "{reason}");

    // Signed with the release key: used (the rollout starts in 2099, so the host waits).
    sign(&signed_artifact);
    let s = agent_once();
    assert_eq!(s["target"]["release"], signed_digest.as_str(), "{s}");
    assert!(s["reason"].as_str().unwrap().contains("the rollout starts at 2099-01-01T00:00:00Z"), "{s}");
    assert_eq!(s["target"]["schedule"]["waves"][0]["afterSeconds"], 3600);

    // Tampered: a newer release (everyone at once) that nobody signed...
    let newer = release(sys.path(), &image, "1s=100%", "2000-01-01T00:00:00Z", &[]);
    let newer_digest = newer["artifactDigest"].as_str().unwrap().to_string();
    let s = agent_once();
    assert_eq!(s["target"]["release"], signed_digest.as_str(), "the unsigned newer release is not used: {s}");
    assert!(check_reason(&s).contains(&format!("refused rollout metadata: {newer_digest}")), "{s}");
    assert_eq!(s["phase"], "updateAvailable", "nothing was downloaded: {s}");
    // ...and the same with the signed release's signature replayed onto it.
    let sig = |d: &str| format!("os:sha256-{}.sig", d.strip_prefix("sha256:").unwrap());
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("docker://{}", reg.image(&sig(&signed_digest))))
        .arg(format!("docker://{}", reg.image(&sig(&newer_digest)))));
    let s = agent_once();
    assert_eq!(s["target"]["release"], signed_digest.as_str(), "{s}");
    let reason = check_reason(&s);
    assert!(reason.contains(&format!("signed for manifest {signed_digest}, not {newer_digest}")), "{reason}");
    let st = hc_json(sys.path(), &["status", "--json"]);
    assert_eq!(st["status"]["staged"], Value::Null, "nothing staged: {st}");
}

/// Simulated boot of a temp sysroot: the default entry is booted; its
/// health checks run (the real scripts from the image) as
/// `hostctl-health.service` runs them; a failure marks the boot bad, and the
/// boot loader falling back is a rollback.
struct SimBoot {
    root: PathBuf,
}

struct SimBootControl<'a> {
    d: &'a Deployer,
}

impl BootControl for SimBootControl<'_> {
    fn counting(&self) -> bool {
        true
    }
    fn mark_bad(&self) -> anyhow::Result<()> {
        hostctl::deploy::rollback::rollback(self.d).map(|_| ())
    }
    fn reboot(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Reboot for SimBoot {
    fn reboot(&self) -> anyhow::Result<()> {
        let sysroot = Sysroot::open(&self.root)?;
        let d = Deployer::open(&sysroot, &self.root.join("boot"))?;
        let booted = d.booted()?.expect("a default entry");
        let tree = d.layout.tree(&booted);
        hostctl::boot::health::run(&tree, &self.root, Some(&booted), &SimBootControl { d: &d })?;
        Ok(())
    }
}

/// An agent for the sysroot `root` with configuration `cfg`, the clock
/// `clock`, simulated reboots, and any image accepted by the policy.
fn sim_agent(root: &Path, cfg: &str, clock: Arc<ManualClock>, machine_id: &str) -> Agent {
    Agent {
        root: root.to_path_buf(),
        boot: root.join("boot"),
        config: config::parse(&[(root.join(config::MAIN_FILE), cfg.to_string())]).unwrap(),
        pull: hostctl::pull::PullOptions {
            registry: hostctl::oci::RegistryOptions { insecure: true, ..Default::default() },
            platform: hostctl::oci::platform::Platform::host(),
            progress: hostctl::progress::Progress::hidden(),
            verifier: Arc::new(hostctl::trust::AcceptAnything),
        },
        tls_verify_given: true,
        clock,
        reboot: Arc::new(SimBoot { root: root.to_path_buf() }),
        machine_id: machine_id.to_string(),
        lock_wait: std::time::Duration::from_secs(30),
        // The images carry no bound images, so the stage hook runs and pulls nothing.
        podman: Some(Arc::new(hostctl::host::podman::FakePodman::default())),
        bound_pull: Default::default(),
    }
}

/// Steps `agent` until it has to wait; returns until when.
async fn step_until_wait(agent: &Agent, clock: &ManualClock) -> OffsetDateTime {
    loop {
        let next = agent.step().await.unwrap();
        if next > clock.now() {
            return next;
        }
    }
}

/// The periodic strategy: the download waits for its window, the reboot for
/// its own (in Europe/Berlin), and nothing reboots outside them.
#[tokio::test]
async fn periodic_strategy_downloads_and_reboots_only_inside_their_windows() {
    // The registry and the layouts live as long as the test does.
    let OnV1 { reg: _reg, work: _work, sys, v2 } = on_v1_with_v2_pushed();
    let cfg = "strategy = \"periodic\"\ninterval = \"1h\"\n[periodic]\ntime_zone = \"Europe/Berlin\"\n\
               [[periodic.download]]\ndays = [\"Fri\"]\nstart = \"22:00\"\nlength = \"2h\"\n\
               [[periodic.reboot]]\ndays = [\"Sat\"]\nstart = \"03:00\"\nlength = \"1h\"\n";
    // Friday 2026-12-11, 12:00 in Berlin (11:00 UTC).
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-12-11 11:00 UTC)));
    let agent = sim_agent(sys.path(), cfg, clock.clone(), "00112233445566778899aabbccddeeff");
    let next = step_until_wait(&agent, &clock).await;
    let s = agent.load().unwrap();
    assert_eq!(s.phase, Phase::UpdateAvailable, "{s:?}");
    assert!(s.reason.contains("outside the download windows; the next opens at 2026-12-11T21:00:00Z"), "{s:?}");
    assert_eq!(next, time::macros::datetime!(2026-12-11 12:00 UTC), "re-checks after the interval first");
    // Inside the download window (22:30 Berlin): staged, then waiting for the reboot window.
    clock.set(time::macros::datetime!(2026-12-11 21:30 UTC));
    let next = step_until_wait(&agent, &clock).await;
    let s = agent.load().unwrap();
    assert_eq!(s.phase, Phase::Waiting, "{s:?}");
    assert!(s.reason.contains("outside the reboot windows; the next opens at 2026-12-12T02:00:00Z"), "{s:?}");
    assert_eq!(next, time::macros::datetime!(2026-12-12 02:00 UTC));
    let host = Host::of(sys.path());
    assert_ne!(host, v2, "not rebooted outside the window");
    // In the reboot window: reboots, the health check passes, steady.
    clock.set(time::macros::datetime!(2026-12-12 02:05 UTC));
    step_until_wait(&agent, &clock).await;
    assert_eq!(agent.load().unwrap().phase, Phase::Rebooting);
    // The agent starts again after the boot.
    clock.advance(Duration::minutes(1));
    step_until_wait(&agent, &clock).await;
    let s = agent.load().unwrap();
    assert_eq!(s.phase, Phase::Steady, "{s:?}");
    assert_eq!(Host::of(sys.path()), v2);
    assert!(s.health.as_ref().unwrap().healthy, "{s:?}");
    let rebooting = s.history.iter().find(|t| t.to == Phase::Rebooting).unwrap();
    assert!(rebooting.reason.contains("inside a reboot window (until 2026-12-12T03:00:00Z)"), "{rebooting:?}");
}

struct Host {
    root: tempfile::TempDir,
    machine_id: String,
    clock: Arc<ManualClock>,
    skew: Duration,
    agent: Arc<Agent>,
    next: OffsetDateTime,
}

impl Host {
    /// The digest booted in the sysroot `root`.
    fn of(root: &Path) -> String {
        let sysroot = Sysroot::open(root).unwrap();
        let d = Deployer::open(&sysroot, &root.join("boot")).unwrap();
        let id = d.booted().unwrap().unwrap();
        Metadata::load(&d.layout, &id).unwrap().image.image_digest.to_string()
    }

    fn booted_digest(&self) -> String {
        Host::of(self.root.path())
    }

    fn state(&self) -> AgentState {
        state::load(self.root.path()).unwrap().unwrap()
    }
}

/// Steps every host whose next step is due at `now` (true time; each host
/// sees it through its skewed clock), as concurrent tasks.
async fn tick(hosts: &mut [Host], now: OffsetDateTime) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, h) in hosts.iter().enumerate() {
        h.clock.set(now + h.skew);
        if h.next > now + h.skew {
            continue;
        }
        let agent = h.agent.clone();
        let clock = h.clock.clone();
        tasks.spawn(async move {
            loop {
                let next = agent.step().await.unwrap();
                if next > clock.now() {
                    return (i, next);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (i, next) = r.unwrap();
        hosts[i].next = next;
    }
}

fn transitions_to(s: &AgentState, to: Phase, digest: &str) -> bool {
    s.history.iter().any(|t| t.to == to && t.reason.contains(digest))
}

/// The most holders of `group` a sampler of `GET /v1/status` saw while it ran.
struct HeldSampler {
    max: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HeldSampler {
    /// Asks `base` for its status over and over, keeping the most holders of `group` seen.
    fn start(base: &str, group: &'static str) -> HeldSampler {
        let max = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, base) = (max.clone(), base.to_string());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let held = holders(&status(&http, &base).await, group).len();
                m.fetch_max(held, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        HeldSampler { max, task }
    }

    fn max(&self) -> usize {
        assert!(!self.task.is_finished(), "the status sampler stopped (the server did not answer?)");
        self.max.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HeldSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// 50 hosts follow one tag with fleet_lock (3 slots) from `hostctl fleet
/// server` on a real etcd. A good release rolls out in its waves (no host
/// downloads before its turn on its own clock, never more than 3 slots held)
/// and every host converges on it; a release whose health check fails in
/// the first wave rolls back there, keeps its slot, halts by the release's
/// own threshold (the server's `--halt-after` is far higher: the agents send
/// the signed metadata's), and no host outside the first wave stages it.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_hosts_follow_one_tag_through_waves_locks_and_a_halt() {
    const HOSTS: usize = 50;
    const SLOTS: usize = 3;
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let image = reg.image("os:stable");
    push_image(&reg, work.path(), "os:stable", "1", 0);
    // One sysroot switched by the CLI, copied for every host (hardlinks kept).
    // On tmpfs when there is one: the 50 sysroots' fsyncs cost nothing there.
    let scratch = || match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let template = scratch();
    hc_ok(template.path(), &["switch", &image]);
    let etcd = EtcdCluster::single();
    let server = FleetServer::start(&etcd.endpoints_arg(), &["--slots", &SLOTS.to_string(), "--halt-after", "50"]);
    let http = reqwest::Client::new();
    let cfg = format!(
        "strategy = \"fleet_lock\"\ninterval = \"5m\"\nrequire_release = true\n[fleet_lock]\nurl = \"{}\"\ngroup = \"fleet\"\n",
        server.url
    );
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        let root = scratch();
        run(Command::new("cp").arg("-a").arg(format!("{}/.", template.path().display())).arg(root.path()));
        let machine_id = format!("{:032x}", 0x5eed_0000_u128 + i as u128 * 7919);
        write(root.path(), "etc/machine-id", &format!("{machine_id}\n"));
        // Clocks up to two minutes off either way.
        let skew = Duration::seconds((i as i64 * 37) % 241 - 120);
        let clock = Arc::new(ManualClock::new(t0 + skew));
        let agent = sim_agent(root.path(), &cfg, clock.clone(), &machine_id);
        hosts.push(Host { root, machine_id, clock, skew, agent: Arc::new(agent), next: t0 - Duration::hours(1) });
    }

    // A good release: waves over an hour.
    let v2 = push_image(&reg, work.path(), "os:stable", "2", 0);
    let waves = "10m=10%,30m=50%,1h=100%";
    let pushed = release(
        template.path(),
        &image,
        waves,
        &t0.format(&time::format_description::well_known::Rfc3339).unwrap(),
        &[],
    );
    assert_eq!(pushed["metadata"]["imageDigest"], v2.as_str());
    let schedule = Schedule { start: t0, waves: waves.parse().unwrap() };
    let held = HeldSampler::start(&server.url, "fleet");
    let mut now = t0;
    while now <= t0 + Duration::minutes(80) {
        tick(&mut hosts, now).await;
        assert!(held.max() <= SLOTS, "{} slots held at once, more than {SLOTS}", held.max());
        now += Duration::minutes(1);
    }
    for h in &hosts {
        let s = h.state();
        assert_eq!(h.booted_digest(), v2, "host {} did not converge: {s:?}", h.machine_id);
        assert_eq!(s.phase, Phase::Steady, "{s:?}");
        assert!(!s.holds_slot, "healthy hosts give their slot back: {s:?}");
        // No host downloaded before its turn, on its own clock.
        let pos = Position::of(&h.machine_id, &v2);
        let download = s.history.iter().find(|t| t.to == Phase::Downloading && t.reason.contains(&v2)).unwrap();
        let at = OffsetDateTime::parse(&download.at, &time::format_description::well_known::Rfc3339).unwrap();
        assert!(
            eligibility(pos, Some(&schedule), at).is_eligible(),
            "{} downloaded at {at} before its turn",
            h.machine_id
        );
    }
    assert!(held.max() >= 2, "slots were contended ({} at most)", held.max());
    let st = status(&http, &server.url).await;
    assert_eq!(st["releases"][&v2]["healthy"], HOSTS, "{st}");
    assert!(holders(&st, "fleet").is_empty(), "every slot given back: {st}");

    // A bad release: its health check fails. The first wave (10 % by 20 min)
    // takes it, fails, and halts it at the release's own threshold.
    let v3 = push_image(&reg, work.path(), "os:stable", "3", 1);
    let t1 = now;
    let bad_waves = "20m=10%,3h=100%";
    let bad = release(
        template.path(),
        &image,
        bad_waves,
        &t1.format(&time::format_description::well_known::Rfc3339).unwrap(),
        &["--halt-after", "1"],
    );
    assert_eq!(bad["metadata"]["haltAfter"], serde_json::json!({"hosts": 1}), "{bad}");
    while now <= t1 + Duration::minutes(60) {
        tick(&mut hosts, now).await;
        assert!(held.max() <= SLOTS, "{} slots held at once, more than {SLOTS}", held.max());
        now += Duration::minutes(1);
    }
    let st = status(&http, &server.url).await;
    assert!(st["halted"].as_array().unwrap().contains(&Value::from(v3.as_str())), "the release halted: {st}");
    let mut staged_v3 = 0;
    let mut reported_v3 = Vec::new();
    for h in &hosts {
        let s = h.state();
        let pos = Position::of(&h.machine_id, &v3).value();
        assert_eq!(h.booted_digest(), v2, "no host stays on the bad release: {s:?}");
        if transitions_to(&s, Phase::Downloading, &v3) {
            staged_v3 += 1;
            assert!(
                pos < 0.10,
                "host {} at position {pos} (outside the first wave) staged the halted release",
                h.machine_id
            );
        }
        if transitions_to(&s, Phase::Reporting, &v3) {
            assert!(s.unhealthy.contains(&v3) && s.holds_slot, "an unhealthy host keeps its slot: {s:?}");
            reported_v3.push(h.machine_id.clone());
        }
    }
    assert!(staged_v3 >= 1, "the first wave took the bad release");
    assert!(!reported_v3.is_empty());
    assert_eq!(st["releases"][&v3]["unhealthy"], reported_v3.len(), "{st}");
    // The server keeps their slots (no lease) and says they are unhealthy.
    let kept: Vec<String> = st["groups"]["fleet"]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["unhealthy"] == true)
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    reported_v3.sort();
    assert_eq!(kept, reported_v3, "unhealthy hosts keep their slots: {st}");
}
