#!/usr/bin/env bash
# bench_report.sh ROOT: bench/report.py turns a results directory into RESULTS.md, and fails
# clearly on bad input.
#
# Feeds it the fixture tests/checks/fixtures/bench-results/ (small JSON files of the shapes
# agent-bench and bench/*.py write, a peers/raw.txt, status.tsv, run.txt, machine.txt) and
# checks the output: the run header, a table per scenario, the ratios vs raw CAF and Erlang,
# the goal verdicts (met / NOT met / not at goal scale), the peers' appendix. Then:
#   - without gnuplot (--gnuplot pointing at nothing) it still writes the report, says the
#     charts were skipped, exits 0; with --require-charts it exits non-zero;
#   - a scenario whose JSON is missing is listed as not run, with the reason from status.tsv,
#     and its goals as not measured;
#   - a truncated JSON file and a JSON file without a needed field each give an error naming
#     the file (and the field) and a non-zero exit;
#   - a results directory that does not exist: non-zero exit.
# When gnuplot is installed it also renders the charts and checks the PNGs exist and are linked.
# Needs python3 only.
set -uo pipefail

root="${1:-}"
[[ -n "$root" && -d "$root" ]] || { echo "usage: bench_report.sh REPO_ROOT" >&2; exit 2; }
root="$(cd "$root" && pwd)"

fail() { echo "bench_report: FAILED: $*${tmp:+ (files kept in $tmp)}"; exit 1; }

command -v python3 >/dev/null 2>&1 || fail "python3 not found (Debian package python3)"
report="$root/bench/report.py"
fixture="$root/tests/checks/fixtures/bench-results"
[[ -f "$report" ]] || fail "bench/report.py is missing"
[[ -d "$fixture" ]] || fail "the fixture $fixture is missing"

tmp="$(mktemp -d)"

# has FILE TEXT...: every TEXT (fixed string) is in FILE.
has() {
  local f="$1" t; shift
  for t in "$@"; do
    grep -qF -- "$t" "$f" || fail "$(basename "$f") lacks '$t' (output: $f)"
  done
}

# --- 1. the fixture, without gnuplot -------------------------------------------------------------
out="$tmp/ok/RESULTS.md"
python3 "$report" "$fixture" --out "$out" --charts "$tmp/ok/charts" --gnuplot /nonexistent/gnuplot \
  > "$tmp/ok.stdout" 2> "$tmp/ok.stderr"
rc=$?
[[ $rc -eq 0 ]] || fail "report.py on the fixture exited $rc: $(cat "$tmp/ok.stderr")"
[[ -s "$out" ]] || fail "report.py wrote no $out"
has "$tmp/ok.stderr" "charts skipped" "gnuplot not found"
has "$out" \
  "# Benchmark results" "[HISTORY.md](HISTORY.md)" \
  "| Command | \`bash bench/regen.sh --out /tmp/fixture\` |" \
  "| Commit | 0123abc" "2 cores (AMD EPYC 9R14 (fixture))" "Debian GNU/Linux 12" \
  "Charts: not rendered: gnuplot not found" \
  "## Goals" "| issue | goal | this run | verdict |" \
  "| #2 | local tell by id >= 0.8x raw CAF | 0.75x (1,027,389 vs 1,374,019 msgs/s) | **NOT met** |" \
  "| #3 | durable: >= 50,000 acks/s at 256 writers with p99 < 10 ms | 52,107 acks/s, p99 14.41 ms | **NOT met** |" \
  "| #4 | cross-node ask p50 <= Erlang's round trip | 78.0 vs 51.5 us (1.51x) | **NOT met** |" \
  "| #4 | cross-node windowed throughput >= 1.5x Erlang's | 263,876 vs 197,463 msgs/s (1.34x) | **NOT met** |" \
  "| #4 | migration pause p99 < 5 ms at 64 KiB | p99 13.00 ms" \
  "| #4 | kill -9 to down on every survivor p99 < 1 s | p99 19.80 ms over 20 kills | **met** |" \
  "| #5 | failover: kill -9 to the first answer p99 < 2 s | p99 15.80 ms over 5 kills | **met** |" \
  "| #6 | gateway: >= 50,000 asks/s over the binary protocol (1 in flight per connection) | 83,506 asks/s at 16 connections | **met** |" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS | 1,000,000 agents, 1.50 GiB | **met** |" \
  "| #8 | >= 10,000,000 passivated agents on one node's disk | 2,000,000 agents" "not at goal scale" \
  "| way | median msgs/s | min..max | vs raw CAF (same process) | vs Erlang window |" \
  "| hive by id | 1,027,389 | 1,004,413..1,028,136 | 0.75x | 0.18x |" \
  "| Erlang \`window\` (2 schedulers) (peers, n=2) | 5,700,000 |" \
  "| **hive** | 78.0 | 170 | 55,609 | 263,876 |" \
  "| hive / raw CAF (agent-bench) | 0.50x | | 1.03x | 2.22x |" \
  "| hive / Erlang | 1.51x | | | 1.34x |" \
  "| 256 | 52,107 | 4.50 | 14.41 |" \
  "| binary | 16 | 1 | 83,506 | 0.179 | 0.413 | 0 |" \
  "Binary vs HTTP, one ask in flight per connection: 1.39x (1 connection), 1.56x (16 connections)." \
  "R=3 vs R=1, median acks/s: 0.68x (1 writer), 0.58x (16 writers)." \
  "| workflow vs direct | 0.06x |" \
  "| 64 KiB | 9.33 | 13.00 |" \
  "Passivated agents: 2,000,000 created" \
  "## Appendix: the peers' own summary" "### Default configurations"
