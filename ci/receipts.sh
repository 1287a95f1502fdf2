#!/usr/bin/env bash
# The receipt gate: every scenario that runs here has a receipt; every receipt `harness run` wrote
# must hold, its trace digest must equal the golden's, and it must be fresh. Run after
# `ci/main.sh`. Exit codes: see the README.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked -q -p bitnet-harness --bin harness -- \
  verify-receipt receipts/ --against-goldens --every-scenario --max-age "${BITNET_RECEIPT_MAX_AGE:-1d}" "$@"
