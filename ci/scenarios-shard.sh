#!/usr/bin/env bash
# Runs one shard of the scenario trials with cargo-nextest: `ci/scenarios-shard.sh 1/2`.
set -euo pipefail
cd "$(dirname "$0")/.."
shard="${1:?usage: ci/scenarios-shard.sh M/N (for example 1/2)}"
bash ci/setup.sh
export BITNET_PYTHON="$PWD/.venv/bin/python"
cargo nextest run -p bitnet-harness --test scenarios --partition "count:$shard" --locked
