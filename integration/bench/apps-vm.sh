#!/usr/bin/env bash
# hostctl's app-install benchmark in the VM (issue 13), not part of the test
# suite: `hostctl app install NAME IMAGE --publish 8080:8080` until the app's
# first served response, against `podman run -d --name NAME -p 8080:8080
# IMAGE` and polling the same port, in the QEMU guest (Debian trixie, systemd
# 257, podman 5.4; this host has neither systemd as PID 1 nor Quadlet). The
# goal is hostctl within 1.2× of podman. A third column is the same app as a
# Quadlet unit by hand, the way its documentation has a user do it: the
# `.container` file copied into /etc/containers/systemd, `systemctl
# daemon-reload`, `systemctl start` (the unit's own `podman run` pulls the
# image when it is missing).
#
#   integration/bench/apps-vm.sh [--rounds N] [--binary PATH]
#
# One boot (the base image from integration/vm/build-base.sh --test-agent,
# installed with `hostctl install to-disk`, as the VM scenario does). The
# guest runs all three N times in each of two modes, turning which goes
# first, and cleans up between runs:
#   cold  the image is not in podman's storage (both pull it from the
#         registry on the host, through the guest's forward to it);
#   warm  the image is there already (hostctl still asks the registry, since
#         it pulls the tag; podman run does not).
# Each run starts the command under a stopwatch (integration/bench/served.rs,
# the `bench-served` example, carried into the guest) that tries port 8080
# of the guest's address every 20 ms, for at most 120 s, without starting a
# process per try: "served" is the first response with the app's page;
# "exit" is when the command itself returned (hostctl waits the unit's
# settling time, 3 s by default, before it says the app is up; podman run -d
# returns once the container started). hostctl runs with -vv: its
# timestamped podman, systemctl and registry lines (into the output file,
# not the console) show where each run's time goes.
#
# The host prints every run with its steps, then the medians and the ratios.
# Environment: HOSTCTL_VM_CACHE (default /var/cache/hostctl-vm), KEEP=1 keeps
# the work dir, BOOT_TIMEOUT (default 3600 s) bounds the boot and the runs.
# Needs root and one boot under TCG; on a machine at load 20 the boot alone took 19 min.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
rounds=5 bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --binary) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--binary PATH]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then (cd "$repo" && cargo build --release --quiet); bin=$repo/target/release/hostctl; fi
bin=$(realpath "$bin")
cache=${HOSTCTL_VM_CACHE:-/var/cache/hostctl-vm}
export CONTAINERS_CONF=${CONTAINERS_CONF:-/etc/hostctl-test/containers.conf}
export MTOOLS_SKIP_CHECK=1
W=$(mktemp -d /var/tmp/hostctl-bench-apps-vm.XXXXXX)
. "$repo/integration/vm/lib.sh"
fail() { echo "BENCH FAILED: $*" >&2; echo "logs in $W" >&2; KEEP=1; exit 1; }
local_tag=localhost/hostctl-bench-$$
cleanup() {
  [ -n "$reg_pid" ] && { kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; } || true
  podman rmi -f "$local_tag/os:v1" "$local_tag/web:v1" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

port=$(free_port)
reg_start
HOSTCTL_BASE_VERSION=v1 "$repo/integration/vm/build-base.sh" --test-agent "$cache" "$bin" "$local_tag/os:v1" \
  "127.0.0.1:$port/hostctl-bench/os:v1" || fail "building the base image"
mkdir -p "$W/app/www"
cp /bin/busybox "$W/app/busybox"
echo "hostctl-bench app" > "$W/app/www/index.html"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n' \
  > "$W/app/Containerfile"
podman build -q -t "$local_tag/web:v1" "$W/app" >/dev/null || fail "podman build of the app"
podman push -q --tls-verify=false "$local_tag/web:v1" "docker://127.0.0.1:$port/hostctl-bench/web:stable"
"$bin" --tls-verify=false --progress=none install to-disk "$W/disk.img" --size 6G \
  --source-imgref "127.0.0.1:$port/hostctl-bench/os:v1" >"$W/install.log" 2>&1 \
  || fail "install to-disk: $(tail -n 20 "$W/install.log")"
vm_prepare "$W"

# The guest's script: sh for the test agent, the runs in bash.
cat > "$W/guest.sh" <<'EOF'
#!/bin/sh
exec >/dev/ttyS0 2>&1
mkdir -p /var/lib/hostctl-bench  # /run is noexec here
base64 -d <<'B64' | gunzip > /var/lib/hostctl-bench/served
SERVED_B64
B64
chmod +x /var/lib/hostctl-bench/served
cat > /run/bench.sh <<'EOB'
set -u
IMG=10.0.2.100:5000/hostctl-bench/web:stable
H="hostctl --tls-verify=false --progress=none"
# served: port 8080 answers with the app's page, at the guest's own address,
# as the host's forwarded port reaches it (the VM scenario's path; 127.0.0.1
# would need podman's localhost DNAT rules).
ADDR=$(hostname -I 2>/dev/null | awk '{print $1}'); ADDR=${ADDR:-127.0.0.1}
# The Quadlet unit by hand (the image is not in a registries.conf as
# insecure, hence PodmanArgs=).
mkdir -p /root/by-hand
printf '[Container]\nImage=%s\nContainerName=web\nPublishPort=8080:8080\nPodmanArgs=--tls-verify=false\n' "$IMG" \
  > /root/by-hand/web.container
clean() { # MODE
  $H app remove web >/dev/null 2>&1
  if [ -e /etc/containers/systemd/web.container ]; then # the one written by hand
    systemctl stop web.service; rm /etc/containers/systemd/web.container; systemctl daemon-reload
  fi
  podman rm -f -t 0 web >/dev/null 2>&1
  if [ "$1" = cold ]; then podman rmi -f "$IMG" >/dev/null 2>&1; else podman pull -q --tls-verify=false "$IMG" >/dev/null; fi
  # A container podman run -d started is cleaned up after its end by a
  # `podman container cleanup` its conmon starts, in the background: wait
  # for those (at most 20 s), or they run beside the next command.
  # (pidof: the guest has no procps.)
  local i=0; while pidof conmon podman >/dev/null; do
    i=$((i + 1)); [ $i -ge 100 ] && { echo "BENCH-NOTE podman still busy after 20 s"; break; }; sleep 0.2
  done
  echo "BENCH-CLEAN $1 waited $((i * 200)) ms"
  sync; sleep 1
}
run() { # TOOL MODE ROUND
  local result
  clean "$2"
  if [ "$1" = hostctl ]; then
    result=$(/var/lib/hostctl-bench/served "$ADDR:8080" "hostctl-bench app" 120 /tmp/out -- $H -vv app install web "$IMG" --publish 8080:8080)
  elif [ "$1" = podman ]; then
    result=$(/var/lib/hostctl-bench/served "$ADDR:8080" "hostctl-bench app" 120 /tmp/out -- podman run -d --tls-verify=false --name web -p 8080:8080 "$IMG")
  else
    result=$(/var/lib/hostctl-bench/served "$ADDR:8080" "hostctl-bench app" 120 /tmp/out -- /bin/sh -c \
      'cp /root/by-hand/web.container /etc/containers/systemd/ && systemctl daemon-reload && systemctl start web.service')
  fi
  echo "BENCH-RUN $1 $2 $3 $result"
  case $result in *" rc=0 "*) grep 'DEBUG' /tmp/out | sed "s/^/BENCH-STEP $1 $2 $3 /" ;; *) sed 's/^/BENCH-OUT /' /tmp/out ;; esac
  # What systemd and podman logged meanwhile (read after the stopwatch stopped):
  # where the time inside `systemctl start` or `podman run` went.
  local start=${result##*start=}
  journalctl -q --no-pager -o short-iso-precise --since "@${start%.*}" 2>/dev/null \
    | grep -a -E ' (systemd\[1\]|podman\[[0-9]+\]|conmon\[[0-9]+\]|web\[[0-9]+\]):' | grep -av 'BENCH' | head -n 40 \
    | sed "s/^/BENCH-JOURNAL $1 $2 $3 /"
}
echo "BENCH-GUEST podman $(podman --version | awk '{print $3}') systemd $(systemctl --version | awk 'NR==1{print $2}') cpus $(nproc)"
# One unmeasured install of each first (round 0): the first podman run of a
# boot sets up its network.
run hostctl cold 0; run podman cold 0; run by-hand cold 0
for mode in cold warm; do
  for i in $(seq 1 ROUNDS); do
    case $((i % 3)) in
      1) run hostctl "$mode" "$i"; run podman "$mode" "$i"; run by-hand "$mode" "$i" ;;
      2) run podman "$mode" "$i"; run by-hand "$mode" "$i"; run hostctl "$mode" "$i" ;;
      0) run by-hand "$mode" "$i"; run hostctl "$mode" "$i"; run podman "$mode" "$i" ;;
    esac
  done
