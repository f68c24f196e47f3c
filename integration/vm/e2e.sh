#!/usr/bin/env bash
# The VM end-to-end scenario of hostctl (issue 4), on real parts: a registry
# on the host's loopback, a trixie base image built by build-base.sh, v2 built
# by podman from Containerfile.example, `hostctl install to-disk`, and QEMU
# (TCG, OVMF, systemd-boot) booting the disk. The guest only reaches the
# registry (-nic user,restrict=on + guestfwd to 127.0.0.1:PORT) and the
# fleet lock server (a second guestfwd): `hostctl fleet server` on a real etcd,
# both on the host's loopback. The guest's update agent (`hostctl agent --once`,
# strategy fleet_lock) takes a reboot slot before it reboots into v2 and gives
# it back once v2 is healthy; v3 fails its health check and the slot stays held.
#
# The guest is driven by the test agent (integration/vm/test-agent): before
# each boot this script writes a shell script to a small second disk; the
# agent runs it once the boot is complete and it prints E2E-* markers on the
# serial console, which this script checks. Every step must be observed;
# the script exits non-zero at the first one that is not.
#
#   integration/vm/e2e.sh HOSTCTL_BINARY
# Environment: HOSTCTL_VM_CACHE (default /var/cache/hostctl-vm), KEEP=1 keeps the work dir,
# E2E_LAST_BOOT=N stops after boot N (while developing a step; never in CI),
# CONSOLE=1 boots the machine once more at the end with its serial console on
# this terminal, logged in as root (Ctrl-a x quits QEMU).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
bin=$(realpath "${1:?usage: e2e.sh HOSTCTL_BINARY}")
cache=${HOSTCTL_VM_CACHE:-/var/cache/hostctl-vm}
export CONTAINERS_CONF=${CONTAINERS_CONF:-/etc/hostctl-test/containers.conf}
export MTOOLS_SKIP_CHECK=1
W=$(mktemp -d /var/tmp/hostctl-vm-e2e.XXXXXX)
. "$here/lib.sh"
T0=$(date +%s); TS=$T0
step() { local t; t=$(date +%s); echo "E2E STEP ok: $1 ($((t - TS))s, total $((t - T0))s)"; TS=$t; }
fail() { echo "E2E FAILED: $*" >&2; echo "logs in $W" >&2; KEEP=1; exit 1; }
probe_pid=
fleet_pid=; etcd_pid=
cleanup() {
  [ -n "${apps_pid:-}" ] && kill_tree "$apps_pid"
  for p in $fleet_pid $etcd_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  [ -n "$reg_pid" ] && wait "$reg_pid" 2>/dev/null || true
  [ -n "$probe_pid" ] && kill "$probe_pid" 2>/dev/null || true
  for i in v1 v2 v3 v4 v5 v6; do podman rmi -f "localhost/hostctl-e2e-$$/os:$i" >/dev/null 2>&1 || true; done
  for i in v1 v2; do podman rmi -f "localhost/hostctl-e2e-$$/web:$i" >/dev/null 2>&1 || true; done
  for i in vA vB; do podman rmi -f "localhost/hostctl-e2e-$$/bound:$i" >/dev/null 2>&1 || true; done
  podman rmi -f "localhost/hostctl-e2e-$$/os:v2b" >/dev/null 2>&1 || true
  [ -n "${api_watch_pid:-}" ] && kill "$api_watch_pid" 2>/dev/null || true
  for i in v1 v2 v3; do podman rmi -f "localhost/hostctl-e2e-$$/api:$i" >/dev/null 2>&1 || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# --- registry on a random loopback port (lib.sh)
port=$(free_port)
mkdir -p "$W/ctx"
reg_start
reg=127.0.0.1:$port/hostctl-e2e/os
local_tag=localhost/hostctl-e2e-$$/os
step "registry on 127.0.0.1:$port"

# --- the fleet lock server (docs/fleet.md): a one-member etcd and
# `hostctl fleet server` with one slot, on random loopback ports; the guest
# reaches the server at 10.0.2.101:4000 (a guestfwd, below).
etcd_port=$(free_port); etcd_peer=$(free_port); fleet_port=$(free_port)
etcd --name e2e --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "e2e=http://127.0.0.1:$etcd_peer" --log-level warn >"$W/etcd.log" 2>&1 & etcd_pid=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$etcd_port/health" >/dev/null && break; kill -0 $etcd_pid || fail "etcd died: $(cat "$W/etcd.log")"; sleep 0.1; done
"$bin" fleet server --etcd "http://127.0.0.1:$etcd_port" --listen "127.0.0.1:$fleet_port" --slots 1 >"$W/fleet.log" 2>&1 & fleet_pid=$!
fleet=http://127.0.0.1:$fleet_port
for _ in $(seq 200); do curl -sf "$fleet/v1/status" >/dev/null && break; kill -0 $fleet_pid || fail "fleet server died: $(cat "$W/fleet.log")"; sleep 0.1; done
curl -sf "$fleet/v1/status" >/dev/null || fail "the fleet server did not answer on $fleet"
# fleet_check WHAT PYTHON_EXPR [DIGEST]: asks the server (`hostctl fleet status
# --json`) and fails unless EXPR holds of its answer `st`; also given: `me`
# (the guest's machine-id), `group` (the holders of group default) and
# `release` (DIGEST's healthy/unhealthy counts).
fleet_check() {
  "$bin" fleet status --server "$fleet" --json > "$W/fleet-status.json" 2>&1 || fail "fleet status: $(cat "$W/fleet-status.json")"
  python3 - "$W/fleet-status.json" "${machine_id:-}" "$2" "${3:-}" <<'PY' || fail "$1: $(cat "$W/fleet-status.json")"
import json, sys
st = json.load(open(sys.argv[1])); me = sys.argv[2]; digest = sys.argv[4]
release = st.get("releases", {}).get(digest, {})
group = st.get("groups", {}).get("default", {}).get("holders", [])
sys.exit(0 if eval(sys.argv[3]) else 1)
PY
}
step "etcd on 127.0.0.1:$etcd_port, fleet server on $fleet"

# --- images: base v1, v2 from Containerfile.example, v3 whose health check fails
HOSTCTL_BASE_VERSION=v1 "$here/build-base.sh" --test-agent "$cache" "$bin" "$local_tag:v1" "$reg:v1" || fail "building base v1"
podman push -q --tls-verify=false "$local_tag:v1" "docker://$reg:latest"
step "base image v1 built and pushed"
# v2 also takes Containerfile.example's initramfs rebuild, which boot 2 then boots.
# v2 has a bound app (Containerfile.example's hello.container): bound:stable,
# which is image A when v2 is staged (boot 1) and image B when v2b is (boot 2).
podman build -q --build-arg BASE="$local_tag:v1" --build-arg VERSION=v2 --build-arg REBUILD_INITRAMFS=1 \
  --build-arg BOUND_IMAGE=10.0.2.100:5000/hostctl-e2e/bound:stable \
  -t "$local_tag:v2" -f "$repo/Containerfile.example" "$W/ctx" >"$W/v2-build.log" 2>&1 \
  || fail "podman build of Containerfile.example: $(tail -n 20 "$W/v2-build.log")"
podman push -q --tls-verify=false "$local_tag:v2" "docker://$reg:v2"
# v2b also binds a Quadlet .image unit (hello-tools.image, the same image):
# staging pulls and pins it, and at boot its hello-tools-image.service must
# find the image in podman's storage with the registry stopped.
printf 'FROM %s\nRUN echo v2b > /usr/share/my-os/version \\\n && printf "[Image]\\nImage=10.0.2.100:5000/hostctl-e2e/bound:stable\\n" > /usr/share/containers/systemd/hello-tools.image \\\n && ln -s /usr/share/containers/systemd/hello-tools.image /usr/lib/hostctl/bound-images.d/hello-tools.image\nLABEL org.opencontainers.image.version=v2b\n' "$local_tag:v2" > "$W/v2b.Containerfile"
podman build -q -t "$local_tag:v2b" -f "$W/v2b.Containerfile" "$W/ctx" >/dev/null || fail "podman build of v2b"
mkdir -p "$W/v3"
cat > "$W/v3/Containerfile" <<EOT
FROM $local_tag:v2
RUN echo v3 > /usr/share/my-os/version \
 && printf '#!/bin/sh\necho "v3 is broken on purpose"\nexit 1\n' > /usr/lib/hostctl/health.d/90-broken \
 && chmod 0755 /usr/lib/hostctl/health.d/90-broken
LABEL org.opencontainers.image.version=v3
EOT
podman build -q -t "$local_tag:v3" "$W/v3" >/dev/null || fail "podman build of v3"
podman push -q --tls-verify=false "$local_tag:v3" "docker://$reg:v3"
# v4 never comes up: its init exits, the kernel panics and (panic=10) reboots.
# It asks for 2 tries (/etc/kernel/tries), so it is attempted twice, then abandoned.
# Its init waits 2 s before it exits: the panic does not flush what the tty
# layer still holds, and once (a CI run, boot 7) the marker was lost with it.
mkdir -p "$W/v4"
cat > "$W/v4/Containerfile" <<EOT
FROM $local_tag:v2
RUN echo v4 > /usr/share/my-os/version && echo 2 > /etc/kernel/tries \
 && printf '#!/bin/sh\necho "E2E-V4-INIT: v4 is broken on purpose"\nsleep 2\nexit 1\n' > /usr/lib/systemd/systemd
LABEL org.opencontainers.image.version=v4
EOT
podman build -q -t "$local_tag:v4" "$W/v4" >/dev/null || fail "podman build of v4"
# v5 adds a layer of 8 MB of incompressible files: pulled just before a power
# cut (boot 8), its objects are still in the guest's page cache when it goes.
mkdir -p "$W/v5"
cat > "$W/v5/Containerfile" <<EOT
FROM $local_tag:v2
RUN mkdir -p /usr/share/e2e-blob && for i in \$(seq 1 64); do head -c 131072 /dev/urandom > /usr/share/e2e-blob/f\$i; done
LABEL org.opencontainers.image.version=v5
EOT
podman build -q -t "$local_tag:v5" "$W/v5" >/dev/null || fail "podman build of v5"
podman push -q --tls-verify=false "$local_tag:v5" "docker://$reg:v5"
# v6 comes up but hangs: a unit that boot-complete.target requires never
# finishes, so no health check decides. The product's timeout on counted
# boots (systemd-bless-boot.service.d/10-hostctl-timeout.conf, 10 min) must
# reboot it; v6's /etc shortens it to 60 s for the test. One try.
mkdir -p "$W/v6"
cat > "$W/v6/Containerfile" <<EOT
FROM $local_tag:v2
RUN echo v6 > /usr/share/my-os/version && echo 1 > /etc/kernel/tries \
 && printf '[Unit]\nDescription=VM test: hangs the boot on purpose\nBefore=boot-complete.target\n[Service]\nType=oneshot\nTimeoutStartSec=infinity\nExecStart=/bin/sh -c "echo E2E-V6-HANG > /dev/ttyS0; exec sleep infinity"\n' \
    > /usr/lib/systemd/system/e2e-hang.service \
 && ln -s ../e2e-hang.service /usr/lib/systemd/system/boot-complete.target.requires/e2e-hang.service \
 && mkdir -p /etc/systemd/system/systemd-bless-boot.service.d \
 && printf '[Unit]\nJobTimeoutSec=60s\n' > /etc/systemd/system/systemd-bless-boot.service.d/50-e2e-timeout.conf
LABEL org.opencontainers.image.version=v6
EOT
podman build -q -t "$local_tag:v6" "$W/v6" >/dev/null || fail "podman build of v6"
step "v2 (Containerfile.example), v3 (failing health check), v4 (never comes up), v5 built and pushed; v6 (hangs) built"

# --- the app (docs/apps.md): busybox httpd in a from-scratch image, serving
# /www (the image's page) and /www/data (a volume); its "broken" update exits
# at start. Both go out as web:stable, the broken one before boot 3.
app_reg=127.0.0.1:$port/hostctl-e2e/web
app_tag=localhost/hostctl-e2e-$$/web
mkdir -p "$W/app/www/data"
cp /bin/busybox "$W/app/busybox"
echo "hostctl-e2e app v1" > "$W/app/www/index.html"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]\n' \
  > "$W/app/Containerfile"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "sh", "-c", "echo E2E app v2 is broken on purpose; exit 3"]\n' \
  > "$W/app/Containerfile.broken"
