#!/usr/bin/env bash
# Bounded fuzzing of the readers of untrusted input (issue 15): each cargo-fuzz target of fuzz/
# runs from its seed corpus (engine/tests/fuzz_cases/<target>/, harness/tests/fuzz_cases/<target>/)
# for BITNET_FUZZ_SECONDS (default 20), all within BITNET_FUZZ_BUDGET seconds (default 900) that
# installing cargo-fuzz and building the targets also spend.
#
# Skips with exit 0, saying why, when nightly is missing, when cargo-fuzz is missing and cannot be
# installed (into target/fuzz-tools), or when the build does not finish within the budget: CI
# stays green for what it cannot run here. A crash, a timeout (a case running over 10 s) or a
# case using over 2 GiB fails with exit 1 and leaves the input in fuzz/artifacts/<target>/;
# replay it with `cargo +nightly fuzz run <target> <file>` from fuzz/, then add it to the seeds.
#
# The targets: the engine's (gguf_reader, npy_reader, trace_reader, tokenizer) and the harness's
# (scenario_parser, receipt_verifier; the harness library built without llama.cpp). Their bodies
# also run on every `cargo test` (the fuzz_corpus tests replay the seeds, and
# harness/tests/mutation_campaign.rs mutates).
set -uo pipefail
cd "$(dirname "$0")/.."

budget=${BITNET_FUZZ_BUDGET:-900}
per_target=${BITNET_FUZZ_SECONDS:-20}
start=$SECONDS
left() { echo $((budget - (SECONDS - start))); }
skip() {
  echo "fuzz: skipped: $*"
  exit 0
}

if ! cargo +nightly --version >/dev/null 2>&1; then
  skip "no nightly toolchain (cargo-fuzz needs one: rustup toolchain install nightly)"
fi
tools="${BITNET_FUZZ_TOOLS:-$PWD/target/fuzz-tools}"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz not found; installing it into $tools (about a minute)"
  if ! timeout "$(left)" cargo install cargo-fuzz --locked --quiet --root "$tools"; then
    skip "cargo-fuzz is not installed and could not be (cargo install cargo-fuzz --locked)"
  fi
fi

targets=(gguf_reader npy_reader trace_reader tokenizer scenario_parser receipt_verifier)
flags=(--codegen-units 16)

if [ "$(left)" -lt 120 ]; then
  skip "less than 120 s of the budget of $budget s is left for the build"
fi
cd fuzz
echo "fuzz: building ${targets[*]} ($(cargo fuzz --version | head -1), $(left) s of the budget left)"
build_start=$SECONDS
timeout "$(left)" cargo +nightly fuzz build "${flags[@]}"
rc=$?
if [ "$rc" = 124 ]; then
  skip "the fuzz build did not finish within the budget of $budget s (BITNET_FUZZ_BUDGET)"
elif [ "$rc" != 0 ]; then
  echo "fuzz: the fuzz build failed (exit $rc)"
  exit 1
fi
echo "fuzz: built in $((SECONDS - build_start)) s"
# Scratch files of the targets (trace directories, the receipt fixture each process keeps) stay
# under fuzz/target.
export TMPDIR="$PWD/target/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"

failed=()
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  remaining=$((${#targets[@]} - i))
  # Each target gets its share of what is left, at most BITNET_FUZZ_SECONDS, with 10 s of margin.
  secs=$((($(left) - 10) / remaining))
  [ "$secs" -gt "$per_target" ] && secs=$per_target
  if [ "$secs" -lt 5 ]; then
    echo "fuzz: $t skipped: the budget of $budget s is spent"
    continue
  fi
  case $t in
    scenario_parser | receipt_verifier) seeds=../harness/tests/fuzz_cases/$t ;;
    *) seeds=../engine/tests/fuzz_cases/$t ;;
  esac
  corpus=target/corpus/$t
  rm -rf "$corpus"
  mkdir -p "$corpus" "artifacts/$t"
  find "$seeds" -maxdepth 1 -type f ! -name '*.expected' -exec cp {} "$corpus/" \;
  echo "fuzz: $t for $secs s from $(ls "$corpus" | wc -l) seeds"
  # The hard limit covers libFuzzer's own shutdown and a target that ignores -max_total_time.
  timeout $((secs + 60)) cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -detect_leaks=0 \
    -print_final_stats=1 >"target/$t.log" 2>&1
  rc=$?
  grep -E '^(Done|#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "target/$t.log" |
    sed "s/^/fuzz: $t: /"
  if [ "$rc" != 0 ]; then
    failed+=("$t")
    echo "fuzz: $t FAILED (exit $rc); the end of its log (fuzz/target/$t.log):"
    tail -40 "target/$t.log"
  fi
done

echo "fuzz: done in $((SECONDS - start)) s"
if [ "${#failed[@]}" != 0 ]; then
  echo "fuzz: ${failed[*]} found a crash, a hang or a blow-up: see fuzz/artifacts/"
  exit 1
fi
