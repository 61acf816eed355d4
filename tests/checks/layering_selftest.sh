#!/usr/bin/env bash
# layering_selftest.sh ROOT: a checker that cannot fail is not a checker. Plants bad includes and
# bad CMake links in temporary copies and requires tests/checks/layering.sh to fail on each,
# naming the file and what it includes; requires it to pass on allowed dependencies.
set -uo pipefail

root="${1:-}"
[[ -n "$root" && -d "$root" ]] || { echo "usage: layering_selftest.sh REPO_ROOT" >&2; exit 2; }
root="$(cd "$root" && pwd)"
check="$root/tests/checks/layering.sh"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failures=0
cases=0

# A copy of the real modules (sources and CMake files only, no build folders).
copy_repo() {
  local dst="$1" m
  mkdir -p "$dst"
  for m in protocols config storage runtime actors nodes bench; do
    [[ -d "$root/$m" ]] && cp -R "$root/$m" "$dst/$m"
  done
  mkdir -p "$dst"/{protocols,config,storage,runtime,actors,nodes,bench}
}

# expect_fail NAME FILE LINE-TO-PLANT NEEDLE: plant LINE in FILE of a fresh copy; layering.sh
# must exit 1 and its output must contain FILE and NEEDLE.
expect_fail() {
  local name="$1" file="$2" line="$3" needle="$4" dst out rc
  cases=$((cases + 1))
  dst="$tmp/case$cases"
  copy_repo "$dst"
  mkdir -p "$(dirname "$dst/$file")"
  printf '%s\n' "$line" >>"$dst/$file"
  out="$(bash "$check" "$dst" 2>&1)"
  rc=$?
  if [[ $rc -ne 1 ]]; then
    echo "FAIL: $name: layering.sh exited $rc, expected 1; output:"; echo "$out"
    failures=$((failures + 1))
  elif [[ "$out" != *"$file"* || "$out" != *"$needle"* ]]; then
    echo "FAIL: $name: output does not name '$file' and '$needle':"; echo "$out"
    failures=$((failures + 1))
  else
    echo "ok: $name"
  fi
}

# expect_pass NAME FILE LINE: an allowed dependency must not be reported.
expect_pass() {
  local name="$1" file="$2" line="$3" dst out rc
  cases=$((cases + 1))
  dst="$tmp/case$cases"
  copy_repo "$dst"
  mkdir -p "$(dirname "$dst/$file")"
  printf '%s\n' "$line" >>"$dst/$file"
  out="$(bash "$check" "$dst" 2>&1)"
  rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "FAIL: $name: layering.sh exited $rc, expected 0; output:"; echo "$out"
    failures=$((failures + 1))
  else
    echo "ok: $name"
  fi
}

# The real tree must be clean, or every expect_fail below would pass for the wrong reason.
cases=$((cases + 1))
if out="$(bash "$check" "$root" 2>&1)"; then
  echo "ok: the repository itself passes ($out)"
else
  echo "FAIL: the repository itself has layering violations:"; echo "$out"
  failures=$((failures + 1))
fi

# Upward includes, one per layer boundary.
expect_fail "runtime includes actors" runtime/planted_bad.hpp \
  '#include "actors/gateway.hpp"' 'actors/gateway.hpp'
expect_fail "runtime includes nodes" runtime/planted_bad.cpp \
  '#include "nodes/agent_node.hpp"' 'nodes/agent_node.hpp'
expect_fail "protocols includes runtime" protocols/planted_bad.hpp \
  '#include "runtime/kind.hpp"' 'runtime/kind.hpp'
expect_fail "protocols includes config" protocols/planted_bad.hpp \
  '#include "config/node_config.hpp"' 'config/node_config.hpp'
expect_fail "config includes runtime" config/planted_bad.cpp \
  '#include "runtime/metrics.hpp"' 'runtime/metrics.hpp'
expect_fail "config includes storage" config/planted_bad.cpp \
  '#include "storage/data_dir.hpp"' 'storage/data_dir.hpp'
expect_fail "storage includes runtime" storage/planted_bad.hpp \
  '#include "runtime/directory.hpp"' 'runtime/directory.hpp'
expect_fail "storage includes config" storage/planted_bad.hpp \
  '#include "config/node_config.hpp"' 'config/node_config.hpp'
expect_fail "actors includes nodes" actors/planted_bad.cpp \
  '#include "nodes/agent_node.hpp"' 'nodes/agent_node.hpp'
expect_fail "actors includes bench" actors/planted_bad.cpp \
  '#include "bench/harness.hpp"' 'bench/harness.hpp'
expect_fail "nodes includes bench" nodes/planted_bad.cpp \
  '#include "bench/harness.hpp"' 'bench/harness.hpp'
expect_fail "runtime includes tests" runtime/planted_bad.cpp \
  '#include "tests/support/caf_fixture.hpp"' 'tests/support/caf_fixture.hpp'
# Other spellings of the same include.
expect_fail "angle brackets" runtime/planted_bad.hpp \
  '#include <actors/gateway.hpp>' 'actors/gateway.hpp'
expect_fail "spaces after #" runtime/sub/planted_bad.hpp \
  '  #  include   "actors/gateway.hpp"' 'actors/gateway.hpp'
expect_fail "relative include" runtime/planted_bad.cpp \
  '#include "../actors/gateway.hpp"' '../actors/gateway.hpp'
# Upward CMake links.
expect_fail "runtime links hive_actors" runtime/CMakeLists.txt \
  'target_link_libraries(hive_runtime PUBLIC hive_actors)' 'hive_actors'
expect_fail "storage links hive_runtime" storage/CMakeLists.txt \
  'target_link_libraries(hive_storage PRIVATE hive_runtime)' 'hive_runtime'
expect_fail "protocols links hive_config" protocols/CMakeLists.txt \
  'target_link_libraries(hive_protocols PUBLIC hive_config)' 'hive_config'

# Allowed dependencies and lookalikes must pass.
expect_pass "runtime includes config" runtime/planted_ok.hpp '#include "config/node_config.hpp"'
expect_pass "actors includes runtime" actors/planted_ok.cpp '#include "runtime/kind.hpp"'
expect_pass "nodes includes actors" nodes/planted_ok.cpp '#include "actors/gateway.hpp"'
expect_pass "system header" protocols/planted_ok.hpp '#include <caf/config.hpp>'
expect_pass "commented-out include" runtime/planted_ok.hpp '// #include "actors/gateway.hpp"'
expect_pass "comment in CMake" runtime/CMakeLists.txt '# never link hive_actors here'

echo "layering_selftest: $((cases - failures)) passed, $failures failed"
[[ $failures -eq 0 ]]
