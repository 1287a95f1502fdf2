#!/usr/bin/env bash
# The perf gate: `harness bench` on the 700M-shaped TQ2_0 preset at 1 and 2 threads (engine and
# llama.cpp alternating in one process tree), then `harness perf-gate`, which fails when an
# engine/llama.cpp ratio falls below its floor in receipts/perf-baseline.json less the stated
# noise margin; then the same for the `2b4t` I2_S preset, which llama.cpp cannot run: the engine
# is timed alone and held to the baseline's engine-only floors (its decode share of the
# bandwidth bound). Run it on a quiet machine: other load skews both sides, llama.cpp's spinning
# thread pool most. Extra arguments go to `harness bench` (e.g. `--reference-bin PATH`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
# The workspace's build, as the README's commands make it: with `-p bitnet-harness` the engine
# would be built without its own default features, a second harness binary replacing the first.
cargo build --release --locked --workspace
mkdir -p target/harness
out=target/harness/bench-700m.json
./target/release/harness bench --preset 700m --threads 1,2 --rounds 3 --json "$out" "$@"
./target/release/harness perf-gate --baseline receipts/perf-baseline.json --bench "$out"
out=target/harness/bench-2b4t.json
./target/release/harness bench --preset 2b4t --threads 1,2 --decode-tokens 32 --rounds 3 \
  --json "$out" "$@"
./target/release/harness perf-gate --baseline receipts/perf-baseline.json --bench "$out"
