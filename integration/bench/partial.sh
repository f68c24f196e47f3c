#!/usr/bin/env bash
# The upgrade benchmark of issue 17: bytes downloaded and wall time of the
# upgrade v1 -> v2 of the benchmark OS image, where v2 replaces the files of a
# few Debian packages (about 2 % of the image). Not part of the test suite: it
# takes minutes. Run as root from anywhere in the repository:
#
#   integration/bench/partial.sh [--cache DIR] [--percent P] [--keep] [--no-rechunk]
#
#   --cache DIR   where the debootstrap rootfs is kept (default /var/cache/hostctl-bench,
#                 built by integration/fixtures/make-os-rootfs.sh when missing)
#   --percent P   how much of the image v2 changes, in % of its bytes (default 2)
#   --keep        keep the work directory (printed)
#   --no-rechunk  skip the rechunked images (their rechunks and their rows):
#                 the zstd:chunked rows alone take minutes less
#   HOSTCTL_BIN=PATH  use this hostctl binary instead of a release build
#
# Images (made by real podman 4.3 in a private storage, pushed to a private
# docker-registries on random loopback ports): one gzip layer (os-gzip:v1/v2)
# and one zstd:chunked layer (os-chunked:v1/v2, `podman push
# --compression-format zstd:chunked`; tarred with `-b1`, see docs/store.md).
# For each of these, v1 is pulled into a fresh store, then v2 is timed:
#   hostctl image pull of the gzip image      (full-layer path)
#   hostctl image pull of the zstd:chunked image (partial pull)
#   podman pull of the zstd:chunked image, private overlay storage with
#     pull_options enable_partial_images=true
#   hostctl image pull of the rechunked image (os-rechunked:v1/v2: the gzip
#     image through `hostctl image rechunk`, pushed by skopeo to a third
#     registry), with its layer reuse: the share of v2's bytes in layers v1 has
#   hostctl image pull of the image rechunked as zstd:chunked (`image rechunk
#     --compression zstd:chunked`, pushed by hostctl to a fourth registry):
#     layer reuse and partial pulls of the layers that changed
# Bytes downloaded are what the registry wrote for blob GETs (its access log's
# http.response.written), the same count for every tool. It starts two
# registries and stops them (by PID) on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=/var/cache/hostctl-bench
percent=2
keep=false
rechunk=true
while [ $# -gt 0 ]; do
  case $1 in
    --cache) cache=$2; shift 2 ;;
    --percent) percent=$2; shift 2 ;;
    --keep) keep=true; shift ;;
    --no-rechunk) rechunk=false; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export CONTAINERS_CONF=${CONTAINERS_CONF:-/etc/hostctl-test/containers.conf}

