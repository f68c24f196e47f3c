//! The wave benchmark (issue 14, "Scale"): the eligibility function over
//! 1,000,000 simulated hosts (machine-ids hashed with one image digest, as
//! agents do) at moments across a release. At each moment the share of hosts
//! eligible must match the wave table within 1 percentage point; the run
//! fails otherwise. Also measures decisions per second.
//!
//! Run: integration/bench/waves.sh [HOSTS]   (cargo run --example bench-waves)

use std::time::Instant;

use hostctl::fleet::waves::{eligibility, Position, Schedule};
use time::{Duration, OffsetDateTime};

fn main() {
    let hosts: usize = std::env::args().nth(1).map(|n| n.parse().expect("HOSTS is a number")).unwrap_or(1_000_000);
    let digest = "sha256:5c3b1f0e8a7d6c4b2a1908f7e6d5c4b3a29180f7e6d5c4b3a29180f7e6d5c4b3";
    let start = OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap();
    let table = "1h=1%,4h=5%,1d=15%,3d=100%";
    let schedule = Schedule { start, waves: table.parse().unwrap() };

    let t = Instant::now();
    let positions: Vec<Position> = (0..hosts)
        .map(|i| Position::of(&format!("{:032x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)), digest))
        .collect();
    let hash_secs = t.elapsed().as_secs_f64();

    println!("wave table {table}, {hosts} hosts (positions hashed in {hash_secs:.2} s)");
    println!("{:>10} {:>12} {:>12} {:>10}", "elapsed", "table share", "eligible", "diff (pp)");
    let moments = [-3600, 0, 1800, 3600, 2 * 3600, 4 * 3600, 12 * 3600, 86_400, 2 * 86_400, 3 * 86_400, 4 * 86_400];
    let mut worst: f64 = 0.0;
    let mut decisions = 0usize;
    let t = Instant::now();
    for secs in moments {
        let now = start + Duration::seconds(secs);
        let eligible = positions.iter().filter(|p| eligibility(**p, Some(&schedule), now).is_eligible()).count();
        decisions += hosts;
        let got = eligible as f64 / hosts as f64;
        let want = schedule.waves.share(secs as f64);
        let diff = (got - want) * 100.0;
        worst = worst.max(diff.abs());
        println!(
            "{:>10} {:>11.3}% {:>11.3}% {:>+10.3}",
            format!("{}h", secs as f64 / 3600.0),
            want * 100.0,
            got * 100.0,
            diff
        );
    }
    let rate = decisions as f64 / t.elapsed().as_secs_f64();
    println!("worst difference {worst:.3} percentage points; {rate:.0} decisions/s");
    if worst > 1.0 {
        eprintln!("FAIL: the eligible share is more than 1 percentage point off the wave table");
        std::process::exit(1);
    }
}
