#!/usr/bin/env bash
# hostctl's main job, end to end on this machine (Debian 12, root):
#   1. install what is needed and build hostctl (release);
#   2. start a local registry on a random loopback port;
#   3. build a real Debian OS image with debootstrap and publish it (podman + skopeo);
#   4. build a derived image from Containerfile.example with podman and publish it;
#   5. pull both with hostctl into a temporary sysroot, showing that the second
#      pull downloads only the layers the store lacks; inspect and list them;
#   6. deploy into the temporary sysroot: switch to v1, edit /etc, upgrade to
#      v2 (the edit is merged), roll back, with `hostctl status` at each step;
#   7. with --vm: boot it for real (integration/vm/e2e.sh): build the bootable
#      trixie base, install it to a disk image, boot it in QEMU, upgrade,
#      reboot, roll back, and watch two broken releases fall back by
#      themselves (a failing health check; one that never comes up);
#      --console (implies --vm) then boots it once more with its console on
#      this terminal, logged in as root, for you to look around.
#
# What it changes on this machine is printed before it starts (see
# machine_changes below). Environment: HOSTCTL_DEMO_CACHE (default
# /var/cache/hostctl-bench, shared with the benchmark) keeps the debootstrap
# tree between runs; KEEP=1 keeps the work directory (registry data and
# sysroot) to explore afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
want_vm=0
console=0
for a in "$@"; do
  case "$a" in
    --vm) want_vm=1 ;;
    --console) want_vm=1; console=1 ;;
    *) echo "usage: integration/demo.sh [--vm | --console]" >&2; exit 2 ;;
  esac
done

cache=${HOSTCTL_DEMO_CACHE:-/var/cache/hostctl-bench}
# Bold headings on a terminal only.
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }

# run_with_progress LABEL LOG CMD...: runs CMD with its output in LOG and,
# while it runs, prints every 10 s how long it has taken and the last line of
# LOG (or of $progress_log), so that a long build is never minutes of
# silence. On failure, LOG's tail.
run_with_progress() {
  local label=$1 log=$2 start pid rc=0 last
  shift 2
  start=$(date +%s)
  "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null || break
    last=$(tail -n 1 "${progress_log:-$log}" 2>/dev/null | tr -d '\r' | cut -c1-100)
    printf '  ... %s: %ss%s\n' "$label" "$(( $(date +%s) - start ))" "${last:+ ($last)}"
  done
  wait "$pid" || rc=$?
  if [ $rc != 0 ]; then tail -n 30 "$log" >&2; echo "$label failed (log: $log)" >&2; exit $rc; fi
  echo "  $label: done in $(( $(date +%s) - start ))s"
}