work=$(mktemp -d /var/tmp/hostctl-partial.XXXXXX)
reg_pids=()
cleanup() {
  for pid in "${reg_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  umount "$work/pp/root/overlay" 2>/dev/null || true
  if [ "$keep" = true ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

"$repo/integration/fixtures/make-os-rootfs.sh" "$cache" >/dev/null
if [ -z "${HOSTCTL_BIN:-}" ]; then
  (cd "$repo" && cargo build --release --bin hostctl -q)
fi
hostctl=${HOSTCTL_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/hostctl}

echo "== v2: the files of whole packages replaced (~$percent % of the bytes)"
cp -al "$cache/rootfs" "$work/v2"
python3 - "$work/v2" "$percent" > "$work/changed.txt" <<'EOF'
import os, sys
root, percent = sys.argv[1], float(sys.argv[2])
total = 0
for d, _, files in os.walk(root):
    for f in files:
        p = os.path.join(d, f)
        if os.path.isfile(p) and not os.path.islink(p):
            total += os.path.getsize(p)
info = os.path.join(root, "var/lib/dpkg/info")
pkgs = []
for name in sorted(os.listdir(info)):
    if not name.endswith(".list"):
        continue
    files = []
    for line in open(os.path.join(info, name)):
        p = os.path.join(root, line.strip().lstrip("/"))
        if os.path.isfile(p) and not os.path.islink(p):
            files.append(p)
    pkgs.append((sum(os.path.getsize(p) for p in files), name[:-5], files))
# Mid-sized packages, in name order, until the share is reached (not the kernel).
budget, chosen, size = total * percent / 100, [], 0
for s, name, files in pkgs:
    if 0 < s < budget / 3 and size + s <= budget:
        chosen.append(name)
        size += s
        seen = set()
        for p in files:
            st = os.stat(p)
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            data = open(p, "rb").read() + b"\n# v2\n"
            tmp = p + ".v2tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, st.st_mode & 0o7777)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.rename(tmp, p)
            print(p[len(root):])
print(f"{len(chosen)} packages, {size} of {total} bytes ({100*size/total:.2f} %): {' '.join(chosen)}", file=sys.stderr)
EOF
changed_zstd=$(cd "$work/v2" && sed 's|^/||' "$work/changed.txt" | tar --numeric-owner -b1 -cf - -T - | zstd -3 -q -c | wc -c)

echo "== registries and images"
# Two registries: pushed to one registry, podman would mount the blob it
# pushed first (gzip) instead of compressing the second copy as asked.
start_registry() { # NAME: writes $work/NAME.addr
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work/$1" "$port" > "$work/$1.yml"
  docker-registry serve "$work/$1.yml" > "$work/$1.log" 2>&1 &
  reg_pids+=($!)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
  echo "127.0.0.1:$port" > "$work/$1.addr"
}
start_registry gzip
start_registry chunked
start_registry rechunked
start_registry rezc
reg_gzip=$(cat "$work/gzip.addr")
reg_chunked=$(cat "$work/chunked.addr")
reg_rechunked=$(cat "$work/rechunked.addr")
reg_rezc=$(cat "$work/rezc.addr")
pm=(podman --root "$work/podman/root" --runroot "$work/podman/run" --storage-driver vfs)
for v in v1 v2; do
  tree=$cache/rootfs
  [ $v = v2 ] && tree=$work/v2
  tar -C "$tree" --numeric-owner --xattrs -b1 -cf - . | "${pm[@]}" import -q - "localhost/os:$v" >/dev/null
  "${pm[@]}" push -q --tls-verify=false --compression-format gzip "localhost/os:$v" "docker://$reg_gzip/os:$v"
  "${pm[@]}" push -q --tls-verify=false --compression-format zstd:chunked "localhost/os:$v" "docker://$reg_chunked/os:$v"
done
declare -A rechunk_secs
mkdir -p "$work/rechunk-scratch"
[ "$rechunk" = true ] && echo "== rechunked images"
for v in v1 v2; do
  [ "$rechunk" = true ] || break
  t0=$(date +%s.%N)
  "$hostctl" --sysroot "$work/rechunk-scratch" --tls-verify=false --progress=none \
    image rechunk "docker://$reg_gzip/os:$v" "oci:$work/rechunked-oci:$v" > "$work/rechunk-$v.out"
  rechunk_secs[$v]=$(echo "$(date +%s.%N) - $t0" | bc)
  skopeo copy -q --dest-tls-verify=false "oci:$work/rechunked-oci:$v" "docker://$reg_rechunked/os:$v"
  t0=$(date +%s.%N)
  "$hostctl" --sysroot "$work/rechunk-scratch" --tls-verify=false --progress=none \
    image rechunk --compression zstd:chunked "docker://$reg_gzip/os:$v" "docker://$reg_rezc/os:$v" > "$work/rezc-$v.out"
  rechunk_secs[zc-$v]=$(echo "$(date +%s.%N) - $t0" | bc)
done
layer_size() { # REGISTRY TAG
  curl -s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$1/v2/os/manifests/$2" |
    python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["layers"]))'
}

# Bytes registry $1 wrote for blob GETs since its log line $2.
served() {
  tail -n +"$(($2 + 1))" "$work/$1.log" |
    grep 'response completed' | grep 'http.request.method=GET' | grep '/blobs/' |
    sed -n 's/.*http.response.written=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}'
}
declare -A bytes secs
# measure NAME REGISTRY COMMAND...: wall time and bytes served of one command.
measure() {
  local name=$1 reg=$2; shift 2
  local mark t0 t1
  mark=$(wc -l < "$work/$reg.log")
  t0=$(date +%s.%N)
  "$@" > "$work/$name.out" 2>&1
  t1=$(date +%s.%N)
  sleep 0.2 # let the registry log the last response
  bytes[$name]=$(served "$reg" "$mark")
  secs[$name]=$(echo "$t1 - $t0" | bc)
  printf '%-28s %12d bytes %8.2f s\n' "$name" "${bytes[$name]}" "${secs[$name]}"
}

