#!/usr/bin/env bash
# Instructions per operation, counted by callgrind, for issue 10's targets
# 1 (typed vs hand-written cycle), 2 (dmacap vs dma-api 0.10) and 5 (bounce
# vs memcpy), plus the handle sizes of target 6.
#
# Each operation runs N times in a release binary built with fat LTO
# (benches/src/bin/cyclecount.rs); instructions per operation are
# (total for N runs - total for 0 runs) / N, so startup and setup cancel.
#
#   bash scripts/callgrind.sh            # N=100000
#   N=20000 bash scripts/callgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}
NC_IOMMU=${NC_IOMMU:-20000}

if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind not found: installing it with apt-get" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
fi

TARGET_DIR=target/callgrind
OUT=$TARGET_DIR/out
mkdir -p "$OUT"
echo "building the cycle binary (release, fat LTO, one codegen unit)" >&2
CARGO_PROFILE_RELEASE_LTO=fat \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --quiet --release -p dmacap-benches --bin cyclecount --target-dir "$TARGET_DIR"
BIN=$TARGET_DIR/release/cyclecount

# total OP RUNS: instructions executed by the whole program.
total() {
    local file="$OUT/${1//:/_}.$2.out"
    valgrind --tool=callgrind --callgrind-out-file="$file" "$BIN" "$1" "$2" \
        >/dev/null 2>"$file.log"
    awk '/^summary:/ { print $2 }' "$file"
}

# per_op OP [RUNS]: instructions per operation.
per_op() {
    local n=${2:-$N} with without
    with=$(total "$1" "$n")
    without=$(total "$1" 0)
    awk -v a="$with" -v b="$without" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / n }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { # verdict VALUE OP LIMIT
    awk -v v="$1" -v l="$3" -v op="$2" \
        'BEGIN { ok = (op == "<=") ? (v <= l) : (v >= l); print (ok ? "met" : "missed") }'
}

echo "counting (N = $N runs per operation)" >&2
typed=$(per_op typed)
typed_mu=$(per_op typed-map-unmap)
typed_ib=$(per_op typed-identity-bus)
hand=$(per_op hand)
peer=$(per_op peer)

echo
echo "instructions per operation (callgrind, N = $N, (total(N) - total(0)) / N)"
echo
printf '| %-6s | %-58s | %10s | %10s | %7s | %-8s | %-6s |\n' \
    target operation "instr/op" baseline ratio goal result
printf '|%s|%s|%s|%s|%s|%s|%s|\n' -------- "$(printf -- '-%.0s' {1..60})" \
    ------------ ------------ --------- ---------- --------
row() { # row TARGET NAME VALUE BASELINE RATIO GOAL RESULT
    printf '| %-6s | %-58s | %10s | %10s | %7s | %-8s | %-6s |\n' "$@"
}
r1=$(ratio "$typed" "$hand")
row 1 "typed cycle (map, sync_for_cpu, read, sync_for_device, unmap)" "$typed" "$hand" "$r1" "<= 1.05" "$(verdict "$r1" '<=' 1.05)"
row 1 "hand-written cycle (identity, offset + mask check)" "$hand" "" "" "" ""
r1b=$(ratio "$typed_ib" "$hand")
row 1 "typed cycle, IdentityCoherent (compile-time identity bus)" "$typed_ib" "$hand" "$r1b" "<= 1.05" "$(verdict "$r1b" '<=' 1.05)"
syncs=$(awk -v a="$typed" -v b="$typed_mu" 'BEGIN { printf "%.1f", a - b }')
row 1 "typed map + unmap, then the same read (no syncs)" "$typed_mu" "" "" "" ""
# Not the syncs' cost by itself: the two loops also differ in register
# allocation around the read (BENCHMARKS.md attributes the instructions).
row 1 "cross-check: typed cycle - (typed map + unmap, same read)" "$syncs" "" "" "" ""
r2=$(ratio "$peer" "$typed")
row 2 "dma-api 0.10 cycle / dmacap typed cycle" "$peer" "$typed" "$r2" ">= 8" "$(verdict "$r2" '>=' 8)"
r2b=$(ratio "$peer" "$typed_ib")
row 2 "dma-api 0.10 cycle / dmacap IdentityCoherent cycle" "$peer" "$typed_ib" "$r2b" ">= 8" "$(verdict "$r2b" '>=' 8)"
for size in 1500 4096 65536; do
    # 64 KiB copies are long (and `rep movsb` counts one instruction per
    # byte under valgrind): fewer runs.
    runs=$N
    if [ "$size" -ge 65536 ]; then runs=$((N / 50)); fi
    b=$(per_op "bounce:$size" "$runs")
    m=$(per_op "memcpy:$size" "$runs")
    r=$(ratio "$b" "$m")
    row 5 "bounced map + unmap, $size B / memcpy in + out" "$b" "$m" "$r" "<= 1.2" "$(verdict "$r" '<=' 1.2)"
done

# Targets 4 and 7, for the record (their goals are in time).
ia=$(per_op iova-dmacap)
ib=$(per_op iova-first-fit)
row 4 "IOVA alloc + free, 1K live: BTreeMap first-fit / dmacap" "$ib" "$ia" "$(ratio "$ib" "$ia")" "(time)" ""
wa=$(per_op iommu-unmap-walk "$NC_IOMMU")
wb=$(per_op iommu-unmap "$NC_IOMMU")
row 7 "IOMMU unmap + map, 1K live: with a walk / without" "$wa" "$wb" "$(ratio "$wa" "$wb")" "(time)" ""

if [ "$(uname -m)" = x86_64 ]; then
    # Target 3's bookkeeping: one cycle of 64 buffers (map, sync_for_cpu,
    # sync_for_device, unmap) on the non-coherent backend with `clflush`
    # (callgrind decodes neither `clwb` nor `clflushopt`; any of them is one
    # instruction per line). The fences and line operations themselves are
    # timed by criterion, not counted here.
    NC=${NC:-200}
    echo
    echo "target 3: instructions per cycle of 64 buffers beyond the bare line loop (N = $NC)"
    echo
    printf '| %-10s | %-14s | %12s | %22s |\n' size variant "instr/cycle" "beyond limit, per step"
    printf '|%s|%s|%s|%s|\n' ------------ ---------------- -------------- ------------------------
    for size in 4096 1536; do
        raw=$(per_op "nc-raw:$size" "$NC")
        printf '| %-10s | %-14s | %12s | %22s |\n' "$size B" "line-op limit" "$raw" ""
        for v in nc-batch nc-sg nc-one; do
            c=$(per_op "$v:$size" "$NC")
            step=$(awk -v a="$c" -v b="$raw" 'BEGIN { printf "%.1f", (a - b) / 256 }')
            printf '| %-10s | %-14s | %12s | %22s |\n' "$size B" "${v#nc-}" "$c" "$step"
        done
    done
fi

echo
echo "handle sizes (target 6): Mapped<Bidirectional, DevOwned, Box<[u8]>, B>"
echo
"$BIN" sizes
