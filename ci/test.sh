#!/usr/bin/env bash
# The README's test command: installs what is missing (cmake, libclang, the Python `gguf`
# oracle), then runs every test of the workspace — unit, property, oracle, reference and the
# scenario trials — and checks that cargo-nextest shards the trials exactly once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export BITNET_PYTHON="$PWD/.venv/bin/python"
cargo test --workspace --locked "$@"
bash ci/nextest-partition.sh
# Bounded fuzzing of the readers of untrusted input (a budget of BITNET_FUZZ_BUDGET s, 900 here,
# install and build included); skips, saying why, where nightly or cargo-fuzz is missing.
BITNET_FUZZ_BUDGET="${BITNET_FUZZ_BUDGET:-900}" bash ci/fuzz.sh
