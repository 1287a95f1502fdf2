#!/usr/bin/env bash
# The README's main job: every scenario, engine against the reference, on the synthetic models.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export BITNET_PYTHON="$PWD/.venv/bin/python"
cargo run --release --locked -p bitnet-harness --bin harness -- run "$@"
