#!/usr/bin/env bash
# The NEON kernels on an x86-64 machine: `cargo check` of the engine for aarch64, then the kernel
# proptests (every variant against the scalar specification) run under qemu-user. Installs the
# Rust target, the cross linker and qemu when missing (rustup, apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
if ((${#need_apt[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y "${need_apt[@]}" || { $SUDO apt-get update && $SUDO apt-get install -y "${need_apt[@]}"; } \
    || { echo "aarch64.sh: could not install ${need_apt[*]} (apt-get)" >&2; exit 2; }
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
  || rustup target add aarch64-unknown-linux-gnu \
  || { echo "aarch64.sh: rustup could not add aarch64-unknown-linux-gnu" >&2; exit 2; }

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo check --target aarch64-unknown-linux-gnu -p bitnet-engine --all-targets
cargo test --target aarch64-unknown-linux-gnu -p bitnet-engine --lib kernels