done
EOB
bash /run/bench.sh
echo "BENCH-DONE"
sync; systemctl poweroff
EOF
sed -i "s/ROUNDS/$rounds/" "$W/guest.sh"
# The stopwatch (integration/bench/served.rs; std only, so rustc alone
# builds it in seconds), carried in the guest's script: the test agent's
# command disk holds text only.
rustc --edition 2021 -O -C strip=symbols -o "$W/bench-served" "$repo/integration/bench/served.rs" \
  || fail "building bench-served"
python3 - "$W/guest.sh" "$W/bench-served" <<'PY2'
import base64, gzip, sys
script, binary = sys.argv[1], sys.argv[2]
blob = base64.encodebytes(gzip.compress(open(binary, "rb").read(), 9)).decode()
text = open(script).read().replace("SERVED_B64\n", blob)
open(script, "w").write(text)
PY2
vm_command "$W/guest.sh"
t=$(date +%s)
BOOT_TIMEOUT=${BOOT_TIMEOUT:-3600} vm_qemu "$W/boot.log" "$W/qemu.out" || echo "qemu exited with $? (see $W/qemu.out)"
tr -d '\r' < "$W/boot.log" > "$W/boot.txt"
echo "boot and runs took $(( $(date +%s) - t )) s"
grep -q BENCH-DONE "$W/boot.txt" || fail "the guest did not finish; see $W/boot.txt"
grep -a '^BENCH-GUEST\|^BENCH-OUT\|^BENCH-NOTE' "$W/boot.txt"
python3 - "$W/boot.txt" <<'PY'
import datetime, re, statistics, sys
runs, unit_runs, start, tool, mode, unit_start = {}, {}, None, None, None, None
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    if line.startswith("BENCH-CLEAN"):
        print(line)
    # Each hostctl step (a podman, systemctl or quadlet call, the registry
    # look) at its end, in seconds from the run's start, with its own time.
    m = re.match(r"BENCH-STEP \S+ \S+ \S+ (\S+Z) +DEBUG (.*)", line)
    if m and start is not None:
        t = datetime.datetime.fromisoformat(m[1].replace("Z", "+00:00")).timestamp() - start
        step = re.sub(r" -p LoadState\S*| --format json|--quiet --tls-verify=false ", "", m[2])
        print(f"    {t:6.2f}  {step[:150]}")
    # The journal's lines, likewise (`journal:`).
    m = re.match(r"BENCH-JOURNAL \S+ \S+ \S+ (\S+) \S+ (.*)", line)
    if m and start is not None:
        try:
            t = datetime.datetime.fromisoformat(m[1]).timestamp() - start
        except ValueError:
            continue
        if t >= -0.5:
            print(f"    {t:6.2f}  journal: {m[2][:140]}")
            # systemd's own start of the unit, from its job's start to the
            # unit active (Quadlet's podman run included, nothing of hostctl's).
            if "Starting web.service" in m[2]:
                unit_start = t
            elif "Started web.service" in m[2] and unit_start is not None:
                unit_runs.setdefault((tool, mode), []).append(t - unit_start)
                unit_start = None
    m = re.match(r"BENCH-RUN (\S+) (\S+) (\S+) served=(\S+) exit=(\S+) rc=(\S+)(?: start=(\S+))?", line)
    if not m:
        continue
    print(line)
    start = float(m[7]) if m[7] else None
    tool, mode, unit_start = m[1], m[2], None
    if m[3] == "0":
        tool = None  # round 0 is not counted
        continue
    if m[6] != "0" or m[4] == "never":
        sys.exit(f"a run failed: {line.strip()}")
    runs.setdefault((m[1], m[2]), []).append((float(m[4]), float(m[5])))
for mode in ("cold", "warm"):
    h, p, q = runs[("hostctl", mode)], runs[("podman", mode)], runs[("by-hand", mode)]
    hs, he = statistics.median(x[0] for x in h), statistics.median(x[1] for x in h)
    ps, pe = statistics.median(x[0] for x in p), statistics.median(x[1] for x in p)
    qs, qe = statistics.median(x[0] for x in q), statistics.median(x[1] for x in q)
    print(f"{mode}: median over {len(h)} runs: hostctl served {hs:.2f} s (exit {he:.2f} s), "
          f"podman run -d served {ps:.2f} s (exit {pe:.2f} s); ratio served {hs / ps:.2f}x, exit {he / pe:.2f}x")
    print(f"{mode}: the Quadlet unit by hand served {qs:.2f} s (exit {qe:.2f} s): "
          f"{qs / ps:.2f}x podman run -d; hostctl {hs / qs:.2f}x of it")
    for t in ("hostctl", "by-hand"):
        u = unit_runs.get((t, mode), [])
        if u:
            print(f"{mode}: systemd's start of the unit alone ({t}; its job's start to active), median over "
                  f"{len(u)}: {statistics.median(u):.2f} s = {statistics.median(u) / ps:.2f}x podman run -d served")
PY