podman build -q -t "$app_tag:v1" "$W/app" >/dev/null || fail "podman build of the app"
podman build -q -t "$app_tag:v2" -f "$W/app/Containerfile.broken" "$W/app" >/dev/null || fail "podman build of the broken app"
podman push -q --tls-verify=false "$app_tag:v1" "docker://$app_reg:stable"
# The bound app: busybox httpd on 8081; A and B differ in their page.
bound_reg=127.0.0.1:$port/hostctl-e2e/bound
bound_tag=localhost/hostctl-e2e-$$/bound
for v in A B; do
  mkdir -p "$W/bound$v/www"; cp /bin/busybox "$W/bound$v/busybox"
  echo "hostctl-e2e bound app $v" > "$W/bound$v/www/index.html"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD ["/bin/busybox", "httpd", "-f", "-v", "-p", "8081", "-h", "/www"]\n' > "$W/bound$v/Containerfile"
  podman build -q -t "$bound_tag:v$v" "$W/bound$v" >/dev/null || fail "podman build of bound app $v"
done
podman push -q --tls-verify=false --digestfile "$W/boundA.digest" "$bound_tag:vA" "docker://$bound_reg:stable"
step "app image (busybox httpd) built and pushed; its broken update built; bound app A pushed, B built"
# The api app (boot 4, docs/apps.md "What is proven where"): Quadlet files
# the guest writes itself, with a health check (HealthCmd= fetches
# /health.txt, Notify=healthy). v1 is healthy; v2 serves but has no
# /health.txt, so its health check fails; v3 is healthy and carries 32 MiB
# of incompressible data, which cannot fit on the guest's filled disk.
# v1 goes out as api:stable now; v2 and v3 when the guest asks (api_watch).
# podman runs a HealthCmd= string with /bin/sh -c, so these images have one
# (the first VM run of this step, without it, saw even v1 killed as unhealthy).
api_reg=127.0.0.1:$port/hostctl-e2e/api
api_tag=localhost/hostctl-e2e-$$/api
for v in v1 v2 v3; do
  mkdir -p "$W/api$v/www" "$W/api$v/bin"; cp /bin/busybox "$W/api$v/bin/busybox"; ln -s busybox "$W/api$v/bin/sh"
  echo "hostctl-e2e api $v" > "$W/api$v/www/index.html"
  [ $v = v2 ] || echo ok > "$W/api$v/www/health.txt"
  printf 'FROM scratch\nCOPY bin /bin\nCOPY www /www\nCMD ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]\n' > "$W/api$v/Containerfile"
done
head -c 33554432 /dev/urandom > "$W/apiv3/blob"
echo 'COPY blob /blob' >> "$W/apiv3/Containerfile"
for v in v1 v2 v3; do podman build -q -t "$api_tag:$v" "$W/api$v" >/dev/null || fail "podman build of api $v"; done
podman push -q --tls-verify=false "$api_tag:v1" "docker://$api_reg:stable"
step "api app v1 (healthy), v2 (health check fails), v3 (32 MiB more) built; v1 pushed"

# --- install v1
"$bin" --tls-verify=false --progress=none install to-disk "$W/disk.img" --size 6G \
  --source-imgref "$reg:latest" --target-imgref "10.0.2.100:5000/hostctl-e2e/os:latest" >"$W/install.log" 2>&1 \
  || fail "install to-disk: $(tail -n 20 "$W/install.log")"
sgdisk -p "$W/disk.img" | grep -q EF00 || fail "no ESP in the partition table"
step "install to-disk"
podman push -q --tls-verify=false --digestfile "$W/v2.digest" "$local_tag:v2" "docker://$reg:latest"  # the agent's first update finds v2

