#!/usr/bin/env bash
# Runs the sigstore conformance suite's bundle-verification cases against
# `hostctl trust verify-bundle`, offline (--skip-signing: hostctl does not sign).
#   integration/conformance/run.sh [HOSTCTL_BIN]
# The suite is read where the steering repo's shared/ lies beside this checkout
# (HOSTCTL_CONFORMANCE_SUITE overrides); its Python packages are in the venv
# integration/setup.sh made (HOSTCTL_CONFORMANCE_VENV). Nothing is written into
# the suite: no pytest cache, no bytecode. Cases in xfail.txt must fail (strict:
# one that starts passing fails the run, so the list stays true).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${1:-$repo/target/debug/hostctl}
suite=${HOSTCTL_CONFORMANCE_SUITE:-}
if [ -z "$suite" ]; then
  for d in "$repo/../shared" "$repo/../../shared" /work/shared; do
    [ -d "$d/conformance/sigstore-conformance/test" ] && { suite=$d/conformance/sigstore-conformance; break; }
  done
fi
[ -n "$suite" ] || { echo "conformance: the sigstore-conformance suite was not found (set HOSTCTL_CONFORMANCE_SUITE)" >&2; exit 1; }
venv=${HOSTCTL_CONFORMANCE_VENV:-/var/cache/hostctl-conformance/venv}
[ -x "$venv/bin/pytest" ] || { echo "conformance: no venv at $venv (run integration/setup.sh)" >&2; exit 1; }
xfail=$(sed -e 's/#.*//' "$here/xfail.txt" | tr -s ' \t\n' ' ')
export HOSTCTL_BIN=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
export GHA_SIGSTORE_CONFORMANCE_XFAIL="$xfail"
export GHA_SIGSTORE_CONFORMANCE_SKIP_CPYTHON_RELEASE_TESTS=true
export PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
# The suite's rootdir must be the suite (its conftest finds test/assets there).
cd "$suite"
exec "$venv/bin/python" -m pytest test/test_bundle.py -p hostctl_offline -p no:cacheprovider -q -rfE \
  --entrypoint="$here/client" --skip-signing "${@:2}"