say "What this does to this machine"
cat <<EOT
  - installs the Debian packages it lacks (docker-registry, skopeo, umoci, podman,
    buildah, debootstrap, jq, ...; with --vm also QEMU, OVMF, systemd-boot, disk
    tools) and, only if cosign is missing, adds the Debian trixie apt source
    /etc/apt/sources.list.d/hostctl-trixie.sources pinned low
    (/etc/apt/preferences.d/hostctl-trixie) to install cosign alone from it;
  - mounts a cgroup v1 hugetlb hierarchy on /sys/fs/cgroup/hugetlb if there is
    none (podman needs it on this kind of kernel) and writes
    /etc/hostctl-test/containers.conf (podman's open-file limit);
  - builds hostctl into $repo/target/release (cargo's cache in ~/.cargo);
  - keeps a Debian root file system (about 800 MB, debootstrap) in $cache
    for the next run (HOSTCTL_DEMO_CACHE=DIR to put it elsewhere);
  - runs a registry on a random 127.0.0.1 port and works in /tmp/hostctl-demo.*:
    both are removed at the end unless KEEP=1. Nothing is installed to boot:
    hostctl deploys into that temporary directory, not onto this machine.
EOT

say "Installing what is missing (integration/setup.sh)"
integration/setup.sh
export CONTAINERS_CONF=/etc/hostctl-test/containers.conf
W=$(mktemp -d /tmp/hostctl-demo.XXXXXX)
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

say "Building hostctl (cargo build --release; a few minutes the first time)"
run_with_progress "cargo build" "$W/cargo-build.log" cargo build --release
hostctl="$repo/target/release/hostctl"

say "Starting a registry on loopback"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/registry"
cat > "$W/registry/config.yml" <<EOT
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $W/registry/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
EOT
docker-registry serve "$W/registry/config.yml" > "$W/registry/log" 2>&1 &
reg_pid=$!
until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do
  kill -0 "$reg_pid" 2>/dev/null || { cat "$W/registry/log"; exit 1; }
  sleep 0.1
done
reg="127.0.0.1:$port"
echo "registry: http://$reg (pid $reg_pid)"

say "Building (or reusing) a Debian OS tree with debootstrap: kernel, systemd, udev (cached in $cache)"
if [ -f "$cache/rootfs.done" ]; then
  integration/fixtures/make-os-rootfs.sh "$cache"
else
  progress_log=$cache/debootstrap.log run_with_progress "debootstrap (1-2 minutes)" "$W/rootfs.log" \
    integration/fixtures/make-os-rootfs.sh "$cache"
fi
rootfs="$cache/rootfs"

podman=(podman --root "$W/containers/storage" --runroot "$W/containers/run")
say "Publishing the base image $reg/hostctl/base:1 (podman import + podman push)"
import_base() {
  tar --numeric-owner --xattrs -C "$rootfs" -c . | "${podman[@]}" import \
    --change 'LABEL org.opencontainers.image.version=1' - "$reg/hostctl/base:1" &&
    "${podman[@]}" push --tls-verify=false "$reg/hostctl/base:1"
}
run_with_progress "podman import + push" "$W/base-image.log" import_base

say "Building $reg/hostctl/my-os:2 from Containerfile.example (podman build + push)"
build_derived() {
  # Without its last step, `RUN hostctl container lint`: this base is the
  # benchmark's Debian tree (no hostctl, no units, a kernel in /boot), which
  # deploys into a directory but would not boot; the VM test's base passes it.
  sed '/^RUN hostctl container lint/d' Containerfile.example > "$W/Containerfile.demo"
  "${podman[@]}" build --tls-verify=false --build-arg "BASE=$reg/hostctl/base:1" \
    -t "$reg/hostctl/my-os:2" -f "$W/Containerfile.demo" "$W" &&
    "${podman[@]}" push --tls-verify=false "$reg/hostctl/my-os:2"
}
run_with_progress "podman build + push" "$W/derived-image.log" build_derived

sysroot="$W/sysroot"; mkdir -p "$sysroot"
hc() { echo "+ hostctl $*"; "$hostctl" --sysroot "$sysroot" --tls-verify=false "$@"; }

say "Pulling the base image with hostctl"
hc image pull "$reg/hostctl/base:1"
say "Pulling the derived image: only its new layers are downloaded"
hc image pull "$reg/hostctl/my-os:2"
say "Inspecting it"
hc image inspect "$reg/hostctl/my-os:2"
say "What the store holds"
hc image list
du -sh "$sysroot/hostctl/repo" | sed 's/^/store size: /'

say "Deploying v1 into the sysroot (boot entries in $sysroot/boot)"
hc switch "$reg/hostctl/base:1"
hc status
booted_id() { "$hostctl" --sysroot "$sysroot" status --json | jq -r '.status.booted.id'; }
v1=$(booted_id)
echo "An admin's local edit, made on v1." > "$sysroot/hostctl/deploy/default/$v1/etc/motd"
echo "edited /etc/motd in deployment $v1"
say "Upgrading to v2 (only the new layers are fetched; the /etc edit is merged)"
hc switch "$reg/hostctl/my-os:2"
hc status
v2=$(booted_id)
echo "v2's /etc/motd (kept from v1): $(cat "$sysroot/hostctl/deploy/default/$v2/etc/motd")"
echo "v2's new /etc/motd.d/10-my-os (from the image): $(cat "$sysroot/hostctl/deploy/default/$v2/etc/motd.d/10-my-os")"
echo "boot entries:"; ls "$sysroot/boot/loader/entries"
say "Rolling back to v1"
hc rollback
hc status
if [ $want_vm = 1 ]; then
  say "Booting it for real in QEMU (integration/vm/e2e.sh): install, boot, upgrade, rollback, automatic fallback"
  integration/setup.sh --vm
  CONSOLE=$console integration/vm/e2e.sh "$hostctl"
fi
say "Done"
if [ "${KEEP:-0}" = 1 ]; then
  cat <<EOT
The registry's data and the sysroot are kept in $W. To explore them:
  docker-registry serve $W/registry/config.yml &      # the registry again, at $reg
  $hostctl --sysroot $sysroot status
  ls $sysroot/boot/loader/entries $sysroot/hostctl/deploy/default
Remove $W when done.
EOT
else
  echo "Run it as KEEP=1 integration/demo.sh to keep its registry and sysroot ($W, removed now) to explore."
fi
cat <<EOT
What to try next:
  - integration/demo.sh --vm       boot the result for real in QEMU: install to a disk image,
                                   upgrade, reboot, roll back, watch broken releases fall back
  - integration/demo.sh --console  the same, then a root console in the VM to look around
  - $hostctl --help, and man pages: $hostctl man DIR
  - docs/README.md: the user guide; Containerfile.example: how an OS image is made
EOT
