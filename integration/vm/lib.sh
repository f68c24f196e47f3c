# Shared parts of hostctl's VM scripts (sourced by integration/vm/e2e.sh and
# the VM benchmarks in integration/bench/): a registry on a random loopback
# port, and one QEMU boot (TCG, OVMF, the disk, the test agent's command disk,
# a user-mode network that reaches only the registry).
#
# The caller sets W (its work dir) and defines fail(); it may set before a boot:
#   VM_DISK       the boot disk (default $W/disk.img)
#   VM_HOSTFWD    extra ",hostfwd=…"/",guestfwd=…" options for the -nic
#   VM_EXTRA      an array of extra QEMU arguments (e.g. a second disk)
#   BOOT_TIMEOUT  seconds before a boot is killed (default 420)
#   VM_SMP        the guest's CPUs (default 2)

# free_port: a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# reg_start / reg_stop: docker-registry on 127.0.0.1:$port, data in $W/reg.
# reg_start may be called again after reg_stop (the data is kept).
reg_pid=
reg_start() {
  mkdir -p "$W/reg"
  [ -f "$W/reg/config.yml" ] || printf 'version: 0.1\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s}\n' "$W/reg/data" "$port" > "$W/reg/config.yml"
  /usr/bin/docker-registry serve "$W/reg/config.yml" >>"$W/reg/log" 2>&1 & reg_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && return; kill -0 $reg_pid || fail "registry died: $(cat "$W/reg/log")"; sleep 0.1; done
  fail "the registry did not answer on 127.0.0.1:$port"
}
reg_stop() { kill "$reg_pid"; wait "$reg_pid" 2>/dev/null || true; reg_pid=; }

# vm_prepare DIR: the UEFI variable store and the 1 MiB command disk the test
# agent (integration/vm/test-agent) reads its script from.
vm_prepare() {
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$1/vars.fd"
  truncate -s 1M "$1/cmd.img"
}

# vm_command SCRIPT: the script the test agent runs at the next boot.
vm_command() {
  dd if=/dev/zero of="$W/cmd.img" bs=1M count=1 conv=notrunc status=none
  dd if="$1" of="$W/cmd.img" conv=notrunc status=none
}

# Single-threaded TCG: with one host thread per vCPU (the default), the guest
# kernel now and then hits a stale int3 of its own code patching (jump labels)
# and panics at boot ("Oops: int3" in sched_clock_cpu, seen once in a CI
# rehearsal while the host was busy). The guest still has 2 CPUs.
# guestfwd with cmd: opens one host connection per guest connection; a tcp:
# chardev target would carry a single connection for the whole boot.
#
# vm_qemu SERIAL_LOG QEMU_OUT: one boot until the guest powers off or reboots
# (-no-reboot); returns QEMU's status (124 on timeout).
vm_qemu() {
  timeout "${BOOT_TIMEOUT:-420}" qemu-system-x86_64 -accel tcg,thread=single -M q35 -m 1536 -smp "${VM_SMP:-2}" -nographic -nodefaults -no-reboot \
    -serial "file:$1" \
    -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,unit=1,file="$W/vars.fd" \
    -drive file="${VM_DISK:-$W/disk.img}",format=raw,if=virtio \
    -drive file="$W/cmd.img",format=raw,if=none,id=cmd -device virtio-blk-pci,drive=cmd,serial=e2ecmd \
    "${VM_EXTRA[@]}" \
    -nic "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:10.0.2.100:5000-cmd:socat - TCP:127.0.0.1:$port${VM_HOSTFWD:-}" \
    </dev/null >"$2" 2>&1
}
VM_EXTRA=()

# has N MARKER: whether boot N's console showed MARKER; need N MARKER WHAT fails if not.
has() { grep -aq -- "$2" "$W/boot$1.log.txt"; }
need() { has "$1" "$2" || fail "boot $1: marker '$2' not seen ($3); see $W/boot$1.log.txt"; }
