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
#   - local: the asks, ping-pong and spawn parts next to raw CAF and the peers' Erlang call,
#     pingpong (round trips/s, doubled to messages/s) and spawn; a local.json without them (an
#     older run) or without one still renders; a part lacking a field or with another unit is
#     an error; a peer figure in a unit that does not convert gets no ratio;
#   - density: the live table's two rows (actor running; hibernated: actor released, state in
#     memory) and report.py's own verdicts for the two live goals (actors running, hibernated)
#     and the passivated one: each is broken once (below goal scale, RSS at 2 GiB, a failed
#     check, agents not all live, a part not run); a density.json without 'live_hibernated'
#     (an older run) still renders and says "not measured"; --no-charts leaves the charts
#     directory alone;
#   - remote: with the agent-to-agent way (`hive_agent_to_agent`) its row is shown and the ask
#     goal is judged on it (met and not met); without it (an older run) on the plain ask;
#   - "scenario" in a JSON file is optional, but a wrong one is an error;
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
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, actors running | 1,000,000 agents, total RSS 3,600 MiB (goal < 2,048 MiB) | **NOT met** |" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | 1,000,000 agents (1,000,000 hibernated, 0 actors running), total RSS 1,689 MiB (goal < 2,048 MiB) | **met** |" \
  "| #8 | >= 10,000,000 passivated agents on one node's disk | 10,000,000 agents, 1.13 GiB on disk, check after a restart OK | **met** |" \
  "| way | median msgs/s | min..max | vs raw CAF (same process) | vs Erlang window |" \
  "| hive by id | 1,027,389 | 1,004,413..1,028,136 | 0.75x | 0.18x |" \
  "| Erlang \`window\` (2 schedulers) (peers, n=2) | 5,700,000 |" \
  "### Asks, ping-pong and spawns" \
  "| part | unit | hive median | raw CAF median | hive / raw CAF | Erlang (peers) | hive / Erlang |" \
  "| asks by id | round trips/s | 368,250 | 1,002,331 | 0.37x | 770,000 (\`call\`, n=2) | 0.48x |" \
  "| ping-pong by id | messages/s | 680,942 | 2,418,668 | 0.28x | 5,200,000 (\`pingpong\` 2,600,000 round trips/s x 2, n=2) | 0.13x |" \
  "| spawn + stop | spawns/s | 47,593 | 123,529 | 0.39x | 490,000 (\`spawn\`, n=2) | 0.10x |" \
  "ours counts messages/s, so its figure is doubled here" \
  "(100,000 spawns per run, at most 1,000 alive)" \
  "| hive (ask by id) | 1.9 | 23.2 |" "| raw CAF (\`request(...).then(...)\`) | 0.9 | 0.9 |" \
  "| hive / raw CAF | 2.17x | 24.88x |" \
  "| Erlang \`gen_server:call\` (peers; mean = 1 / round trips per second) | 1.3 (mean) | |" \
  "| **hive** | 78.0 | 170 | 55,609 | 263,876 |" \
  "| hive / raw CAF (agent-bench) | 0.50x | | 1.03x | 2.22x |" \
  "| hive / Erlang | 1.51x | | | 1.34x |" \
  "| 256 | 52,107 | 4.50 | 14.41 |" \
  "| binary | 16 | 1 | 83,506 | 0.179 | 0.413 | 0 |" \
  "Binary vs HTTP, one ask in flight per connection: 1.39x (1 connection), 1.56x (16 connections)." \
  "R=3 vs R=1, median acks/s: 0.68x (1 writer), 0.58x (16 writers)." \
  "| workflow vs direct | 0.06x |" \
  "| 64 KiB | 9.33 | 13.00 |" \
  "| live idle agents | agents | actors running | hibernated | total RSS MiB | RSS bytes/agent | heap bytes/agent | created/s | get p50 / p99 ms | check |" \
  "| live, actor running | 1,000,000 | 1,000,000 | 0 | 3,600 | 3,712 | 3,350 | 20,534 | 0.041 / 0.187 | OK (1,000 read back) |" \
  "| live, hibernated (actor released, state in memory) | 1,000,000 | 0 | 1,000,000 | 1,689 | 1,698 | 1,391 | 19,084 | 0.112 / 0.391 | OK (1,000 read back) |" \
  "\`agents.hibernate_idle_ms\` = 1,000 ms" \
  "| passivated agents | disk GiB | disk bytes/agent | created/s | activation p50 / p99 ms after restart | check |" \
  "| 10,000,000 | 1.13 | 121 | 19,520 | 0.212 / 1.84 | OK (1,000 read back) |" \
  "(30 MiB before the runtime started; the hibernated part runs in the same process after the other was stopped)" "4.8 s after the last; process RSS then 2,480 MiB" \
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
python3 "$report" "$tmp/missing" --out "$tmp/missing/RESULTS.md" --charts "$tmp/nc" --no-charts > /dev/null 2>&1 \
  || fail "report.py failed on a results directory without density.json"
