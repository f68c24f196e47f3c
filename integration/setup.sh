#!/usr/bin/env bash
# Installs and prepares everything hostctl's tests, benchmark and demo need on a
# fresh Debian 12 machine (run as root). Idempotent: quick when all is present.
#
#   integration/setup.sh           packages for the test suite
#   integration/setup.sh --vm      also QEMU, OVMF, systemd-boot and disk tools
#
# Host-side tools newer than bookworm (cosign) come from Debian trixie through a
# low-priority apt pin, so nothing else on the machine is upgraded.
set -euo pipefail

want_vm=0
for a in "$@"; do [ "$a" = --vm ] && want_vm=1; done

export DEBIAN_FRONTEND=noninteractive
pkgs=(docker-registry apache2-utils openssl skopeo umoci podman buildah crun runc debootstrap time curl jq python3 busybox-static
  etcd-server protobuf-compiler)  # etcd: the fleet lock server's tests; protoc: the etcd-client crate's build
pkgs+=(python3-venv)  # the sigstore conformance suite's venv (below)
vm_pkgs=(qemu-system-x86 ovmf systemd-boot systemd-boot-efi dosfstools mtools gdisk fdisk erofs-utils e2fsprogs socat)

missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ $want_vm = 1 ]; then
  for p in "${vm_pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
fi
have_cosign=1; command -v cosign >/dev/null || have_cosign=0
have_mdbook=1; command -v mdbook >/dev/null || have_mdbook=0

if [ ${#missing[@]} -gt 0 ] || [ $have_cosign = 0 ] || [ $have_mdbook = 0 ]; then
  # Trixie as a pinned-low source for single packages (-t trixie).
  if ! grep -rqs 'trixie' /etc/apt/sources.list.d/hostctl-trixie.sources; then
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
      > /etc/apt/sources.list.d/hostctl-trixie.sources
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/hostctl-trixie
  fi
  apt-get update -q >/dev/null
  base_missing=(); vm_missing=()
  for p in "${missing[@]}"; do
    if printf '%s\n' "${vm_pkgs[@]}" | grep -qx "$p"; then vm_missing+=("$p"); else base_missing+=("$p"); fi
  done
  # With recommends, as peers.md tested it (podman needs its network plugins).
  [ ${#base_missing[@]} -gt 0 ] && apt-get install -y -q "${base_missing[@]}" >/dev/null
  if [ ${#vm_missing[@]} -gt 0 ]; then
    # qemu-utils 10.x (preinstalled from backports) conflicts with bookworm's qemu-system.
    apt-get install -y -q --no-install-recommends --allow-downgrades "${vm_missing[@]}" qemu-utils/bookworm >/dev/null
  fi
  if [ $have_cosign = 0 ]; then
    apt-get install -y -q --no-install-recommends -t trixie cosign >/dev/null
  fi
  # The docs site (integration/check-docs.py). Bookworm has no mdbook;
  # trixie's needs glibc >= 2.39, so with -t trixie libc6 (and what its Breaks
  # pull along: base-files, dpkg, zstd, gcc-14's runtime) comes from trixie
  # too; the whole test suite passed on a machine upgraded that way. Should
  # apt refuse, the same mdbook is built from crates.io (a few minutes).
  if [ $have_mdbook = 0 ]; then
    apt-get install -y -q --no-install-recommends -t trixie mdbook >/dev/null \
      || cargo install -q --locked --no-default-features --root /usr/local mdbook@0.4.48
  fi
fi

# Podman on this kernel: hybrid cgroups need a v1 hugetlb hierarchy.
if [ -d /sys/fs/cgroup ] && ! mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null; then
  mkdir -p /sys/fs/cgroup/hugetlb 2>/dev/null && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb 2>/dev/null || true
fi
# ...and a nofile limit within the hard limit (CONTAINERS_CONF points here).
conf=/etc/hostctl-test/containers.conf
mkdir -p "$(dirname "$conf")"
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n' "$(ulimit -Hn)" "$(ulimit -Hn)" > "$conf"
# The sigstore conformance suite (in the steering repo's shared/ beside this
# checkout) runs under pytest from PyPI, pinned by the suite's hashed
# requirements, in a venv of its own (integration/conformance/run.sh).
suite=${HOSTCTL_CONFORMANCE_SUITE:-}
for d in "$(dirname "$0")/../../shared" "$(dirname "$0")/../../../shared"; do
  [ -z "$suite" ] && [ -f "$d/conformance/sigstore-conformance/requirements.txt" ] && suite=$d/conformance/sigstore-conformance
done
if [ -n "$suite" ]; then
  venv=${HOSTCTL_CONFORMANCE_VENV:-/var/cache/hostctl-conformance/venv}
  stamp=$(sha256sum "$suite/requirements.txt" | cut -d' ' -f1)
  if [ "$(cat "$venv/.hostctl-stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$suite/requirements.txt"
    echo "$stamp" > "$venv/.hostctl-stamp"
  fi
fi
# python-tuf for the test TUF repository of `trust update-root`'s tests
# (integration/tests/support/tuf_repo.py), pinned with hashes, in its own venv.
tufvenv=${HOSTCTL_TUF_VENV:-/var/cache/hostctl-tuf/venv}
tufstamp=$(sha256sum "$(dirname "$0")/tuf-requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$tufvenv/.hostctl-stamp" 2>/dev/null)" != "$tufstamp" ]; then
  rm -rf "$tufvenv"
  /usr/bin/python3 -m venv "$tufvenv"
  "$tufvenv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$(dirname "$0")/tuf-requirements.txt"
  echo "$tufstamp" > "$tufvenv/.hostctl-stamp"
fi
echo "setup: ok (CONTAINERS_CONF=$conf)"
