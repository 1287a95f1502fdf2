#!/usr/bin/env bash
# llama.cpp's fastest build on this machine: the pinned AVX2 build (this checkout's harness) and a
# GGML_NATIVE=ON build (-march=native, AVX-512 where the CPU has it) in target/ref-native, each
# benchmarked against the engine on the 700M-shaped preset; prints both tables and names the
# faster llama.cpp build by its median decode tokens/s at 1 thread. Extra arguments go to
# `harness bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --locked -p bitnet-harness
# The environment overrides the .cargo/config.toml pins (they are not forced).
GGML_NATIVE=ON cargo build --release --locked -p bitnet-harness --target-dir target/ref-native
mkdir -p target/harness
./target/release/harness bench --preset 700m --json target/harness/bench-avx2.json "$@"
./target/release/harness bench --preset 700m --reference-bin target/ref-native/release/harness \
  --json target/harness/bench-native.json "$@"
python3 - <<'PY'
import json
runs = {n: json.load(open(f"target/harness/bench-{n}.json")) for n in ("avx2", "native")}
def llama_decode(r):
    return next(t for t in r["results"] if t["threads"] == min(x["threads"] for x in r["results"]))["llama"]["decode_tps"]["median"]
for n, r in runs.items():
    print(f"llama.cpp {n} build: decode {llama_decode(r):.1f} tok/s; flags {r['reference']['build_flags']}")
best = max(runs, key=lambda n: llama_decode(runs[n]))
print(f"faster llama.cpp build: {best} (target/harness/bench-{best}.json is the comparison to quote)")
PY
