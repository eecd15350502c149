#!/usr/bin/env bash
# Runs dmacap's tests under Miri. Never skips: when the nightly toolchain or
# its `miri`/`rust-src` components are missing it installs them (minimal
# profile), and if that fails this script fails.
#
#   1. Stacked Borrows (the default model): the library's unit tests and every
#      integration test of the `dmacap` package. Tests that need inline
#      assembly are `#[cfg_attr(miri, ignore)]`. Then the `virtio-tests`
#      package: virtio-drivers' block and net drivers over every backend.
#   2. Tree Borrows: the virtio adapter's contract tests
#      (virtio-tests/tests/contract.rs), then the adversarial suite (tests/adversarial.rs,
#      tests/auto_traits.rs and tests/attack_*.rs, those that exist) a
#      second time.
#
# Leaks are expected everywhere: quarantined buffers are leaked on purpose.
set -euo pipefail

cd "$(dirname "$0")/.."

header() { printf '\n--> Miri: %s\n' "$*"; }
fail() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Runs a command and prints how long it took, whether it passed or not.
timed() {
    local label=$1 start=$SECONDS rc=0
    shift
    "$@" || rc=$?
    local t=$((SECONDS - start))
    printf -- '--> Miri: %s: %dm%02ds%s\n' "$label" $((t / 60)) $((t % 60)) \
        "$([ "$rc" -eq 0 ] || echo " (FAILED, exit $rc)")"
    return "$rc"
}

# Output captured first, not piped into `grep -q`: with pipefail, grep exiting
# early can make rustup die of SIGPIPE and turn a match into a "missing".
nightly_has_miri() {
    local toolchains components
    toolchains=$(rustup toolchain list) || return 1
    grep -q '^nightly' <<<"$toolchains" || return 1
    components=$(rustup component list --toolchain nightly --installed) || return 1
    grep -q '^miri' <<<"$components" && grep -q '^rust-src' <<<"$components"
}

install_miri() {
    if rustup toolchain list | grep '^nightly' >/dev/null; then
        # Keep the nightly we have if it can take the components.
        rustup component add --toolchain nightly miri rust-src && return 0
        echo "could not add miri to the installed nightly; installing a nightly that has it" >&2
    fi
    # --allow-downgrade: Miri is missing from some nightlies; take the newest one that has it.
    rustup toolchain install nightly --profile minimal --component miri,rust-src --allow-downgrade
}

header "toolchain (nightly + miri + rust-src)"
if nightly_has_miri; then
    echo "nightly with miri and rust-src already installed"
else
    echo "nightly toolchain or its miri/rust-src components missing: installing"
    timed "install" install_miri || fail "could not install the nightly toolchain with miri and rust-src; Miri NOT run"
    nightly_has_miri || fail "miri or rust-src still missing from nightly after installation; Miri NOT run"
fi
cargo +nightly miri --version || fail "cargo +nightly miri does not run; Miri NOT run"

# Builds Miri's sysroot; quiet unless it fails.
setup_log=$(mktemp)
trap 'rm -f "$setup_log"' EXIT
quiet_setup() { cargo +nightly miri setup -q >"$setup_log" 2>&1; }
if ! timed "setup" quiet_setup; then
    cat "$setup_log" >&2
    fail "cargo +nightly miri setup failed; Miri NOT run"
fi

# Both runs happen even if the first fails (each reports every failing test
# binary, --no-fail-fast); the script fails at the end if either did.
total_start=$SECONDS
failed=()

header "Stacked Borrows: unit tests and every integration test of dmacap"
MIRIFLAGS="-Zmiri-ignore-leaks" \
    timed "Stacked Borrows (--lib --tests)" \
    cargo +nightly miri test -p dmacap --no-fail-fast --lib --tests ||
    failed+=("Stacked Borrows")

header "Stacked Borrows: virtio-drivers' real drivers on dmacap (virtio-tests)"
# Every backend combination runs, with fewer blocks and frames under Miri.
# virtio-drivers turns integers back into pointers (`Dma::vaddr`), hence
# permissive provenance; the devices and Hal states are leaked on purpose.
MIRIFLAGS="-Zmiri-ignore-leaks -Zmiri-permissive-provenance" \
    timed "Stacked Borrows (virtio-tests)" \
    cargo +nightly miri test -p dmacap-virtio-tests --no-fail-fast ||
    failed+=("Stacked Borrows (virtio-tests)")

header "Tree Borrows: the virtio adapter's contract (virtio-tests/tests/contract.rs)"
# A caller keeping install's clauses, the run-time checks, DMA address 0,
# a refusal mid-chain and the stale-share message, under the second model.
MIRIFLAGS="-Zmiri-ignore-leaks -Zmiri-permissive-provenance -Zmiri-tree-borrows" \
    timed "Tree Borrows (virtio-tests contract)" \
    cargo +nightly miri test -p dmacap-virtio-tests --no-fail-fast --test contract ||
    failed+=("Tree Borrows (virtio-tests contract)")

header "Tree Borrows: the adversarial suite"
suite=()
for name in adversarial auto_traits; do
    if [ -f "tests/$name.rs" ] || [ -f "tests/$name/main.rs" ]; then
        suite+=(--test "$name")
    else
        printf 'NOTE: tests/%s.rs does not exist; not part of the Tree Borrows run\n' "$name" >&2
    fi
done
# Outside reviews written as attacks (tests/attack_*.rs) belong to the suite too.
for file in tests/attack_*.rs; do
    [ -f "$file" ] || continue
    name=${file#tests/}
    suite+=(--test "${name%.rs}")
done
if [ "${#suite[@]}" -gt 0 ]; then
    MIRIFLAGS="-Zmiri-ignore-leaks -Zmiri-tree-borrows" \
        timed "Tree Borrows (${suite[*]})" \
        cargo +nightly miri test -p dmacap --no-fail-fast "${suite[@]}" ||
        failed+=("Tree Borrows")
else
    echo "WARNING: no adversarial suite found; the Tree Borrows step had nothing to run" >&2
fi

t=$((SECONDS - total_start))
printf -- '--> Miri: all test steps: %dm%02ds\n' $((t / 60)) $((t % 60))
if [ "${#failed[@]}" -gt 0 ]; then
    fail "Miri FAILED: ${failed[*]} (see the test output above)"
fi
