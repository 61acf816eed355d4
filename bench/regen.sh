#!/usr/bin/env bash
# regen.sh: regenerate bench/RESULTS.md (and bench/charts/*.png) with one command.
#
#   bash bench/regen.sh [--quick] [--out DIR] [--only NAME,...] [--no-peers] [--no-install]
#                       [--build] [--verbose]
#
# 1. Installs what it needs when missing (idempotent, apt-get, as root or through sudo):
#    gnuplot-nox (charts), erlang-nox (the Erlang peers), python3. A package that cannot be
#    installed is reported and the run goes on without it (no charts / no Erlang figures).
# 2. Builds the Release tree (scripts/setup.sh release) when build/release/bench/agent-bench
#    or build/release/nodes/agent-node is missing (or always, with --build).
# 3. Runs every scenario, each with --json into the results directory, printing which one,
#    n of m and the time elapsed: agent-bench local, remote, then the peers of
#    ../shared/peers (run_all.sh local remote: Erlang and raw CAF, in this same run), then
#    agent-bench durable, density, gateway, replicated, workflow, then bench/migration_pause.py,
#    bench/failover_time.py, bench/cluster_down.py. A subcommand that agent-bench does not
#    have (`agent-bench --help`) is skipped, and so are the peers when run_all.sh or `erl` is
#    missing; the report says so. A failed scenario does not stop the others.
# 4. Writes bench/RESULTS.md and bench/charts/*.png with bench/report.py from that directory.
#
# Options:
#   --quick       small sizes, 1-2 runs each: tests the pipeline in a few minutes; the report
#                 says plainly that it is a quick run. Default: the full run (medians of
#                 several runs; ~30-40 min on a 2-core VM, see bench/README.md).
#   --out DIR     the results directory (default build/bench-results/<UTC stamp>/); it holds
#                 every scenario's JSON, logs/<name>.log, status.tsv, run.txt, machine.txt and
#                 peers/, and is what report.py reads.
#   --only LIST   run only these steps (comma-separated: local, remote, peers, durable,
#                 density, gateway, replicated, workflow, migration_pause, failover_time,
#                 cluster_down); the report lists the others as not run.
#   --no-peers    do not run ../shared/peers.
#   --no-install  do not check or install Debian packages (also HIVE_SKIP_PACKAGES=1).
#   --build       run scripts/setup.sh release even when the binaries exist.
#   --verbose     show each scenario's output as it runs (it always goes to logs/NAME.log).
#
# Environment:
#   HIVE_PEERS_DIR         the peers' folder (default: <repo>/../shared/peers)
#   REGEN_ARGS_<NAME>      extra arguments appended to one scenario, e.g.
#                          REGEN_ARGS_DURABLE="--set persistence.snapshot_every_events=1000"
#                          (NAME upper-case: LOCAL, REMOTE, DURABLE, DENSITY, GATEWAY, ...)
#   REGEN_TIMEOUT          seconds one scenario may take (default 2700, quick 600)
#   CCACHE_DIR, HIVE_JOBS  passed on to scripts/setup.sh
#
# Exit status: 0 when every step ran and the report was written; 1 when a step failed or
# the report found malformed results (RESULTS.md is written anyway and says what); 2 bad usage.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { printf '==> regen: %s\n' "$*"; }
warn() { printf '==> regen: WARNING: %s\n' "$*" >&2; }
die() { printf '==> regen: error: %s\n' "$*" >&2; exit 2; }

q() { # one word for a shell line: as it is when that is safe, else quoted
  if [[ "$1" =~ ^[A-Za-z0-9_./,=:@%+-]+$ ]]; then printf '%s' "$1"; else printf '%q' "$1"; fi
}
invocation="bash bench/regen.sh"
for a in "$@"; do invocation+=" $(q "$a")"; done

mode=full
out=""
only=""
peers_on=1
install=1
force_build=0
verbose=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) mode=quick ;;
    --out) [[ $# -ge 2 ]] || die "--out needs a directory"; out="$2"; shift ;;
    --out=*) out="${1#--out=}" ;;
    --only) [[ $# -ge 2 ]] || die "--only needs a list of steps"; only="$2"; shift ;;
    --only=*) only="${1#--only=}" ;;
    --no-peers) peers_on=0 ;;
    --no-install) install=0 ;;
    --build) force_build=1 ;;
    --verbose) verbose=1 ;;
    -h|--help) sed -n '2,44p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see bash bench/regen.sh --help)" ;;
  esac
  shift
