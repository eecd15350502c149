#!/usr/bin/env bash
# Runs dmacap's arch:: unit tests for aarch64 under qemu-user (EL0 flavor:
# `dc cvac`, `dc civac`, `dsb sy`, CTR_EL0), and checks the no_std builds
# for aarch64-unknown-none. Installs what it needs with apt-get when missing.
# Extra arguments go to the test binary (e.g. `--nocapture`).
set -euo pipefail

cd "$(dirname "$0")/.."

need_pkgs=()
command -v qemu-aarch64 >/dev/null 2>&1 || need_pkgs+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need_pkgs+=(gcc-aarch64-linux-gnu)
[ -d /usr/aarch64-linux-gnu/lib ] || need_pkgs+=(libc6-dev-arm64-cross)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing: ${need_pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

rustup target add aarch64-unknown-linux-gnu aarch64-unknown-none >/dev/null

# no_std builds, with and without the heap.
cargo build -p dmacap --no-default-features --target aarch64-unknown-none
cargo build -p dmacap --no-default-features --features alloc --target aarch64-unknown-none

# Unit tests under qemu-user.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo test -p dmacap --lib --target aarch64-unknown-linux-gnu arch:: -- "$@"
