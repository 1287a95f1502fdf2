#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test of the workspace,
# the scenario trials included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
export BITNET_PYTHON="$PWD/.venv/bin/python"
cargo test --workspace --locked "$@"