done
[[ "${HIVE_SKIP_PACKAGES:-0}" == "1" ]] && install=0

all_steps=(local remote peers durable density gateway replicated workflow migration_pause
           failover_time cluster_down)
if [[ -n "$only" ]]; then
  IFS=',' read -r -a wanted <<< "$only"
  for w in "${wanted[@]}"; do
    [[ " ${all_steps[*]} " == *" $w "* ]] || die "--only: unknown step '$w' (steps: ${all_steps[*]})"
  done
fi
selected() { # selected NAME: is the step on (--only)?
  [[ -z "$only" ]] && return 0
  [[ ",$only," == *",$1,"* ]]
}

start_s=$(date +%s)
hms() { local s=$1; printf '%dm%02ds' $((s / 60)) $((s % 60)); }
elapsed() { hms $(( $(date +%s) - start_s )); }

# --- 1. packages -------------------------------------------------------------------------------
install_packages() {
  local missing=() p
  if ! command -v dpkg-query >/dev/null 2>&1; then
    warn "dpkg-query not found (not Debian?): not installing gnuplot-nox, erlang-nox, python3"
    return 0
  fi
  for p in gnuplot-nox erlang-nox python3; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
      || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    say "packages: gnuplot-nox, erlang-nox and python3 are installed"
    return 0
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
      warn "missing packages (${missing[*]}), not root and no sudo: going on without them"
      return 0
    fi
    sudo=(sudo)
  fi
  say "installing missing Debian packages: ${missing[*]}"
  if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
         && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
              apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
       > /tmp/hive-regen-apt.$$.log 2>&1; then
    warn "apt-get failed (log: /tmp/hive-regen-apt.$$.log): going on without ${missing[*]}"
    return 0
  fi
  rm -f /tmp/hive-regen-apt.$$.log
  say "installed: ${missing[*]}"
}
if [[ $install -eq 1 ]]; then
  install_packages
else
  say "not checking Debian packages (--no-install / HIVE_SKIP_PACKAGES=1)"
fi
command -v python3 >/dev/null 2>&1 \
  || die "python3 not found (Debian package python3): report.py and the cluster scenarios need it"
command -v gnuplot >/dev/null 2>&1 \
  || warn "gnuplot not found (Debian package gnuplot-nox): RESULTS.md will have no charts"

# --- 2. the Release build ------------------------------------------------------------------------
bench_bin=build/release/bench/agent-bench
node_bin=build/release/nodes/agent-node
if [[ $force_build -eq 1 || ! -x "$bench_bin" || ! -x "$node_bin" ]]; then
  say "building the Release tree (scripts/setup.sh release)"
  setup_args=(release)
  HIVE_SKIP_PACKAGES=$(( 1 - install )) bash scripts/setup.sh "${setup_args[@]}" \
    || die "scripts/setup.sh release failed (output above)"
fi
[[ -x "$bench_bin" ]] || die "$bench_bin is missing after the build"
[[ -x "$node_bin" ]] || die "$node_bin is missing after the build"

# --- the results directory and what the report needs to know about this run --------------------
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
[[ -n "$out" ]] || out="build/bench-results/$stamp"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
rel_out="${out#"$repo"/}"
status_file="$out/status.tsv"
printf '# name\tstatus\tseconds\trc\tcommand\tnote\n' > "$status_file"
python3 bench/report.py --machine > "$out/machine.txt"

mtime() { date -u -r "$1" '+%Y-%m-%d %H:%M UTC'; }
binaries="agent-bench built $(mtime "$bench_bin"), agent-node built $(mtime "$node_bin")"
# Stale binaries: a tracked C++ or CMake file newer than either binary.
newest_src="$(git ls-files -z -- '*.cpp' '*.hpp' '*.h' '*.capnp' '*CMakeLists.txt' '*.cmake' \
  2>/dev/null | xargs -0 -r stat -c %Y 2>/dev/null | sort -n | tail -1)"
oldest_bin="$(stat -c %Y "$bench_bin" "$node_bin" | sort -n | head -1)"
if [[ -n "$newest_src" && "$newest_src" -gt "$oldest_bin" ]]; then
  binaries+=" (older than some sources: --build rebuilds them)"
  warn "a C++ or CMake source is newer than the Release binaries: the figures may not be this tree's (--build rebuilds)"
