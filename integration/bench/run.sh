#!/usr/bin/env bash
# hostctl's pull benchmark against the real peers, in one run (issue 2; stage
# for issue 3). Not part of the test suite: it takes minutes. Run as root from
# anywhere in the repository:
#
#   integration/bench/run.sh [--runs N] [--cache DIR] [--tools LIST] [--republish] [--keep]
#                            [--no-build] [--host-fs] [--fs-size SIZE]
#
#   --runs N      timed rounds (default 3); the table shows medians, min and max
#   --cache DIR   where the debootstrap rootfs and the published registry data
#                 are kept between runs (default /var/cache/hostctl-bench)
#   --tools LIST  comma-separated subset of: hostctl,skopeo-umoci,podman,floor,deploy
#                 (default: all but deploy). deploy is issue 3's part, below; it
#                 does not run yet: `switch` wants the kernel at
#                 usr/lib/modules/<kver>/vmlinuz and bookworm's rootfs keeps it
#                 in /boot, so the fixture must first copy it there.
#   --republish   publish the images again even if the cache has them
#   --keep        keep the work directory (printed) for inspection; on the
#                 loop filesystem it stays mounted (umount it, then delete its image)
#   --no-build    use the release binaries already built (CARGO_TARGET_DIR or target/;
#                 HOSTCTL_BIN=PATH names another hostctl binary)
#   --host-fs     put the work directory on the host's filesystem (/var/tmp) as
#                 before, instead of the fresh loop filesystem described below
#   --fs-size SIZE  size of that loop filesystem (default 12G; a sparse file)
#
# Where the tools write: every destination (hostctl's sysroots, skopeo's and
# umoci's directories, podman's private storage, the ostree repository) is in
# one work directory, by default on a fresh journaled ext4 filesystem that the
# script creates in a sparse file below /var/tmp, loop-mounts and removes on
# exit. Why: on an ext4 *without* a journal (like the root filesystem of the
# VM these figures were first taken on: /sys/fs/ext4/vda/journal_task reads
# <none>), the inode allocator calls recently_deleted() for every candidate
# inode, which reads the inode table blocks of inodes freed in the last few
# seconds; as each round deletes the
# previous 13,000-file tree just before the next tool writes one, a quarter of
# a pull's time went into that scan (perf: __ext4_new_inode → find_inode_bit →
# recently_deleted). Production hosts run journaled filesystems, where that
# check is skipped. All tools of a run write to the same filesystem.
#
# What it does: installs its extras (integration/setup.sh + time, ostree),
# builds hostctl and the decode-floor example in release mode, builds (or
# reuses) the bookworm rootfs (integration/fixtures/make-os-rootfs.sh),
# publishes it to a local registry as one gzip layer (os:v1), as one zstd layer
# (os-zstd:v1) and a derived os:v2 with one small extra layer (podman import +
# podman build + skopeo copy, all in a private podman storage), then times, in
# interleaved rounds on a warm page cache:
#   hostctl image pull into a fresh sysroot (gzip, zstd), and a second pull
#   skopeo copy docker://… oci: + umoci raw unpack (gzip; umoci cannot read zstd)
#   podman pull into a fresh private storage (gzip, zstd)
#   the decode floor: the layer blob only decompressed by the same decoders
# and, for deployments (issue 3): a cold `hostctl switch` to os:v1 in a fresh
# sysroot (pull + checkout + /etc + boot entry), its staging time against
# `ostree checkout -H` of the same tree (committed to a bare ostree repo once),
# and the upgrade `switch` to os:v2 (time, bytes downloaded, disk growth);
# then prints a table, the ratios against the targets and hostctl's peak RSS.
# It starts one registry on a random loopback port and stops it (by PID) on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=3
cache=/var/cache/hostctl-bench
tools=hostctl,skopeo-umoci,podman,floor
republish=0
keep=0
build=1
loopfs=1
fs_size=12G
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --tools) tools=$2; shift 2 ;;
    --republish) republish=1; shift ;;
    --keep) keep=1; shift ;;
    --no-build) build=0; shift ;;
    --host-fs) loopfs=0; shift ;;
    --fs-size) fs_size=$2; shift 2 ;;
    -h|--help) sed -n '2,56p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
