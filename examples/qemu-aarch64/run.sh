#!/usr/bin/env bash
# dmacap on bare metal under QEMU: builds the program, makes a disk image
# with a known pattern, runs QEMU's `virt` machine with the image as a
# virtio-blk-pci function, and checks on the host what the program wrote.
#
# Configurations:
#   direct  the device reaches RAM directly; dmacap's non-coherent backend
#           does EL1 cache maintenance (dc cvac/ivac/civac, dsb sy).
#   smmuv3  `-machine virt,iommu=smmuv3`: the device translates through
#           QEMU's SMMUv3, driven by the program (stream table, context
#           descriptor, dmacap's Arm stage-1 tables, command and event
#           queues), strict invalidation; then a batch of unmaps (one
#           CMD_SYNC) and a deliberate fault on an unmapped IOVA.
#
# Prints one line per configuration and a summary line; exits non-zero if a
# configuration fails. If qemu-system-aarch64 is missing and
# cannot be installed, says SKIPPED loudly and exits 0.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v qemu-system-aarch64 >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing qemu-system-arm (qemu-system-aarch64)"
    if ! { $SUDO apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends qemu-system-arm; } ||
        ! command -v qemu-system-aarch64 >/dev/null 2>&1; then
        echo "****************************************************************" >&2
        echo "SKIPPED: qemu-aarch64 bare-metal run: qemu-system-aarch64 is missing and" >&2
        echo "SKIPPED: the package qemu-system-arm could not be installed" >&2
        echo "****************************************************************" >&2
        exit 0
    fi
fi
command -v python3 >/dev/null 2>&1 || { echo "run.sh needs python3 (image pattern and check)" >&2; exit 1; }
rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-none || rustup target add aarch64-unknown-none

cargo build --release --locked -q
ELF=target/aarch64-unknown-none/release/qemu-aarch64
WORK=target/qemu-run
mkdir -p "$WORK"

BLOCKS=2048   # 1 MiB image
WRITTEN=64    # the program writes blocks 0..63

# The host's pattern in every block; the program's in the blocks it writes.
# Both formulas are the program's `host_byte` and `guest_byte`.
make_image() {
    python3 - "$1" "$BLOCKS" <<'PY'
import sys
path, blocks = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for b in range(blocks):
        f.write(bytes((b * 7 + i) & 0xFF for i in range(512)))
PY
}

check_image() {
    python3 - "$1" "$BLOCKS" "$WRITTEN" <<'PY'
import sys
path, blocks, written = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
assert len(data) == blocks * 512, f"image is {len(data)} bytes"
bad = []
for b in range(blocks):
    got = data[b * 512:(b + 1) * 512]
    if b < written:
        want = bytes((((b * 131 + i * 3) & 0xFF) ^ 0xA5) for i in range(512))
    else:
        want = bytes((b * 7 + i) & 0xFF for i in range(512))
    if got != want:
        bad.append(b)
if bad:
    print(f"host image: {len(bad)} blocks wrong, first {bad[:8]}")
    sys.exit(1)
print(f"host image: blocks 0..{written - 1} hold the program's pattern, {written}..{blocks - 1} the host's")
PY
}

# run_qemu NAME MACHINE APPEND DEVICE-OPTIONS: runs the program, its UART
# on stdout (indented), into $WORK/NAME.log; sets $rc.
run_qemu() {
    local name=$1 machine=$2 append=$3 devopts=$4 img="$WORK/$1.img"
    make_image "$img"
    rc=0
    timeout 60 qemu-system-aarch64 \
        -machine "$machine" -cpu cortex-a57 -m 256M \
        -nographic -nic none -no-reboot \
        -semihosting-config enable=on,target=native \
        -kernel "$ELF" -append "$append" \
        -drive "file=$img,if=none,format=raw,id=disk0" \
        -device "virtio-blk-pci,drive=disk0$devopts" \
        </dev/null >"$WORK/$name.log" 2>&1 || rc=$?
    tr -d '\r' <"$WORK/$name.log" | sed 's/^/    /'
}

status=0
start=$(date +%s%N)
host_all=ok

# --- direct ---------------------------------------------------------------
run_qemu direct virt direct ""
line=$(tr -d '\r' <"$WORK/direct.log" | grep '^qemu-aarch64 direct: ' | head -1 || true)
if [ "$rc" -eq 0 ] && [ -n "$line" ] && host=$(check_image "$WORK/direct.img"); then
    echo "    $host"
    direct_sum=$(echo "$line" | grep -o '[0-9]*/[0-9]* blocks ok')
    echo "qemu-aarch64 direct: $direct_sum, host image ok"
else
    echo "qemu-aarch64 direct: FAILED (QEMU exit $rc)${line:+: ${line#qemu-aarch64 direct: }}"
    direct_sum="FAILED"
    host_all=FAILED
    status=1
fi

# --- smmuv3 ---------------------------------------------------------------
# The device must negotiate VIRTIO_F_ACCESS_PLATFORM to translate through
# the SMMU (iommu_platform=on); modern interface only.
run_qemu smmuv3 virt,iommu=smmuv3 smmuv3 ",iommu_platform=on,disable-legacy=on"
line=$(tr -d '\r' <"$WORK/smmuv3.log" | grep '^qemu-aarch64 smmuv3: ' | head -1 || true)
if [ "$rc" -eq 0 ] && [ -n "$line" ] && host=$(check_image "$WORK/smmuv3.img"); then
    echo "    $host"
    smmu_sum=$(echo "$line" | grep -o '[0-9]*/[0-9]* blocks ok')
    faults=$(echo "$line" | grep -o 'smmu faults [0-9]* expected [0-9]*')
    syncs=$(echo "$line" | grep -o 'cmd_syncs [0-9]*' | head -1)
    batch=$(echo "$line" | grep -o 'batch unmap cmd_syncs [0-9]*')
    echo "qemu-aarch64 smmuv3: $smmu_sum, $faults, $syncs ($batch), host image ok"
else
    echo "qemu-aarch64 smmuv3: FAILED (QEMU exit $rc)${line:+: ${line#qemu-aarch64 smmuv3: }}"
    smmu_sum="FAILED"
    faults="smmu faults ?"
    syncs="cmd_syncs ?"
    host_all=FAILED
    status=1
fi

end=$(date +%s%N)
ms=$(((end - start) / 1000000))
echo "qemu-aarch64: direct ${direct_sum}, smmuv3 ${smmu_sum}, ${faults}, ${syncs}, host image ${host_all} ($((ms / 1000)).$((ms % 1000 / 100)) s)"
exit $status
