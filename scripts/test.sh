#!/usr/bin/env bash
# test.sh: install what is missing, build, and run the whole suite with ctest on the
# ASan+UBSan build (every test, with address, leak and undefined-behaviour checks), then the
# libFuzzer targets of tests/fuzz/ (clang, a bounded number of inputs each, from the seed
# corpus). The Release build (what run.sh ships, assertions kept on) runs the same suite with
# `bash scripts/test.sh release`; CI leaves it out to stay within its 30-minute bound on
# 2 cores (two full builds took ~30 of the 44 minutes).
#
#   bash scripts/test.sh                          asan, then fuzz (what CI runs)
#   bash scripts/test.sh release|debug|asan|fuzz [ctest args...]   one, e.g. `asan -R config`
#   HIVE_SANITIZE=1 bash scripts/test.sh          the ASan+UBSan suite only
#
# Exits non-zero when a build step or any test fails, or when no test ran.
#
# Environment:
#   HIVE_TEST_JOBS=N          tests run in parallel (default 2)
#   HIVE_TEST_TIMEOUT_S=N     timeout of a test that sets none itself (default 120 s;
#                             GoogleTest cases get TIMEOUT 120 from tests/CMakeLists.txt)
#   HIVE_TEST_SLOW=1          also run the tests labelled `slow` (left out by default: -LE slow),
#                             e.g. `HIVE_TEST_SLOW=1 bash scripts/test.sh release -L slow`
#   HIVE_JOBS, HIVE_SKIP_PACKAGES, CCACHE_DIR: see setup.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

modes=(asan fuzz)
[[ "${HIVE_SANITIZE:-0}" == "1" ]] && modes=(asan)
if [[ $# -gt 0 ]]; then
  case "$1" in
    release|debug|asan|fuzz) modes=("$1"); shift ;;
  esac
fi

jobs="${HIVE_TEST_JOBS:-2}"
timeout_s="${HIVE_TEST_TIMEOUT_S:-120}"
label_args=(-LE slow)
[[ "${HIVE_TEST_SLOW:-0}" == "1" ]] && label_args=()
start=$(date +%s)
status=0
for mode in "${modes[@]}"; do
  if [[ "$mode" == "fuzz" ]]; then
    # Packages (clang, libclang-rt) come with setup.sh; without them, install first.
    [[ "${#modes[@]}" -eq 1 ]] && bash "$repo/scripts/setup.sh" release --no-build
    export CCACHE_DIR="${CCACHE_DIR:-$repo/build/.ccache}" CCACHE_BASEDIR="${CCACHE_BASEDIR:-$repo}"
    launcher=()
    command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    echo "==> test: building the libFuzzer targets (tests/fuzz) with clang++ in build/fuzz"
    cmake -S "$repo/tests/fuzz" -B "$repo/build/fuzz" -DCMAKE_CXX_COMPILER=clang++ \
      "${launcher[@]}" >"$repo/build/fuzz-configure.log" 2>&1 \
      || { cat "$repo/build/fuzz-configure.log" >&2; echo "==> test: fuzz configure failed" >&2; exit 1; }
    cmake --build "$repo/build/fuzz" --parallel "${HIVE_JOBS:-2}" || { status=1; break; }
    echo "==> test: ctest in build/fuzz"
    ctest --test-dir "$repo/build/fuzz" --output-on-failure --no-tests=error -j "$jobs" "$@" \
      || status=$?
    if [[ $status -ne 0 ]]; then
      echo "==> test: FAILED in the fuzz targets (ctest exit $status)" >&2
      break
    fi
    continue
  fi
  bash "$repo/scripts/setup.sh" "$mode"
  if [[ "$mode" == "asan" ]]; then
    # Stop a test at the first report, with a stack; leaks count. User settings win.
    export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
    # Known leaks of third-party code only, each explained in the file.
    export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$repo/tests/lsan.supp:print_suppressions=0}"
  fi
  echo "==> test: ctest in build/$mode, $jobs in parallel, per-test timeout ${timeout_s} s"
  ctest --test-dir "$repo/build/$mode" --output-on-failure --no-tests=error \
    -j "$jobs" --timeout "$timeout_s" "${label_args[@]}" "$@" || status=$?
  if [[ $status -ne 0 ]]; then
    echo "==> test: FAILED in the $mode build (ctest exit $status)" >&2
    break
  fi
done

elapsed=$(( $(date +%s) - start ))
if [[ $status -eq 0 ]]; then
  echo "==> test: all tests passed (${modes[*]}; ${elapsed} s in total)"
fi
exit "$status"
