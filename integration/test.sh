#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (as root): installs what it
# needs, then runs the check gate (fmt, clippy, rustdoc) and every test tier.
#   integration/test.sh            everything
#   SKIP_SETUP=1 integration/test.sh   skip the package check
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_SETUP:-0}" = 1 ] || integration/setup.sh
export CONTAINERS_CONF=/etc/hostctl-test/containers.conf
export CARGO_TERM_COLOR=never
step() { printf '\n=== %s\n' "$*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
step "cargo test (unit + integration against a real registry)"
cargo test --all-targets 2>&1 | tee /tmp/hostctl-test.log
