#!/usr/bin/env bash
# Builds (or reuses) the Debian trixie root filesystem that hostctl's bootable
# base image is made from: minbase + kernel 6.12, systemd 257, systemd-boot,
# udev, initramfs-tools, man-db, gdisk and mtools (install to-disk), and podman (Quadlet; nftables for netavark's published
# ports) unless HOSTCTL_VM_PODMAN=0.
# Nothing hostctl-specific is added here (integration/vm/build-base.sh does
# that), so this slow step (1-3 minutes) is cached across hostctl builds.
#
#   integration/vm/debootstrap-base.sh CACHE_DIR
#
# Result: CACHE_DIR/trixie-rootfs, marked complete by CACHE_DIR/trixie-rootfs.done.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib/debootstrap.sh"

cache=${1:?usage: debootstrap-base.sh CACHE_DIR}
mkdir -p "$cache"; cache=$(cd "$cache" && pwd)
out=$cache/trixie-rootfs
podman=${HOSTCTL_VM_PODMAN:-1}
# man-db: `man hostctl-upgrade` reads the pages build-base.sh installs.
# gdisk and mtools: `hostctl install to-disk` from a booted host runs sgdisk and mcopy.
packages=linux-image-amd64,initramfs-tools,zstd,systemd,systemd-sysv,systemd-boot,systemd-boot-efi,udev,dbus,kmod,e2fsprogs,dosfstools,ca-certificates,man-db,gdisk,mtools
# A cached rootfs is reused only if it was made with the same package list.
if [ -f "$out.done" ] && [ -d "$out" ] && [ "$(cat "$out.packages" 2>/dev/null)" = "$packages podman=$podman" ]; then
  echo "base rootfs: reusing $out ($(cat "$out.done"))" >&2
  exit 0
fi
require_debootstrap
mirror=$(debian_mirror)
rm -rf "$out.tmp" "$out" "$out.done" "$out.packages"
start=$(date +%s)
echo "base rootfs: debootstrap trixie from $mirror" >&2
minbase_debootstrap "base rootfs" trixie "$out.tmp" "$mirror" "$packages" "$cache/debootstrap.log"
if [ "$podman" = 1 ]; then
  # apt inside the chroot resolves podman's alternatives (debootstrap does not).
  printf 'deb %s trixie main\n' "$mirror" > "$out.tmp/etc/apt/sources.list"
  mount -t proc proc "$out.tmp/proc"
  trap 'umount "$out.tmp/proc" 2>/dev/null || true' EXIT
  cp /etc/resolv.conf "$out.tmp/etc/resolv.conf" 2>/dev/null || true
  if ! chroot "$out.tmp" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman crun netavark passt nftables' \
      >>"$cache/debootstrap.log" 2>&1; then
    tail -n 30 "$cache/debootstrap.log" >&2
    echo "base rootfs: installing podman failed (log: $cache/debootstrap.log)" >&2
    exit 1
  fi
  chroot "$out.tmp" apt-get clean
  umount "$out.tmp/proc"; trap - EXIT
  rm -rf "$out.tmp/var/lib/apt/lists/"*
fi
mv "$out.tmp" "$out"
echo "$packages podman=$podman" > "$out.packages"
echo "trixie minbase+kernel+systemd+systemd-boot$([ "$podman" = 1 ] && echo +podman), $(du -sm "$out" | cut -f1) MB, built in $(( $(date +%s) - start ))s on $(date -u +%FT%TZ)" > "$out.done"
echo "base rootfs: $(cat "$out.done")" >&2