fi
dirty="$(git status --porcelain --untracked-files=no 2>/dev/null | awk '{print $2}' | head -5 | tr '\n' ' ')"
n_dirty="$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
{
  echo "# written by bench/regen.sh; read by bench/report.py"
  echo "command: $invocation"
  echo "mode: $mode"
  echo "started_utc: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "git_commit: $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  echo "git_branch: $(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)"
  if [[ "$n_dirty" -eq 0 ]]; then
    echo "git_dirty: working tree clean"
  else
    echo "git_dirty: uncommitted changes in $n_dirty file(s): ${dirty% }"
  fi
  echo "binaries: $binaries"
  echo "results_dir: $rel_out"
  echo "load_start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/run.txt"

# --- 3. the scenarios ------------------------------------------------------------------------------
# Sizes. Full: the defaults documented in bench/README.md, more runs where a run is short.
# Quick: just enough to exercise every path. (The a_* arrays are read through ${!name}.)
# shellcheck disable=SC2034
if [[ $mode == quick ]]; then
  a_local=(--messages 200000 --runs 2 --asks 20000 --pingpong 200000 --spawns 20000)
  a_remote=(--runs 1 --asks 500 --window-asks 5000 --tells 50000)
  a_durable=(--runs 1 --seconds 1 --rocksdb-puts 200 --activation-agents 200 --footprint-agents 2000)
  a_density=(--live 20000 --passivated 50000 --check 100)
  a_gateway=(--runs 1 --seconds 0.5 --connections "1,16" --rate-seconds 1)
  a_replicated=(--runs 1 --seconds 0.5 --writers "1,16")
  a_workflow=(--runs 2 --steps 200)
  a_migration_pause=(--moves 5)
  a_failover_time=(--kills 3 --seed 1)
  a_cluster_down=(--kills 3 --seed 1)
  peers_env=(RUNS=1 PP_N=200000 CALL_N=100000 WIN_N=1000000 SPAWN_N=50000 RESTART_M=2000
             RESTART_PACED_M=100 RPP_N=2000 RWIN_N=100000)
  limit="${REGEN_TIMEOUT:-600}"
else
  # local: 9 runs of the windowed tells and of the asks, ping-pong and spawn parts at
  # agent-bench's default sizes (--asks 100000 --pingpong 1000000 --spawns 100000
  # --spawn-window 1000): ~1.5 min on a 2-core VM
  a_local=(--messages 2000000 --runs 9)
  a_remote=(--runs 5)
  a_durable=(--runs 3)
  a_density=(--live 1000000 --passivated 10000000)  # the goals' sizes (issue #8)
  a_gateway=(--runs 3 --seconds 3 --rate-seconds 10)
  a_replicated=(--runs 3 --seconds 3)
  a_workflow=(--runs 5)
  a_migration_pause=(--moves 100)  # (a p99 of 100 moves is the 99th; of 30, the largest)
  a_failover_time=(--kills 20 --seed 1)
  a_cluster_down=(--kills 20 --seed 1)
  peers_env=(RUNS=5)
  limit="${REGEN_TIMEOUT:-2700}"
fi

bench_help="$("$bench_bin" --help 2>&1 || true)"
has_subcommand() { grep -qE "^[[:space:]]+$1([[:space:]]|$)" <<< "$bench_help"; }
# An agent-bench from before local's asks, ping-pong and spawn parts: without their options.
if [[ $mode == quick ]] && ! "$bench_bin" local --help 2>&1 | grep -q -- '--asks'; then
  warn "agent-bench local has no --asks/--pingpong/--spawns (an older build): windowed tells only"
  # shellcheck disable=SC2034  # read through ${!args_var}
  a_local=(--messages 200000 --runs 2)
fi

peers_dir="${HIVE_PEERS_DIR:-$repo/../shared/peers}"

steps=()
for s in "${all_steps[@]}"; do
  if selected "$s"; then
    steps+=("$s")
  else
    printf '%s\tskipped\t0\t-\t\tnot selected (--only %s)\n' "$s" "$only" >> "$status_file"
  fi
done
total=${#steps[@]}
step=0
failed=0

record() { # record NAME STATUS SECONDS RC COMMAND NOTE
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6//$'\t'/ }" >> "$status_file"
}
skip() { # skip NAME REASON
  step=$((step + 1))
  say "[$step/$total] $1: skipped: $2 (elapsed $(elapsed))"
  record "$1" skipped 0 - "" "$2"
}
show() { # the command as one shell line, paths relative to the repository
  local s="" a
  for a in "$@"; do s+="$(q "${a//"$repo"\//}") "; done
  printf '%s' "${s% }"
}
# run NAME JSON_FILE COMMAND...: one scenario with a time limit, its output in logs/NAME.log.
run() {
  local name="$1" json="$2"; shift 2
  step=$((step + 1))
  local log="$out/logs/$name.log" t0 rc=0 secs status note="" cmdline
  cmdline="$(show "$@")"
  say "[$step/$total] $name: $cmdline (elapsed $(elapsed))"
  t0=$(date +%s)
  set +e
  if [[ $verbose -eq 1 ]]; then
    timeout -k 30 "$limit" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
  else
    timeout -k 30 "$limit" "$@" > "$log" 2>&1
    rc=$?
  fi
  set -e
  secs=$(( $(date +%s) - t0 ))
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    status=timeout; note="stopped after the ${limit} s limit (REGEN_TIMEOUT)"
  elif [[ $rc -ne 0 ]]; then
    status=failed; note="exit status $rc"
  elif [[ -n "$json" && ! -s "$json" ]]; then
    status=failed; note="exit status 0 but no JSON written"
  else
    status=ok
  fi
  [[ -n "$json" && -s "$json" && $status != ok ]] && note+="; JSON written anyway"
  record "$name" "$status" "$secs" "$rc" "$cmdline" "$note"
  if [[ $status == ok ]]; then
    say "[$step/$total] $name: done in $(hms "$secs")"
  else
    failed=$((failed + 1))
    warn "[$step/$total] $name: $status ($note) after $(hms "$secs"); last lines of ${log#"$repo"/}:"
    tail -n 15 "$log" | sed 's/^/    /' >&2
  fi
}

trap 'warn "interrupted after $(elapsed); partial results in $rel_out (python3 bench/report.py $rel_out renders them)"; exit 130' INT TERM

say "$mode run of ${total} steps into $rel_out"
for s in "${steps[@]}"; do
  more_var="REGEN_ARGS_${s^^}"
  read -r -a more <<< "${!more_var:-}"
  case "$s" in
    local|remote|durable|density|gateway|replicated|workflow)
      if ! has_subcommand "$s"; then
        skip "$s" "agent-bench has no '$s' subcommand (agent-bench --help)"
        continue
      fi
      args_var="a_${s}[@]"
      args=("${!args_var}")
      run "$s" "$out/$s.json" "$bench_bin" "$s" "${args[@]}" "${more[@]}" --json "$out/$s.json"
      ;;
    migration_pause|failover_time|cluster_down)
      args_var="a_${s}[@]"
      args=("${!args_var}")
      run "$s" "$out/$s.json" python3 "bench/$s.py" --node "$node_bin" "${args[@]}" "${more[@]}" \
        --json "$out/$s.json"
      ;;
    peers)
      if [[ $peers_on -eq 0 ]]; then
        skip peers "--no-peers"
      elif [[ ! -f "$peers_dir/run_all.sh" ]]; then
        skip peers "$peers_dir/run_all.sh not found (set HIVE_PEERS_DIR): no Erlang or raw-CAF peer figures"
      elif ! command -v erl >/dev/null 2>&1 || ! command -v erlc >/dev/null 2>&1; then
        skip peers "erl not found (Debian package erlang-nox): no Erlang or raw-CAF peer figures"
      else
        run peers "$out/peers/raw.txt" env "${peers_env[@]}" "OUT=$out/peers" \
          bash "$peers_dir/run_all.sh" local remote
      fi
      ;;
  esac
done
trap - INT TERM

{
  echo "finished_utc: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "elapsed: $(elapsed)"
  echo "load_end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >> "$out/run.txt"

# --- 4. the report ----------------------------------------------------------------------------------
say "writing bench/RESULTS.md and bench/charts/ (elapsed $(elapsed))"
report_rc=0
python3 bench/report.py "$out" --out bench/RESULTS.md --charts bench/charts || report_rc=$?
say "steps:"
awk -F'\t' '!/^#/ {printf "    %-16s %-8s %6s s  %s\n", $1, $2, $3, $6}' "$status_file"
say "done in $(elapsed): bench/RESULTS.md from $rel_out"
if [[ $failed -gt 0 || $report_rc -ne 0 ]]; then
  warn "$failed step(s) failed$([[ $report_rc -ne 0 ]] && echo ", report.py exited $report_rc")"
  exit 1
fi