grep -q "QUICK RUN" "$out" && fail "a full run's report says QUICK RUN"
grep -q "Errors while reading" "$out" && fail "the fixture's report lists errors"
grep -q '!\[' "$out" && fail "the report links charts although none were rendered"

# --- 2. --require-charts without gnuplot fails ------------------------------------------------------
python3 "$report" "$fixture" --out "$tmp/req/RESULTS.md" --charts "$tmp/req/charts" \
  --gnuplot /nonexistent/gnuplot --require-charts > /dev/null 2> "$tmp/req.stderr"
rc=$?
[[ $rc -ne 0 ]] || fail "--require-charts without gnuplot exited 0"
has "$tmp/req.stderr" "--require-charts"

# --- 3. a missing scenario: not run, with the reason; a quick run says so ---------------------------
cp -r "$fixture" "$tmp/missing"
rm "$tmp/missing/density.json" "$tmp/missing/peers/raw.txt"
sed -i 's/^density\tok\t60\t0\t/density\tskipped\t0\t-\t/; s/^\(density\t.*\t\)$/\1agent-bench has no density subcommand/' \
  "$tmp/missing/status.tsv"
sed -i 's/^mode: full$/mode: quick/' "$tmp/missing/run.txt"
python3 "$report" "$tmp/missing" --out "$tmp/missing/RESULTS.md" --no-charts > /dev/null 2>&1 \
  || fail "report.py failed on a results directory without density.json"
has "$tmp/missing/RESULTS.md" "QUICK RUN" \
  "Not run: agent-bench has no density subcommand." \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS | no figures (\`density.json\` missing) | not measured |" \
  "| #4 | cross-node ask p50 <= Erlang's round trip | hive 78.0 us; Erlang not measured | not measured" \
  "| **met** (quick run) |" "Erlang and raw-CAF peers: not in this run"

# --- 4. malformed input fails clearly ---------------------------------------------------------------
cp -r "$fixture" "$tmp/bad"
head -c 200 "$fixture/local.json" > "$tmp/bad/local.json"
python3 "$report" "$tmp/bad" --out "$tmp/bad/RESULTS.md" --no-charts > /dev/null 2> "$tmp/bad.stderr"
rc=$?
[[ $rc -ne 0 ]] || fail "a truncated local.json gave exit status 0"
has "$tmp/bad.stderr" "local.json: not valid JSON"
has "$tmp/bad/RESULTS.md" "Errors while reading" "**Not reported:" \
  "| #2 | local tell by id >= 0.8x raw CAF | \`local.json\` unreadable (see Errors) | not measured |"

cp -r "$fixture" "$tmp/field"
python3 - "$tmp/field/durable.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
del d["writers"][2]["median"]["p99_ms"]
json.dump(d, open(sys.argv[1], "w"))
EOF
python3 "$report" "$tmp/field" --out "$tmp/field/RESULTS.md" --no-charts > /dev/null \
  2> "$tmp/field.stderr"
rc=$?
[[ $rc -ne 0 ]] || fail "a durable.json without p99_ms gave exit status 0"
has "$tmp/field.stderr" "durable.json: field 'p99_ms' is missing" "agent-bench durable"

echo '[1, 2]' > "$tmp/field/remote.json"
python3 "$report" "$tmp/field" --out "$tmp/field/RESULTS.md" --no-charts > /dev/null \
  2> "$tmp/field.stderr" && fail "a remote.json holding a list gave exit status 0"
has "$tmp/field.stderr" "remote.json: expected a JSON object"

python3 "$report" "$tmp/does-not-exist" --out "$tmp/x.md" --no-charts > /dev/null \
  2> "$tmp/nodir.stderr" && fail "a missing results directory gave exit status 0"
has "$tmp/nodir.stderr" "does-not-exist' does not exist"

# --- 5. charts, when gnuplot is installed ------------------------------------------------------------
if command -v gnuplot >/dev/null 2>&1; then
  cp -r "$fixture" "$tmp/chartsrc"  # the .gp scripts go to the results directory's charts/
  python3 "$report" "$tmp/chartsrc" --out "$tmp/charts/RESULTS.md" --charts "$tmp/charts/png" \
    --require-charts > /dev/null 2> "$tmp/charts.stderr" \
    || fail "rendering the fixture's charts failed: $(cat "$tmp/charts.stderr")"
  for c in local-throughput remote-throughput remote-latency durable-throughput durable-latency \
           gateway-throughput gateway-latency replicated-throughput workflow-throughput \
           density-footprint migration_pause-latency cluster_down-latency failover_time-latency; do
    [[ -s "$tmp/charts/png/$c.png" ]] || fail "chart $c.png was not rendered"
    has "$tmp/charts/RESULTS.md" "![$c](png/$c.png)"
  done
  [[ -s "$tmp/chartsrc/charts/local-throughput.gp" ]] || fail "no gnuplot script local-throughput.gp"
else
  echo "bench_report: gnuplot not installed: chart rendering not checked"
fi

rm -rf "$tmp"
echo "bench_report: OK"
