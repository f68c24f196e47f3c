//! `hostctl fleet server` against real etcd on loopback: FleetLock v1 as the
//! protocol and its servers define it (the bad-input table, from raw curl
//! requests), the slot limit under ≥ 50 hosts at once, a silent holder's
//! slot expiring, an unhealthy holder keeping it, halts and resumes, and two
//! replicas on a 3-member etcd losing nothing when one of each is killed.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::etcd::EtcdCluster;
use crate::support::fleet::{fleetlock, holders, report, runtime, status, FleetServer};
use crate::support::hostctl_bin;

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// One row of the bad-input table: upstream expectation, method, path,
/// headers, body, hostctl's status, hostctl's error kind.
type Row<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], Option<&'a [u8]>, u16, Option<&'a str>);

/// A raw request by curl: method, path, headers, body; the status and body.
fn curl(base: &str, method: &str, path: &str, headers: &[&str], body: Option<&[u8]>) -> (u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-o"]).arg(&out_file).args(["-w", "%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        let f = dir.path().join("req");
        std::fs::write(&f, b).unwrap();
        cmd.arg("--data-binary").arg(format!("@{}", f.display()));
    }
    cmd.arg(format!("{base}{path}"));
    let out = cmd.output().expect("curl");
    let code = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
    (code, std::fs::read_to_string(&out_file).unwrap_or_default())
}

fn hostctl_fleet(args: &[&str]) -> std::process::Output {
    Command::new(hostctl_bin()).arg("fleet").args(args).env_remove("RUST_LOG").output().unwrap()
}