want() { case ",$tools," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
log() { printf '[bench %s] %s\n' "$(date -u +%T)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

# --- extras --------------------------------------------------------------
"$repo/integration/setup.sh" >/dev/null
extras=()
for p in time ostree python3 bc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || extras+=("$p")
done
if [ ${#extras[@]} -gt 0 ]; then
  log "installing ${extras[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${extras[@]}" >/dev/null
fi
export CONTAINERS_CONF=/etc/hostctl-test/containers.conf

# --- work dir, registry, cleanup ------------------------------------------
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
base=$(mktemp -d /var/tmp/hostctl-bench.XXXXXX)
work=$base
registry_pid=
mounted=0
# Unmounts whatever is mounted below $1 (podman's overlay driver bind-mounts
# its private storage onto itself), deepest first.
unmount_under() {
  local m
  for m in $(awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
cleanup() {
  local rc=$?
  # `wait` answers 143 for the registry we just stopped; under `set -e` that
  # status would end the trap and become the script's exit code.
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  unmount_under "$work"
  if [ $keep = 1 ]; then
    log "work directory kept: $work"
    [ $mounted = 1 ] && log "it is the loop filesystem $base/fs.img: umount $work && rm -rf $base"
  else
    if [ $mounted = 1 ]; then umount "$work" || umount -l "$work" || true; fi
    rm -rf "$base"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $loopfs = 1 ]; then
  # See the header: a journaled ext4 of our own, fresh for this run.
  truncate -s "$fs_size" "$base/fs.img"
  mkfs.ext4 -q -F -O has_journal "$base/fs.img"
  mkdir "$base/mnt"
  mount -o loop "$base/fs.img" "$base/mnt"
  mounted=1
  work=$base/mnt
  log "work directory: $work (fresh journaled ext4 on $base/fs.img, $fs_size)"
else
  log "work directory: $work (on the host's filesystem: $(findmnt -n -o FSTYPE,SOURCE -T "$work"))"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_registry() {
  local data=$1
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s}\n' \
      "$data" "$port" > "$work/registry.yml"
    docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 100); do
      if curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; then return 0; fi
      kill -0 "$registry_pid" 2>/dev/null || break
      sleep 0.05
    done
    kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; registry_pid=
  done
  cat "$work/registry.log" >&2
  echo "docker-registry did not start" >&2
  exit 1
}

# --- builds -----------------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-$repo/target}
hostctl_bin=${HOSTCTL_BIN:-$target_dir/release/hostctl}
floor_bin=$target_dir/release/examples/decode-floor
if [ $build = 1 ]; then
  log "building hostctl and decode-floor (release)"
  (cd "$repo" && cargo build --release --quiet --bin hostctl --example decode-floor)
fi
for b in "$hostctl_bin" "$floor_bin"; do [ -x "$b" ] || { echo "$b is not built (drop --no-build)" >&2; exit 1; }; done

"$repo/integration/fixtures/make-os-rootfs.sh" "$cache"
rootfs_stamp=$(cat "$cache/rootfs.done")

# --- publish (cached with the rootfs it was made from) ------------------------
if [ $republish = 1 ] || [ ! -f "$cache/registry.done" ] || [ "$(head -1 "$cache/registry.done")" != "$rootfs_stamp" ]; then
  log "publishing the rootfs to a local registry (podman import + skopeo copy; a few minutes)"
  rm -rf "$cache/registry" "$cache/registry.done"
  start_registry "$cache/registry"
  pstore=(--root "$work/pub-root" --runroot "$work/pub-runroot")
  cstore="containers-storage:[overlay@$work/pub-root+$work/pub-runroot]"
  tar -C "$cache/rootfs" -c . | podman "${pstore[@]}" import -q - localhost/hostctl-bench/os:v1 >/dev/null
  skopeo copy -q --dest-tls-verify=false --dest-compress-format gzip \
    "${cstore}localhost/hostctl-bench/os:v1" "docker://127.0.0.1:$port/os:v1"
  # Another host name for the same registry: containers/image would otherwise
  # reuse the gzip blob it just pushed instead of compressing with zstd.
  skopeo copy -q --dest-tls-verify=false --dest-compress-format zstd \
    "${cstore}localhost/hostctl-bench/os:v1" "docker://localhost:$port/os-zstd:v1"
  mkdir -p "$work/derived"
  echo "v2 $(date -u +%FT%TZ)" > "$work/derived/hostctl-version"
  printf 'FROM localhost/hostctl-bench/os:v1\nCOPY hostctl-version /etc/hostctl-version\nLABEL org.opencontainers.image.version=2\n' \
    > "$work/derived/Containerfile"
  podman "${pstore[@]}" build -q -t localhost/hostctl-bench/os:v2 "$work/derived" >/dev/null
  skopeo copy -q --dest-tls-verify=false --dest-compress-format gzip \
    "${cstore}localhost/hostctl-bench/os:v2" "docker://127.0.0.1:$port/os:v2"
  kill "$registry_pid"; wait "$registry_pid" 2>/dev/null || true; registry_pid=
  unmount_under "$work/pub-root"
  unmount_under "$work/pub-runroot"
  rm -rf "$work/pub-root" "$work/pub-runroot"
  printf '%s\npublished %s: os:v1 (gzip), os-zstd:v1 (zstd), os:v2 (v1 + one small layer)\n' \
    "$rootfs_stamp" "$(date -u +%FT%TZ)" > "$cache/registry.done"
fi
start_registry "$cache/registry"
reg=127.0.0.1:$port
log "registry at $reg (data in $cache/registry)"

manifest() { curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$reg/v2/$1/manifests/$2"; }
layer_digest() { manifest "$1" "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"])'; }
blob_file() { local h=${1#sha256:}; echo "$cache/registry/docker/registry/v2/blobs/sha256/${h:0:2}/$h/data"; }
gzip_blob=$(blob_file "$(layer_digest os v1)")
zstd_blob=$(blob_file "$(layer_digest os-zstd v1)")
[ -f "$gzip_blob" ] && [ -f "$zstd_blob" ] || { echo "layer blobs missing from $cache/registry; use --republish" >&2; exit 1; }
# Warm cache, as peers.md measured: every tool reads the blobs from memory.
cat "$gzip_blob" "$zstd_blob" > /dev/null

# --- measuring ----------------------------------------------------------------
results=$work/results.txt
: > "$results"
# measure NAME CMD...: wall time (ns clock), peak RSS (KiB) and CPU seconds
# (user + system, children included) of CMD into $results.
measure() {
  local name=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  if ! /usr/bin/time -f '%M %U %S' -o "$work/rss" "$@" > "$work/out.$name" 2> "$work/err.$name"; then
    echo "bench: '$name' failed: $*" >&2
    tail -n 20 "$work/err.$name" >&2
    exit 1
  fi
  t1=$(date +%s%N)
  local rss usr sys
  read -r rss usr sys < <(tail -n 1 "$work/rss")
  echo "$name $(( (t1 - t0) / 1000 )) $rss $(echo "$usr + $sys" | bc)" >> "$results"
}
fresh() { rm -rf "$1"; mkdir -p "$1"; }
fresh_podman() {
  unmount_under "$1"
  rm -rf "$1"; mkdir -p "$1"
}
note() { echo "$*" >> "$work/notes.txt"; }

if want deploy; then
  # The same tree for ostree: skopeo + umoci unpack, committed once (not timed per round).
  log "preparing the ostree repository (skopeo copy + umoci raw unpack + ostree commit)"
  mkdir -p "$work/ostree"
  skopeo copy -q --src-tls-verify=false "docker://$reg/os:v1" "oci:$work/ostree/layout:v1"
  umoci raw unpack --image "$work/ostree/layout:v1" "$work/ostree/raw" >/dev/null 2>&1
  rm -rf "$work/ostree/raw/dev/"* "$work/ostree/layout"
  ostree --repo="$work/ostree/repo" init --mode=bare
  t0=$(date +%s%N)
  ostree --repo="$work/ostree/repo" commit --branch=os/v1 --tree=dir="$work/ostree/raw" --no-xattrs >/dev/null
  note "ostree commit of the unpacked tree (once): $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  rm -rf "$work/ostree/raw"
fi

for round in $(seq "$runs"); do
  log "round $round of $runs"
  if want hostctl; then
    for img in os:v1 os-zstd:v1; do
      tag=gzip; [ "$img" = os-zstd:v1 ] && tag=zstd
      fresh "$work/sysroot"
      measure "hostctl-pull-$tag" "$hostctl_bin" --sysroot "$work/sysroot" --tls-verify=false image pull --json "$reg/$img"
      # A pull commits its layers without waiting for the disk (docs/store.md,
      # Durability); staging a deployment pays that wait once. Shown apart:
      # syncfs right after the pull. The peers do not sync at all.
      measure "sync-after-pull-$tag" sync -f "$work/sysroot"
      measure "hostctl-pull-again-$tag" "$hostctl_bin" --sysroot "$work/sysroot" --tls-verify=false image pull --json "$reg/$img"
      again=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(v["layers_downloaded"], v["bytes_downloaded"])' \
        "$work/out.hostctl-pull-again-$tag")
      note "hostctl second pull ($tag): layers/bytes downloaded: $again"
      [ "$round" = 1 ] && note "hostctl sysroot after pull ($tag): $(du -sm "$work/sysroot" | cut -f1) MB"
    done
    rm -rf "$work/sysroot"
  fi
  if want skopeo-umoci; then
    fresh "$work/oci"
    measure skopeo-copy "skopeo" copy -q --src-tls-verify=false "docker://$reg/os:v1" "oci:$work/oci/layout:v1"
    measure umoci-raw-unpack umoci raw unpack --image "$work/oci/layout:v1" "$work/oci/rootfs"
    [ "$round" = 1 ] && note "skopeo+umoci on disk: $(du -sm "$work/oci" | cut -f1) MB"
    rm -rf "$work/oci"
  fi
  if want podman; then
    for img in os:v1 os-zstd:v1; do
      tag=gzip; [ "$img" = os-zstd:v1 ] && tag=zstd
      fresh_podman "$work/podman"
      measure "podman-pull-$tag" podman --root "$work/podman/root" --runroot "$work/podman/runroot" \
        pull -q --tls-verify=false "$reg/$img"
      fresh_podman "$work/podman"
    done
  fi
  if want deploy; then
    fresh "$work/dsys"
    measure hostctl-switch-cold "$hostctl_bin" --sysroot "$work/dsys" --tls-verify=false switch --json "$reg/os:v1"
    before=$(du -sm "$work/dsys" | cut -f1)
    stage=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stage_seconds"])' "$work/out.hostctl-switch-cold")
    # Staging as hostctl reports it (no separate process: no RSS or CPU figure).
    echo "hostctl-stage-v1 $(python3 -c "print(int($stage * 1e6))") 0 0" >> "$results"
    measure hostctl-upgrade-v2 "$hostctl_bin" --sysroot "$work/dsys" --tls-verify=false switch --json "$reg/os:v2"
    after=$(du -sm "$work/dsys" | cut -f1)
    got=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(v["layers_downloaded"], v["bytes_downloaded"])' \
      "$work/out.hostctl-upgrade-v2")
    note "hostctl upgrade v1 -> v2: layers/bytes downloaded: $got; sysroot ${before} MB -> ${after} MB"
    rm -rf "$work/dsys" "$work/ostree/co"
    measure ostree-checkout-H ostree --repo="$work/ostree/repo" checkout -H os/v1 "$work/ostree/co"
    rm -rf "$work/ostree/co"
  fi
  if want floor; then
    measure floor-gzip "$floor_bin" "$gzip_blob" gzip
    measure floor-zstd "$floor_bin" "$zstd_blob" zstd
    measure floor-gzip-sha256 "$floor_bin" "$gzip_blob" gzip --sha256
    measure gzip-dc sh -c "gzip -dc < '$gzip_blob' > /dev/null"
    measure zstd-dc sh -c "zstd -dc < '$zstd_blob' > /dev/null"
  fi
done

# --- report -----------------------------------------------------------------------
cp "$results" "$cache/last-results.txt"
python3 - "$results" "$work/notes.txt" "$runs" "$(nproc)" "$rootfs_stamp" "$(du -b "$gzip_blob" | cut -f1)" \
  "$(du -b "$zstd_blob" | cut -f1)" <<'PY'
import statistics, sys, collections
path, notes, runs, cpus, stamp, gz, zs = sys.argv[1:8]
rows = collections.OrderedDict()
cpu = collections.OrderedDict()
for line in open(path):
    name, us, rss, c = line.split()
    rows.setdefault(name, []).append((int(us) / 1e6, int(rss)))
    cpu.setdefault(name, []).append(float(c))
def med(name):
    v = rows.get(name)
    return statistics.median(t for t, _ in v) if v else None
# skopeo copy + umoci unpack, summed per round.
if "skopeo-copy" in rows and "umoci-raw-unpack" in rows:
    rows["skopeo+umoci"] = [(a[0] + b[0], max(a[1], b[1])) for a, b in zip(rows["skopeo-copy"], rows["umoci-raw-unpack"])]
    cpu["skopeo+umoci"] = [a + b for a, b in zip(cpu["skopeo-copy"], cpu["umoci-raw-unpack"])]
print(f"\nimage: {stamp}")
print(f"layer: gzip {int(gz)/1e6:.0f} MB, zstd {int(zs)/1e6:.0f} MB; {runs} rounds; {cpus} CPUs; warm page cache\n")
print(f"{'operation':<26} {'median s':>9} {'min s':>8} {'max s':>8} {'CPU s':>7} {'peak RSS MB':>12}")
print("-" * 75)
for name, v in rows.items():
    ts = [t for t, _ in v]
    rss = max(r for _, r in v) / 1024
    c = statistics.median(cpu[name]) if name in cpu else float("nan")
    print(f"{name:<26} {statistics.median(ts):>9.2f} {min(ts):>8.2f} {max(ts):>8.2f} {c:>7.2f} {rss:>12.0f}")
print("(median wall time; CPU s = median user+system seconds, which the load of other processes disturbs less)")
if "sync-after-pull-gzip" in rows:
    print("(sync-after-pull: `sync -f` of the sysroot right after the pull, the disk writes a pull no longer waits for;")
    print(" staging a deployment waits for them once. skopeo, umoci and podman do not sync.)")
print()
def ratio(a, b, target, label):
    x, y = med(a), med(b)
    if x is None or y is None:
        return
    r = x / y
    c = statistics.median(cpu[a]) / statistics.median(cpu[b])
    verdict = "meets" if r <= target else "MISSES"
    print(f"{label:<44} {r:6.2f}x  (target <= {target}x: {verdict}; CPU-time ratio {c:.2f}x)")
for tag in ("gzip", "zstd"):
    ratio(f"hostctl-pull-{tag}", "skopeo+umoci", 0.5, f"hostctl pull {tag} / skopeo+umoci (gzip)")
    ratio(f"hostctl-pull-{tag}", f"podman-pull-{tag}", 0.35, f"hostctl pull {tag} / podman pull {tag}")
    ratio(f"hostctl-pull-{tag}", f"floor-{tag}", 1.5, f"hostctl pull {tag} / decode floor {tag}")
ratio("hostctl-switch-cold", "skopeo+umoci", 0.5, "hostctl switch (cold, gzip) / skopeo+umoci")
if med("hostctl-stage-v1") is not None and med("ostree-checkout-H") is not None:
    print(f"{'hostctl staging (checkout+/etc+entry) / ostree checkout -H':<44} {med('hostctl-stage-v1') / med('ostree-checkout-H'):6.2f}x")
for tag in ("gzip", "zstd"):
    v = rows.get(f"hostctl-pull-{tag}")
    if v:
        rss = max(r for _, r in v) / 1024
        print(f"{'hostctl peak RSS, pull ' + tag:<44} {rss:6.0f} MB (target <= 100 MB: {'meets' if rss <= 100 else 'MISSES'})")
try:
    seen = set()
    for line in open(notes):
        if line not in seen:
            seen.add(line)
            print(line.rstrip())
except FileNotFoundError:
    pass
PY
log "raw results: $cache/last-results.txt"
