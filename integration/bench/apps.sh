#!/usr/bin/env bash
# hostctl's app benchmark (issue 13), not part of the test suite:
# `hostctl app update --all --check` over N installed apps (default 20) whose
# images have nothing new: how many requests it makes to the registry (goal:
# one per app) and its wall time, against a real registry on loopback.
#
#   integration/bench/apps.sh [--apps N] [--runs R] [--binary PATH]
#
# The apps are "installed" the way `hostctl app install` leaves them, minus
# the start: their units (rendered as `app install` writes them) in a
# temporary sysroot's etc/containers/systemd, their images pulled into a
# private podman storage (CONTAINERS_STORAGE_CONF). `app install` itself needs
# systemd as PID 1 and a Quadlet-capable podman (>= 4.4), which this host
# lacks, so "install to first served response against podman run -d" is not
# measured here (docs/benchmarks.md).
#
# Requests are counted in the registry's access log (every GET and HEAD under
# /v2/ during the timed command; the /v2/ ping counts too). Needs root for
# podman; starts one registry on a random port and stops it (by PID) on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
apps=20 runs=5 bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --apps) apps=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --binary) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--apps N] [--runs R] [--binary PATH]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then (cd "$repo" && cargo build --release --quiet); bin=$repo/target/release/hostctl; fi
export CONTAINERS_CONF=${CONTAINERS_CONF:-/etc/hostctl-test/containers.conf}
W=$(mktemp -d /var/tmp/hostctl-bench-apps.XXXXXX)
reg_pid=
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog: {level: info, accesslog: {disabled: false}}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' \
  "$W/reg" "$port" > "$W/reg.yml"
/usr/bin/docker-registry serve "$W/reg.yml" > "$W/reg.log" 2>&1 & reg_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done

printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/podman/root"\nrunroot = "%s/podman/run"\n' "$W" "$W" > "$W/storage.conf"
export CONTAINERS_STORAGE_CONF=$W/storage.conf
mkdir -p "$W/ctx/www" && cp /bin/busybox "$W/ctx/busybox"
sys=$W/sys; mkdir -p "$sys/etc/containers/systemd"
for i in $(seq 1 "$apps"); do
  echo "app $i" > "$W/ctx/www/index.html"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n' > "$W/ctx/Containerfile"
  ref=127.0.0.1:$port/bench/app$i:stable
  podman build -q -t "localhost/bench-app$i" "$W/ctx" >/dev/null
  podman push -q --tls-verify=false "localhost/bench-app$i" "docker://$ref"
  podman pull -q --tls-verify=false "$ref" >/dev/null
  printf '[Unit]\nDescription=hostctl app app%s\n\n[Container]\nImage=%s\nContainerName=app%s\nLabel=io.hostctl.app=app%s\n\n[Install]\nWantedBy=multi-user.target\n' \
    "$i" "$ref" "$i" "$i" > "$sys/etc/containers/systemd/app$i.container"
done

times=()
for r in $(seq 1 "$runs"); do
  before=$(wc -l < "$W/reg.log")
  t0=$(date +%s.%N)
  "$bin" --sysroot "$sys" --tls-verify=false app update --all --check --json > "$W/out.json"
  t1=$(date +%s.%N)
  reqs=$(tail -n +"$((before + 1))" "$W/reg.log" | grep -cE '"(GET|HEAD) /v2/' || true)
  manifests=$(tail -n +"$((before + 1))" "$W/reg.log" | grep -cE '"(GET|HEAD) /v2/.*/manifests/' || true)
  updated=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sorted({x["Updated"] for x in r}), len(r))' "$W/out.json")
  times+=("$(python3 -c "print(round($t1 - $t0, 3))")")
  echo "run $r: ${times[-1]} s, $reqs requests to /v2/ ($manifests manifest requests) for $apps apps; Updated values, apps: $updated"
done
echo "median wall time over $runs runs: $(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') s"
