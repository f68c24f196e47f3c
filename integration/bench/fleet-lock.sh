#!/usr/bin/env bash
# The fleet lock server's benchmark (issue 14, "Scale"). Not part of the test
# suite. Run from anywhere in the repository:
#
#   integration/bench/fleet-lock.sh [--hosts N] [--concurrency C] [--rounds R] [--groups G]
#
# Starts a 3-member etcd on random loopback ports (data on /dev/shm), runs
# the lock server in the benchmark's process and lets 10,000 simulated hosts
# (default) lock and unlock a reboot slot through it, alternating with the
# same etcd transactions made directly through the same client; prints ops/s,
# p50 and p99 of each and the ratio. The figures go into docs/benchmarks.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
command -v etcd >/dev/null || integration/setup.sh
cargo build --release --example fleet-lock-bench
exec "${CARGO_TARGET_DIR:-target}/release/examples/fleet-lock-bench" "$@"
