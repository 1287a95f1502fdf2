#!/usr/bin/env bash
# Shows that cargo-nextest runs the scenario trials and that `--partition count:1/2` plus
# `count:2/2` run every trial exactly once: it runs both shards and compares the union of the
# trials they ran with `--list` of the whole target. Exits non-zero on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "nextest-partition: cargo-nextest is missing: install it with 'cargo install cargo-nextest --locked'" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The whole workspace, as `cargo test --workspace` builds it: with `-p bitnet-harness` cargo
# would resolve the features for the harness alone and build the engine, the harness and this
# target a second time (about nine minutes on a 2-core machine).
bin=$(cargo test --workspace --locked --no-run --message-format json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if (m.get("reason") == "compiler-artifact" and m["target"]["name"] == "scenarios"
            and "#bitnet-harness@" in m["package_id"] and m.get("executable")):
        print(m["executable"])')
"$bin" --list --format terse 2>/dev/null | sed -n 's/: test$//p' | sort > "$tmp/listed"
# Trials ignored here (slow scenarios, absent model files, cuda) are reported, not run.
"$bin" --list --ignored --format terse 2>/dev/null | sed -n 's/: test$//p' | sort > "$tmp/ignored"
comm -23 "$tmp/listed" "$tmp/ignored" > "$tmp/all"
export NEXTEST_EXPERIMENTAL_LIBTEST_JSON=1
for shard in 1 2; do
  cargo nextest run --workspace --locked -E 'binary_id(bitnet-harness::scenarios)' --partition "count:$shard/2" --run-ignored default \
    --no-fail-fast --message-format libtest-json 2>/dev/null > "$tmp/run$shard.json" || {
      echo "nextest-partition: shard $shard/2 failed" >&2; exit 1; }
done
cat "$tmp"/run*.json | python3 -c '
import json, sys
seen = []
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"): continue
    m = json.loads(line)
    if m.get("type") == "test" and m.get("event") in ("ok", "failed"):
        seen.append(m["name"].split("$")[-1])
for n in sorted(seen): print(n)' > "$tmp/ran"
if [ ! -s "$tmp/all" ]; then echo "nextest-partition: no trials listed" >&2; exit 1; fi
if ! diff "$tmp/ran" "$tmp/all" >/dev/null; then
  echo "nextest-partition: the two shards did not run every trial exactly once:" >&2
  diff "$tmp/ran" "$tmp/all" >&2 || true
  exit 1
fi
echo "nextest-partition: $(wc -l < "$tmp/all") trials run exactly once over 2 shards ($(wc -l < "$tmp/ignored") ignored here)"
