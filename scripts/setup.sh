#!/usr/bin/env bash
# setup.sh: install the Debian packages hive needs (only those missing), configure and build.
#
#   bash scripts/setup.sh [release|debug|asan] [--target T]... [--no-build]
#
#   release  CMAKE_BUILD_TYPE=Release                       -> build/release  (default)
#   debug    CMAKE_BUILD_TYPE=Debug                         -> build/debug
#   asan     Debug (-g1) + ASan/UBSan (HIVE_SANITIZE=ON)    -> build/asan
#
# Idempotent: a package is installed only when dpkg-query says it is missing, and `apt-get
# update` runs only when something must be installed. Works as root on a fresh Debian 12; as
# another user it uses sudo when available.
#
# Environment:
#   HIVE_JOBS=N              parallel compile jobs (default: cores, capped by memory, max 8)
#   HIVE_SKIP_PACKAGES=1     do not check or install Debian packages
#   CCACHE_DIR=...           compiler cache (default: build/.ccache, so CI can cache build/)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '==> setup: %s\n' "$*"; }
die() { printf '==> setup: error: %s\n' "$*" >&2; exit 1; }

mode="release"
targets=()
build=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    release|debug|asan) mode="$1" ;;
    --target) [[ $# -ge 2 ]] || die "--target needs a value"; targets+=("$2"); shift ;;
    --target=*) targets+=("${1#--target=}") ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (expected release|debug|asan, --target T, --no-build)" ;;
  esac
  shift
done

# --- 1. Debian packages ----------------------------------------------------------------------
packages=(
  build-essential cmake ninja-build ccache pkg-config git curl python3
  libcaf-dev libboost-dev capnproto libcapnp-dev librocksdb-dev libspdlog-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  libtomlplusplus-dev libcli11-dev libedit-dev libssl-dev openssl tmux clang libclang-rt-14-dev
  prometheus python3-yaml
)

install_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    say "dpkg-query not found (not Debian?): skipping package installation; needed: ${packages[*]}"
    return 0
  fi
  local missing=() p
  for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
      missing+=("$p")
    fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    say "all ${#packages[@]} Debian packages are installed"
    return 0
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 \
      || die "missing packages (${missing[*]}) and not root, no sudo: install them as root"
    sudo=(sudo)
  fi
  say "installing ${#missing[@]} missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  say "packages installed"
}

if [[ "${HIVE_SKIP_PACKAGES:-0}" == "1" ]]; then
  say "HIVE_SKIP_PACKAGES=1: not checking Debian packages"
else
  install_packages
fi

# --- 2. configure ----------------------------------------------------------------------------
case "$mode" in
  release) build_type=Release;        sanitize=OFF; bench=ON ;;
  debug)   build_type=Debug;          sanitize=OFF; bench=ON ;;
  # Debug, not RelWithDebInfo: at -O2 with ASan, g++ 12 reports -Wmaybe-uninitialized false
  # positives inside Boost.Beast headers, which -Werror turns into a failed build. agent-bench
  # is built too (no test runs it; this is what keeps it compiling in CI).
  asan)    build_type=Debug;          sanitize=ON;  bench=ON ;;
esac
extra_cmake=()
# -g1 (line tables: reports still name file and line) instead of -g: compiles ~20 % faster.
[[ "$mode" == "asan" ]] && extra_cmake+=(-DCMAKE_CXX_FLAGS_DEBUG=-g1)
build_dir="$repo/build/$mode"

# Compile jobs: one per core, but at most one per 1.5 GiB of available memory (the Beast TUs
# and ASan builds need ~1 GiB each), at least 1, at most 8.
if [[ -n "${HIVE_JOBS:-}" ]]; then
  jobs="$HIVE_JOBS"
else
  jobs="$(nproc 2>/dev/null || echo 2)"
  mem_kib="$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)"
  if [[ "${mem_kib:-0}" -gt 0 ]]; then
    mem_jobs=$(( mem_kib / (1536 * 1024) ))
    [[ $mem_jobs -lt $jobs ]] && jobs=$mem_jobs
  fi
  [[ $jobs -lt 1 ]] && jobs=1
  [[ $jobs -gt 8 ]] && jobs=8
fi

# ccache: CMakeLists.txt uses ccache as compiler launcher when it is installed. Keep its cache
# under build/ (CI can cache that folder) and make paths relative so clones share hits.
export CCACHE_DIR="${CCACHE_DIR:-$repo/build/.ccache}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$repo}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-2G}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-true}"
mkdir -p "$CCACHE_DIR"

say "configuring $mode ($build_type, sanitizers $sanitize) in ${build_dir#"$repo"/}"
mkdir -p "$build_dir"
# Ninja, not Make: with Make, no object of a target compiles before the libraries it links are
# built, so on 2 cores one long TU (actors/gateway.cpp) held up every test behind it. A build
# directory configured with another generator is reconfigured from scratch.
generator="Ninja"
command -v ninja >/dev/null 2>&1 || generator="Unix Makefiles"
if [[ -f "$build_dir/CMakeCache.txt" ]] \
   && ! grep -qx "CMAKE_GENERATOR:INTERNAL=$generator" "$build_dir/CMakeCache.txt"; then
  say "build/$mode was configured with another generator: configuring it afresh"
  rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
fi
cmake -S "$repo" -B "$build_dir" -G "$generator" \
  -DCMAKE_BUILD_TYPE="$build_type" \
  -DHIVE_SANITIZE="$sanitize" \
  -DHIVE_BUILD_BENCH="$bench" \
  "${extra_cmake[@]}" \
  >"$build_dir/configure.log" 2>&1 \
  || { cat "$build_dir/configure.log" >&2; die "cmake configure failed (log above)"; }

# --- 3. build --------------------------------------------------------------------------------
if [[ $build -eq 0 ]]; then
  say "configured; not building (--no-build)"
  exit 0
fi
target_args=()
for t in "${targets[@]}"; do target_args+=(--target "$t"); done
say "building ${targets[*]:-all targets} with $jobs jobs (ccache in ${CCACHE_DIR#"$repo"/})"
start=$(date +%s)
cmake --build "$build_dir" --parallel "$jobs" "${target_args[@]}"
say "build done in $(( $(date +%s) - start )) s: ${build_dir#"$repo"/}"
if command -v ccache >/dev/null 2>&1; then
  ccache --show-stats 2>/dev/null | grep -E '^ *(Hits|Misses|Cache size)' | sed 's/^ */    ccache /' || true
fi