echo "== pulls"
hc() { "$hostctl" --sysroot "$1" --tls-verify=false --progress=none image pull "$2"; }
mkdir -p "$work/s-gzip" "$work/s-chunked"
measure hostctl-gzip-v1 gzip hc "$work/s-gzip" "$reg_gzip/os:v1"
measure hostctl-gzip-v2 gzip hc "$work/s-gzip" "$reg_gzip/os:v2"
measure hostctl-chunked-v1 chunked hc "$work/s-chunked" "$reg_chunked/os:v1"
measure hostctl-chunked-v2 chunked hc "$work/s-chunked" "$reg_chunked/os:v2"
if [ "$rechunk" = true ]; then
  mkdir -p "$work/s-rechunked"
  measure hostctl-rechunked-v1 rechunked hc "$work/s-rechunked" "$reg_rechunked/os:v1"
  measure hostctl-rechunked-v2 rechunked hc "$work/s-rechunked" "$reg_rechunked/os:v2"
  mkdir -p "$work/s-rezc"
  measure hostctl-rechunked-zc-v1 rezc hc "$work/s-rezc" "$reg_rezc/os:v1"
  measure hostctl-rechunked-zc-v2 rezc hc "$work/s-rezc" "$reg_rezc/os:v2"
fi
mkdir -p "$work/pp"
cat > "$work/pp/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$work/pp/run"
graphroot = "$work/pp/root"
[storage.options]
pull_options = {enable_partial_images = "true", use_hard_links = "false", ostree_repos = ""}
EOF
pp() { CONTAINERS_STORAGE_CONF="$work/pp/storage.conf" podman pull -q --tls-verify=false "docker://$1"; }
measure podman-chunked-v1 chunked pp "$reg_chunked/os:v1"
measure podman-chunked-v2 chunked pp "$reg_chunked/os:v2"

gz=$(layer_size "$reg_gzip" v2)
zc=$(layer_size "$reg_chunked" v2)
echo
echo "== v1 -> v2 (v2 layer: gzip $gz bytes, zstd:chunked $zc bytes; changed files, zstd -3: $changed_zstd bytes)"
printf '%-34s %14s %10s %14s %14s\n' tool "bytes v2" "s v2" "bytes/layer" "bytes/changed"
names=(hostctl-gzip hostctl-chunked podman-chunked)
if [ "$rechunk" = true ]; then
  rc=$(layer_size "$reg_rechunked" v2)
  rz=$(layer_size "$reg_rezc" v2)
  names+=(hostctl-rechunked hostctl-rechunked-zc)
fi
for name in "${names[@]}"; do
  layer=$zc
  [ $name = hostctl-gzip ] && layer=$gz
  [ $name = hostctl-rechunked ] && layer=$rc
  [ $name = hostctl-rechunked-zc ] && layer=$rz
  printf '%-34s %14d %10.2f %14.3f %14.2f\n' "$name" "${bytes[$name-v2]}" "${secs[$name-v2]}" \
    "$(echo "${bytes[$name-v2]} / $layer" | bc -l)" "$(echo "${bytes[$name-v2]} / $changed_zstd" | bc -l)"
done
echo "wall time v2, zstd:chunked hostctl / gzip hostctl: $(echo "${secs[hostctl-chunked-v2]} / ${secs[hostctl-gzip-v2]}" | bc -l | cut -c1-5)"
echo "wall time v2, hostctl / podman (zstd:chunked):      $(echo "${secs[hostctl-chunked-v2]} / ${secs[podman-chunked-v2]}" | bc -l | cut -c1-5)"
echo "bytes v2, hostctl / podman (zstd:chunked):          $(echo "${bytes[hostctl-chunked-v2]} / ${bytes[podman-chunked-v2]}" | bc -l | cut -c1-5)"
# Layer reuse of the rechunked image: the share of v2's bytes in layers v1 has too.
reuse() {
  python3 - "$1" <<'EOF2'
import json, sys, urllib.request
reg = sys.argv[1]
def layers(tag):
    req = urllib.request.Request(f"http://{reg}/v2/os/manifests/{tag}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    return {l["digest"]: l["size"] for l in json.load(urllib.request.urlopen(req))["layers"]}
v1, v2 = layers("v1"), layers("v2")
shared = sum(s for d, s in v2.items() if d in v1)
print(f"{len(v2)} layers in v2, {sum(1 for d in v2 if d in v1)} shared with v1: "
      f"{shared} of {sum(v2.values())} bytes ({100 * shared / sum(v2.values()):.2f} %)")
EOF2
}
if [ "$rechunk" = true ]; then
  echo "rechunked image layer reuse v1 -> v2:                $(reuse "$reg_rechunked")"
  echo "zstd:chunked rechunked image layer reuse v1 -> v2:   $(reuse "$reg_rezc")"
  echo "image rechunk time (from the gzip registry): v1 ${rechunk_secs[v1]} s, v2 ${rechunk_secs[v2]} s"
  echo "image rechunk --compression zstd:chunked time (to a registry): v1 ${rechunk_secs[zc-v1]} s, v2 ${rechunk_secs[zc-v2]} s"
fi