/// Every row: what a client sends, what FleetLock's spec (coreos/zincati
/// docs/development/fleetlock/protocol.md) and airlock (coreos/airlock, the
/// reference server) do, and what hostctl answers. Rows run in order on one
/// server with one slot in group `default`.
#[test]
fn fleetlock_requests_get_the_answers_the_protocol_defines() {
    let etcd = EtcdCluster::single();
    let server = FleetServer::start(&etcd.endpoints_arg(), &["--slots", "1"]);
    let base = server.url.as_str();
    let h = "fleet-lock-protocol: true";
    let ct = "content-type: application/json";
    let a = br#"{"client_params":{"id":"host-a","group":"default"}}"#.as_slice();
    let b = br#"{"client_params":{"id":"host-b","group":"default"}}"#.as_slice();
    let big = format!(r#"{{"client_params":{{"id":"{}","group":"default"}}}}"#, "x".repeat(70_000));
    #[rustfmt::skip]
    let table: &[Row] = &[
        // (upstream expectation, method, path, headers, body, hostctl status, hostctl kind)
        ("spec: the header is required; airlock: 400 \"wrong 'fleet-lock-protocol' header\"",
            "POST", "/v1/pre-reboot", &[ct], Some(a), 400, Some("missing_protocol_header")),
        ("spec: fixed value `true`; airlock: 400",
            "POST", "/v1/pre-reboot", &["fleet-lock-protocol: yes", ct], Some(a), 400, Some("missing_protocol_header")),
        ("spec: the header is required on unlock too; airlock: 400",
            "POST", "/v1/steady-state", &[ct], Some(a), 400, Some("missing_protocol_header")),
        ("spec: operations are POST requests; airlock routes by path only (hostctl: 405 with Allow: POST)",
            "GET", "/v1/pre-reboot", &[h], None, 405, Some("method_not_allowed")),
        ("spec: POST only (hostctl: 405)",
            "PUT", "/v1/steady-state", &[h, ct], Some(a), 405, Some("method_not_allowed")),
        ("spec: well-formed JSON body; airlock: 400 from the JSON decoder",
            "POST", "/v1/pre-reboot", &[h, ct], Some(br#"{"client_params":"#), 400, Some("bad_request")),
        ("spec: client_params is mandatory; airlock: 400 (empty group)",
            "POST", "/v1/pre-reboot", &[h, ct], Some(b"{}"), 400, Some("bad_request")),
        ("spec: id is mandatory and non-empty; airlock: 400 \"empty node ID\"",
            "POST", "/v1/pre-reboot", &[h, ct], Some(br#"{"client_params":{"id":"","group":"default"}}"#), 400, Some("bad_request")),
        ("spec: group is mandatory and non-empty; airlock: 400 \"empty group\"",
            "POST", "/v1/pre-reboot", &[h, ct], Some(br#"{"client_params":{"id":"host-a","group":""}}"#), 400, Some("bad_request")),
        ("spec: group matches ^[a-zA-Z0-9.-]+$, a server SHOULD check; airlock: 400 (unknown group)",
            "POST", "/v1/pre-reboot", &[h, ct], Some(br#"{"client_params":{"id":"host-a","group":"a/b"}}"#), 400, Some("bad_request")),
        ("not in the spec: bodies are a few dozen bytes (hostctl: 413 past 64 KiB)",
            "POST", "/v1/pre-reboot", &[h, ct], Some(big.as_bytes()), 413, Some("bad_request")),
        ("not in the spec: unknown path (hostctl: 404)",
            "POST", "/v1/reboot", &[h, ct], Some(a), 404, Some("not_found")),
        ("spec: RecursiveLock takes a free slot; airlock: 200",
            "POST", "/v1/pre-reboot", &[h, ct], Some(a), 200, None),
        ("spec: locks are recursive, the holder locking again succeeds; airlock: 200",
            "POST", "/v1/pre-reboot", &[h, ct], Some(a), 200, None),
        ("spec: semaphore full, example kind failed_lock_semaphore_full; airlock: 500 (hostctl: 409)",
            "POST", "/v1/pre-reboot", &[h, ct], Some(b), 409, Some("failed_lock_semaphore_full")),
        ("spec: locks are owned, only the holder releases; UnlockIfHeld by a non-holder is a no-op; airlock: 200",
            "POST", "/v1/steady-state", &[h, ct], Some(b), 200, None),
        ("…so the holder's slot is still taken",
            "POST", "/v1/pre-reboot", &[h, ct], Some(b), 409, Some("failed_lock_semaphore_full")),
        ("spec: the holder releases; airlock: 200",
            "POST", "/v1/steady-state", &[h, ct], Some(a), 200, None),
        ("spec: unbalanced unlocks are allowed; airlock: 200",
            "POST", "/v1/steady-state", &[h, ct], Some(a), 200, None),
        ("the freed slot goes to the next host",
            "POST", "/v1/pre-reboot", &[h, ct], Some(b), 200, None),
        ("hostctl's release header must be a digest (other servers ignore it)",
            "POST", "/v1/pre-reboot", &[h, ct, "hostctl-release-digest: latest"], Some(a), 400, Some("bad_request")),
        ("extension: a report with an unknown field is refused, not half-read",
            "POST", "/v1/report", &[h, ct], Some(br#"{"client_params":{"id":"host-a","group":"default"},"digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","healthy":true,"healthy_really":1}"#), 400, Some("bad_request")),
        ("extension: a report's digest must be a digest",
            "POST", "/v1/report", &[h, ct], Some(br#"{"client_params":{"id":"host-a","group":"default"},"digest":"v2","healthy":true}"#), 400, Some("bad_request")),
        ("extension: status is GET only",
            "POST", "/v1/status", &[h, ct], Some(a), 405, Some("method_not_allowed")),
    ];
    for (why, method, path, headers, body, want_code, want_kind) in table {
        let (code, text) = curl(base, method, path, headers, *body);
        assert_eq!(code, *want_code, "{method} {path} ({why}): body {text}");
        match want_kind {
            Some(kind) => {
                let e: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{why}: not JSON: {text}"));
                assert_eq!(e["kind"], *kind, "{why}: {text}");
                assert!(e["value"].as_str().is_some_and(|v| !v.is_empty()), "{why}: empty value: {text}");
            }
            None => assert!(code == 200, "{why}"),
        }
    }
    let (code, allow) = {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-D", "-"])
            .arg(format!("{base}/v1/pre-reboot"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        (text.lines().next().unwrap_or("").to_string(), text.lines().any(|l| l.trim() == "allow: post"))
    };
    assert!(code.contains("405") && allow, "a GET names the method to use: {code}");
    let (code, text) = curl(base, "GET", "/v1/status", &[], None);
    assert_eq!(code, 200);
    let st: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(holders(&st, "default"), ["host-b"], "{st}");
    assert_eq!(st["groups"]["default"]["slots"], 1);
}

/// 60 hosts in two groups lock, hold and unlock at once through one server;
/// a watcher reads `/v1/status` all along. Neither the hosts' own count nor
/// the server's ever passes a group's slots (3 by `--slots`, 2 set by
/// `hostctl fleet slots`), and every host gets its turn.
#[test]
fn sixty_hosts_at_once_never_hold_more_slots_than_their_group_has() {
    let etcd = EtcdCluster::single();
    let server = FleetServer::start(&etcd.endpoints_arg(), &["--slots", "3"]);
    let out = hostctl_fleet(&["slots", "--etcd", &etcd.endpoints_arg(), "narrow", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let limits = HashMap::from([("wide", 3usize), ("narrow", 2usize)]);
    let rt = runtime();
    let http = reqwest::Client::new();
    let base = server.url.clone();
    let holding: Arc<HashMap<&str, AtomicUsize>> = Arc::new(limits.keys().map(|g| (*g, AtomicUsize::new(0))).collect());
    let peak: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    rt.block_on(async {
        let done = Arc::new(AtomicUsize::new(0));
        let watcher = {
            let (http, base, peak, done) = (http.clone(), base.clone(), peak.clone(), done.clone());
            tokio::spawn(async move {
                let mut reads = 0;
                while done.load(Ordering::SeqCst) < 60 {
                    let st = status(&http, &base).await;
                    for g in ["wide", "narrow"] {
                        let n = holders(&st, g).len();
                        let mut p = peak.lock().unwrap();
                        let e = p.entry(format!("status:{g}")).or_default();
                        *e = (*e).max(n);
                    }
                    reads += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                reads
            })
        };
        let mut hosts = Vec::new();
        for i in 0..60 {
            let group = if i % 2 == 0 { "wide" } else { "narrow" };
            let (http, base, holding, peak, done) =
                (http.clone(), base.clone(), holding.clone(), peak.clone(), done.clone());
            hosts.push(tokio::spawn(async move {
                let id = format!("host-{i:02}");
                let start = Instant::now();
                for _round in 0..2 {
                    loop {
                        match fleetlock(&http, &base, "/v1/pre-reboot", &id, group, None).await.unwrap() {
                            200 => break,
                            409 => tokio::time::sleep(Duration::from_millis(5 + (i as u64 % 7) * 3)).await,
                            other => panic!("{id}: pre-reboot answered {other}"),
                        }
                        assert!(start.elapsed() < Duration::from_secs(60), "{id} never got a slot");
                    }
                    let now = holding[group].fetch_add(1, Ordering::SeqCst) + 1;
                    {
                        let mut p = peak.lock().unwrap();
                        let e = p.entry(format!("hosts:{group}")).or_default();
                        *e = (*e).max(now);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    holding[group].fetch_sub(1, Ordering::SeqCst);
                    assert_eq!(fleetlock(&http, &base, "/v1/steady-state", &id, group, None).await.unwrap(), 200);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        for h in hosts {
            h.await.unwrap();
        }
        let reads = watcher.await.unwrap();
        assert!(reads > 3, "the watcher read the status {reads} times");
        let st = status(&http, &base).await;
        assert!(holders(&st, "wide").is_empty() && holders(&st, "narrow").is_empty(), "{st}");
    });
    let peak = peak.lock().unwrap();
    for (g, limit) in &limits {
        let hosts = peak.get(&format!("hosts:{g}")).copied().unwrap_or(0);
        let seen = peak.get(&format!("status:{g}")).copied().unwrap_or(0);
        assert!(
            hosts <= *limit && seen <= *limit,
            "group {g}: {hosts} hosts held at once, status showed {seen}; limit {limit}"
        );
        assert!(hosts >= 1, "group {g}: nobody held a slot");
    }
}

/// A host that takes its slot and goes silent (it died mid-reboot) frees it
/// after `--holder-ttl`; one that reported itself unhealthy keeps it past the
/// TTL until it releases it, so a bad release cannot reach more hosts.
#[test]
fn a_silent_holder_frees_its_slot_after_the_ttl_but_an_unhealthy_one_keeps_it() {
    let etcd = EtcdCluster::single();
    let server =
        FleetServer::start(&etcd.endpoints_arg(), &["--slots", "1", "--holder-ttl", "2s", "--halt-after", "10"]);
    let rt = runtime();
    let http = reqwest::Client::new();
    let base = server.url.as_str();
    rt.block_on(async {
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "dies", "g1", None).await.unwrap(), 200);
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "next", "g1", None).await.unwrap(), 409);
        let start = Instant::now();
        loop {
            if fleetlock(&http, base, "/v1/pre-reboot", "next", "g1", None).await.unwrap() == 200 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the silent holder's slot never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(start.elapsed() >= Duration::from_millis(500), "freed too early: {:?}", start.elapsed());
        assert_eq!(holders(&status(&http, base).await, "g1"), ["next"]);

        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "sick", "g2", Some(DIGEST_A)).await.unwrap(), 200);
        let (code, body) = report(
            &http,
            base,
            json!({"client_params": {"id": "sick", "group": "g2"}, "digest": DIGEST_A, "healthy": false, "detail": "sshd did not start"}),
        )
        .await;
        assert_eq!((code, body["slot_kept"].as_bool(), body["halted"].as_bool()), (200, Some(true), Some(false)), "{body}");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "other", "g2", Some(DIGEST_A)).await.unwrap(), 409);
        let st = status(&http, base).await;
        assert_eq!(holders(&st, "g2"), ["sick"], "{st}");
        assert_eq!(st["groups"]["g2"]["holders"][0]["unhealthy"], true);
        assert_eq!(st["releases"][DIGEST_A]["unhealthy"], 1);
        assert_eq!(fleetlock(&http, base, "/v1/steady-state", "sick", "g2", None).await.unwrap(), 200);
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "other", "g2", Some(DIGEST_A)).await.unwrap(), 200);
    });
}

/// Unhealthy reports reach the release's threshold (2, as its metadata says
/// and the report carries) → the release is halted in etcd → pre-reboot
/// into it is refused (other releases and header-less clients are not) →
/// `hostctl fleet resume` → allowed; the old reports no longer count.
#[test]
fn unhealthy_reports_halt_a_release_until_fleet_resume() {
    let etcd = EtcdCluster::single();
    let server = FleetServer::start(&etcd.endpoints_arg(), &["--slots", "10"]);
    let rt = runtime();
    let http = reqwest::Client::new();
    let base = server.url.as_str();
    let bad = |id: &str| json!({"client_params": {"id": id, "group": "web"}, "digest": DIGEST_A, "healthy": false, "detail": "health check web.service failed", "halt_after": "2"});
    rt.block_on(async {
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "h1", "web", Some(DIGEST_A)).await.unwrap(), 200);
        let (_, r) = report(&http, base, json!({"client_params": {"id": "h0", "group": "web"}, "digest": DIGEST_A, "healthy": true, "halt_after": "2"})).await;
        assert_eq!(r["halted"], false);
        let (_, r) = report(&http, base, bad("h1")).await;
        assert_eq!(r["halted"], false, "one unhealthy host is below the threshold 2");
        let (_, r) = report(&http, base, bad("h2")).await;
        assert_eq!(r["halted"], true, "{r}");
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "h3", "web", Some(DIGEST_A)).await.unwrap(), 409);
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "h3", "web", Some(DIGEST_B)).await.unwrap(), 200, "another release is not halted");
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "z1", "web", None).await.unwrap(), 200, "a client that names no release is not refused");
    });
    let out = Command::new(hostctl_bin()).args(["fleet", "status", "--json", "--server", base]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["halted"], json!([DIGEST_A]));
    assert_eq!(
        (st["releases"][DIGEST_A]["healthy"].as_u64(), st["releases"][DIGEST_A]["unhealthy"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(st["releases"][DIGEST_A]["halt_reason"].as_str().unwrap().contains("2 of 3"), "{st}");
    let human = Command::new(hostctl_bin()).args(["fleet", "status", "--server", base]).output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("HALTED"), "{}", String::from_utf8_lossy(&human.stdout));

    let out = hostctl_fleet(&["resume", "--etcd", &etcd.endpoints_arg(), DIGEST_A]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is resumed"));
    rt.block_on(async {
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "h4", "web", Some(DIGEST_A)).await.unwrap(), 200);
        let (_, r) = report(&http, base, bad("h4")).await;
        assert_eq!(r["halted"], false, "after a resume only new reports count: {r}");
    });
    let out = hostctl_fleet(&["halt", "--etcd", &etcd.endpoints_arg(), DIGEST_A]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    rt.block_on(async {
        assert_eq!(fleetlock(&http, base, "/v1/pre-reboot", "h5", "web", Some(DIGEST_A)).await.unwrap(), 409);
    });
    let out = hostctl_fleet(&["halt", "--etcd", &etcd.endpoints_arg(), "latest"]);
    assert_eq!(out.status.code(), Some(2), "a digest that is not one is a usage error");
}

/// Two replicas on a 3-member etcd; 50 hosts go through either. Mid-way one
/// replica and the etcd leader are killed: every host still completes its
/// turn through the other replica, the slot limit holds throughout, and the
/// slot taken before the kills is still held after them.
#[test]
fn killing_a_replica_and_an_etcd_member_mid_rollout_loses_nothing() {
    let mut etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints_arg();
    let mut one = FleetServer::start(&endpoints, &["--slots", "4"]);
    let two = FleetServer::start(&endpoints, &["--slots", "4"]);
    let rt = runtime();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let bases = [one.url.clone(), two.url.clone()];
    rt.block_on(async {
        assert_eq!(fleetlock(&http, &bases[0], "/v1/pre-reboot", "sentinel", "fleet", None).await.unwrap(), 200);
    });
    let holding = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (http, bases, holding, peak, finished) =
                (http.clone(), bases.clone(), holding.clone(), peak.clone(), finished.clone());
            rt.spawn(async move {
                let id = format!("host-{i:02}");
                let start = Instant::now();
                // A host tries its replica, and the other when that one fails.
                let mut which = i % 2;
                for _round in 0..2 {
                    loop {
                        match call_any(&http, &bases, &mut which, "/v1/pre-reboot", &id, start).await {
                            200 => break,
                            409 => tokio::time::sleep(Duration::from_millis(10 + (i as u64 % 5) * 4)).await,
                            other => panic!("{i}: pre-reboot answered {other}"),
                        }
                        assert!(start.elapsed() < Duration::from_secs(60), "host {i} never got a slot");
                    }
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    assert_eq!(call_any(&http, &bases, &mut which, "/v1/steady-state", &id, start).await, 200);
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    // Mid-way: a quarter of the hosts are through.
    let start = Instant::now();
    while finished.load(Ordering::SeqCst) < 12 {
        assert!(start.elapsed() < Duration::from_secs(60), "the rollout did not get going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let leader = etcd.leader();
    one.kill();
    etcd.kill(leader);
    let at_kill = finished.load(Ordering::SeqCst);
    assert!(at_kill < 50, "the kills came after the rollout ({at_kill} hosts through)");
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    assert_eq!(finished.load(Ordering::SeqCst), 50);
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "{} hosts held a slot at once beside the sentinel (4 slots)",
        peak.load(Ordering::SeqCst)
    );
    rt.block_on(async {
        let st = status(&http, &bases[1]).await;
        assert_eq!(holders(&st, "fleet"), ["sentinel"], "{st}");
        assert_eq!(fleetlock(&http, &bases[1], "/v1/pre-reboot", "sentinel", "fleet", None).await.unwrap(), 200);
    });
    drop(two);
}

/// A FleetLock request to replica `which`, moving to the other replica for
/// good when it cannot be reached or cannot reach etcd.
async fn call_any(
    http: &reqwest::Client,
    bases: &[String; 2],
    which: &mut usize,
    path: &str,
    id: &str,
    start: Instant,
) -> u16 {
    loop {
        match fleetlock(http, &bases[*which], path, id, "fleet", None).await {
            Ok(code) if code != 503 => return code,
            _ => *which = 1 - *which,
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{id} could not reach any replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
