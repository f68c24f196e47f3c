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
# Environment: HOSTCTL_DEMO_CACHE (default /var/cache/hostctl-bench, shared with
# the benchmark) keeps the debootstrap tree between runs; KEEP=1 keeps the work
# directory.
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

integration/setup.sh
export CONTAINERS_CONF=/etc/hostctl-test/containers.conf
cargo build --release --quiet
hostctl="$repo/target/release/hostctl"

W=$(mktemp -d /tmp/hostctl-demo.XXXXXX)
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

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

cache=${HOSTCTL_DEMO_CACHE:-/var/cache/hostctl-bench}
say "Building (or reusing) a Debian OS tree with debootstrap: kernel, systemd, udev (cached in $cache)"
integration/fixtures/make-os-rootfs.sh "$cache"
rootfs="$cache/rootfs"

podman=(podman --root "$W/containers/storage" --runroot "$W/containers/run")
say "Publishing the base image $reg/hostctl/base:1 (podman import + podman push)"
tar --numeric-owner --xattrs -C "$rootfs" -c . | "${podman[@]}" import -q \
  --change 'LABEL org.opencontainers.image.version=1' - "$reg/hostctl/base:1" >/dev/null
"${podman[@]}" push -q --tls-verify=false "$reg/hostctl/base:1"

say "Building $reg/hostctl/my-os:2 from Containerfile.example (podman build + push)"
"${podman[@]}" build -q --tls-verify=false --build-arg "BASE=$reg/hostctl/base:1" \
  -t "$reg/hostctl/my-os:2" -f Containerfile.example "$W" >/dev/null
"${podman[@]}" push -q --tls-verify=false "$reg/hostctl/my-os:2"

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