has "$tmp/missing/RESULTS.md" "QUICK RUN" \
  "Not run: agent-bench has no density subcommand." \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, actors running | no figures (\`density.json\` missing) | not measured |" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | no figures (\`density.json\` missing) | not measured |" \
  "| #4 | cross-node ask p50 <= Erlang's round trip | hive 78.0 us; Erlang not measured | not measured" \
  "| **met** (quick run) |" "Erlang and raw-CAF peers: not in this run" \
  "| asks by id | round trips/s | 368,250 | 1,002,331 | 0.37x | n/a | n/a |" \
  "- spawn + stop: Erlang not measured in this run"

# --- 3b. density: the goals are judged by report.py from the figures ----------------------------
# (not by the JSON's goal_met): below goal scale is not met, RSS at 2 GiB is not met, a failed
# check is not met, agents missing from the directory is not met, a part not run is not
# measured; each live goal (actors running, hibernated) is broken on its own while the other
# keeps its verdict; and --no-charts leaves an existing chart directory alone.
density() { # density NAME PYTHON: a copy of the fixture whose density.json PYTHON edits (as d)
  cp -r "$fixture" "$tmp/$1"
  python3 - "$tmp/$1/density.json" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
exec(sys.argv[2])
json.dump(d, open(sys.argv[1], "w"))
EOF
  mkdir -p "$tmp/$1/png" && echo keep > "$tmp/$1/png/density-footprint.png"
  python3 "$report" "$tmp/$1" --out "$tmp/$1/RESULTS.md" --charts "$tmp/$1/png" --no-charts \
    > /dev/null 2> "$tmp/$1.stderr"
}
density small 'd["live"].update(agents=20000, live_after=20000, rss_bytes=150*2**20, goal_met=True)
d["live_hibernated"].update(agents=20000, live_after=20000, hibernated=20000.0, rss_bytes=110*2**20)
d["passivated"].update(agents=50000, disk_bytes=6100000, disk_bytes_per_agent=122.0)' \
  || fail "report.py failed on a small density.json: $(cat "$tmp/small.stderr")"
has "$tmp/small/RESULTS.md" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, actors running | 20,000 agents, total RSS 150 MiB (goal < 2,048 MiB); at 3,712 bytes each, 1,000,000 would add 3.46 GiB | **NOT met** (not at goal scale: 20,000 < 1,000,000 agents) |" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | 20,000 agents (20,000 hibernated, 0 actors running), total RSS 110 MiB (goal < 2,048 MiB); at 1,698 bytes each, 1,000,000 would add 1.58 GiB | **NOT met** (not at goal scale: 20,000 < 1,000,000 agents) |" \
  "| #8 | >= 10,000,000 passivated agents on one node's disk | 50,000 agents, 0.01 GiB on disk, check after a restart OK; 10,000,000 would take 1.14 GiB | **NOT met** (not at goal scale: 50,000 < 10,000,000 agents) |"
grep -qx keep "$tmp/small/png/density-footprint.png" 2> /dev/null \
  || fail "report.py --no-charts removed a PNG from the charts directory"
density lean 'd["live"].update(rss_bytes=1900*2**20, rss_bytes_per_agent=1950.0, goal_met=False)
d["passivated"].update(check_failures=3, goal_met=True); d["ok"] = False' \
  || fail "report.py failed on a density.json with check failures: $(cat "$tmp/lean.stderr")"
has "$tmp/lean/RESULTS.md" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, actors running | 1,000,000 agents, total RSS 1,900 MiB (goal < 2,048 MiB) | **met** |" \
  "| #8 | >= 10,000,000 passivated agents on one node's disk | 10,000,000 agents, 1.13 GiB on disk, check after a restart FAILED (3 of 1,000) | **NOT met** |" \
  "| 10,000,000 | 1.13 | 121 | 19,520 | 0.212 / 1.84 | **FAIL** (3 of 1,000 read back wrong) |" \
  "reported a failed check"
# The running row met on its RSS, then broken by one failed check; the hibernated row broken
# by a failed check, by RSS at exactly 2 GiB, and by agents missing from the directory.
density runfail 'd["live"].update(rss_bytes=1900*2**20, check_failures=1); d["ok"] = False' \
  || fail "report.py failed on a density.json with a live check failure: $(cat "$tmp/runfail.stderr")"
has "$tmp/runfail/RESULTS.md" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, actors running | 1,000,000 agents, total RSS 1,900 MiB (goal < 2,048 MiB), check FAILED (1 of 1,000 read back wrong) | **NOT met** |" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | 1,000,000 agents (1,000,000 hibernated, 0 actors running), total RSS 1,689 MiB (goal < 2,048 MiB) | **met** |" \
  "| live, actor running | 1,000,000 | 1,000,000 | 0 | 1,900 | 3,712 | 3,350 | 20,534 | 0.041 / 0.187 | **FAIL** (1 of 1,000 read back wrong; 1,000,000 of 1,000,000 live) |"
density hibfail 'd["live_hibernated"].update(check_failures=2); d["ok"] = False' \
  || fail "report.py failed on a density.json with a hibernated check failure: $(cat "$tmp/hibfail.stderr")"
has "$tmp/hibfail/RESULTS.md" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, actors running | 1,000,000 agents, total RSS 3,600 MiB (goal < 2,048 MiB) | **NOT met** |" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | 1,000,000 agents (1,000,000 hibernated, 0 actors running), total RSS 1,689 MiB (goal < 2,048 MiB), check FAILED (2 of 1,000 read back wrong) | **NOT met** |" \
  "| live, hibernated (actor released, state in memory) | 1,000,000 | 0 | 1,000,000 | 1,689 | 1,698 | 1,391 | 19,084 | 0.112 / 0.391 | **FAIL** (2 of 1,000 read back wrong; 1,000,000 of 1,000,000 live) |"
density hibrss 'd["live_hibernated"].update(rss_bytes=2*2**30, goal_met=False)' \
  || fail "report.py failed on a density.json with hibernated RSS at 2 GiB: $(cat "$tmp/hibrss.stderr")"
has "$tmp/hibrss/RESULTS.md" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | 1,000,000 agents (1,000,000 hibernated, 0 actors running), total RSS 2,048 MiB (goal < 2,048 MiB) | **NOT met** |"
density hibgone 'd["live_hibernated"].update(live_after=999000)' \
  || fail "report.py failed on a density.json with hibernated agents missing: $(cat "$tmp/hibgone.stderr")"
has "$tmp/hibgone/RESULTS.md" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | 1,000,000 agents (1,000,000 hibernated, 0 actors running), total RSS 1,689 MiB (goal < 2,048 MiB), only 999,000 of 1,000,000 live | **NOT met** |"
# An older run: no 'live_hibernated', and 'live' without its hibernation fields.
density oldlive 'del d["live_hibernated"]
for k in ("hibernate_idle_ms", "actors_running", "hibernated"): del d["live"][k]' \
  || fail "report.py failed on a density.json without 'live_hibernated': $(cat "$tmp/oldlive.stderr")"
has "$tmp/oldlive/RESULTS.md" \
  "| live, actor running | 1,000,000 | n/a | n/a | 3,600 | 3,712 | 3,350 | 20,534 | 0.041 / 0.187 | OK (1,000 read back) |" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, actors running | 1,000,000 agents, total RSS 3,600 MiB (goal < 2,048 MiB) | **NOT met** |" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | not run (no 'live_hibernated' part in the JSON: \`--live 0\`, \`--hibernate-idle-ms 0\`, or an agent-bench from before hibernation) | not measured |" \
  "- live, hibernated (actor released, state in memory): not run (no 'live_hibernated' part"
grep -q "| live, hibernated" "$tmp/oldlive/RESULTS.md" && fail "a density.json without 'live_hibernated' has a hibernated row"
grep -q "Errors while reading" "$tmp/oldlive/RESULTS.md" && fail "a density.json without 'live_hibernated' gave errors"
density nohibfield 'del d["live_hibernated"]["rss_bytes"]' \
  && fail "a density.json without live_hibernated.rss_bytes gave exit status 0"
has "$tmp/nohibfield.stderr" "density.json: field 'rss_bytes' is missing" "agent-bench density"
has "$tmp/nohibfield/RESULTS.md" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor released, state in memory) | \`density.json\` unreadable (see Errors) | not measured |"
density nopas 'del d["passivated"]' \
  || fail "report.py failed on a density.json without 'passivated': $(cat "$tmp/nopas.stderr")"
has "$tmp/nopas/RESULTS.md" "| live, actor running | 1,000,000 | 1,000,000 | 0 | 3,600 |" \
  "| #8 | >= 10,000,000 passivated agents on one node's disk | not run (\`--passivated 0\`: no 'passivated' part in the JSON) | not measured |"
density nofield 'del d["live"]["heap_bytes_per_agent"]' \
  && fail "a density.json without live.heap_bytes_per_agent gave exit status 0"
has "$tmp/nofield.stderr" "density.json: field 'heap_bytes_per_agent' is missing" "agent-bench density"
has "$tmp/nofield/RESULTS.md" \
  "| #8 | >= 1,000,000 live idle agents under 2 GiB RSS, actors running | \`density.json\` unreadable (see Errors) | not measured |"

# --- 3c. "scenario": optional (files written before it have none), a wrong one is an error -------
cp -r "$fixture" "$tmp/scen"
python3 - "$tmp/scen" <<'EOF'
import json, os, sys
for name in ("migration_pause", "failover_time"):  # as the scripts wrote them before
    p = os.path.join(sys.argv[1], name + ".json")
    d = json.load(open(p)); del d["scenario"]; json.dump(d, open(p, "w"))
p = os.path.join(sys.argv[1], "cluster_down.json")
d = json.load(open(p)); d["scenario"] = "failover_time"; json.dump(d, open(p, "w"))
EOF
python3 "$report" "$tmp/scen" --out "$tmp/scen/RESULTS.md" --charts "$tmp/nc" --no-charts \
  > /dev/null 2> "$tmp/scen.stderr" && fail "a cluster_down.json of scenario failover_time gave exit status 0"
has "$tmp/scen.stderr" "cluster_down.json: field 'scenario' is \"failover_time\", expected \"cluster_down\""
has "$tmp/scen/RESULTS.md" "| #4 | migration pause p99 < 5 ms at 64 KiB | p99 13.00 ms" \
  "| #5 | failover: kill -9 to the first answer p99 < 2 s | p99 15.80 ms over 5 kills | **met** |"

# --- 3c2. migration_pause: moves holding calls (optional: files written before it have none) ----
cp -r "$fixture" "$tmp/mig"
python3 - "$tmp/mig/migration_pause.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["results"]:
    r["moves_holding_calls"] = 24
json.dump(d, open(sys.argv[1], "w"))
EOF
python3 "$report" "$tmp/mig" --out "$tmp/mig/RESULTS.md" --charts "$tmp/nc" --no-charts \
  > /dev/null 2> "$tmp/mig.stderr" || fail "report.py on a migration_pause.json with moves_holding_calls failed: $(cat "$tmp/mig.stderr")"
has "$tmp/mig/RESULTS.md" "| 64 KiB | 9.33 | 13.00 |" "| 24 of 30 |"
has "$out" "| 64 KiB | 9.33 | 13.00 |" "| - |"

# --- 3d. local: the asks, ping-pong and spawn parts are optional (local.json of older runs) ----
local_json() { # local_json NAME PYTHON: a copy of the fixture whose local.json PYTHON edits (as d)
  cp -r "$fixture" "$tmp/$1"
  python3 - "$tmp/$1/local.json" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
exec(sys.argv[2])
json.dump(d, open(sys.argv[1], "w"))
EOF
  python3 "$report" "$tmp/$1" --out "$tmp/$1/RESULTS.md" --charts "$tmp/$1/png" \
    --gnuplot /nonexistent/gnuplot > /dev/null 2> "$tmp/$1.stderr"
}
local_json oldlocal 'del d["asks"], d["pingpong"], d["spawn"]' \
  || fail "report.py failed on a local.json without asks, pingpong and spawn: $(cat "$tmp/oldlocal.stderr")"
has "$tmp/oldlocal/RESULTS.md" "| hive by id | 1,027,389 | 1,004,413..1,028,136 | 0.75x | 0.18x |" \
  "| #2 | local tell by id >= 0.8x raw CAF | 0.75x (1,027,389 vs 1,374,019 msgs/s) | **NOT met** |"
grep -qE "Asks, ping-pong|asks by id|Errors while reading" "$tmp/oldlocal/RESULTS.md" \
  && fail "a local.json without the parts still shows them or an error ($tmp/oldlocal/RESULTS.md)"
local_json nospawn 'del d["spawn"]' \
  || fail "report.py failed on a local.json without spawn: $(cat "$tmp/nospawn.stderr")"
has "$tmp/nospawn/RESULTS.md" "| ping-pong by id | messages/s | 680,942 |" \
  "- spawn + stop: not run (no 'spawn' part in \`local.json\`)."
grep -q "| spawn + stop |" "$tmp/nospawn/RESULTS.md" && fail "a local.json without spawn has a spawn row"
local_json nomedian 'del d["pingpong"]["median"]["hive"]' \
  && fail "a local.json without pingpong.median.hive gave exit status 0"
has "$tmp/nomedian.stderr" "local.json: field 'pingpong.median.hive' is missing" "agent-bench local"
local_json badunit 'd["pingpong"]["unit"] = "round trips/s"' \
  && fail "a local.json whose pingpong unit is round trips/s gave exit status 0"
has "$tmp/badunit.stderr" "local.json: field 'pingpong.unit' is \"round trips/s\", expected \"messages/s\""
# A peer figure in a unit that does not convert: shown, but no ratio.
cp -r "$fixture" "$tmp/peerunit"
sed -i 's/^\(RAW [12] local_spawn erlang default [0-9]*\) spawns\/s$/\1 procs\/s/' "$tmp/peerunit/peers/raw.txt"
python3 "$report" "$tmp/peerunit" --out "$tmp/peerunit/RESULTS.md" --charts "$tmp/nc" --no-charts \
  > /dev/null 2>&1 || fail "report.py failed on a peers/raw.txt with an unknown unit"
has "$tmp/peerunit/RESULTS.md" "| spawn + stop | spawns/s | 47,593 | 123,529 | 0.39x | (490,000 procs/s: not in spawns/s) | n/a |"

# --- 4. malformed input fails clearly ---------------------------------------------------------------
cp -r "$fixture" "$tmp/bad"
head -c 200 "$fixture/local.json" > "$tmp/bad/local.json"
python3 "$report" "$tmp/bad" --out "$tmp/bad/RESULTS.md" --charts "$tmp/nc" --no-charts > /dev/null 2> "$tmp/bad.stderr"
rc=$?
[[ $rc -ne 0 ]] || fail "a truncated local.json gave exit status 0"
has "$tmp/bad.stderr" "local.json: not valid JSON"
has "$tmp/bad/RESULTS.md" "Errors while reading" "**Not reported:" \
  "| #2 | local tell by id >= 0.8x raw CAF | \`local.json\` unreadable (see Errors) | not measured |"

# --- 3b. remote.json with the agent-to-agent way: its row, and the goal judged on it --------------
# (The fixture's remote.json is an older run without it: the goal line above is the plain one.)
cp -r "$fixture" "$tmp/a2a"
python3 - "$tmp/a2a/remote.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
d["hive_agent_to_agent"] = {"p50_us": 43.0, "p99_us": 105.0, "mean_us": 47.0}
json.dump(d, open(sys.argv[1], "w"))
EOF
python3 "$report" "$tmp/a2a" --out "$tmp/a2a/RESULTS.md" --charts "$tmp/nc" --no-charts > /dev/null 2>&1 \
  || fail "report.py failed on a remote.json with hive_agent_to_agent"
has "$tmp/a2a/RESULTS.md" \
  "| **hive, agent to agent** (a \`pinger\` agent asks the echo agent) | 43.0 (mean 47.0) | 105 | | |" \
  "| #4 | cross-node ask p50 <= Erlang's round trip | agent to agent 43.0 (mean 47.0) vs 51.5 us (0.83x); from a non-actor thread 78.0 us (1.51x) | **met** |"
python3 - "$tmp/a2a/remote.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
d["hive_agent_to_agent"]["p50_us"] = 60.0
json.dump(d, open(sys.argv[1], "w"))
EOF
python3 "$report" "$tmp/a2a" --out "$tmp/a2a/RESULTS.md" --charts "$tmp/nc" --no-charts > /dev/null 2>&1 \
  || fail "report.py failed on a remote.json with a slower hive_agent_to_agent"
has "$tmp/a2a/RESULTS.md" \
  "| #4 | cross-node ask p50 <= Erlang's round trip | agent to agent 60.0 (mean 47.0) vs 51.5 us (1.16x); from a non-actor thread 78.0 us (1.51x) | **NOT met** |"

cp -r "$fixture" "$tmp/field"
python3 - "$tmp/field/durable.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
del d["writers"][2]["median"]["p99_ms"]
json.dump(d, open(sys.argv[1], "w"))
EOF
python3 "$report" "$tmp/field" --out "$tmp/field/RESULTS.md" --charts "$tmp/nc" --no-charts > /dev/null \
  2> "$tmp/field.stderr"
rc=$?
[[ $rc -ne 0 ]] || fail "a durable.json without p99_ms gave exit status 0"
has "$tmp/field.stderr" "durable.json: field 'p99_ms' is missing" "agent-bench durable"

echo '[1, 2]' > "$tmp/field/remote.json"
python3 "$report" "$tmp/field" --out "$tmp/field/RESULTS.md" --charts "$tmp/nc" --no-charts > /dev/null \
  2> "$tmp/field.stderr" && fail "a remote.json holding a list gave exit status 0"
has "$tmp/field.stderr" "remote.json: expected a JSON object"

python3 "$report" "$tmp/does-not-exist" --out "$tmp/x.md" --charts "$tmp/nc" --no-charts > /dev/null \
  2> "$tmp/nodir.stderr" && fail "a missing results directory gave exit status 0"
has "$tmp/nodir.stderr" "does-not-exist' does not exist"

# --- 5. charts, when gnuplot is installed ------------------------------------------------------------
if command -v gnuplot >/dev/null 2>&1; then
  cp -r "$fixture" "$tmp/chartsrc"  # the .gp scripts go to the results directory's charts/
  python3 "$report" "$tmp/chartsrc" --out "$tmp/charts/RESULTS.md" --charts "$tmp/charts/png" \
    --require-charts > /dev/null 2> "$tmp/charts.stderr" \
    || fail "rendering the fixture's charts failed: $(cat "$tmp/charts.stderr")"
  for c in local-throughput local-ratios remote-throughput remote-latency durable-throughput durable-latency \
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
