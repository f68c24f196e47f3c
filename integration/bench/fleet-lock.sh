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
# FLEET_BENCH_PROFILE=dev builds with the dev profile at opt-level 2 (every
# dependency is at opt-level 2 there already, so only hostctl recompiles):
# minutes instead of a full release build.
if [ "${FLEET_BENCH_PROFILE:-release}" = dev ]; then
  CARGO_PROFILE_DEV_OPT_LEVEL=2 cargo build --example fleet-lock-bench
  exec "${CARGO_TARGET_DIR:-target}/debug/examples/fleet-lock-bench" "$@"
fi
cargo build --release --example fleet-lock-bench
exec "${CARGO_TARGET_DIR:-target}/release/examples/fleet-lock-bench" "$@"
