#!/usr/bin/env bash
# Builds hostctl's bootable base OS image from Debian trixie and loads it into
# podman's storage (and optionally pushes it to a registry): kernel 6.12,
# systemd 257, systemd-boot, podman 5.4, and hostctl itself, laid out the
# hostctl way (docs/authoring.md):
#   - kernel and initramfs in /usr/lib/modules/<kver>/{vmlinuz,initramfs.img},
#     /boot left empty (the ESP is mounted there);
#   - hostctl's initramfs hook (prepare-root) in the initramfs;
#   - hostctl's units (finalize-staged, health, fetch-apply-updates timer);
#   - kernel arguments in /usr/lib/hostctl/kargs.d, a base health check.
# (/etc becomes /usr/etc when hostctl imports the image, not here.)
#
#   integration/vm/build-base.sh [--test-agent] CACHE_DIR HOSTCTL_BINARY IMAGE_NAME [PUSH_REF]
#
# IMAGE_NAME is the tag in podman's storage (e.g. localhost/hostctl-base:v1);
# PUSH_REF, if given, is where it is pushed (plain HTTP, e.g.
# 127.0.0.1:5000/hostctl/os:v1). The debootstrap step is cached in CACHE_DIR;
# the rest (≈1 min: copy, initramfs, import) is cached by a key over the
# hostctl binary and these files, so a second run with the same inputs is
# quick. --test-agent adds the VM test's agent unit (never for real hosts).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
agent=0
[ "${1:-}" = --test-agent ] && { agent=1; shift; }
cache=${1:?usage: build-base.sh [--test-agent] CACHE_DIR HOSTCTL_BINARY IMAGE_NAME [PUSH_REF]}
bin=${2:?hostctl binary}; name=${3:?image name}; push=${4:-}
version=${HOSTCTL_BASE_VERSION:-$(date -u +%Y%m%d)}
"$here/debootstrap-base.sh" "$cache"
mkdir -p "$cache"; cache=$(cd "$cache" && pwd)
key=$( { sha256sum "$bin" | cut -d' ' -f1; cd "$here" && find files test-agent build-base.sh -type f | sort | xargs sha256sum; echo "agent=$agent version=$version"; cat "$cache/trixie-rootfs.done"; } | sha256sum | cut -c1-16)
cached=localhost/hostctl-base-cache:$key
if podman image exists "$cached"; then
  echo "base image: reusing $cached" >&2
else
  work=$(mktemp -d "$cache/build.XXXXXX")
  cleanup() { for m in proc sys dev; do umount "$work/rootfs/$m" 2>/dev/null || true; done; rm -rf "$work"; }
  trap cleanup EXIT
  echo "base image: assembling (key $key)" >&2
  cp -a "$cache/trixie-rootfs" "$work/rootfs"
  r=$work/rootfs
  cp -a "$here/files/." "$r/"
  install -m 0755 "$bin" "$r/usr/bin/hostctl"
  strip --strip-debug "$r/usr/bin/hostctl"  # line tables are of no use in the initramfs
  if [ $agent = 1 ]; then
    install -m 0644 "$here/test-agent/hostctl-e2e-agent.service" "$r/usr/lib/systemd/system/"
    install -D -m 0755 "$here/test-agent/hostctl-e2e-agent" "$r/usr/libexec/hostctl-e2e-agent"
    ln -sf ../hostctl-e2e-agent.service "$r/usr/lib/systemd/system/multi-user.target.wants/hostctl-e2e-agent.service"
    # agetty on the serial console would hang up the agent's output there.
    ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
  fi
  # Vendor-enabled units (in /usr, so they follow the image, not local /etc).
  for u in hostctl-finalize-staged.service hostctl-health.service systemd-networkd.service; do
    mkdir -p "$r/usr/lib/systemd/system/multi-user.target.wants"
    ln -sf "../$u" "$r/usr/lib/systemd/system/multi-user.target.wants/$u"
  done
  mkdir -p "$r/usr/lib/systemd/system/boot-complete.target.requires"
  ln -sf ../hostctl-health.service "$r/usr/lib/systemd/system/boot-complete.target.requires/hostctl-health.service"
  mkdir -p "$r/sysroot"
  echo hostctl > "$r/etc/hostname"
  : > "$r/etc/machine-id"
  # The initramfs with hostctl's hook; the post-update hook copies it to /usr/lib/modules.
  kver=$(basename "$(ls -d "$r"/usr/lib/modules/* | head -n 1)")
  for m in proc sys dev; do mount --bind "/$m" "$r/$m"; done
  chroot "$r" update-initramfs -u -k "$kver" >"$work/initramfs.log" 2>&1 || { cat "$work/initramfs.log" >&2; exit 1; }
  for m in proc sys dev; do umount "$r/$m"; done
  install -m 0644 "$r/boot/vmlinuz-$kver" "$r/usr/lib/modules/$kver/vmlinuz"
  [ -s "$r/usr/lib/modules/$kver/initramfs.img" ] || { echo "base image: the post-update hook did not produce initramfs.img" >&2; exit 1; }
  chroot "$r" lsinitramfs "/usr/lib/modules/$kver/initramfs.img" > "$work/initramfs.list" 2>&1 || true
  grep -q 'usr/bin/hostctl$' "$work/initramfs.list" && grep -q 'scripts/local-bottom/hostctl$' "$work/initramfs.list" \
    || { cat "$work/initramfs.log" >&2; tail -n 5 "$work/initramfs.list" >&2; echo "base image: hostctl is missing from the initramfs" >&2; exit 1; }
  rm -rf "$r/boot/"* "$r/var/cache/apt/"*.bin "$r/var/log/"*.log
  tar -C "$r" --numeric-owner --xattrs -c . | podman import -q \
    --change "LABEL org.opencontainers.image.version=$version" \
    --change "LABEL org.opencontainers.image.title=hostctl-base" \
    --change 'CMD ["/usr/lib/systemd/systemd"]' - "$cached" >/dev/null
  cleanup; trap - EXIT
fi
podman tag "$cached" "$name"
if [ -n "$push" ]; then
  podman push -q --tls-verify=false "$name" "docker://$push"
fi
echo "base image: $name${push:+ (pushed to $push)}" >&2
