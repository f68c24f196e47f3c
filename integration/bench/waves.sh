#!/usr/bin/env bash
# The wave benchmark (issue 14): the eligibility function over 1,000,000
# simulated hosts; fails when the eligible share at any moment is more than
# 1 percentage point off the wave table. Seconds, one core.
#
#   integration/bench/waves.sh [HOSTS]
set -euo pipefail
cd "$(dirname "$0")/../.."
# The dev profile: dependencies (sha2) are optimised there too, and a release
# build of the whole crate would cost minutes for a seconds-long run.
exec cargo run --quiet --example bench-waves -- "$@"
