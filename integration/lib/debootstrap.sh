# shellcheck shell=bash
# Sourced (not run) by the scripts that build Debian root filesystems with
# debootstrap: integration/vm/debootstrap-base.sh (the VM scenario's trixie
# base) and integration/fixtures/make-os-rootfs.sh (the benchmark's bookworm
# tree). It owns what they share: finding the Debian mirror and running a
# minbase debootstrap into a directory with its output in a log.

# Exits unless debootstrap is installed.
require_debootstrap() {
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (integration/setup.sh installs it)" >&2; exit 1; }
}

# Prints the mirror the host's apt uses (the first URIs: of its deb822
# debian.sources), else deb.debian.org.
debian_mirror() {
  local mirror
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  echo "${mirror:-http://deb.debian.org/debian}"
}

# minbase_debootstrap WHAT SUITE TARGET MIRROR INCLUDE LOG
# Runs `debootstrap --variant=minbase --include=INCLUDE SUITE TARGET MIRROR`
# with its output in LOG; on failure prints the log's tail and
# "WHAT: debootstrap failed (log: LOG)" to stderr and exits 1.
minbase_debootstrap() {
  local what=$1 suite=$2 target=$3 mirror=$4 include=$5 log=$6
  if ! debootstrap --variant=minbase --include="$include" "$suite" "$target" "$mirror" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "$what: debootstrap failed (log: $log)" >&2
    exit 1
  fi
}
