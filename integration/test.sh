#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (as root): installs what it
# needs, then runs the check gate (fmt, clippy, rustdoc), every cargo test tier
# (unit, and integration against a real registry and real image tools) and the
# VM end-to-end scenario (integration/run-vm-e2e: boots in QEMU; its second
# machine, the apps VM, once the cargo tests are done).
#   integration/test.sh                 everything
#   SKIP_SETUP=1 integration/test.sh    skip the package check
#   HOSTCTL_VM=0 integration/test.sh    skip the VM scenario
# The VM scenario's slow first step, the Debian trixie debootstrap of its base
# image, runs in the background while cargo builds the debug binary (it is
# mostly downloads and dpkg). The scenario itself (≈30 min, one core: QEMU
# runs single-threaded TCG) then runs in the background beside the check
# gate, the cargo tests and the conformance suite, booting that debug binary
# rather than waiting for a release build; its log follows once they are done.
set -euo pipefail
cd "$(dirname "$0")/.."
vm=${HOSTCTL_VM:-1}
[ "${SKIP_SETUP:-0}" = 1 ] || integration/setup.sh $([ "$vm" = 1 ] && echo --vm)
export CONTAINERS_CONF=/etc/hostctl-test/containers.conf
export CARGO_TERM_COLOR=never
step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%T)"; }
deboot_pid=
if [ "$vm" = 1 ]; then
  cache=${HOSTCTL_VM_CACHE:-/var/cache/hostctl-vm}
  step "VM base rootfs: debootstrap in the background (log: /tmp/hostctl-debootstrap.log)"
  # In its own process group, so that a failure here stops all of it.
  setsid integration/vm/debootstrap-base.sh "$cache" >/tmp/hostctl-debootstrap.log 2>&1 & deboot_pid=$!
  trap '[ -n "$deboot_pid" ] && kill -- "-$deboot_pid" 2>/dev/null || true' EXIT
fi
vm_pid=
if [ "$vm" = 1 ]; then
  step "cargo build (the binary the VM scenario boots)"
  cargo build --quiet
  vmbin=$(mktemp /tmp/hostctl-vm-bin.XXXXXX)
  install -m 0755 target/debug/hostctl "$vmbin"  # mktemp made it 0600
  step "VM base rootfs: waiting for the debootstrap"
  if ! wait "$deboot_pid"; then
    deboot_pid=
    cat /tmp/hostctl-debootstrap.log >&2
    echo "the VM base rootfs could not be built" >&2
    exit 1
  fi
  deboot_pid=
  cat /tmp/hostctl-debootstrap.log
  step "VM end-to-end scenario (integration/run-vm-e2e): started in the background (log: /tmp/hostctl-vm-e2e.log)"
  # Its second machine (the apps VM) waits for the cargo tests to be done
  # (this file), so as not to take a core from them.
  export HOSTCTL_E2E_APPS_AFTER=/tmp/hostctl-cargo-tests-done.$$
  rm -f "$HOSTCTL_E2E_APPS_AFTER"
  setsid integration/run-vm-e2e --binary "$vmbin" >/tmp/hostctl-vm-e2e.log 2>&1 & vm_pid=$!
  trap '[ -n "$vm_pid" ] && kill -- "-$vm_pid" 2>/dev/null || true' EXIT
fi
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
# With -D warnings this is also the MSRV check: clippy's incompatible_msrv
# lint against clippy.toml's msrv (no 1.85 toolchain is installed; see `make msrv`).
cargo clippy --all-targets --quiet -- -D warnings
step "import graph (no upward import, no cycle)"
integration/check-imports.py src
step "docs site (mdbook build + link check)"
integration/check-docs.py
step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
step "cargo test (unit + integration against a real registry)"
cargo test --all-targets 2>&1 | tee /tmp/hostctl-test.log
[ "$vm" = 1 ] && touch "$HOSTCTL_E2E_APPS_AFTER"  # the apps VM may start now
step "sigstore conformance suite: bundle verification, offline (integration/conformance/run.sh)"
integration/conformance/run.sh target/debug/hostctl
if [ "$vm" = 1 ]; then
  step "VM end-to-end scenario: its log so far, then as it goes"
  tail -n +1 -f --pid="$vm_pid" /tmp/hostctl-vm-e2e.log
  vm_rc=0; wait "$vm_pid" || vm_rc=$?
  vm_pid=
  [ "$vm_rc" = 0 ] || { echo "the VM end-to-end scenario failed (exit $vm_rc)" >&2; exit 1; }
fi
step "all tests passed"
