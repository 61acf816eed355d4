#!/usr/bin/env bash
# run_fuzz.sh BINARY SEED_CORPUS_DIR RUNS MALLOC_MB: runs one libFuzzer target for RUNS inputs,
# starting from the checked-in seed corpus (never written to: new inputs go to a temporary
# directory). libFuzzer prints its seed ("INFO: Seed: N"); HIVE_FUZZ_SEED=N repeats a run.
# A crash, a leak, a sanitizer report or one allocation above MALLOC_MB MiB fails the test;
# the input is kept in $HIVE_FUZZ_ARTIFACTS (default: the temporary directory, printed).
set -uo pipefail
bin="$1" seeds="$2" runs="$3" malloc_mb="$4"
work="$(mktemp -d /tmp/hive-fuzz-XXXXXX)"
artifacts="${HIVE_FUZZ_ARTIFACTS:-$work/artifacts}"
mkdir -p "$work/corpus" "$artifacts"
seed_arg=()
[[ -n "${HIVE_FUZZ_SEED:-}" ]] && seed_arg=(-seed="$HIVE_FUZZ_SEED")
"$bin" -runs="$runs" -max_len=8192 -malloc_limit_mb="$malloc_mb" -rss_limit_mb=2048 \
  -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" "${seed_arg[@]}" \
  "$work/corpus" "$seeds" 2>&1 | grep -v '^#[0-9]*\s*\(NEW\|REDUCE\|pulse\)'
status=${PIPESTATUS[0]}
if [[ $status -ne 0 ]]; then
  echo "run_fuzz: $(basename "$bin") failed (exit $status); inputs kept in $artifacts" >&2
  exit "$status"
fi
rm -rf "$work"
