//! The lock server's benchmark (integration/bench/fleet-lock.sh runs it in
//! release mode): 10,000 simulated hosts lock and unlock a reboot slot
//! against a 3-member etcd on loopback, once through the lock server over
//! HTTP and once as the same etcd transactions made directly through the
//! same client (the server's own slot code, no HTTP), in alternating rounds
//! on the same cluster. Prints operations per second, p50 and p99 latency of
//! each, and the ratio server / bare.
//!
//! `cargo run --release --example fleet-lock-bench -- [--hosts N] [--concurrency C] [--rounds R] [--groups G]`

#[path = "../integration/tests/support/etcd.rs"]
mod etcd;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hostctl::fleet::protocol::HaltAfter;
use hostctl::fleet::server::{self, ServerConfig};

struct Opts {
    hosts: usize,
    concurrency: usize,
    rounds: usize,
    groups: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Server,
    Bare,
}

fn main() -> Result<()> {
    let mut o = Opts { hosts: 10_000, concurrency: 64, rounds: 3, groups: 1_000 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().map(|s| s.parse::<usize>()).transpose()?.unwrap_or(0);
        match a.as_str() {
            "--hosts" => o.hosts = v,
            "--concurrency" => o.concurrency = v,
            "--rounds" => o.rounds = v,
            "--groups" => o.groups = v,
            other => bail!("unknown argument {other}"),
        }
    }
    let cluster = etcd::EtcdCluster::start(3);
    // One runtime for the server and the simulated hosts, as one machine would.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(&o, cluster.endpoints()))
}

async fn run(o: &Opts, endpoints: Vec<String>) -> Result<()> {
    let config = ServerConfig {
        etcd: endpoints.clone(),
        prefix: server::etcd::DEFAULT_PREFIX.into(),
        slots: 2,
        holder_ttl: Duration::from_secs(1800),
        halt_after: HaltAfter::Hosts(1),
        tls: None,
    };
    let srv = Arc::new(server::Server::connect(&config).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(srv.clone().serve(listener));
    let http = reqwest::Client::builder().pool_max_idle_per_host(o.concurrency).build()?;
    println!(
        "fleet lock benchmark: {} hosts in {} groups (2 slots each), {} in flight, 3-member etcd on loopback, {} round(s)",
        o.hosts, o.groups, o.concurrency, o.rounds
    );
    let mut totals = [(0f64, Vec::new()), (0f64, Vec::new())];
    for round in 0..o.rounds {
        for (i, mode) in [Mode::Bare, Mode::Server].into_iter().enumerate() {
            let (secs, mut lat, refused) = phase(o, mode, &srv, &http, &url, round).await?;
            lat.sort();
            let ops = lat.len() as f64 / secs;
            println!(
                "round {round} {:>6}: {:>7.0} ops/s, p50 {:>5.1} ms, p99 {:>5.1} ms ({} ops, {refused} locks refused: group full)",
                if mode == Mode::Bare { "bare" } else { "server" },
                ops,
                pct(&lat, 0.50),
                pct(&lat, 0.99),
                lat.len()
            );
            totals[i].0 += secs;
            totals[i].1.extend(lat);
        }
    }
    let summary = |(secs, lat): &mut (f64, Vec<Duration>)| {
        lat.sort();
        (lat.len() as f64 / *secs, pct(lat, 0.50), pct(lat, 0.99))
    };
    let (bare_ops, bare_p50, bare_p99) = summary(&mut totals[0]);
    let (srv_ops, srv_p50, srv_p99) = summary(&mut totals[1]);
    println!("| | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!("| bare etcd transactions | {bare_ops:.0} | {bare_p50:.1} | {bare_p99:.1} |");
    println!("| through the lock server | {srv_ops:.0} | {srv_p50:.1} | {srv_p99:.1} |");
    println!(
        "ratio server/bare: {:.2}x (goal >= 0.8x); server p99 {srv_p99:.1} ms (goal <= 50 ms)",
        srv_ops / bare_ops
    );
    Ok(())
}

/// One pass of every host: lock, then unlock if it got the slot. Returns
/// the wall time, each operation's latency and how many locks were refused.
async fn phase(
    o: &Opts,
    mode: Mode,
    srv: &Arc<server::Server>,
    http: &reqwest::Client,
    url: &str,
    round: usize,
) -> Result<(f64, Vec<Duration>, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..o.concurrency {
        let (next, refused, srv, http, url) =
            (next.clone(), refused.clone(), srv.clone(), http.clone(), url.to_string());
        let (hosts, groups) = (o.hosts, o.groups);
        let tag = if mode == Mode::Bare { "b" } else { "s" };
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= hosts {
                    return anyhow::Ok(lat);
                }
                let id = format!("host-{tag}{round}-{i:05}");
                let group = format!("g{}", i % groups);
                let t = Instant::now();
                let got = match mode {
                    Mode::Bare => match srv.slots().lock(&group, &id, None).await {
                        Ok(_) => true,
                        Err(e) if e.is::<server::slots::LockRefused>() => false,
                        Err(e) => return Err(e),
                    },
                    Mode::Server => match lock_http(&http, &url, "/v1/pre-reboot", &id, &group).await? {
                        200 => true,
                        409 => false,
                        other => bail!("pre-reboot answered {other}"),
                    },
                };
                lat.push(t.elapsed());
                if !got {
                    refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let t = Instant::now();
                match mode {
                    Mode::Bare => {
                        srv.slots().unlock(&group, &id).await?;
                    }
                    Mode::Server => {
                        let code = lock_http(&http, &url, "/v1/steady-state", &id, &group).await?;
                        anyhow::ensure!(code == 200, "steady-state answered {code}");
                    }
                }
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await??);
    }
    Ok((start.elapsed().as_secs_f64(), lat, refused.load(Ordering::Relaxed)))
}

async fn lock_http(http: &reqwest::Client, url: &str, path: &str, id: &str, group: &str) -> Result<u16> {
    let body = serde_json::json!({"client_params": {"id": id, "group": group}});
    let r = http.post(format!("{url}{path}")).header("fleet-lock-protocol", "true").json(&body).send().await?;
    Ok(r.status().as_u16())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}