# --- boots (guestfwd with cmd: opens one host connection per guest connection;
# a tcp: chardev target would carry a single connection for the whole boot)
vm_prepare "$W"
# The app's port 8080 in the guest is forwarded to this host port.
appport=$(free_port)
# The bound app's port 8081 in the guest is forwarded to this one.
boundport=$(free_port)
VM_HOSTFWD=",hostfwd=tcp:127.0.0.1:$appport-:8080,hostfwd=tcp:127.0.0.1:$boundport-:8081"
# The fleet lock server, at 10.0.2.101:4000 in the guest.
VM_HOSTFWD+=",guestfwd=tcp:10.0.2.101:4000-cmd:socat - TCP:127.0.0.1:$fleet_port"
# fetch_app PORT OUT: an app's page and the file in its volume, from the
# host through the forwarded PORT, into OUT (up to 8 tries; empty if none
# answered).
fetch_app() {
  for _ in $(seq 8); do
    { curl -sf --max-time 2 "http://127.0.0.1:$1/index.html" \
        && curl -sf --max-time 2 "http://127.0.0.1:$1/data/note.txt"; } > "$2.tmp" 2>/dev/null && break
    sleep 0.5
  done
  mv "$2.tmp" "$2"
}
# app_probe N MARKER...: during boot N, each time the guest prints MARKER (it
# then waits a few seconds), fetch the app's page and the file in its volume
# from the host through the forwarded port, into $W/app-N-MARKER.txt.
app_probe() {
  local n=$1 m out; shift
  for m in "$@"; do
    until grep -aq -- "$m" "$W/boot$n.log" 2>/dev/null; do sleep 0.5; done
    fetch_app "$appport" "$W/app-$n-$m.txt"
    out=$W/app-$n-$m.txt
    for _ in $(seq 16); do
      curl -sf --max-time 2 "http://127.0.0.1:$boundport/index.html" > "$out.bound" 2>/dev/null && break
      sleep 0.5
    done
  done
}
# app_served N MARKER TEXT: whether the host got TEXT from the app at MARKER.
app_served() { grep -q -- "$3" "$W/app-$1-$2.txt" 2>/dev/null; }
# bound_served N MARKER TEXT: whether the host got TEXT from the bound app at MARKER.
bound_served() { grep -q -- "$3" "$W/app-$1-$2.txt.bound" 2>/dev/null; }
# follow_console N HANDLER [ARG...]: during boot N, calls HANDLER LINE
# [ARG...] for each new line of its console log (carriage returns removed),
# read every 0.5 s, until killed.
follow_console() {
  local n=$1 handler=$2 seen=0 total line
  shift 2
  while :; do
    total=$( { wc -l < "$W/boot$n.log"; } 2>/dev/null || echo 0)
    if [ "$total" -gt "$seen" ]; then
      while IFS= read -r line; do
        "$handler" "$line" "$@"
      done < <(sed -n "$((seen + 1)),${total}p" "$W/boot$n.log" | tr -d '\r')
      seen=$total
    fi
    sleep 0.5
  done
}
# api_watch N: during boot N, acts on the guest's api lines as they come.
# "E2E-API-PUSH TAG" pushes api TAG as api:stable (the guest then waits until
# `app update --check` sees it); "E2E-API-PROBE NAME" (the guest then waits
# 3 s) fetches the api's page and the file in its volume from the host
# through the forwarded port, into $W/api-N-NAME.txt.
api_watch() { follow_console "$1" api_line "$1"; }
api_line() { # LINE N
  local arg
  case $1 in
    *"E2E-API-PUSH "*)
      arg=$(printf '%s' "$1" | sed 's/.*E2E-API-PUSH \([A-Za-z0-9]*\).*/\1/')
      podman push -q --tls-verify=false "$api_tag:$arg" "docker://$api_reg:stable" ;;
    *"E2E-API-PROBE "*)
      arg=$(printf '%s' "$1" | sed 's/.*E2E-API-PROBE \([A-Za-z0-9]*\).*/\1/')
      fetch_app "$apiport" "$W/api-$2-$arg.txt" ;;
  esac
}
# api_served N NAME TEXT: whether the host got TEXT from the api at probe NAME.
api_served() { grep -q -- "$3" "$W/api-$1-$2.txt" 2>/dev/null; }
# marker_clock N T0: during boot N, writes each E2E marker line of its console
# as it comes, with the seconds since T0, into $W/boot$N.log.times;
# marker_gaps N prints the longest stretches between two of them, which say
# where a boot's time went.
marker_clock() { follow_console "$1" marker_line "$1" "$2"; }
marker_line() { # LINE N T0
  local now
  [[ $1 =~ (E2E-[A-Z0-9-]*.{0,40}) ]] || return 0
  printf -v now '%(%s)T' -1
  printf '%d %s\n' "$((now - $3))" "${BASH_REMATCH[1]}" >> "$W/boot$2.log.times"
}
marker_gaps() {
  [ -s "$W/boot$1.log.times" ] || return 0
  awk '{ gap = $1 - prev; if (NR > 1) print gap, prev "s-" $1 "s", "before", substr($0, index($0, $2)); prev = $1 }' "$W/boot$1.log.times" \
    | sort -rn | head -n 4 | sed "s/^/  boot $1 longest: /"
}
nboot=0
boot() { # boot SCRIPT_FILE [APP_PROBE_MARKER...] -> log in $W/boot$nboot.log
  if [ -n "${E2E_LAST_BOOT:-}" ] && [ "$nboot" -ge "$E2E_LAST_BOOT" ]; then
    apps_vm_wait
    echo "E2E PARTIAL: stopped after boot $nboot (E2E_LAST_BOOT=$E2E_LAST_BOOT); not a pass"; exit 0
  fi
  nboot=$((nboot + 1))
  vm_command "$1"
  shift
  local log=$W/boot$nboot.log t=$(date +%s)
  : > "$log"
  probe_pid=
  [ $# -gt 0 ] && { app_probe "$nboot" "$@" & probe_pid=$!; }
  echo "0 (QEMU started)" > "$log.times"
  marker_clock "$nboot" "$t" & clock_pid=$!
  vm_qemu "$log" "$W/qemu$nboot.out" && qemu_rc=0 || { qemu_rc=$?; echo "qemu exited with $qemu_rc (boot $nboot)"; }
  if [ -n "$probe_pid" ]; then kill "$probe_pid" 2>/dev/null || true; wait "$probe_pid" 2>/dev/null || true; probe_pid=; fi
  sleep 0.6; kill "$clock_pid" 2>/dev/null || true; wait "$clock_pid" 2>/dev/null || true
  echo "$(( $(date +%s) - t )) (QEMU ended)" >> "$log.times"
  echo "boot $nboot took $(( $(date +%s) - t ))s"
  marker_gaps "$nboot"
  tr -d '\r' < "$log" > "$log.txt"
}

common='#!/bin/sh
exec >/dev/ttyS0 2>&1
H="hostctl --tls-verify=false --progress=none"
echo "E2E-VERSION $(cat /usr/share/my-os/version 2>/dev/null || echo base-v1)"
echo "E2E-INITRD $(sed -n "s/.*initrd=\([^ ]*\).*/\1/p" /proc/cmdline)"
echo "E2E-STATUS-BEGIN"; hostctl status; echo "E2E-STATUS-END"
# Where the boot time went (the test agent runs inside the boot, so
# systemd-analyze has no total yet): the microseconds before the kernel
# (firmware, loader), when the initramfs and systemd began, and the seconds
# since the kernel started.
echo "E2E-BOOT-TIME $(systemctl show -p FirmwareTimestampMonotonic -p LoaderTimestampMonotonic -p InitRDTimestampMonotonic -p UserspaceTimestampMonotonic | xargs) uptime $(cut -d" " -f1 /proc/uptime)"
'
cat > "$W/s1.sh" <<EOF
$common
echo "edited after install" > /etc/hostctl-e2e-local.conf
echo "state kept" > /var/lib/hostctl-e2e-data
\$H app install web 10.0.2.100:5000/hostctl-e2e/web:stable --publish 8080:8080 --volume webdata:/www/data \\
  && echo "E2E-APP-INSTALLED"
podman exec web /bin/busybox sh -c 'echo "volume kept" > /www/data/note.txt' && echo "E2E-APP-DATA-WRITTEN"
echo "E2E-APP-PROBE"; sleep 5
# The update agent (docs/fleet.md), as a timer's pass runs it: it takes a
# reboot slot from the lock server on the host, stages v2 and reboots.
echo "E2E-MACHINE-ID \$(cat /etc/machine-id)"
# A unit that fails at every boot, failed before the update is staged: the
# new deployment's health check must not hold it against v2 (boot 2).
printf '[Service]\nType=oneshot\nExecStart=/bin/false\n[Install]\nWantedBy=multi-user.target\n' > /etc/systemd/system/e2e-broken.service
systemctl enable -q e2e-broken.service; systemctl start e2e-broken.service
echo "E2E-BROKEN-BEFORE \$(systemctl is-failed e2e-broken.service)"
mkdir -p /etc/hostctl
printf 'strategy = "fleet_lock"\ninterval = "30s"\n[fleet_lock]\nurl = "http://10.0.2.101:4000"\ngroup = "default"\n' > /etc/hostctl/agent.toml
echo "E2E-AGENT-RUN"
\$H agent --once
# The agent has asked for the reboot; if it did not, say so.
sleep 60; echo "E2E-AGENT-DID-NOT-REBOOT"; hostctl agent status
sync; systemctl reboot
EOF
cat > "$W/s2.sh" <<EOF
$common
grep -q "edited after install" /etc/hostctl-e2e-local.conf && echo "E2E-ETC-MERGED"
grep -q "state kept" /var/lib/hostctl-e2e-data && echo "E2E-VAR-KEPT"
if touch /usr/hostctl-e2e 2>/dev/null; then echo "E2E-USR-WRITABLE"; else echo "E2E-USR-READONLY"; fi
findmnt -n -o TARGET /sysroot >/dev/null && echo "E2E-SYSROOT-MOUNTED"
# The agent rebooted into v2 holding the slot; its next pass sees the health
# checks' verdict, reports healthy and gives the slot back.
echo "E2E-AGENT-STATUS-BEGIN"; hostctl agent status; echo "E2E-AGENT-STATUS-END"
\$H agent --once; echo "E2E-AGENT-RC \$?"
hostctl agent status --json | tr -d ' \\n' > /tmp/agent.json
grep -q '"phase":"steady"' /tmp/agent.json && grep -q '"holdsSlot":false' /tmp/agent.json \\
  && grep -q '"health":{[^}]*"healthy":true' /tmp/agent.json && echo "E2E-AGENT-STEADY"
# e2e-broken failed at this boot too, yet v2 passed its health check: it
# had failed before the update. Gone now, before the next upgrade.
echo "E2E-BROKEN-AFTER \$(systemctl is-failed e2e-broken.service) recorded \$(grep -c '^e2e-broken.service\$' /etc/hostctl/failed-before-update)"
systemctl disable -q e2e-broken.service; rm -f /etc/systemd/system/e2e-broken.service; systemctl reset-failed e2e-broken.service
# usr-overlay: /usr writable until the next boot; the deployments' files untouched.
\$H usr-overlay && echo "E2E-USR-OVERLAY-MOUNTED"
echo "written in the overlay" > /usr/share/e2e-overlay && echo "e2e-overlay" >> /usr/share/my-os/version \\
  && grep -q "written in the overlay" /usr/share/e2e-overlay && grep -q e2e-overlay /usr/share/my-os/version \\
  && echo "E2E-USR-OVERLAY-WRITTEN"
ls /sysroot/hostctl/deploy/*/*/usr/share/my-os/version > /tmp/trees
[ -s /tmp/trees ] && ! ls /sysroot/hostctl/deploy/*/*/usr/share/e2e-overlay 2>/dev/null \\
  && ! grep -l e2e-overlay \$(cat /tmp/trees) && echo "E2E-USR-OVERLAY-DEPLOYMENTS-UNTOUCHED"
echo "E2E-APP-PROBE"; sleep 5
\$H upgrade && echo "E2E-UPGRADE-OK"
echo "edited after staging" > /etc/hostctl-e2e-late.conf
sync; systemctl reboot
EOF
# Boot 3 (v2b) runs with the registry stopped, then rolls back to v2.
cat > "$W/s2b.sh" <<EOF
$common
grep -q "edited after staging" /etc/hostctl-e2e-late.conf && echo "E2E-ETC-LATE-MERGED"
[ ! -e /usr/share/e2e-overlay ] && ! grep -q e2e-overlay /usr/share/my-os/version \\
  && ! findmnt -n -t overlay /usr >/dev/null && echo "E2E-USR-OVERLAY-GONE"
man hostctl-upgrade > /tmp/man.txt 2>&1; echo "E2E-MAN-RC \$?"
sed -n '1,/^DESCRIPTION/p' /tmp/man.txt | sed 's/^/E2E-MAN /'
hostctl status --json | tr -d ' \\n' | grep -o '"boundImages":\[[^]]*\]' | sed 's/^/E2E-BOUND /'
echo "E2E-IMAGE-UNIT \$(systemctl is-failed hello-tools-image.service)"
pinned=\$(sed -n 's/^Image=//p' /etc/containers/systemd/hello-tools.image.d/90-hostctl-bound-image.conf)
podman image exists "\$pinned" && echo "E2E-IMAGE-PINNED-PRESENT \$pinned"
echo "E2E-APP-PROBE"; sleep 5
\$H rollback && echo "E2E-ROLLBACK-OK"
sync; systemctl reboot
EOF
# The apps VM's steps (#13; apps_vm below): the api app from
# Quadlet files the guest writes (a .container with a health check that
# kills the container when it fails, a .volume), a unit that Requires= it and
# one that BindsTo= it; an update to v2, whose health check fails (rolled
# back by itself, its start ended by the kill, the image it pulled removed);
# an update to v3 with the disk full (exit 6, nothing left behind), then
# again with room; an app installed with --health-cmd (the unit hostctl
# writes), killed and restarted by systemd when it turns unhealthy while
# running; remove --purge.
apps4=$(cat <<'EOF'
api_pending() { # until `app update --check` sees what the host pushed
  i=0; until $H app update --check api 2>&1 | grep -q pending; do i=$((i + 1)); [ $i -lt 30 ] || return 1; sleep 1; done
}
# A Quadlet unit that systemd's own run of the generator made (at a
# daemon-reload, as at boot): the api install below finds it in systemd's
# generator directory and must find it equal to its own run's, header
# included, to do without a daemon-reload.
mkdir -p /etc/containers/systemd
printf '[Container]\nImage=10.0.2.100:5000/hostctl-e2e/api:stable\n' > /etc/containers/systemd/e2e-other.container
systemctl daemon-reload
mkdir -p /root/api
cat > /root/api/api.container <<'EOT'
[Unit]
Description=VM test app: api (health-checked)
[Container]
Image=10.0.2.100:5000/hostctl-e2e/api:stable
PublishPort=8082:8080
Volume=api.volume:/www/data
HealthCmd=/bin/busybox wget -q -O /dev/null http://127.0.0.1:8080/health.txt
HealthInterval=2s
HealthRetries=2
HealthStartPeriod=10s
HealthOnFailure=kill
Notify=healthy
[Service]
Restart=on-failure
[Install]
WantedBy=multi-user.target
EOT
printf '[Volume]\n' > /root/api/api.volume
for d in Requires:feed BindsTo:tail; do
  printf '[Unit]\nDescription=VM test: %s the api app\n%s=api.service\nAfter=api.service\n[Service]\nExecStart=/bin/sleep infinity\n' \
    "${d%%:*}" "${d%%:*}" > "/etc/systemd/system/api-${d#*:}.service"
done
$H -vv app install --file /root/api/api.container --file /root/api/api.volume 2>/tmp/api-install.log && echo "E2E-API-INSTALLED"
grep -av DEBUG /tmp/api-install.log | tail -n 5
# Installed without a daemon-reload (e2e-other's unit, made by systemd's own
# run of the generator, is the same as hostctl's run makes it), and what
# hostctl put into systemd's generator directory is what a reload makes.
echo "E2E-API-INSTALL-RELOADS $(grep -ac 'systemctl daemon-reload:' /tmp/api-install.log)"
grep -a 'daemon-reload' /tmp/api-install.log | sed 's/^/E2E-API-INSTALL-LOG /'
cp /run/systemd/generator/api.service /run/systemd/generator/api-volume.service /tmp/
systemctl daemon-reload
cmp /tmp/api.service /run/systemd/generator/api.service && cmp /tmp/api-volume.service /run/systemd/generator/api-volume.service \
  && echo "E2E-API-GENERATED-SAME"
systemctl start api-feed.service api-tail.service && echo "E2E-API-DEPENDENTS-STARTED"
podman exec systemd-api /bin/busybox sh -c 'echo "api volume kept" > /www/data/note.txt'
echo "E2E-API-PROBE installed"; sleep 3
echo "E2E-API-PUSH v2"; api_pending || echo "E2E-API-NOT-PENDING v2"
podman images -q --no-trunc --filter dangling=true | sort > /tmp/dangling-before
t0=$(date +%s)
$H app update api; echo "E2E-API-UPDATE-RC $?"
echo "E2E-API-UPDATE-SECONDS $(($(date +%s) - t0))"
podman images -q --no-trunc --filter dangling=true | sort > /tmp/dangling-after
echo "E2E-API-DANGLING before $(wc -l < /tmp/dangling-before) after $(wc -l < /tmp/dangling-after)"
comm -13 /tmp/dangling-before /tmp/dangling-after | sed 's/^/E2E-API-LEFTOVER /'
[ ! -s /tmp/dangling-after ] && echo "E2E-API-NO-DANGLING"
echo "E2E-API-STATUS-BEGIN"; $H app status api; echo "E2E-API-STATUS-END"
echo "E2E-API-ACTIVE $(systemctl is-active api.service api-feed.service api-tail.service | tr '\n' ' ')"
echo "E2E-API-PROBE rolledback"; sleep 3
echo "E2E-API-PUSH v3"; api_pending || echo "E2E-API-NOT-PENDING v3"
podman images -a -q --no-trunc | sort > /tmp/api-images-before
# A nearly full disk: a preallocated file (fallocate writes nothing) leaves
# 8 MiB that root (podman, hostctl) can write; v3 needs 32. ext4 holds back
# min(2 %, 4096) clusters from every writer, root included, yet counts them
# free in statfs (%f): with only those left the disk is full to the last
# block, podman cannot even record the running app's health checks, and a
# HealthOnFailure=kill app dies (a rehearsal on 2026-12-07 filled it so).
set -- $(stat -f -c '%f %S' /var/lib/containers/storage)
fallocate -l $((($1 - 4096) * $2 - 8388608)) /var/lib/containers/e2e-filler || true
left=$((($(stat -f -c %f /var/lib/containers/storage) - 4096) * $2))
echo "E2E-API-WRITABLE-LEFT $left"
[ "$left" -le 16777216 ] && [ "$left" -ge 4194304 ] && echo "E2E-API-DISK-FILLED"
free0=$(stat -f -c %f /var/lib/containers/storage)
$H app update api; echo "E2E-API-FULL-RC $?"
free1=$(stat -f -c %f /var/lib/containers/storage)
echo "E2E-API-FREE-BLOCKS before $free0 after $free1"
podman images -a -q --no-trunc | sort | cmp -s - /tmp/api-images-before && echo "E2E-API-NO-NEW-IMAGE"
[ "$free1" -ge $((free0 - 256)) ] && echo "E2E-API-NOTHING-LEFT"
# hostctl's space check refuses the pull before podman downloads anything
# (before it, the pull filled the disk to its last block, podman could not
# write the running api's health checks, and HealthOnFailure=kill killed
# it). Should a check have failed anyway, one passing check run now ends
# the streak before a third failure in a row would kill it. What it saw is
# said.
podman healthcheck run systemd-api >/dev/null 2>&1; echo "E2E-API-CHECK-AFTER-FULL rc $?"
i=0; until { [ "$(systemctl is-active api.service)" = active ] && [ "$(podman inspect -f '{{.State.Health.Status}}' systemd-api 2>/dev/null)" = healthy ]; } || [ $i -ge 30 ]; do i=$((i + 1)); sleep 1; done
echo "E2E-API-HEALTHY-AFTER-FULL after ${i}s, restarts $(systemctl show -p NRestarts --value api.service)"
echo "E2E-API-PROBE diskfull"; sleep 3
rm -f /var/lib/containers/e2e-filler
$H app update api && echo "E2E-API-UPDATED"
echo "E2E-API-PROBE updated"; sleep 3
# The unit hostctl writes for --health-cmd (on api v3, already here): it
# comes up healthy after its start period began; when its running container
# turns unhealthy, podman kills it and systemd starts it again.
# The image is here already at the registry's digest, and the guest's
# policy.json accepts it: no podman pull.
$H -vv app install hc 10.0.2.100:5000/hostctl-e2e/api:stable --health-start-period 20 \
  --health-cmd '/bin/busybox wget -q -O /dev/null http://127.0.0.1:8080/health.txt' 2>/tmp/hc-install.log && echo "E2E-HC-INSTALLED"
grep -av DEBUG /tmp/hc-install.log | tail -n 5
grep -aq 'not pulling 10.0.2.100:5000/hostctl-e2e/api:stable: podman holds' /tmp/hc-install.log \
  && [ "$(grep -ac 'DEBUG podman pull' /tmp/hc-install.log)" = 0 ] && echo "E2E-HC-NO-PULL"
echo "E2E-HC-UNIT $(systemctl show -p Restart -p TimeoutStartUSec --value hc.service | tr '\n' ' ')"
t0=$(date +%s)
podman exec hc /bin/busybox rm /www/health.txt
i=0; until [ "$(systemctl show -p NRestarts --value hc.service)" -ge 1 ] || [ $i -ge 150 ]; do i=$((i + 1)); sleep 1; done
echo "E2E-HC-RESTARTS $(systemctl show -p NRestarts --value hc.service) after $(($(date +%s) - t0)) s"
i=0; until [ "$(podman inspect --format '{{.State.Health.Status}}' hc 2>/dev/null)" = healthy ] || [ $i -ge 120 ]; do i=$((i + 1)); sleep 1; done
echo "E2E-HC-AGAIN $(podman inspect --format '{{.State.Health.Status}}' hc 2>/dev/null) $(systemctl is-active hc.service) after $(($(date +%s) - t0)) s"
$H app remove hc && echo "E2E-HC-REMOVED"
id=$(podman image inspect --format '{{.Id}}' 10.0.2.100:5000/hostctl-e2e/api:stable)
$H app remove api --purge && echo "E2E-API-REMOVED"
podman volume exists systemd-api || echo "E2E-API-VOLUME-GONE"
podman image exists "$id" || echo "E2E-API-IMAGE-GONE"
echo "E2E-API-UNITS-AFTER $(systemctl is-active api.service api-volume.service | tr '\n' ' ')"
podman images -a --format '{{.Repository}}:{{.Tag}} {{.ID}}' | sed 's/^/E2E-API-IMAGES-LEFT /'
rm -f /etc/systemd/system/api-feed.service /etc/systemd/system/api-tail.service /etc/containers/systemd/e2e-other.container
systemctl daemon-reload
EOF
)
cat > "$W/s-apps.sh" <<EOF
$common
$apps4
sync; systemctl poweroff
EOF
cat > "$W/s3.sh" <<EOF
$common
echo "E2E-APP-PROBE"; sleep 5
\$H app update web; echo "E2E-APP-UPDATE-RC \$?"
echo "E2E-APP-STATUS-BEGIN"; \$H app status web; echo "E2E-APP-STATUS-END"
echo "E2E-APP-PROBE-AFTER-UPDATE"; sleep 5
[ ! -e /usr/share/e2e-overlay ] && ! grep -q e2e-overlay /usr/share/my-os/version && echo "E2E-USR-OVERLAY-GONE"
# The agent's next pass finds v3, takes the slot, stages it and reboots.
echo "E2E-AGENT-RUN"
\$H agent --once
sleep 60; echo "E2E-AGENT-DID-NOT-REBOOT"; hostctl agent status
sync; systemctl reboot
EOF
cat > "$W/s4.sh" <<EOF
$common
sync; systemctl poweroff
EOF
# Boot 8 pulls v5 and cuts the power (sysrq b: reboot at once, no sync, no
# unmount) while v5's objects are still only in the page cache; boot 9 pulls
# it again and must first check what the crash left unsynced.
cat > "$W/s8.sh" <<EOF
$common
\$H image pull 10.0.2.100:5000/hostctl-e2e/os:v5 && echo "E2E-PULLED-V5"
ls /sysroot/hostctl/repo/unsynced/ 2>/dev/null | sed 's/^/E2E-UNSYNCED /'
echo 1 > /proc/sys/kernel/sysrq
echo "E2E-POWER-CUT"
sleep 1  # lets the serial line drain; the page cache keeps its dirty data for 30 s
echo b > /proc/sysrq-trigger
EOF
cat > "$W/s9.sh" <<EOF
$common
hostctl --tls-verify=false --progress=json image pull 10.0.2.100:5000/hostctl-e2e/os:v5 > /tmp/pull.json 2>&1
echo "E2E-PULL-RC \$?"
grep -a '"recovered"' /tmp/pull.json | sed 's/^/E2E-RECOVERY /'
\$H image pull --json 10.0.2.100:5000/hostctl-e2e/os:v5 | tr -d ' \\n' | grep -q '"layersDownloaded":0' && echo "E2E-AGAIN-NOTHING"
\$H upgrade && echo "E2E-UPGRADE-OK"
sync; systemctl reboot
EOF
# Boot 12 installs onto the second disk (serial e2edisk2) from the booted host:
# refused while it holds a partition table, refused for the mounted boot
# disk, then with --wipe from the registry (its bound app: image B, which
# bound:stable is now).
cat > "$W/s11.sh" <<EOF
$common
d2=\$(readlink -f /dev/disk/by-id/virtio-e2edisk2); echo "E2E-DISK2 \$d2"
vda=/dev/\$(lsblk -no PKNAME "\$(findmnt -n -o SOURCE /sysroot)"); echo "E2E-BOOT-DISK \$vda"
I="\$H install to-disk --source-imgref 10.0.2.100:5000/hostctl-e2e/os:v2 --target-imgref 10.0.2.100:5000/hostctl-e2e/os:latest"
\$I "\$d2"; echo "E2E-INSTALL-NO-WIPE-RC \$?"
sgdisk -p "\$d2" | grep -q e2e-keep && echo "E2E-DISK2-UNCHANGED"
\$I --wipe "\$vda"; echo "E2E-INSTALL-MOUNTED-RC \$?"
\$I --wipe "\$d2"; echo "E2E-INSTALL-RC \$?"
sgdisk -p "\$d2" | sed 's/^/E2E-DISK2-TABLE /'
sync; systemctl poweroff
EOF
# Boot 13 boots that disk alone, with the registry stopped: the bound app the
# install pulled into the new system's podman storage starts from there.
cat > "$W/s13.sh" <<EOF
$common
echo "E2E-ROOT \$(grep -o 'root=UUID=[^ ]*' /proc/cmdline) \$(findmnt -n -o SOURCE /sysroot)"
echo "E2E-HELLO \$(systemctl is-active hello.service)"
echo "E2E-APP-PROBE"; sleep 20
sync; systemctl poweroff
EOF
cat > "$W/s5.sh" <<EOF
$common
# The agent's pass sees v3's failed health check and the rollback: it reports
# the host unhealthy and keeps the slot.
\$H agent --once; echo "E2E-AGENT-RC \$?"
echo "E2E-AGENT-STATUS-BEGIN"; hostctl agent status; echo "E2E-AGENT-STATUS-END"
hostctl agent status --json | tr -d ' \\n' > /tmp/agent.json
grep -q '"phase":"steady"' /tmp/agent.json && grep -q '"holdsSlot":true' /tmp/agent.json \\
  && grep -q '"health":{[^}]*"healthy":false' /tmp/agent.json && echo "E2E-AGENT-UNHEALTHY-SLOT-KEPT"
hostctl status --json | tr -d ' \\n' > /tmp/status.json
grep -q '"bootEntry":{"assessment":"bad"' /tmp/status.json \\
  && grep -q '"name":"90-broken","passed":false' /tmp/status.json && echo "E2E-JSON-BAD"
grep -q '"spec":{"image":{"image":"10.0.2.100:5000/hostctl-e2e/os:latest","transport":"registry"}' /tmp/status.json \\
  && grep -q '"booted":{"image":{"image":{"image":"[^"]*","transport":"registry"},"imageDigest":"sha256:' /tmp/status.json \\
  && grep -q '"rollbackQueued":[a-z]*,"type":"hostctlHost"' /tmp/status.json && echo "E2E-JSON-BOOTC"
\$H upgrade && echo "E2E-UPGRADE-OK"
sync; systemctl reboot
EOF

# The apps VM (#13): the api app's steps ($apps4) on a second machine,
# installed like the first (a copy of its disk right after install to-disk)
# with its own registry (the api images; boots 3 and 13 stop the first one)
# and its own forward of the api's port 8082. It runs beside the main chain
# of boots, on the core the cargo tests leave idle in CI: it starts once
# HOSTCTL_E2E_APPS_AFTER names a file that exists (integration/test.sh
# touches it when the cargo tests are done), or at boot 6 at the latest, or
# at once when that variable is not set. apps_vm_wait collects it.
apps_pid=
apps_vm() {
  local go=${HOSTCTL_E2E_APPS_AFTER:-}
  while [ -n "$go" ] && [ ! -e "$go" ] && [ ! -e "$W/apps-go" ]; do sleep 2; done
  W=$W/apps T0=$(date +%s) TS=$(date +%s)
  api_watch_pid=
  trap '[ -n "$api_watch_pid" ] && kill "$api_watch_pid" 2>/dev/null; [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; true' EXIT
  port=$(free_port)
  reg_pid=; reg_start
  api_reg=127.0.0.1:$port/hostctl-e2e/api
  podman push -q --tls-verify=false "$api_tag:v1" "docker://$api_reg:stable"
  vm_prepare "$W"
  apiport=$(free_port)
  VM_HOSTFWD=",hostfwd=tcp:127.0.0.1:$apiport-:8082" VM_EXTRA=() nboot=0
  step "apps VM: its registry on 127.0.0.1:$port (api v1 pushed), the api's port 8082 forwarded to 127.0.0.1:$apiport"
  api_watch 1 & api_watch_pid=$!
  BOOT_TIMEOUT=600  # on a loaded machine the api steps used 525 s
  boot "$W/../s-apps.sh"
  kill "$api_watch_pid" 2>/dev/null || true; wait "$api_watch_pid" 2>/dev/null || true; api_watch_pid=
  need 1 "E2E-API-INSTALLED" "hostctl app install --file (a .container with a health check and a .volume, written in the guest)"
  need 1 "E2E-API-INSTALL-RELOADS 0" "app install loaded the new units without a daemon-reload"
  need 1 "E2E-API-GENERATED-SAME" "the units app install wrote for systemd are, byte for byte, what a daemon-reload generates"
  need 1 "E2E-API-DEPENDENTS-STARTED" "the units that Require= and BindsTo= the api app started"
  api_served 1 installed "hostctl-e2e api v1" && api_served 1 installed "api volume kept" \
    || fail "apps VM: the api app did not answer on the forwarded port 127.0.0.1:$apiport ($(cat "$W/api-1-installed.txt" 2>/dev/null))"
  has 1 "E2E-API-NOT-PENDING" && fail "apps VM: app update --check did not see what the host pushed; see $W/boot1.log.txt"
  grep -aq 'E2E-API-UPDATE-RC [1-9]' "$W/boot1.log.txt" || fail "apps VM: app update to an image whose health check fails did not exit non-zero; see $W/boot1.log.txt"
  sed -n '/^E2E-API-STATUS-BEGIN/,/^E2E-API-STATUS-END/p' "$W/boot1.log.txt" > "$W/api-status1.txt"
  grep -q "Last update: rolled back" "$W/api-status1.txt" && grep -q "did not come up" "$W/api-status1.txt" \
    || fail "apps VM: app status api does not say the update was rolled back and why: $(cat "$W/api-status1.txt")"
  sed 's/^/  /' "$W/api-status1.txt"
  # HealthOnFailure=kill ends the failed start once the start period (10 s)
  # and the retries (2 x 2 s) are over: its restart job fails (it does not time
  # out). Measured 2026-12-07 (TCG, loaded host): 73 s for the whole update:
  # ~25 s check, pull and stop of v1, v2 killed ~23 s after its start, ~25 s
  # for the rollback with its two dependents. Without the kill the start alone
  # waited for systemd's start timeout (90 s), so the update took 140 s or
  # more; 120 s (hostctl's own wait) lies between, with room for a slower host.
  grep -q "restart job failed" "$W/api-status1.txt" \
    || fail "apps VM: the api update's start did not fail (timed out instead?): $(cat "$W/api-status1.txt")"
  secs=$(grep -a -m1 -o 'E2E-API-UPDATE-SECONDS [0-9]*' "$W/boot1.log.txt" | cut -d' ' -f2)
  echo "  the failed api update took ${secs:-?} s, rollback included"
  [ -n "$secs" ] && [ "$secs" -lt 120 ] || fail "apps VM: the failed api update took ${secs:-?} s (want < 120 s; waiting for the start timeout takes 140 s or more)"
  echo "  $(grep -a -m1 -o 'E2E-API-DANGLING.*' "$W/boot1.log.txt")"
  has 1 "E2E-API-LEFTOVER" && fail "apps VM: the rollback left the image the failed update pulled: $(grep -a 'E2E-API-LEFTOVER' "$W/boot1.log.txt")"
  grep -q "removed the image it pulled" "$W/api-status1.txt" \
    || fail "apps VM: app status api does not say the failed image was removed: $(cat "$W/api-status1.txt")"
  need 1 "E2E-API-ACTIVE active active active" "the api app and both units that depend on it active again after the rollback"
  api_served 1 rolledback "hostctl-e2e api v1" && api_served 1 rolledback "api volume kept" \
    || fail "apps VM: the api app did not serve v1 and its volume after the rollback ($(cat "$W/api-1-rolledback.txt" 2>/dev/null))"
  need 1 "E2E-API-DISK-FILLED" "the disk podman's storage is on filled up to 8 MiB that root can write ($(grep -a -m1 -o 'E2E-API-WRITABLE-LEFT.*' "$W/boot1.log.txt"))"
  need 1 "E2E-API-FULL-RC 6" "app update with the disk full exits 6"
  need 1 "hint: there is not enough free space" "app update with the disk full says so"
  need 1 "missing layer(s)" "app update with the disk full was refused by the space check, before podman downloaded anything"
  need 1 "E2E-API-NO-NEW-IMAGE" "the failed pull left no image behind"
  need 1 "E2E-API-NOTHING-LEFT" "the failed pull gave back all the space it took"
  echo "  $(grep -a -m1 -o 'E2E-API-FREE-BLOCKS.*' "$W/boot1.log.txt")"
  echo "  $(grep -a -m1 -o 'E2E-API-CHECK-AFTER-FULL.*' "$W/boot1.log.txt"); $(grep -a -m1 -o 'E2E-API-HEALTHY-AFTER-FULL.*' "$W/boot1.log.txt")"
  api_served 1 diskfull "hostctl-e2e api v1" \
    || fail "apps VM: the api app did not serve v1 after its update failed on the full disk ($(cat "$W/api-1-diskfull.txt" 2>/dev/null))"
  need 1 "E2E-API-UPDATED" "app update to v3 once there was room again"
  api_served 1 updated "hostctl-e2e api v3" && api_served 1 updated "api volume kept" \
    || fail "apps VM: the api app did not serve v3 and its volume after the update ($(cat "$W/api-1-updated.txt" 2>/dev/null))"
  need 1 "E2E-HC-INSTALLED" "app install --health-cmd --health-start-period (the unit hostctl writes) came up healthy"
  need 1 "E2E-HC-NO-PULL" "app install of an image podman holds at the registry's digest, accepted by the policy, did not run podman pull"
  need 1 "E2E-HC-UNIT on-failure 1min 40s" "its unit restarts on failure and gives the start 20 + (3 + 1) x 5 + 60 s"
  need 1 "E2E-HC-RESTARTS [1-9]" "its container, turned unhealthy while running, was killed and systemd started it again"
  echo "  $(grep -a -m1 -o 'E2E-HC-RESTARTS.*' "$W/boot1.log.txt")"
  need 1 "E2E-HC-AGAIN healthy active" "the restarted app is healthy again"
  echo "  $(grep -a -m1 -o 'E2E-HC-AGAIN.*' "$W/boot1.log.txt")"
  need 1 "E2E-HC-REMOVED" "app remove hc"
  need 1 "E2E-API-REMOVED" "app remove api --purge"
  need 1 "E2E-API-VOLUME-GONE" "remove --purge removed the app's .volume unit's volume"
  need 1 "E2E-API-IMAGE-GONE" "remove --purge removed the app's image"
  step "apps VM: the api app from user-written Quadlet files (health check, .volume) installed and served; its update to an image whose health check fails rolled back by itself (non-zero exit, status says why, v1 served, the units that Require= and BindsTo= it active again); with the disk full its update exits 6, keeps serving and leaves nothing; with room it updates to v3; remove --purge takes its volume and image"
}
# kill_tree PID: PID and every process under it (QEMU runs under timeout,
# in a process group of its own).
kill_tree() {
  local all=$1 next=$1 p
  while [ -n "$next" ]; do
    next=$(for p in $next; do pgrep -P "$p" || true; done | tr '\n' ' ' | sed 's/ *$//')
    all="$all $next"
  done
  kill $all 2>/dev/null || true
}
apps_vm_wait() {
  [ -n "$apps_pid" ] || return 0
  touch "$W/apps-go"
  local rc=0
  wait "$apps_pid" || rc=$?
  apps_pid=
  echo "--- the apps VM, beside the boots above (its log: $W/apps.log):"
  cat "$W/apps.log"
  [ "$rc" = 0 ] || fail "the apps VM failed (exit $rc); see $W/apps.log and $W/apps/"
}

# Its disk: this one as install to-disk left it.
if [ -z "${E2E_LAST_BOOT:-}" ] || [ "$E2E_LAST_BOOT" -ge 4 ]; then
  mkdir -p "$W/apps"
  cp --sparse=always "$W/disk.img" "$W/apps/disk.img"
  apps_vm > "$W/apps.log" 2>&1 & apps_pid=$!
fi
boot "$W/s1.sh" E2E-APP-PROBE
need 1 "E2E-VERSION base-v1" "v1 booted"
need 1 "Booted: " "hostctl status ran in the guest"
need 1 "E2E-APP-INSTALLED" "hostctl app install (Quadlet unit, pull, start, wait)"
need 1 "E2E-APP-DATA-WRITTEN" "a file written into the app's volume"
app_served 1 E2E-APP-PROBE "hostctl-e2e app v1" && app_served 1 E2E-APP-PROBE "volume kept" \
  || fail "boot 1: the app did not answer on the forwarded port 127.0.0.1:$appport ($(cat "$W/app-1-E2E-APP-PROBE.txt" 2>/dev/null))"
need 1 "E2E-BROKEN-BEFORE failed" "a unit failed before the update was staged"
need 1 "E2E-AGENT-RUN" "the update agent ran"
has 1 "E2E-AGENT-DID-NOT-REBOOT" && fail "boot 1: the agent did not reboot into v2; see $W/boot1.log.txt"
need 1 "finalised" "hostctl-finalize-staged.service ran at shutdown"
machine_id=$(grep -a -m1 '^E2E-MACHINE-ID ' "$W/boot1.log.txt" | cut -d' ' -f2)
[ -n "$machine_id" ] || fail "boot 1: no machine-id printed"
fleet_check "after boot 1 the guest ($machine_id) should hold group default's one slot, for v2" \
  'len(group) == 1 and group[0]["id"] == me and group[0].get("digest") == digest and not group[0]["unhealthy"]' \
  "$(cat "$W/v2.digest")"
step "boot 1: v1 booted, status, /etc and /var written, app installed and served to the host; the agent took the lock server's slot, staged v2 and rebooted; finalised at shutdown"

# The next upgrade finds v2b, and v2b's bound app is image B.
podman push -q --tls-verify=false "$local_tag:v2b" "docker://$reg:latest"
podman push -q --tls-verify=false --digestfile "$W/boundB.digest" "$bound_tag:vB" "docker://$bound_reg:stable"
boot "$W/s2.sh" E2E-APP-PROBE
need 2 "E2E-VERSION v2" "v2 booted after the upgrade"
need 2 "E2E-ETC-MERGED" "/etc edit made before the upgrade kept"
need 2 "E2E-VAR-KEPT" "/var kept"
need 2 "E2E-USR-READONLY" "/usr read-only"
need 2 "E2E-SYSROOT-MOUNTED" "physical root at /sysroot"
sed -n '/^E2E-AGENT-STATUS-BEGIN/,/^E2E-AGENT-STATUS-END/p' "$W/boot2.log.txt" > "$W/agent-status2.txt"
grep -q "Phase: *rebooting" "$W/agent-status2.txt" && grep -q "Holds a reboot slot" "$W/agent-status2.txt" \
  || fail "boot 2: before its pass the agent should be rebooting and hold the slot: $(cat "$W/agent-status2.txt")"
need 2 "E2E-AGENT-RC 0" "the agent's pass after the reboot"
need 2 "E2E-AGENT-STEADY" "the agent reported v2 healthy, gave the slot back and is steady"
need 2 "E2E-BROKEN-AFTER failed recorded 1" "v2 healthy though a unit failed at its boot: it had failed before the update (/etc/hostctl/failed-before-update)"
fleet_check "after boot 2 the slot should be free and v2 ($(cat "$W/v2.digest")) counted healthy" \
  'not group and release.get("healthy") == 1 and release.get("unhealthy") == 0' "$(cat "$W/v2.digest")"
need 2 "E2E-USR-OVERLAY-MOUNTED" "hostctl usr-overlay"
need 2 "E2E-USR-OVERLAY-WRITTEN" "a file written into /usr and one changed, through the overlay"
need 2 "E2E-USR-OVERLAY-DEPLOYMENTS-UNTOUCHED" "the deployments' trees unchanged by the overlay"
need 2 "E2E-UPGRADE-OK" "upgrade to v2b staged (its bound image B pulled)"
initrd() { grep -a -m1 '^E2E-INITRD ' "$W/boot$1.log.txt" | cut -d' ' -f2; }
[ -n "$(initrd 2)" ] && [ "$(initrd 1)" != "$(initrd 2)" ] \
  || fail "boot 2 did not boot v2's rebuilt initramfs (boot 1: $(initrd 1), boot 2: $(initrd 2))"
app_served 2 E2E-APP-PROBE "hostctl-e2e app v1" && app_served 2 E2E-APP-PROBE "volume kept" \
  || fail "boot 2: the app did not serve its page and volume file after the OS upgrade ($(cat "$W/app-2-E2E-APP-PROBE.txt" 2>/dev/null))"
bound_served 2 E2E-APP-PROBE "bound app A" \
  || fail "boot 2: v2's bound app did not serve image A ($(cat "$W/app-2-E2E-APP-PROBE.txt.bound" 2>/dev/null))"
step "boot 2: v2 booted, /etc merged, /var kept, /usr read-only, the app still served with its volume data, v2's bound app serves A; the agent reported healthy and gave the slot back; usr-overlay wrote /usr, not the deployment; upgrade to v2b (bound B)"

reg_stop
boot "$W/s2b.sh" E2E-APP-PROBE
need 3 "E2E-VERSION v2b" "v2b booted after the upgrade"
need 3 "E2E-ETC-LATE-MERGED" "/etc edit made after staging kept (finalised at shutdown)"
need 3 "E2E-USR-OVERLAY-GONE" "the /usr overlay of boot 2 is gone"
need 3 "E2E-MAN-RC 0" "man hostctl-upgrade"
need 3 "E2E-MAN .*hostctl-upgrade" "man hostctl-upgrade printed the page"
bound_served 3 E2E-APP-PROBE "bound app B" \
  || fail "boot 3: v2b's bound app did not serve image B with the registry stopped ($(cat "$W/app-3-E2E-APP-PROBE.txt.bound" 2>/dev/null))"
app_served 3 E2E-APP-PROBE "hostctl-e2e app v1" \
  || fail "boot 3: the installed app did not serve with the registry stopped ($(cat "$W/app-3-E2E-APP-PROBE.txt" 2>/dev/null))"
for v in A B; do
  grep -aq "E2E-BOUND .*$(cat "$W/bound$v.digest")" "$W/boot3.log.txt" || fail "boot 3: status --json does not list bound image $v by digest; see $W/boot3.log.txt"
done
grep -aq "E2E-BOUND .*\"unit\":\"hello-tools.image\",\"image\":\"[^\"]*\",\"digest\":\"$(cat "$W/boundB.digest")\"" "$W/boot3.log.txt" \
  || fail "boot 3: status --json does not list v2b's bound .image unit pinned to B; see $W/boot3.log.txt"
# Its pinned image is in podman's storage, so its ExecCondition= skipped the
# pull: the unit is inactive, not failed (a pull would have failed).
need 3 "E2E-IMAGE-UNIT \\(in\\)\\?active$" "v2b's bound .image unit did not fail with the registry stopped"
need 3 "E2E-IMAGE-PINNED-PRESENT .*@$(cat "$W/boundB.digest")" "the .image unit's pinned image (B) is in podman's storage"
need 3 "E2E-ROLLBACK-OK" "hostctl rollback (to v2)"
step "boot 3: v2b booted with the registry stopped; /etc edit after staging kept; the /usr overlay gone; man hostctl-upgrade; its bound app serves B, its bound .image unit found its pinned image without the registry, the app serves too; status lists A (v2) and B (v2b) by digest; rollback"
reg_start

podman push -q --tls-verify=false --digestfile "$W/v3.digest" "$local_tag:v3" "docker://$reg:latest"  # the agent's next pass finds v3


podman push -q --tls-verify=false "$app_tag:v2" "docker://$app_reg:stable"  # the app update in boot 4 finds the broken one

BOOT_TIMEOUT=600  # the web app's update and the agent's pass (a loaded machine needed more than 420 s)
boot "$W/s3.sh" E2E-APP-PROBE E2E-APP-PROBE-AFTER-UPDATE
unset BOOT_TIMEOUT
need 4 "E2E-VERSION v2$" "v2 booted after the rollback"
app_served 4 E2E-APP-PROBE "hostctl-e2e app v1" && app_served 4 E2E-APP-PROBE "volume kept" \
  || fail "boot 4: the app did not serve its page and volume file after the OS rollback ($(cat "$W/app-4-E2E-APP-PROBE.txt" 2>/dev/null))"
grep -aq 'E2E-APP-UPDATE-RC [1-9]' "$W/boot4.log.txt" || fail "boot 4: app update to the broken image did not exit non-zero; see $W/boot4.log.txt"
sed -n '/^E2E-APP-STATUS-BEGIN/,/^E2E-APP-STATUS-END/p' "$W/boot4.log.txt" > "$W/app-status4.txt"
grep -q "Last update: rolled back" "$W/app-status4.txt" && grep -q "did not" "$W/app-status4.txt" \
  || fail "boot 4: app status does not say the update was rolled back and why: $(cat "$W/app-status4.txt")"
sed 's/^/  /' "$W/app-status4.txt"
app_served 4 E2E-APP-PROBE-AFTER-UPDATE "hostctl-e2e app v1" && app_served 4 E2E-APP-PROBE-AFTER-UPDATE "volume kept" \
  || fail "boot 4: the app did not serve the old page after its rollback ($(cat "$W/app-4-E2E-APP-PROBE-AFTER-UPDATE.txt" 2>/dev/null))"
bound_served 4 E2E-APP-PROBE "bound app A" \
  || fail "boot 4: back on v2, its bound app did not serve v2's image A ($(cat "$W/app-4-E2E-APP-PROBE.txt.bound" 2>/dev/null))"
need 4 "E2E-USR-OVERLAY-GONE" "back on v2, the /usr overlay of boot 2 is gone"
need 4 "E2E-AGENT-RUN" "the update agent ran"
has 4 "E2E-AGENT-DID-NOT-REBOOT" && fail "boot 4: the agent did not reboot into v3; see $W/boot4.log.txt"
fleet_check "after boot 4 the guest should hold the slot again, for v3" \
  'len(group) == 1 and group[0]["id"] == me and group[0].get("digest") == digest' "$(cat "$W/v3.digest")"
step "boot 4: v2 after rollback, its bound app serves A again, the app still served with its volume data; app update to a broken image rolled back by itself (non-zero exit, status says why, old page served); the agent took the slot, staged v3 and rebooted"

boot "$W/s4.sh"
need 5 "90-broken FAILED" "v3's health check failed"
has 5 "E2E-VERSION" && fail "boot 5: the test agent ran on v3 although its health check failed"
step "boot 5: v3's health check failed; entry marked bad, rebooted"

podman push -q --tls-verify=false "$local_tag:v4" "docker://$reg:latest"  # the next upgrade finds v4
touch "$W/apps-go"  # the apps VM starts now at the latest
boot "$W/s5.sh"
need 6 "E2E-VERSION v2$" "the machine came back on v2 by itself"
need 6 "failed to boot" "hostctl status explains the automatic rollback"
need 6 "E2E-JSON-BAD" "status --json marks v3's entry bad and carries its failed health check"
need 6 "E2E-JSON-BOOTC" "status --json has bootc's structure (spec.image, booted.image.image, type)"
need 6 "E2E-UPGRADE-OK" "upgrade to v4 staged"
need 6 "E2E-AGENT-RC 0" "the agent's pass after the rollback"
need 6 "E2E-AGENT-UNHEALTHY-SLOT-KEPT" "the agent reported v3 unhealthy and kept the slot"
fleet_check "after boot 6 the guest should keep the slot, unhealthy, and v3 ($(cat "$W/v3.digest")) be counted unhealthy and halted" \
  'len(group) == 1 and group[0]["id"] == me and group[0]["unhealthy"] and release.get("unhealthy") == 1 and release.get("halted")' \
  "$(cat "$W/v3.digest")"
step "boot 6: back on v2 by itself; status explains; the agent reported v3 unhealthy, the slot stays held and v3 is halted; upgrade to v4 staged"

for n in 7 8; do
  boot "$W/s4.sh"
  need $n "E2E-V4-INIT" "v4's broken init ran (try $((n - 6)) of 2)"
  need $n "Kernel panic" "the kernel panicked and rebooted (try $((n - 6)) of 2)"
  has $n "E2E-VERSION" && fail "boot $n: the test agent ran although v4 never comes up"
done
step "boots 7-8: v4 never came up (init exits, kernel panic), twice"

boot "$W/s8.sh"
need 9 "E2E-VERSION v2$" "after v4 used up its tries, the machine came back on v2 by itself"
need 9 "failed to boot (2 attempts" "hostctl status explains: v4 abandoned after 2 attempts"
need 9 "E2E-PULLED-V5" "v5 pulled"
need 9 "E2E-UNSYNCED " "the layers the pull committed are marked as not yet synced"
need 9 "sysrq: Resetting" "the kernel reset the machine at once (sysrq b)"
step "boot 9: back on v2 by itself after v4 used up its 2 tries; v5 pulled, then the power cut"

podman push -q --tls-verify=false "$local_tag:v6" "docker://$reg:latest"  # the upgrade in boot 10 finds v6
boot "$W/s9.sh"
need 10 "E2E-VERSION v2$" "the machine came back after the power cut"
need 10 "E2E-PULL-RC 0" "the pull after the power cut succeeded"
need 10 "E2E-RECOVERY " "the pull checked the layers an earlier boot left unsynced"
grep -aq '"layersChecked":[1-9]' "$W/boot10.log.txt" || fail "boot 10: no layer was checked; see $W/boot10.log.txt"
need 10 "E2E-AGAIN-NOTHING" "a second pull downloads nothing"
echo "after the power cut: $(grep -ao '"layersDropped":\[[^]]*\],"objectsLost":[0-9]*' "$W/boot10.log.txt" | head -1)"
need 10 "E2E-UPGRADE-OK" "upgrade to v6 staged"
step "boot 10: after the power cut, the pull re-checked the unsynced layers and completed v5; upgrade to v6 staged"

boot "$W/s4.sh"
need 11 "E2E-V6-HANG" "v6's hanging unit started"
has 11 "E2E-VERSION" && fail "boot 11: the test agent ran although v6 never completes its boot"
[ "$qemu_rc" = 0 ] || fail "boot 11: the machine did not reboot by itself (qemu: $qemu_rc); see $W/boot11.log.txt"
need 11 "Rebooting: job timed out" "systemd's job timeout on the counted boot rebooted the machine"
step "boot 11: v6 hung before boot-complete.target; the timeout on counted boots rebooted it"

# A second disk for boot 12, holding a partition table (so installing onto
# it is refused without --wipe).
truncate -s 4G "$W/disk2.img"
# (sgdisk -q writes nothing, silently: the first run of boot 12 installed without --wipe.)
sgdisk -n 1:0:+64M -c 1:e2e-keep "$W/disk2.img" >/dev/null && sgdisk -p "$W/disk2.img" | grep -q e2e-keep \
  || fail "partitioning the second disk"
# At its own PCI slot: the others keep theirs, so the UEFI boot entries
# saved so far (by PCI path) still find the boot disk.
VM_EXTRA=(-drive "file=$W/disk2.img,format=raw,if=none,id=disk2" -device virtio-blk-pci,drive=disk2,serial=e2edisk2,addr=0x8)
# The install pulls and writes a whole image under TCG: more than a boot's time.
BOOT_TIMEOUT=900 boot "$W/s11.sh"
VM_EXTRA=()
need 12 "E2E-VERSION v2$" "after v6 used its only try, the machine came back on v2 by itself"
need 12 "failed to boot (1 attempt" "hostctl status explains: v6 abandoned after 1 attempt"
need 12 "E2E-DISK2 /dev/vd" "the second disk is there"
grep -aq "E2E-INSTALL-NO-WIPE-RC [1-9]" "$W/boot12.log.txt" && need 12 "holds a partition table" "install to-disk says why" \
  || fail "boot 12: install to-disk onto a disk with a partition table was not refused without --wipe; see $W/boot12.log.txt"
need 12 "E2E-DISK2-UNCHANGED" "the refused disk keeps its partition"
grep -aq "E2E-INSTALL-MOUNTED-RC [1-9]" "$W/boot12.log.txt" && need 12 "is in use: .* is mounted at" "install to-disk says why" \
  || fail "boot 12: install to-disk onto the mounted boot disk was not refused; see $W/boot12.log.txt"
need 12 "E2E-INSTALL-RC 0" "install to-disk --wipe onto the second disk"
need 12 "E2E-DISK2-TABLE .*hostctl-root" "the second disk has hostctl's partitions"
step "boot 12: back on v2 by itself after v6 hung; install to-disk from the booted host: a disk with a partition table refused without --wipe, the mounted boot disk refused, then the second disk installed with --wipe"

# Boot 13: that disk alone, with fresh UEFI variables and the registry
# stopped. (Its first run found hello.service failed: the installing podman
# 5.4 had left its SQLite database, with its own paths, at the top of the new
# system's storage; the test agent, which runs after boot-complete.target,
# never ran, so the failed units are taken from the console.)
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$W/vars.fd"
VM_DISK=$W/disk2.img
reg_stop
boot "$W/s13.sh" E2E-APP-PROBE
has 13 "E2E-VERSION" || fail "boot 13: the installed system did not complete its boot; failed: $(grep -a 'FAILED\|hostctl health-check' "$W/boot13.log.txt" | head -n 8 | tr '\n' ' ')"
need 13 "E2E-VERSION v2$" "the installed v2 came up from the second disk"
need 13 "Booted: " "hostctl status on the installed system"
root12=$(grep -a -m1 -o 'Kernel arguments: root=UUID=[^ ]*' "$W/boot12.log.txt" | cut -d' ' -f3)
[ -n "$root12" ] && grep -aq "^E2E-ROOT $root12 " "$W/boot13.log.txt" \
  || fail "boot 13 did not boot the root file system boot 12 made (${root12:-none printed}); see $W/boot13.log.txt"
need 13 "E2E-HELLO active" "the bound app's unit is active"
bound_served 13 E2E-APP-PROBE "bound app B" \
  || fail "boot 13: the bound app the install pulled did not serve image B with the registry stopped ($(cat "$W/app-13-E2E-APP-PROBE.txt.bound" 2>/dev/null))"
step "boot 13: the disk installed from inside the VM boots alone, healthy (the test agent runs after boot-complete.target); with the registry stopped its bound app serves the image the install pulled"

apps_vm_wait
echo "E2E PASSED in $(( $(date +%s) - T0 ))s ($nboot boots, and the apps VM's one beside them)"

if [ "${CONSOLE:-0}" = 1 ]; then
  # The test image masks the serial getty (it would hang up the agent's
  # output); this boot unmasks it with autologin for the user.
  cat > "$W/console.sh" <<'EOF'
#!/bin/sh
mkdir -p /run/systemd/system/serial-getty@ttyS0.service.d
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %%I vt220\n' \
  > /run/systemd/system/serial-getty@ttyS0.service.d/autologin.conf
rm -f /etc/systemd/system/serial-getty@ttyS0.service
systemctl daemon-reload
systemctl restart serial-getty@ttyS0.service
EOF
  vm_command "$W/console.sh"
  echo "Booting the machine with its console here: try hostctl status; Ctrl-a x quits QEMU."
  qemu-system-x86_64 -accel tcg,thread=single -M q35 -m 1536 -smp 2 -nographic -nodefaults -serial mon:stdio \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file="$W/vars.fd" \
    -drive file="$W/disk.img",format=raw,if=virtio \
    -drive file="$W/cmd.img",format=raw,if=none,id=cmd -device virtio-blk-pci,drive=cmd,serial=e2ecmd \
    -nic "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:10.0.2.100:5000-cmd:socat - TCP:127.0.0.1:$port" || true
fi
