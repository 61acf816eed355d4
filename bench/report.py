#!/usr/bin/env python3
"""report.py: writes bench/RESULTS.md (and PNG charts) from one results directory of
bench/regen.sh.

  python3 bench/report.py RESULTS_DIR [--out bench/RESULTS.md] [--charts bench/charts]
                          [--gnuplot PATH] [--no-charts] [--require-charts]
  python3 bench/report.py --machine        # print the machine facts (regen.sh stores them)

RESULTS_DIR holds what regen.sh wrote:
  run.txt          "key: value" lines: command, mode, start/end, git commit, load average
  machine.txt      "key: value" lines from `report.py --machine` at the start of the run
  status.tsv       one line per scenario: name, status (ok|failed|timeout|skipped), seconds,
                   exit code, the command, a note (tab-separated)
  <scenario>.json  the --json output of each scenario: local, remote, durable, gateway,
                   replicated, workflow, density (agent-bench), migration_pause, failover_time,
                   cluster_down (bench/*.py); a "scenario" field, when there, must name the
                   file's scenario (files written before the scripts had it have none)
  peers/           OUT= of ../shared/peers/run_all.sh: raw.txt, summary.md, sysinfo.txt
Every file but the JSON ones is optional (a missing one is said so in the report).

Output: RESULTS.md with the run's header (date, command, commit, machine), a table of the
issues' goals with this run's verdicts, and per scenario its medians, p50/p99 and ratios vs
raw CAF and Erlang measured in the same run. Charts: one gnuplot script per chart is written
to RESULTS_DIR/charts/ and rendered to --charts DIR/*.png, linked from RESULTS.md. Without
gnuplot (Debian package gnuplot-nox) the charts are skipped with a message, unless
--require-charts (then exit 3). --no-charts skips them on purpose.

Exit status: 0 written; 1 written, but some scenario JSON was malformed or lacked a field
(the report names the file and field, and so does stderr); 2 bad arguments or unreadable
RESULTS_DIR; 3 charts required but not rendered.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


class ReportError(Exception):
    """A results file that cannot be read as the scenario's JSON (names file and field)."""


# ------------------------------------------------------------------------------- helpers


def run_quiet(args, timeout=20):
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def read_kv(path):
    """`key: value` lines -> dict (missing file -> {})."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k.strip()] = v.strip()
    return out


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def num(v, digits=0):
    """12,345 / 12.35: thousands separators, `digits` decimals; n/a for None."""
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def plural(n, word):
    n = int(n)
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def ms(v):
    if v is None:
        return "n/a"
    if v < 1:
        return f"{v:.3f}"
    if v < 100:
        return f"{v:.2f}"
    return f"{v:,.0f}"


def us(v):
    if v is None:
        return "n/a"
    return f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def rx(r):
    return "n/a" if r is None else f"{r:.2f}x"


def gib(b):
    return f"{b / 2**30:.2f} GiB"


def size_name(b):
    if b % 2**20 == 0:
        return f"{b // 2**20} MiB"
    if b % 2**10 == 0:
        return f"{b // 2**10} KiB"
    return f"{b} B"


class Doc:
    """One scenario's JSON with typed, path-named access: errors name the file and field."""

    def __init__(self, data, file, what):
        self.data, self.file, self.what = data, file, what

    def _at(self, path):
        cur = self.data
        for part in path.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                raise ReportError(f"{self.file}: field '{path}' is missing (expected the JSON "
                                  f"of {self.what})")
        return cur

    def has(self, path):
        try:
            self._at(path)
            return True
        except ReportError:
            return False

    def num(self, path, default=...):
        if default is not ... and not self.has(path):
            return default
        v = self._at(path)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ReportError(f"{self.file}: field '{path}' should be a number, is "
                              f"{json.dumps(v)[:60]}")
        return float(v)

    def nums(self, path):
        v = self._at(path)
        if not isinstance(v, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ReportError(f"{self.file}: field '{path}' should be a list of numbers")
        return [float(x) for x in v]

    def list(self, path):
        v = self._at(path)
        if not isinstance(v, list):
            raise ReportError(f"{self.file}: field '{path}' should be a list")
        return [Doc(x, self.file, self.what) if isinstance(x, dict) else x for x in v]

    def obj(self, path):
        v = self._at(path)
        if not isinstance(v, dict):
            raise ReportError(f"{self.file}: field '{path}' should be an object")
        return Doc(v, self.file, self.what)

    def get(self, path, default=None):
        return self._at(path) if self.has(path) else default


def load_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column "
                          f"{e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read it ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object (the output of {what}), got "
                          f"{type(data).__name__}")
    return Doc(data, path, what)


# ------------------------------------------------------------------------- machine facts


def machine_facts():
    """What the header says about the machine; `report.py --machine` prints these."""
    facts = {}
    facts["date_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")
    facts["nproc"] = run_quiet(["nproc"]) or str(os.cpu_count())
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    facts["cpu"] = cpu or "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        facts["memory"] = f"{kib / 2**20:.1f} GiB"
    except (OSError, AttributeError, ValueError):
        facts["memory"] = "unknown"
    u = os.uname()
    facts["kernel"] = f"{u.sysname} {u.release} {u.machine}"
    os_name = ""
    if os.path.exists("/etc/os-release"):
        osr = {}
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    osr[k] = v.strip('"')
        os_name = osr.get("PRETTY_NAME", "")
    if os.path.exists("/etc/debian_version"):
        with open("/etc/debian_version", encoding="utf-8") as f:
            os_name += f" (debian_version {f.read().strip()})"
    facts["os"] = os_name.strip() or "unknown"
    virt = run_quiet(["systemd-detect-virt"])
    if virt:
        facts["virtualization"] = virt
    cache = os.path.join(REPO, "build", "release", "CMakeCache.txt")
    compiler, build_type = "", ""
    if os.path.exists(cache):
        with open(cache, encoding="utf-8", errors="replace") as f:
            text = f.read()
        m = re.search(r"^CMAKE_CXX_COMPILER:\w+=(.+)$", text, re.M)
        if m:
            cxx = m.group(1).strip()
            compiler = run_quiet([cxx, "--version"]).split("\n")[0]
            real = os.path.realpath(cxx)
            if compiler and os.path.basename(real) != os.path.basename(cxx):
                compiler += f" ({cxx} -> {os.path.basename(real)})"
        m = re.search(r"^CMAKE_BUILD_TYPE:\w+=(.*)$", text, re.M)
        build_type = m.group(1).strip() if m else ""
        m = re.search(r"^CMAKE_CXX_FLAGS_RELEASE:\w+=(.*)$", text, re.M)
        if build_type == "Release" and m and m.group(1).strip():
            build_type += f" `{m.group(1).strip()}`"
    if not compiler:
        compiler = run_quiet(["c++", "--version"]).split("\n")[0] or "unknown"
    facts["compiler"] = compiler + (f", build type {build_type} (build/release)"
                                    if build_type else "")
    for key, pkg in (("caf", "libcaf-dev"), ("rocksdb", "librocksdb-dev")):
        facts[key] = run_quiet(["dpkg-query", "-W", "-f=${Version}", pkg]) or "unknown"
    if shutil.which("erl"):
        facts["erlang"] = run_quiet(
            ["erl", "-noshell", "-eval",
             'io:format("OTP ~s, erts ~s", [erlang:system_info(otp_release), '
             'erlang:system_info(version)]), halt().']) or "installed (version unknown)"
    else:
        facts["erlang"] = "not installed"
    try:
        with open("/proc/loadavg", encoding="utf-8") as f:
            facts["load_average"] = " ".join(f.read().split()[:3])
    except OSError:
        facts["load_average"] = "unknown"
    return facts


# ---------------------------------------------------------------------------- the peers


class Peers:
    """../shared/peers results (raw.txt: RAW <iter> <bench> <system> <config> <value> <unit>)."""

    def __init__(self, results_dir, status):
        self.dir = os.path.join(results_dir, "peers")
        self.vals = {}
        self.units = {}  # (bench, system, config) -> the unit raw.txt gives (first seen)
        self.note = ""
        raw = os.path.join(self.dir, "raw.txt")
        st = status.get("peers")
        if os.path.exists(raw):
            with open(raw, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    p = line.split()
                    if not p or p[0] != "RAW":
                        continue
                    if len(p) < 7:
                        raise ReportError(f"{raw}: line {n} has {len(p)} fields, expected 7 "
                                          f"(RAW iter bench system config value unit)")
                    if p[5] == "NA":
                        continue
                    try:
                        v = float(p[5])
                    except ValueError:
                        raise ReportError(f"{raw}: line {n}: value '{p[5]}' is not a number") \
                            from None
                    self.vals.setdefault((p[2], p[3], p[4]), []).append(v)
                    self.units.setdefault((p[2], p[3], p[4]), p[6])
        elif st and st["status"] != "ok":
            self.note = st["note"] or f"peers {st['status']}"
        else:
            self.note = "no peers/raw.txt in the results directory (the peers were not run)"
        self.summary = os.path.join(self.dir, "summary.md")
        self.foreign = ""
        si = os.path.join(self.dir, "sysinfo.txt")
        if os.path.exists(si):
            with open(si, encoding="utf-8", errors="replace") as f:
                m = re.search(r"^\s*total\s+([\d.]+)% of one CPU", f.read(), re.M)
            if m:
                self.foreign = m.group(1)

    def med(self, bench, system, cfg="default"):
        return median(self.vals.get((bench, system, cfg), []))

    def n(self, bench, system, cfg="default"):
        return len(self.vals.get((bench, system, cfg), []))

    def why_missing(self, bench, system):
        if self.note:
            return self.note
        return f"no {system} '{bench}' figure in peers/raw.txt"

    def unit(self, bench, system, cfg="default"):
        return self.units.get((bench, system, cfg))

    def med_in(self, bench, system, unit, cfg="default"):
        """The median in `unit` (one of ours: round trips/s, messages/s, spawns/s):
        (value, factor applied, the peers' own median and unit); value None when there is
        no figure or its unit does not convert to `unit`."""
        v, u = self.med(bench, system, cfg), self.unit(bench, system, cfg)
        if v is None:
            return None, None, None, u
        f = PEER_UNIT_FACTORS.get((PEER_UNITS.get(u, u), unit))
        return (v * f if f else None), f, v, u


# The peers' units (raw.txt) in the words agent-bench uses, and how one converts to another: a
# ping-pong round trip is two messages (the ping and its pong).
PEER_UNITS = {"roundtrips/s": "round trips/s", "msgs/s": "messages/s", "spawns/s": "spawns/s"}
PEER_UNIT_FACTORS = {("round trips/s", "round trips/s"): 1, ("messages/s", "messages/s"): 1,
                     ("spawns/s", "spawns/s"): 1, ("round trips/s", "messages/s"): 2}


# ---------------------------------------------------------------------------- the charts


PALETTE = {"hive": "#1f77b4", "raw CAF": "#ff7f0e", "Erlang": "#2ca02c", "RocksDB": "#7f7f7f",
           "CAF peers": "#d62728", "other": "#9467bd"}
SERIES_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


class Chart:
    """A bar chart: groups of bars. Each bar: (label, value, color key). Rendered by gnuplot
    from a generated script with the data inline (datablocks)."""

    def __init__(self, name, title, ylabel, groups, legend=None, hline=None, log=None):
        # log: a logarithmic y axis; None = when the values span more than 200x.
        self.name, self.title, self.ylabel = name, title, ylabel
        self.groups = groups  # [(group label, [(bar label, value or None, color key)])]
        self.legend = legend  # {color key: color}; None = PALETTE keys used
        self.hline = hline    # (y, label) or None
        self.log = log

    def script(self, png, term):
        bars, labels, tics, glabels, used = [], [], [], [], []
        vals = [v for _, bs in self.groups for _, v, _ in bs if v is not None and v > 0]
        auto = bool(vals) and max(vals) / min(vals) > 200
        log = bool(vals) and (self.log if self.log is not None else auto)
        colors = self.legend or PALETTE
        # Bars labelled by their series only (p50/p99, R=1/R=3): the legend names them, the
        # x axis names the groups. Otherwise every bar gets its own label, the group's below.
        series = all(label == key for _, bs in self.groups for label, _, key in bs)
        x = 0.0
        for g, bs in self.groups:
            start = x
            for label, v, key in bs:
                if key not in used:
                    used.append(key)
                if v is not None:
                    bars.append(f"{x:.2f} {v:.6g} 0x{colors.get(key, '#9467bd')[1:]}")
                    labels.append(f'{x:.2f} {v:.6g} "{short(v)}"')
                if not series:
                    tics.append(f"'{esc(label)}' {x:.2f}")
                x += 1
            if g and series:
                tics.append(f"'{esc(g)}' {(start + x - 1) / 2:.2f}")
            elif g:
                glabels.append(f"set label '{esc(g)}' at {(start + x - 1) / 2:.2f}, graph -0.27 "
                               "center font ',10'")
            x += 0.6
        lines = [
            f"set terminal {term} size 1000,520 noenhanced font ',10'",
            f"set output '{esc(png)}'",
            f"set title '{esc(self.title)}'",
            f"set ylabel '{esc(self.ylabel)}'",
            "set style fill solid 0.85 border -1",
            "set boxwidth 0.8",
            "set grid ytics",
            "set key outside right top vertical Left reverse samplen 2",
            f"set xrange [-0.7:{x - 0.5:.2f}]",
            ("set xtics (" + ", ".join(tics) + ")" + ("" if series else " rotate by -25") +
             " scale 0") if tics else "unset xtics",
            f"set bmargin {9 if glabels else 5}",
        ] + glabels
        if log:
            top = max(vals + ([self.hline[0]] if self.hline else [])) * 4
            lines += ["set logscale y", f"set yrange [{min(vals) / 3:.6g}:{top:.6g}]"]
        else:
            top = max(vals) * 1.15 if vals else 1
            if self.hline:
                top = max(top, self.hline[0] * 1.15)
            lines += [f"set yrange [0:{top:.6g}]"]
        lines.append("set format y '%.0s%c'" if vals and max(vals) >= 10000 else
                     "set format y '%g'")
        # Boxes from the bottom of the graph (a log axis has no 0).
        bottom = f"{min(vals) / 3:.6g}" if log else "0"
        lines += ["$bars << EOD"] + bars + ["EOD", "$labels << EOD"] + labels + ["EOD"]
        plot = [f"$bars using 1:2:(0.8):3 with boxes lc rgb variable notitle" if not log else
                f"$bars using 1:({bottom}):($1-0.4):($1+0.4):({bottom}):2:3 with boxxyerror "
                "lc rgb variable notitle",
                "$labels using 1:2:3 with labels offset 0,0.7 font ',8' notitle"]
        for key in used:
            plot.append(f"NaN with boxes lc rgb '{colors.get(key, '#9467bd')}' title '{esc(key)}'")
        if self.hline:
            y, text = self.hline
            plot.append(f"{y:.6g} with lines dt 2 lw 2 lc rgb '#d62728' title '{esc(text)}'")
        lines.append("plot " + ", \\\n     ".join(plot))
        return "\n".join(lines) + "\n"


def esc(s):
    """For a single-quoted gnuplot string (a quote is doubled there)."""
    return str(s).replace("'", "''")


def short(v):
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a >= 1e3:
        return f"{v / 1e3:.1f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.1f}"
    return f"{v:.3f}"


def find_terminal(gnuplot):
    """pngcairo when gnuplot has it (gnuplot-nox does), else the libgd png terminal."""
    out = ""
    try:
        r = subprocess.run([gnuplot, "-e", "set terminal"], capture_output=True, text=True,
                           timeout=20)
        out = r.stdout + r.stderr
    except (OSError, subprocess.SubprocessError):
        return None
    if re.search(r"^\s*pngcairo\s", out, re.M):
        return "pngcairo"
    if re.search(r"^\s*png\s", out, re.M):
        return "png"
    return None


def render_charts(charts, results_dir, charts_dir, gnuplot):
    """Writes one .gp per chart into RESULTS_DIR/charts and renders it; returns (rendered
    names, what went wrong or None). A chart that fails does not stop the others."""
    exe = gnuplot if os.sep in gnuplot else shutil.which(gnuplot)
    if not exe or not os.access(exe, os.X_OK):
        return [], (f"gnuplot not found ('{gnuplot}'; Debian package gnuplot-nox, "
                    "bench/regen.sh installs it)")
    term = find_terminal(exe)
    if not term:
        return [], f"{exe} has neither the pngcairo nor the png terminal"
    src = os.path.join(results_dir, "charts")
    os.makedirs(src, exist_ok=True)
    os.makedirs(charts_dir, exist_ok=True)
    done, problems = [], []
    for c in charts:
        if not any(v is not None for _, bs in c.groups for _, v, _ in bs):
            problems.append(f"{c.name}: no values to draw")
            continue
        png = os.path.join(os.path.abspath(charts_dir), c.name + ".png")
        gp = os.path.join(src, c.name + ".gp")
        with open(gp, "w", encoding="utf-8") as f:
            f.write(c.script(png, term))
        if os.path.exists(png):
            os.remove(png)
        try:
            r = subprocess.run([exe, gp], capture_output=True, text=True, timeout=60)
            err = r.stderr.strip() if r.returncode != 0 else ""
        except (OSError, subprocess.SubprocessError) as e:
            err = str(e)
        if err or not os.path.exists(png):
            problems.append(f"gnuplot failed on {gp}: {err[:300] or 'no PNG written'}")
        else:
            done.append(c.name)
    return done, "; ".join(problems) or None


# ------------------------------------------------------------------------- the scenarios


# agent-bench local's other parts: JSON key, row name, unit (as agent-bench writes it), the
# peers' twin in raw.txt, what the part measures.
LOCAL_PARTS = [
    ("asks", "asks by id", "round trips/s", "local_call",
     "one client asks an echo agent by id, one ask in flight (`node_runtime::ask`), vs a raw "
     "CAF actor's `request(...).then(...)` to an echo actor; Erlang: the peers' `call` "
     "(`gen_server:call`)."),
    ("pingpong", "ping-pong by id", "messages/s", "local_pingpong",
     "two agents bounce a counter by id until it reaches 0, vs two raw CAF actors bouncing it "
     "by handle; Erlang: the peers' `pingpong` (`!` and `receive`)."),
    ("spawn", "spawn + stop", "spawns/s", "local_spawn",
     "agents spawned and stopped through the runtime, vs raw CAF actors spawned and sent an "
     "exit; Erlang: the peers' `spawn` (`spawn_monitor` of a process that exits at once, at "
     "most 1,000 alive, every `'DOWN'` awaited)."),
]


GOALS_NOTE = ("Goals are those of the issues named; a goal is judged on this run's medians "
              "(p99: the median over runs of each run's p99).")


def verdict(ok):
    return "**met**" if ok else "**NOT met**"


class Report:
    def __init__(self, results_dir, status, peers, quick):
        self.dir = results_dir
        self.status = status
        self.peers = peers
        self.quick = quick
        self.goals = []   # (issue, goal, measured, verdict)
        self.charts = []  # Chart
        self.errors = []  # str

    def goal(self, issue, text, measured, v):
        self.goals.append((issue, text, measured, v))

    def not_run(self, name, file):
        st = self.status.get(name)
        if st is None:
            return f"Not run: no `{file}` in the results directory and no entry in status.tsv."
        if st["status"] == "skipped":
            return f"Not run: {st['note'] or 'skipped'}."
        log = f" (log: `logs/{name}.log` in the results directory)"
        what = {"failed": f"failed with exit status {st['rc']}",
                "timeout": "was stopped by the time limit"}.get(st["status"], st["status"])
        note = st.get("note", "")
        note = f": {note}" if note and not note.startswith("exit status") else ""
        return f"No figures: `{file}` is missing; the scenario {what} after {st['seconds']} s" \
               f"{note}{log}."

    def cmd(self, name):
        st = self.status.get(name)
        if not st or not st.get("command"):
            return []
        extra = ""
        if st["status"] not in ("ok", "skipped"):
            extra = f" — **{st['status']}** (exit status {st['rc']}; see `logs/{name}.log`)"
        return [f"Command: `{st['command']}` ({st['seconds']} s){extra}", ""]

    # -- local -------------------------------------------------------------------------
    def local(self, d):
        m = {k: d.num(f"median.{k}") for k in ("raw_caf", "by_handle", "by_id", "by_ref")}
        runs = d.num("runs")
        L = [f"{num(d.num('messages'))} `agent_call` messages per run and way, window "
             f"{num(d.num('window'))}, ack every {num(d.num('ack_every'))}; {plural(runs, 'run')}, "
             f"{plural(d.num('scheduler_threads'), 'scheduler thread')}. Raw CAF is measured in the "
             "same process, the ways alternate order run by run.", ""]
        L += ["| way | median msgs/s | min..max | vs raw CAF (same process) | vs Erlang window |",
              "| --- | ---: | ---: | ---: | ---: |"]
        erl = self.peers.med("local_window", "erlang")
        series = {"raw_caf": "raw_caf_msgs_per_s", "by_handle": "by_handle_msgs_per_s",
                  "by_id": "by_id_msgs_per_s", "by_ref": "by_ref_msgs_per_s"}
        names = {"raw_caf": "raw CAF", "by_handle": "hive by handle", "by_id": "hive by id",
                 "by_ref": "hive by ref (`agent_ref`)"}
        for k, field in series.items():
            xs = d.nums(field)
            L.append(f"| {names[k]} | {num(m[k])} | {num(min(xs))}..{num(max(xs))} | "
                     f"{rx(ratio(m[k], m['raw_caf']))} | {rx(ratio(m[k], erl))} |")
        peer_rows = []
        for sys_, cfg, label in (("caf", "default", "raw CAF peer `caf_local window` "
                                  "(CAF default: max(cores,4) workers)"),
                                 ("caf", "t2", "raw CAF peer `caf_local window`, 2 workers"),
                                 ("erlang", "default", "Erlang `window` (2 schedulers)")):
            v = self.peers.med("local_window", sys_, cfg)
            if v is not None:
                peer_rows.append((label, v, self.peers.n("local_window", sys_, cfg)))
        for label, v, n in peer_rows:
            L.append(f"| {label} (peers, n={n}) | {num(v)} | | | {rx(ratio(v, erl))} |")
        L.append("")
        if erl is None:
            L += [f"Erlang: not measured in this run ({self.peers.why_missing('local_window', 'erlang')}).", ""]
        else:
            L += ["The peers' `window` benchmark has the same pattern (W = 1000 in flight, ack "
                  "every 100) but is a separate process with its own sizes "
                  f"(`peers/sysinfo.txt`); its ratio is of medians, not paired.", ""]
        r = ratio(m["by_id"], m["raw_caf"])
        self.goal("#2", "local tell by id >= 0.8x raw CAF", f"{rx(r)} ({num(m['by_id'])} vs "
                  f"{num(m['raw_caf'])} msgs/s)", verdict(r >= 0.8))
        bars = [("raw CAF", m["raw_caf"], "raw CAF"), ("by handle", m["by_handle"], "hive"),
                ("by id", m["by_id"], "hive"), ("by ref", m["by_ref"], "hive")]
        groups = [("agent-bench (one process)", bars)]
        pb = []
        for sys_, cfg, label, key in (("caf", "t2", "CAF 2 workers", "CAF peers"),
                                      ("caf", "default", "CAF default", "CAF peers"),
                                      ("erlang", "default", "Erlang", "Erlang")):
            v = self.peers.med("local_window", sys_, cfg)
            if v is not None:
                pb.append((label, v, key))
        if pb:
            groups.append(("peers' window (separate processes)", pb))
        self.charts.append(Chart("local-throughput", "local: windowed tells, msgs/s (median)",
                                 "msgs/s", groups))
        charts = ["local-throughput"]
        # The asks, ping-pong and spawn parts (agent-bench local since they were added; a
        # local.json of an earlier run has none, a part run with size 0 is left out).
        if any(d.has(part) for part, *_ in LOCAL_PARTS):
            L += self.local_parts(d, ratio(m["by_id"], m["raw_caf"]), ratio(m["by_id"], erl))
            charts.append("local-ratios")
        return L, charts

    def local_parts(self, d, window_raw, window_erl):
        L = ["### Asks, ping-pong and spawns", "",
             f"Each part runs hive and raw CAF in the same process, alternating which goes first "
             f"run by run; {plural(d.num('runs'), 'run')}, medians.", ""]
        rows, notes, bars, doubled = [], [], [], []
        for part, name, unit, bench, what in LOCAL_PARTS:
            if not d.has(part):
                notes.append(f"- {name}: not run (no '{part}' part in `local.json`).")
                continue
            d.obj(part)  # an object, with the per-run figures (checked, not shown)
            d.nums(f"{part}.hive")
            d.nums(f"{part}.raw_caf")
            got = d.get(f"{part}.unit")
            if got != unit:
                raise ReportError(f"{d.file}: field '{part}.unit' is {json.dumps(got)[:60]}, "
                                  f"expected \"{unit}\" (the JSON of agent-bench local)")
            h, r = d.num(f"{part}.median.hive"), d.num(f"{part}.median.raw_caf")
            erl, factor, own, own_unit = self.peers.med_in(bench, "erlang", unit)
            n = self.peers.n(bench, "erlang")
            if own is None:
                ecell = "n/a"
                notes.append(f"- {name}: Erlang not measured in this run "
                             f"({self.peers.why_missing(bench, 'erlang')}).")
            elif erl is None:
                ecell = f"({num(own)} {own_unit}: not in {unit})"
                notes.append(f"- {name}: the peers' `{bench}` figure is in {own_unit}, which "
                             f"does not convert to {unit}; no ratio.")
            elif factor != 1:
                doubled.append(f"`{bench[6:]}`")
                ecell = (f"{num(erl)} (`{bench[6:]}` {num(own)} "
                         f"{PEER_UNITS.get(own_unit, own_unit)} x {factor}, n={n})")
            else:
                ecell = f"{num(erl)} (`{bench[6:]}`, n={n})"
            if part == "asks":
                size = f"{num(d.num('asks.asks'))} asks per run"
            elif part == "pingpong":
                size = f"{num(d.num('pingpong.messages'))} messages per run"
            else:
                size = (f"{num(d.num('spawn.spawns'))} spawns per run, at most "
                        f"{num(d.num('spawn.window'))} alive")
            rows.append(f"| {name} | {unit} | {num(h)} | {num(r)} | {rx(ratio(h, r))} | {ecell} "
                        f"| {rx(ratio(h, erl))} |")
            L.append(f"- **{name}** ({size}): {what}")
            bars.append((name, [("vs raw CAF", ratio(h, r), "vs raw CAF"),
                                ("vs Erlang", ratio(h, erl), "vs Erlang")]))
        L += ["", "| part | unit | hive median | raw CAF median | hive / raw CAF | Erlang (peers) "
              "| hive / Erlang |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"] + rows
        L += [""] + notes + ([""] if notes else [])
        L += ["Erlang: the peers' twins (`../shared/peers/erlang/ab.erl`, 2 schedulers), a "
              "separate process with its own sizes (`peers/sysinfo.txt`); their ratios are of "
              "medians, not paired."
              + (f" The peers' {', '.join(doubled)} reports round trips/s (a ping and its pong, "
                 "two messages); ours counts messages/s, so its figure is doubled here."
                 if doubled else ""), ""]
        if d.has("asks"):
            p50 = {k: d.num(f"asks.p50_us.{k}") for k in ("hive", "raw_caf")}
            p99 = {k: d.num(f"asks.p99_us.{k}") for k in ("hive", "raw_caf")}
            erl_rt = self.peers.med("local_call", "erlang")
            L += ["| asks: round trip, us | p50 | p99 |", "| --- | ---: | ---: |",
                  f"| hive (ask by id) | {us(p50['hive'])} | {us(p99['hive'])} |",
                  f"| raw CAF (`request(...).then(...)`) | {us(p50['raw_caf'])} | "
                  f"{us(p99['raw_caf'])} |",
                  f"| hive / raw CAF | {rx(ratio(p50['hive'], p50['raw_caf']))} | "
                  f"{rx(ratio(p99['hive'], p99['raw_caf']))} |"]
            if erl_rt:
                L.append(f"| Erlang `gen_server:call` (peers; mean = 1 / round trips per "
                         f"second) | {us(1e6 / erl_rt)} (mean) | |")
            L += ["", "(p50, p99: the median over runs of each run's; lower is better.)", ""]
        bars.insert(0, ("tells by id (window)", [("vs raw CAF", window_raw, "vs raw CAF"),
                                                 ("vs Erlang", window_erl, "vs Erlang")]))
        self.charts.append(Chart(
            "local-ratios", "local: hive / raw CAF (same process) and hive / Erlang (peers), "
            "medians", "ratio (higher is better)", bars,
            legend={"vs raw CAF": PALETTE["raw CAF"], "vs Erlang": PALETTE["Erlang"]},
            hline=(1.0, "parity"), log=False))
        return L

    # -- remote ------------------------------------------------------------------------
    def remote(self, d):
        raw, hive = d.obj("raw-caf"), d.obj("hive")
        f = {}
        for way, o in (("raw", raw), ("hive", hive)):
            f[way] = {k: o.num(k) for k in ("p50_us", "p99_us", "windowed_asks_per_s",
                                           "windowed_tells_per_s")}
        erl_rt = self.peers.med("remote_pingpong", "erlang")
        erl_win = self.peers.med("remote_window", "erlang")
        erl_us = 1e6 / erl_rt if erl_rt else None
        L = [f"Asks by id from this process (a cluster member) to an `echo` agent on an "
             f"`agent-node` child vs raw CAF request/response to a published echo actor in a "
             f"forked child; {plural(d.num('runs'), 'run')}, medians. `hive`: from a plain "
             "thread (as the gateway asks); `hive, agent to agent`: a `pinger` agent on this "
             "member asks the echo agent, the next ask sent from the handling of the reply "
             "(as the Erlang peer's process does). Erlang: the peers' remote "
             "ping-pong (its round trip = 1 / round trips per second, a mean) and windowed "
             "send (W 1000, ack every 100) between two BEAM nodes on 127.0.0.1.", ""]
        L += ["| way | ask p50 us | ask p99 us | windowed asks/s (64 in flight) | windowed "
              "tells/s (W 1000, ack/100) |", "| --- | ---: | ---: | ---: | ---: |"]
        L.append(f"| raw CAF (agent-bench) | {us(f['raw']['p50_us'])} | {us(f['raw']['p99_us'])}"
                 f" | {num(f['raw']['windowed_asks_per_s'])} | "
                 f"{num(f['raw']['windowed_tells_per_s'])} |")
        L.append(f"| **hive** | {us(f['hive']['p50_us'])} | {us(f['hive']['p99_us'])} | "
                 f"{num(f['hive']['windowed_asks_per_s'])} | "
                 f"{num(f['hive']['windowed_tells_per_s'])} |")
        a2a = d.obj("hive_agent_to_agent") if d.has("hive_agent_to_agent") else None
        if a2a is not None:
            L.append(f"| **hive, agent to agent** (a `pinger` agent asks the echo agent) | "
                     f"{us(a2a.num('p50_us'))} (mean {us(a2a.num('mean_us'))}) | "
                     f"{us(a2a.num('p99_us'))} | | |")
        for cfg, label in (("default", "raw CAF peer `caf_remote` (default workers)"),
                           ("t2", "raw CAF peer `caf_remote`, 2 workers")):
            rt = self.peers.med("remote_pingpong", "caf", cfg)
            w = self.peers.med("remote_window", "caf", cfg)
            if rt or w:
                L.append(f"| {label} | {us(1e6 / rt) if rt else 'n/a'} (mean) | | | {num(w)} |")
        if erl_rt or erl_win:
            L.append(f"| Erlang distribution (peers, n="
                     f"{self.peers.n('remote_pingpong', 'erlang')}) | {us(erl_us)} (mean) | | | "
                     f"{num(erl_win)} |")
        L.append(f"| hive / raw CAF (agent-bench) | {rx(ratio(f['hive']['p50_us'], f['raw']['p50_us']))}"
                 f" | | {rx(ratio(f['hive']['windowed_asks_per_s'], f['raw']['windowed_asks_per_s']))}"
                 f" | {rx(ratio(f['hive']['windowed_tells_per_s'], f['raw']['windowed_tells_per_s']))} |")
        L.append(f"| hive / Erlang | {rx(ratio(f['hive']['p50_us'], erl_us))} | | | "
                 f"{rx(ratio(f['hive']['windowed_tells_per_s'], erl_win))} |")
        L += ["", "(Latency ratios: lower is better; throughput ratios: higher is better.)", ""]
        if erl_rt is None:
            why = self.peers.why_missing("remote_pingpong", "erlang")
            self.goal("#4", "cross-node ask p50 <= Erlang's round trip",
                      f"hive {us(f['hive']['p50_us'])} us; Erlang not measured", f"not measured ({why})")
        elif a2a is not None:
            # Erlang's figure is a process asking a process: the agent-to-agent way is its twin.
            r = ratio(a2a.num("p50_us"), erl_us)
            self.goal("#4", "cross-node ask p50 <= Erlang's round trip",
                      f"agent to agent {us(a2a.num('p50_us'))} (mean {us(a2a.num('mean_us'))}) vs "
                      f"{us(erl_us)} us ({rx(r)}); from a non-actor thread "
                      f"{us(f['hive']['p50_us'])} us ({rx(ratio(f['hive']['p50_us'], erl_us))})",
                      verdict(r <= 1))
        else:
            r = ratio(f["hive"]["p50_us"], erl_us)
            self.goal("#4", "cross-node ask p50 <= Erlang's round trip",
                      f"{us(f['hive']['p50_us'])} vs {us(erl_us)} us ({rx(r)})", verdict(r <= 1))
        if erl_win is None:
            why = self.peers.why_missing("remote_window", "erlang")
            self.goal("#4", "cross-node windowed throughput >= 1.5x Erlang's",
                      f"hive {num(f['hive']['windowed_tells_per_s'])} tells/s; Erlang not measured",
                      f"not measured ({why})")
        else:
            r = ratio(f["hive"]["windowed_tells_per_s"], erl_win)
            self.goal("#4", "cross-node windowed throughput >= 1.5x Erlang's",
                      f"{num(f['hive']['windowed_tells_per_s'])} vs {num(erl_win)} msgs/s "
                      f"({rx(r)})", verdict(r >= 1.5))
        g1 = [("raw CAF", f["raw"]["windowed_asks_per_s"], "raw CAF"),
              ("hive", f["hive"]["windowed_asks_per_s"], "hive")]
        g2 = [("raw CAF", f["raw"]["windowed_tells_per_s"], "raw CAF"),
              ("hive", f["hive"]["windowed_tells_per_s"], "hive")]
        cw = self.peers.med("remote_window", "caf", "t2")
        if cw is not None:
            g2.append(("CAF peer t2", cw, "CAF peers"))
        if erl_win is not None:
            g2.append(("Erlang", erl_win, "Erlang"))
        self.charts.append(Chart("remote-throughput", "remote: cross-node throughput (median)",
                                 "messages/s", [("asks, 64 in flight", g1),
                                                ("tells, W 1000, ack/100", g2)]))
        lat = [("p50", [("raw CAF", f["raw"]["p50_us"], "raw CAF"),
                        ("hive", f["hive"]["p50_us"], "hive")]
                 + ([("hive a2a", a2a.num("p50_us"), "hive")] if a2a is not None else [])),
               ("p99", [("raw CAF", f["raw"]["p99_us"], "raw CAF"),
                        ("hive", f["hive"]["p99_us"], "hive")])]
        if erl_us is not None:
            lat[0][1].append(("Erlang (mean)", erl_us, "Erlang"))
        self.charts.append(Chart("remote-latency", "remote: ask round trip, us (lower is better)",
                                 "microseconds", lat, log=False))
        return L, ["remote-throughput", "remote-latency"]

    # -- durable -----------------------------------------------------------------------
    def durable(self, d):
        ws = d.list("writers")
        L = [f"Journaled counters acknowledged per second by closed-loop writers (one counter "
             f"each; the ack is sent once the event is synced), next to RocksDB alone (one "
             f"thread, sync=1) measured right beside each run; {plural(d.num('runs'), 'run')}, "
             f"medians. Data directory on {d.get('filesystem', 'unknown')}; load average at "
             f"start {d.get('load_average_start', '?')}, at end {d.get('load_average_end', '?')}.",
             "", "| writers | acks/s | p50 ms | p99 ms | max ms | vs RocksDB sync puts | vs "
             "RocksDB batches | writes/commit | commits >5 ms | cores used |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        rows = []
        for w in ws:
            if not isinstance(w, Doc):
                raise ReportError(f"{d.file}: field 'writers' should hold objects")
            n = int(w.num("writers"))
            med = w.obj("median")
            r = dict(n=n, acks=med.num("acks_per_s"), p50=med.num("p50_ms"),
                     p99=med.num("p99_ms"), mx=med.num("max_ms"),
                     vs=w.num("ratio_vs_rocksdb_sync_puts"),
                     vsb=w.num("ratio_vs_rocksdb_batched_puts"),
                     wpc=med.num("writes_per_commit"), slow=med.num("commits_over_5ms"),
                     cores=med.num("cpu_cores"),
                     rocks=median([x.num("rocksdb_single_puts_per_s")
                                   for x in w.list("runs") if isinstance(x, Doc)]))
            rows.append(r)
            L.append(f"| {n} | {num(r['acks'])} | {ms(r['p50'])} | {ms(r['p99'])} | "
                     f"{ms(r['mx'])} | {rx(r['vs'])} | {rx(r['vsb'])} | {r['wpc']:.1f} | "
                     f"{100 * r['slow']:.1f} % | {r['cores']:.2f} |")
        L += ["", f"RocksDB alone: {num(d.num('rocksdb_sync_puts_per_s_median'))} synced single "
              f"puts/s (p99 {ms(d.num('rocksdb_single_p99_ms_median', None))} ms), "
              f"{num(d.num('rocksdb_batched_puts_per_s_median'))} puts/s in synced batches of "
              f"{d.num('rocksdb_batch', 0):.0f}. Ratios: median over runs of each run's acks/s "
              "over RocksDB measured next to it. No raw-CAF or Erlang peer writes durably: "
              "RocksDB alone is the baseline.", ""]
        checks = d.get("check", {})
        if isinstance(checks, dict) and checks:
            L.append("Checks: " + ", ".join(f"{k} {'OK' if v else '**FAIL**'}"
                                            for k, v in checks.items())
                     + f"; overall {'OK' if d.get('ok') else '**FAIL**'}.")
            L.append("")
        if d.has("activation"):
            a = d.obj("activation")
            L += [f"Activation ({num(a.num('agents'))} passivated counters, asked one by one): "
                  f"first ask p50 {ms(a.num('first_ask_p50_ms'))} ms, p99 "
                  f"{ms(a.num('first_ask_p99_ms'))} ms; a live ask p50 "
                  f"{ms(a.num('live_ask_p50_ms'))} ms, p99 {ms(a.num('live_ask_p99_ms'))} ms; "
                  f"check {'OK' if a.get('check') else '**FAIL**'}.", ""]
        if d.has("footprint"):
            fp = d.obj("footprint")
            L += [f"Footprint ({num(fp.num('agents'))} counters): live idle journaled counter "
                  f"{num(fp.num('journaled_live_rss_bytes_per_agent'))} bytes RSS "
                  f"({num(fp.num('journaled_live_heap_bytes_per_agent'))} heap), ephemeral "
                  f"{num(fp.num('ephemeral_live_heap_bytes_per_agent', None))} heap, a plain CAF "
                  f"actor {num(fp.num('caf_actor_heap_bytes', None))} heap; passivated on disk "
                  f"{num(fp.num('sst_bytes_per_agent_after_flush'))} bytes of SST per agent "
                  f"({num(fp.num('sst_bytes_per_agent_after_compaction', None))} after a full "
                  f"compaction); check after restart "
                  f"{'OK' if fp.get('check_after_restart') else '**FAIL**'}.", ""]
        g = [r for r in rows if r["n"] == 256]
        if g:
            r = g[0]
            self.goal("#3", "durable: >= 50,000 acks/s at 256 writers with p99 < 10 ms",
                      f"{num(r['acks'])} acks/s, p99 {ms(r['p99'])} ms",
                      verdict(r["acks"] >= 50000 and r["p99"] < 10))
        else:
            self.goal("#3", "durable: >= 50,000 acks/s at 256 writers with p99 < 10 ms",
                      "no 256-writer run", "not measured")
        thr = [(plural(r["n"], "writer"), [("hive acks/s", r["acks"], "hive acks/s"),
                                           ("RocksDB synced puts/s", r["rocks"],
                                            "RocksDB synced puts/s")])
               for r in rows]
        self.charts.append(Chart("durable-throughput", "durable: acknowledged durable events/s "
                                 "vs RocksDB alone (median)", "per second", thr,
                                 legend={"hive acks/s": PALETTE["hive"],
                                         "RocksDB synced puts/s": PALETTE["RocksDB"]},
                                 hline=(50000, "goal at 256 writers: 50,000 acks/s")))
        lat = [(plural(r["n"], "writer"), [("p50", r["p50"], "p50"), ("p99", r["p99"], "p99")])
               for r in rows]
        self.charts.append(Chart("durable-latency", "durable: ack latency, ms", "milliseconds",
                                 lat, legend={"p50": SERIES_COLORS[0], "p99": SERIES_COLORS[1]},
                                 hline=(10, "goal at 256 writers: p99 < 10 ms"), log=False))
        return L, ["durable-throughput", "durable-latency"]

    # -- gateway -----------------------------------------------------------------------
    def gateway(self, d):
        rows = []
        for x in d.list("closed_loop"):
            rows.append(dict(proto=x.get("protocol"), conns=int(x.num("connections")),
                             depth=int(x.num("depth")), rate=median(x.nums("asks_per_s")),
                             p50=median(x.nums("p50_ms")), p99=median(x.nums("p99_ms")),
                             fails=x.num("failures")))
        L = [f"Asks to {d.num('agents'):.0f} `echo` agents through one `agent-node`'s gateway, "
             f"closed loop, {plural(d.num('runs'), 'run')} of {d.num('seconds'):g} s per row "
             "(medians); the client shares the machine's cores with the node. No raw-CAF or "
             "Erlang peer has an external client protocol.", "",
             "| protocol | connections | in flight each | asks/s | p50 ms | p99 ms | failures |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            L.append(f"| {r['proto']} | {r['conns']} | {r['depth']} | {num(r['rate'])} | "
                     f"{ms(r['p50'])} | {ms(r['p99'])} | {r['fails']:.0f} |")
        by = {(r["proto"], r["conns"], r["depth"]): r for r in rows}
        ratios = []
        for r in rows:
            if r["proto"] == "binary" and r["depth"] == 1 and ("http", r["conns"], 1) in by:
                ratios.append(f"{rx(ratio(r['rate'], by[('http', r['conns'], 1)]['rate']))} "
                              f"({plural(r['conns'], 'connection')})")
        if ratios:
            L += ["", "Binary vs HTTP, one ask in flight per connection: " + ", ".join(ratios) +
                  "."]
        fixed = d.list("fixed_rate") if d.has("fixed_rate") else []
        if fixed:
            L += ["", "| protocol | fixed rate | p50 ms | p99 ms (median) | worst p99 of the runs |",
                  "| --- | ---: | ---: | ---: | ---: |"]
            for x in fixed:
                p99s = x.nums("p99_ms")
                L.append(f"| {x.get('protocol')} | {x.num('rate'):.0f}/s | "
                         f"{ms(median(x.nums('p50_ms')))} | {ms(median(p99s))} | "
                         f"{ms(max(p99s))} |")
        L.append("")
        best = [r for r in rows if r["proto"] == "binary" and r["depth"] == 1]
        if best:
            b = max(best, key=lambda r: r["rate"])
            self.goal("#6", "gateway: >= 50,000 asks/s over the binary protocol (1 in flight "
                      "per connection)", f"{num(b['rate'])} asks/s at {b['conns']} connections",
                      verdict(b["rate"] >= 50000))
        else:
            self.goal("#6", GOALS["gateway"][0][1], "no binary run with 1 in flight",
                      "not measured")
        at200 = [x for x in fixed if x.num("rate") == 200]
        if at200:
            worst = max(median(x.nums("p99_ms")) for x in at200)
            self.goal("#6", "gateway: p99 < 2 ms at 200 requests/s (HTTP and binary)",
                      "p99 " + " / ".join(f"{x.get('protocol')} {ms(median(x.nums('p99_ms')))} ms"
                                          for x in at200), verdict(worst < 2))
        else:
            self.goal("#6", GOALS["gateway"][1][1], "no fixed-rate run at 200/s",
                      "not measured")
        conns = sorted({r["conns"] for r in rows})
        keys = sorted({(r["proto"], r["depth"]) for r in rows}, key=lambda k: (k[1], k[0] != "http"))
        legend = {}
        for i, (p, dep) in enumerate(keys):
            legend[f"{p} x{dep}"] = SERIES_COLORS[i % len(SERIES_COLORS)]
        thr = []
        for c in conns:
            thr.append((f"{c} connection{'s' if c > 1 else ''}",
                        [(f"{p} x{dep}", by[(p, c, dep)]["rate"], f"{p} x{dep}")
                         for p, dep in keys if (p, c, dep) in by]))
        self.charts.append(Chart("gateway-throughput", "gateway: asks/s (median), x N = in "
                                 "flight per connection", "asks/s", thr, legend=legend,
                                 hline=(50000, "goal: 50,000 asks/s (binary)"), log=False))
        lat = [(f"{r['proto']} {r['conns']}x{r['depth']}",
                [("p50", r["p50"], "p50"), ("p99", r["p99"], "p99")]) for r in rows]
        for x in fixed:
            lat.append((f"{x.get('protocol')} {x.num('rate'):.0f}/s",
                        [("p50", median(x.nums("p50_ms")), "p50"),
                         ("p99", median(x.nums("p99_ms")), "p99")]))
        self.charts.append(Chart("gateway-latency", "gateway: ask latency, ms (connections x "
                                 "in flight; fixed rate)", "milliseconds", lat,
                                 legend={"p50": SERIES_COLORS[0], "p99": SERIES_COLORS[1]},
                                 log=True))
        return L, ["gateway-throughput", "gateway-latency"]

    # -- replicated --------------------------------------------------------------------
    def replicated(self, d):
        rows = []
        for x in d.list("rows"):
            rows.append(dict(w=int(x.num("writers")), f=int(x.num("factor")),
                             acks=x.nums("acks_per_s"), p50=median(x.nums("p50_ms")),
                             p99=median(x.nums("p99_ms"))))
        L = [f"Journaled writes on a fresh 3-node cluster per run and factor, {num(d.num('agents'))}"
             f" counters, closed-loop binary-protocol writers against one node; "
             f"{plural(d.num('runs'), 'run')} of {d.num('seconds'):g} s (medians). No peer in "
             "../shared/peers replicates writes: the baseline is R=1 in the same run.", "",
             "| writers | R | acks/s (runs) | median acks/s | p50 ms | p99 ms |",
             "| ---: | ---: | --- | ---: | ---: | ---: |"]
        for r in rows:
            L.append(f"| {r['w']} | {r['f']} | {' / '.join(num(a) for a in r['acks'])} | "
                     f"{num(median(r['acks']))} | {ms(r['p50'])} | {ms(r['p99'])} |")
        by = {(r["w"], r["f"]): r for r in rows}
        factors = sorted({r["f"] for r in rows})
        writers = sorted({r["w"] for r in rows})
        if len(factors) >= 2:
            lo, hi = factors[0], factors[-1]
            parts = [f"{rx(ratio(median(by[(w, hi)]['acks']), median(by[(w, lo)]['acks'])))} "
                     f"({plural(w, 'writer')})" for w in writers if (w, hi) in by and (w, lo) in by]
            L += ["", f"R={hi} vs R={lo}, median acks/s: " + ", ".join(parts) + "."]
        L.append("")
        legend = {f"R={f}": SERIES_COLORS[i % len(SERIES_COLORS)] for i, f in enumerate(factors)}
        self.charts.append(Chart(
            "replicated-throughput", "replicated: journaled acks/s on 3 nodes (median)", "acks/s",
            [(plural(w, "writer"), [(f"R={f}", median(by[(w, f)]["acks"]), f"R={f}")
                               for f in factors if (w, f) in by]) for w in writers],
            legend=legend, log=False))
        self.charts.append(Chart(
            "replicated-latency", "replicated: ack latency, ms (median of runs)", "milliseconds",
            [(f"{r['w']} w, R={r['f']}", [("p50", r["p50"], "p50"), ("p99", r["p99"], "p99")])
             for r in rows], legend={"p50": SERIES_COLORS[0], "p99": SERIES_COLORS[1]},
            log=False))
        return L, ["replicated-throughput", "replicated-latency"]

    # -- workflow ----------------------------------------------------------------------
    def workflow(self, d):
        m = d.obj("median")
        wf, pl = m.num("workflow_steps_per_s"), m.num("planner_steps_per_s")
        di, ov = m.num("direct_asks_per_s"), m.num("overhead_us_per_step")
        L = [f"A planner workflow of {d.num('steps'):.0f} steps (a start, a fan-out, a join) over "
             f"{d.num('providers'):.0f} `echo` providers with {d.num('parallel'):.0f} in flight, "
             f"against the same number of asks sent straight to the providers; "
             f"{plural(d.num('runs'), 'run')}, alternating (medians). No raw-CAF or Erlang workflow "
             "peer exists: the direct asks are the baseline.", "",
             "| measure | median |", "| --- | ---: |",
             f"| workflow steps/s (spawn to succeeded) | {num(wf)} |",
             f"| workflow steps/s (the planner's own clock) | {num(pl)} |",
             f"| direct asks/s (same providers, same in flight) | {num(di)} |",
             f"| workflow vs direct | {rx(d.num('ratio.workflow_vs_direct'))} |",
             f"| dispatch overhead per step | {ov:,.1f} us |", ""]
        self.charts.append(Chart("workflow-throughput", "workflow: steps/s vs direct asks/s "
                                 "(median)", "per second",
                                 [("", [("workflow (wall)", wf, "hive"),
                                        ("workflow (planner)", pl, "hive"),
                                        ("direct asks", di, "other")])],
                                 legend={"hive": PALETTE["hive"], "other": PALETTE["other"]},
                                 log=False))
        return L, ["workflow-throughput"]

    # -- density -----------------------------------------------------------------------
    # The goals of issue #8, judged here (not by the JSON's own goal_met).
    DENSITY_LIVE_AGENTS = 1000000
    DENSITY_LIVE_RSS = 2 * 2**30
    DENSITY_PASSIVATED_AGENTS = 10000000
    # The live parts of density.json: (key, row label, short label for the chart, goal index
    # in GOALS["density"], why a missing part was not run).
    DENSITY_LIVE_PARTS = [
        ("live", "live, actor running", "live, actor running", 0,
         "not run (`--live 0`: no 'live' part in the JSON)"),
        ("live_hibernated", "live, hibernated (actor released, state in memory)",
         "live, hibernated", 1,
         "not run (no 'live_hibernated' part in the JSON: `--live 0`, `--hibernate-idle-ms 0`, "
         "or an agent-bench from before hibernation)"),
    ]

    def density(self, d):
        if not d.has("live") and not d.has("passivated"):
            raise ReportError(f"{d.file}: neither 'live' nor 'passivated' is there (expected "
                              "the JSON of agent-bench density)")
        mib = 2**20
        L = [f"Journaled `counter` agents, each spawned and given one add, in one "
             f"`agent-bench` process (no gateway); sample seed {d.get('seed', '?')}.", ""]
        if d.has("ok") and d.get("ok") is not True:
            L += ["**agent-bench density reported a failed check (`\"ok\": false`): see the "
                  "check columns.**", ""]
        bars = []
        rows, missing = [], []
        goal_n, goal_rss = self.DENSITY_LIVE_AGENTS, self.DENSITY_LIVE_RSS
        hib_ms, rss_before = None, None
        for key, label, short_label, gi, why in self.DENSITY_LIVE_PARTS:
            text = GOALS["density"][gi][1]
            if not d.has(key):
                self.goal("#8", text, why, "not measured")
                missing.append((label, why))
                continue
            lv = d.obj(key)
            n, live_after = lv.num("agents"), lv.num("live_after")
            rss, rss0 = lv.num("rss_bytes"), lv.num("rss_bytes_before_runtime")
            per, heap = lv.num("rss_bytes_per_agent"), lv.num("heap_bytes_per_agent")
            create_s, checked, fails = (lv.num("create_seconds"), lv.num("checked"),
                                        lv.num("check_failures"))
            p50, p99 = lv.num("get_p50_ms"), lv.num("get_p99_ms")
            # An older agent-bench wrote neither (its live agents all had their actors).
            actors, hib = lv.num("actors_running", None), lv.num("hibernated", None)
            if key == "live_hibernated":
                hib_ms = lv.num("hibernate_idle_ms")
            rss_before = rss0
            good = fails == 0 and live_after >= n
            check = (f"OK ({num(checked)} read back)" if good else
                     f"**FAIL** ({num(fails)} of {num(checked)} read back wrong; "
                     f"{num(live_after)} of {num(n)} live)")
            rows.append(f"| {label} | {num(n)} | {num(actors)} | {num(hib)} | {rss / mib:,.0f} | "
                        f"{num(per)} | {num(heap)} | "
                        f"{num(n / create_s if create_s > 0 else None)} | {ms(p50)} / {ms(p99)} | "
                        f"{check} |")
            # Judged here: the scale, the RSS, and every live agent there and read back right.
            measured = f"{num(n)} agents"
            if key == "live_hibernated":
                measured += f" ({num(hib)} hibernated, {num(actors)} actors running)"
            measured += f", total RSS {rss / mib:,.0f} MiB (goal < {goal_rss / mib:,.0f} MiB)"
            if fails > 0:
                measured += f", check FAILED ({num(fails)} of {num(checked)} read back wrong)"
            if live_after < n:
                measured += f", only {num(live_after)} of {num(n)} live"
            if n >= goal_n:
                v = verdict(rss < goal_rss and fails == 0 and live_after >= n)
            else:
                measured += (f"; at {num(per)} bytes each, {num(goal_n)} would add "
                             f"{gib(per * goal_n)}")
                v = verdict(False) + f" (not at goal scale: {num(n)} < {num(goal_n)} agents)"
            self.goal("#8", text, measured, v)
            bars.append((short_label, [("RSS", per, "RSS"), ("heap", heap, "heap")]))
        if rows:
            hib_text = ("" if hib_ms is None else
                        "*Hibernated*: the same counters created again with "
                        f"`agents.hibernate_idle_ms` = {num(hib_ms)} ms: once idle, each released "
                        "its CAF actor (like Erlang's `hibernate`) and keeps its state in memory, "
                        "still in the node's directory and under its supervisor; its next message "
                        "starts an actor again from that state without reading the store (the "
                        "sampled gets of that row do so). ")
            same = ("; the hibernated part runs in the same process after the other was stopped"
                    if hib_ms is not None and d.has("live") else "")
            L += ["Live idle agents (journaled `counter`, never passivated), measured after "
                  "creating them all. *Actor running*: each agent has its CAF actor. " + hib_text
                  + f"Total RSS is the whole process's ({rss_before / mib:,.0f} MiB before the "
                  f"runtime started{same}); bytes per agent are the growth of RSS and of the "
                  "heap in use while creating them, divided by the agents.", "",
                  "| live idle agents | agents | actors running | hibernated | total RSS MiB | "
                  "RSS bytes/agent | heap bytes/agent | created/s | get p50 / p99 ms | check |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
            L += rows + [""]
            L += [f"- {label}: {why}." for label, why in missing]
            if missing:
                L += [""]
        if d.has("passivated"):
            pv = d.obj("passivated")
            n, disk, per = pv.num("agents"), pv.num("disk_bytes"), pv.num("disk_bytes_per_agent")
            create_s, pas_s = pv.num("create_seconds"), pv.num("passivate_seconds")
            rss_idle = pv.num("rss_bytes_all_passivated")
            checked, fails = pv.num("checked"), pv.num("check_failures")
            p50, p99 = pv.num("activation_p50_ms"), pv.num("activation_p99_ms")
            check = (f"OK ({num(checked)} read back)" if fails == 0 else
                     f"**FAIL** ({num(fails)} of {num(checked)} read back wrong)")
            L += [f"Passivated agents (`{pv.get('kind', '?')}`): created, then idle until all "
                  f"were passivated ({pas_s:,.1f} s after the last; process RSS then "
                  f"{rss_idle / mib:,.0f} MiB); disk is `du` of the closed database. The node "
                  "is then restarted and a sample is activated from disk and read.", "",
                  "| passivated agents | disk GiB | disk bytes/agent | created/s | activation "
                  "p50 / p99 ms after restart | check |",
                  "| ---: | ---: | ---: | ---: | ---: | --- |",
                  f"| {num(n)} | {disk / 2**30:,.2f} | {num(per)} | "
                  f"{num(n / create_s if create_s > 0 else None)} | {ms(p50)} / {ms(p99)} | "
                  f"{check} |", ""]
            goal_n = self.DENSITY_PASSIVATED_AGENTS
            text = GOALS["density"][2][1]
            measured = (f"{num(n)} agents, {gib(disk)} on disk, check after a restart "
                        + ("OK" if fails == 0 else f"FAILED ({num(fails)} of {num(checked)})"))
            if n >= goal_n:
                v = verdict(fails == 0)
            else:
                measured += f"; {num(goal_n)} would take {gib(per * goal_n)}"
                v = verdict(False) + f" (not at goal scale: {num(n)} < {num(goal_n)} agents)"
            self.goal("#8", text, measured, v)
            bars.append(("passivated, on disk", [("disk", per, "disk")]))
        else:
            self.goal(*GOALS["density"][2],
                      "not run (`--passivated 0`: no 'passivated' part in the JSON)",
                      "not measured")
        goal_per = self.DENSITY_LIVE_RSS / self.DENSITY_LIVE_AGENTS
        self.charts.append(Chart(
            "density-footprint", "density: bytes per agent (live: RSS and heap growth; "
            "passivated: disk)", "bytes per agent", bars,
            legend={"RSS": PALETTE["hive"], "heap": SERIES_COLORS[2], "disk": PALETTE["RocksDB"]},
            hline=(goal_per, f"live goal: 2 GiB RSS / 1M = {goal_per:,.0f} bytes per agent"),
            log=False))
        return L, ["density-footprint"]

    # -- migration_pause ---------------------------------------------------------------
    def migration_pause(self, d):
        rows = []
        for x in d.list("results"):
            rows.append(dict(size=int(x.num("state_bytes")), moves=x.num("moves"),
                             p50=x.num("pause_ms.p50"), p99=x.num("pause_ms.p99"),
                             mx=x.num("pause_ms.max"), cap=x.num("capture_ms.p50"),
                             held=x.num("moves_holding_calls", None),
                             waited=x.num("moves_waiting_for_appends", None),
                             c50=x.num("client_worst_ask_ms.p50"),
                             c99=x.num("client_worst_ask_ms.p99"),
                             acked=x.num("writes_acked")))
        L = [f"A journaled `kv` agent of each state size moved {plural(d.num('moves'), 'time')} round "
             "3 nodes while one client writes to it; the pause is what the source measures "
             "(the agent stopped serving, so that calls wait, to the stash forwarded to the new "
             "node, whose activation runs by then). The agent stops at the first moment none of "
             "its writes is in flight (within `cluster.migration_quiet_wait_ms`); moves that "
             "could not and waited for a write's acknowledgement are counted. Quantiles by "
             "nearest rank: p99 of 100 moves is the 99th smallest pause, of 30 the largest. "
             "Every run checks that the last acknowledged write is there. No peer migrates live "
             "actors.", "",
             "| state | pause p50 ms | pause p99 ms | max ms | capture p50 ms | moves holding "
             "calls | moves waiting for writes | client's worst ask p50 / p99 ms | writes acked |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            held = "-" if r["held"] is None else f"{r['held']:.0f} of {r['moves']:.0f}"
            waited = "-" if r["waited"] is None else f"{r['waited']:.0f} of {r['moves']:.0f}"
            L.append(f"| {size_name(r['size'])} | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['mx'])}"
                     f" | {ms(r['cap'])} | {held} | {waited} | {ms(r['c50'])} / {ms(r['c99'])} "
                     f"| {num(r['acked'])} |")
        L.append("")
        mid = [r for r in rows if r["size"] == 65536]
        if mid:
            self.goal("#4", "migration pause p99 < 5 ms at 64 KiB", f"p99 {ms(mid[0]['p99'])} ms "
                      f"({mid[0]['moves']:.0f} moves)", verdict(mid[0]["p99"] < 5))
        else:
            self.goal("#4", "migration pause p99 < 5 ms at 64 KiB", "no 64 KiB run",
                      "not measured")
        self.charts.append(Chart(
            "migration_pause-latency", "migration pause, ms (lower is better)", "milliseconds",
            [(size_name(r["size"]), [("p50", r["p50"], "p50"), ("p99", r["p99"], "p99"),
                                     ("capture p50", r["cap"], "capture p50")]) for r in rows],
            legend={"p50": SERIES_COLORS[0], "p99": SERIES_COLORS[1],
                    "capture p50": SERIES_COLORS[2]},
            hline=(5, "goal at 64 KiB: p99 < 5 ms")))
        return L, ["migration_pause-latency"]

    # -- failover_time / cluster_down --------------------------------------------------
    def kills(self, d, name, what, issue, goal_ms, goal_text):
        p50, p99, mx, n = d.num("p50_ms"), d.num("p99_ms"), d.num("max_ms"), d.num("kills")
        samples = d.nums("samples_ms")
        L = [f"3 `agent-node` processes on 127.0.0.1; {n:.0f} times SIGKILL of one node, then "
             f"{what} (polled every 1 ms); seed {d.get('seed', '?')}.", "",
             "| kills | p50 ms | p99 ms | max ms |", "| ---: | ---: | ---: | ---: |",
             f"| {n:.0f} | {ms(p50)} | {ms(p99)} | {ms(mx)} |", "",
             "Samples (ms): " + " ".join(f"{s:.1f}" for s in samples), ""]
        self.goal(issue, goal_text, f"p99 {ms(p99)} ms over {plural(n, 'kill')}", verdict(p99 < goal_ms))
        self.charts.append(Chart(f"{name}-latency", f"{name}: kill -9 to {what.split(' (')[0]}"
                                 ", ms", "milliseconds",
                                 [(plural(n, "kill"), [("p50", p50, "p50"), ("p99", p99, "p99"),
                                                       ("max", mx, "max")])],
                                 legend={"p50": SERIES_COLORS[0], "p99": SERIES_COLORS[1],
                                         "max": SERIES_COLORS[3]}, log=False))
        return L, [f"{name}-latency"]

    def failover_time(self, d):
        return self.kills(d, "failover_time", "the first answer from a survivor", "#5", 2000,
                          "failover: kill -9 to the first answer p99 < 2 s")

    def cluster_down(self, d):
        return self.kills(d, "cluster_down", "both survivors listing it down", "#4", 1000,
                          "kill -9 to down on every survivor p99 < 1 s")


SCENARIOS = [
    # name, file, title, what wrote it
    ("local", "local.json", "local: tells by id vs raw CAF (issue #2); asks, ping-pong, spawn",
     "agent-bench local"),
    ("remote", "remote.json", "remote: cross-node asks vs raw CAF and Erlang (issue #4)",
     "agent-bench remote"),
    ("durable", "durable.json", "durable: journaled agents (issue #3)", "agent-bench durable"),
    ("density", "density.json", "density: live and passivated agents per node (issue #8)",
     "agent-bench density"),
    ("gateway", "gateway.json", "gateway: HTTP vs binary protocol (issue #6)",
     "agent-bench gateway"),
    ("replicated", "replicated.json", "replicated: R=3 vs R=1 (issue #5)",
     "agent-bench replicated"),
    ("workflow", "workflow.json", "workflow: planner steps (issue #7)", "agent-bench workflow"),
    ("migration_pause", "migration_pause.json", "migration_pause: live migration (issue #4)",
     "bench/migration_pause.py"),
    ("cluster_down", "cluster_down.json", "cluster_down: kill -9 to down (issue #4)",
     "bench/cluster_down.py"),
    ("failover_time", "failover_time.json", "failover_time: kill -9 to failover (issue #5)",
     "bench/failover_time.py"),
]


# The goals each scenario judges (the texts its method passes to Report.goal): listed as "not
# measured" when the scenario has no figures.
GOALS = {
    "local": [("#2", "local tell by id >= 0.8x raw CAF")],
    "durable": [("#3", "durable: >= 50,000 acks/s at 256 writers with p99 < 10 ms")],
    "remote": [("#4", "cross-node ask p50 <= Erlang's round trip"),
               ("#4", "cross-node windowed throughput >= 1.5x Erlang's")],
    "migration_pause": [("#4", "migration pause p99 < 5 ms at 64 KiB")],
    "cluster_down": [("#4", "kill -9 to down on every survivor p99 < 1 s")],
    "failover_time": [("#5", "failover: kill -9 to the first answer p99 < 2 s")],
    "gateway": [("#6", "gateway: >= 50,000 asks/s over the binary protocol (1 in flight per "
                 "connection)"), ("#6", "gateway: p99 < 2 ms at 200 requests/s (HTTP and binary)")],
    "density": [("#8", ">= 1,000,000 live idle agents under 2 GiB RSS, actors running"),
                ("#8", ">= 1,000,000 live idle agents under 2 GiB RSS, hibernated (actor "
                 "released, state in memory)"),
                ("#8", ">= 10,000,000 passivated agents on one node's disk")],
}


def read_status(results_dir):
    path = os.path.join(results_dir, "status.tsv")
    out = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            p = line.split("\t")
            if len(p) < 6:
                raise ReportError(f"{path}: line {n} has {len(p)} tab-separated fields, expected 6 "
                                  "(name status seconds rc command note)")
            out[p[0]] = dict(status=p[1], seconds=p[2], rc=p[3], command=p[4], note=p[5])
    return out


def demote(md):
    """The peers' summary.md, headings one level down (not inside code blocks)."""
    out, code = [], False
    for line in md.splitlines():
        if line.startswith("```"):
            code = not code
        out.append("#" + line if line.startswith("#") and not code else line)
    return out


def build(results_dir, out_path, charts_dir, gnuplot, want_charts, require_charts):
    results_dir = os.path.abspath(results_dir)
    status = read_status(results_dir)
    run = read_kv(os.path.join(results_dir, "run.txt"))
    machine = read_kv(os.path.join(results_dir, "machine.txt"))
    machine_note = ""
    if not machine:
        machine = machine_facts()
        machine_note = (" (no machine.txt in the results directory: these facts were gathered "
                        "when the report was written, not when it was measured)")
    errors = []
    try:
        peers = Peers(results_dir, status)
    except ReportError as e:
        errors.append(str(e))
        peers = Peers.__new__(Peers)
        peers.vals, peers.units, peers.note, peers.dir = {}, {}, f"unreadable: {e}", ""
        peers.summary = ""
    quick = run.get("mode", "") == "quick"
    rep = Report(results_dir, status, peers, quick)
    sections = []
    missing_goals = []
    for name, file, title, what in SCENARIOS:
        path = os.path.join(results_dir, file)
        body = [f"## {title}", ""]
        charts_here = []
        if not os.path.exists(path):
            body += [rep.not_run(name, file), ""]
            missing_goals += [(i, t, f"no figures (`{file}` missing)", "not measured")
                              for i, t in GOALS.get(name, [])]
        else:
            body += rep.cmd(name)
            n_goals, n_charts = len(rep.goals), len(rep.charts)
            try:
                doc = load_json(path, what)
                # "scenario" names what wrote the file; older files (and remote.json) have none.
                if doc.has("scenario") and doc.get("scenario") != name:
                    raise ReportError(f"{path}: field 'scenario' is "
                                      f"{json.dumps(doc.get('scenario'))[:60]}, expected "
                                      f"\"{name}\" (the JSON of {what})")
                lines, charts_here = getattr(rep, name)(doc)
                body += lines
            except ReportError as e:
                del rep.goals[n_goals:]
                del rep.charts[n_charts:]
                charts_here = []
                errors.append(str(e))
                body += [f"**Not reported: {e}**", ""]
                missing_goals += [(i, t, f"`{file}` unreadable (see Errors)", "not measured")
                                  for i, t in GOALS.get(name, [])]
        sections.append((name, body, charts_here))

    rendered, chart_problem = [], None
    if not want_charts:
        chart_problem = "charts not rendered (--no-charts)"
    elif rep.charts:
        rendered, chart_problem = render_charts(rep.charts, results_dir, charts_dir, gnuplot)
    # PNGs of an earlier report that this one did not draw (a scenario not run this time).
    # Only when this report drew charts there: --no-charts or no gnuplot leaves the directory
    # alone (report.py --out /tmp/x.md --no-charts must not empty bench/charts).
    if rendered and os.path.isdir(charts_dir):
        prefixes = tuple(name + "-" for name, _, _, _ in SCENARIOS)
        for f in os.listdir(charts_dir):
            if f.endswith(".png") and f.startswith(prefixes) and f[:-4] not in rendered:
                os.remove(os.path.join(charts_dir, f))
    rel = os.path.relpath(os.path.abspath(charts_dir), os.path.dirname(os.path.abspath(out_path)))

    L = ["# Benchmark results", "",
         "Generated by [`bench/regen.sh`](regen.sh) with [`bench/report.py`](report.py) from "
         "one results directory; do not edit by hand, run the command below again. Earlier "
         "figures and their analysis (what costs what, what was tried): "
         "[HISTORY.md](HISTORY.md).", ""]
    if quick:
        L += ["> **QUICK RUN** (`--quick`): small sizes and 1-2 runs per scenario, made to test "
              "the pipeline. These are not the project's figures and the goal verdicts below "
              "are indicative only. The full run is `bash bench/regen.sh`.", ""]
    started = run.get("started_utc", "")
    finished = run.get("finished_utc", "")
    L += ["| | |", "| --- | --- |",
          f"| Date | {started or machine.get('date_utc', 'unknown')}"
          + (f" to {finished}" if finished else "")
          + (f" ({run['elapsed']})" if run.get("elapsed") else "") + " |",
          f"| Command | `{run.get('command', 'unknown (no run.txt in the results directory)')}` |",
          f"| Mode | {run.get('mode', 'unknown')} |",
          f"| Commit | {run.get('git_commit', 'unknown')}"
          + (f" (branch {run['git_branch']})" if run.get("git_branch") else "")
          + (f"; {run['git_dirty']}" if run.get("git_dirty") else "") + " |",
          f"| Binaries | {run.get('binaries', 'unknown')} |",
          f"| Results directory | `{run.get('results_dir', results_dir)}` (not in git) |",
          f"| Machine | {machine.get('nproc', '?')} cores ({machine.get('cpu', '?')}), "
          f"{machine.get('memory', '?')} memory"
          + (f", {machine['virtualization']} guest" if machine.get("virtualization") else "")
          + machine_note + " |",
          f"| Kernel, OS | {machine.get('kernel', '?')}; {machine.get('os', '?')} |",
          f"| Compiler | {machine.get('compiler', '?')} |",
          f"| CAF, RocksDB, Erlang | {machine.get('caf', '?')}, {machine.get('rocksdb', '?')}, "
          f"{machine.get('erlang', '?')} |",
          f"| Load average | at start {run.get('load_start', machine.get('load_average', '?'))}"
          + (f"; at end {run['load_end']}" if run.get("load_end") else "")
          + " (1, 5, 15 min) |", ""]
    if peers.vals and peers.foreign:
        L[-1:-1] = [f"| Other load | processes outside this run used {peers.foreign} % of one CPU "
                    "on average during the peers' part (their `sysinfo.txt`) |"]
    if peers.vals:
        L += [f"Erlang and raw-CAF peers (`../shared/peers/run_all.sh`) ran in the same run: "
              f"`{status['peers']['command']}`." if status.get("peers") else
              "Erlang and raw-CAF peers: figures from peers/raw.txt.", ""]
    else:
        L += [f"Erlang and raw-CAF peers: not in this run ({peers.note}).", ""]

    L += ["## Goals", "", GOALS_NOTE, "", "| issue | goal | this run | verdict |",
          "| --- | --- | --- | --- |"]
    order = {"#2": 2, "#3": 3, "#4": 4, "#5": 5, "#6": 6, "#7": 7, "#8": 8}
    for issue, text, measured, v in sorted(rep.goals + missing_goals,
                                           key=lambda g: order.get(g[0], 99)):
        if quick and v != "not measured":
            v += " (quick run)"
        L.append(f"| {issue} | {text} | {measured} | {v} |")
    L.append("")
    if chart_problem:
        L += [f"Charts: {'some ' if rendered else ''}not rendered: {chart_problem}.", ""]
    if errors:
        L += ["**Errors while reading the results:**", ""] + [f"- {e}" for e in errors] + [""]

    for name, body, charts_here in sections:
        L += body
        for c in charts_here:
            if c in rendered:
                L += [f"![{c}]({rel}/{c}.png)", ""]
    if peers.vals and peers.summary and os.path.exists(peers.summary):
        with open(peers.summary, encoding="utf-8") as f:
            L += ["## Appendix: the peers' own summary (../shared/peers/summarize.py)", "",
                  "All of the peers' benchmarks of this run, with their paired CAF/Erlang "
                  "ratios, as `summarize.py` wrote them:", ""] + demote(f.read().rstrip()) + [""]
    text = "\n".join(L).rstrip() + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out_path)
    print(f"report.py: wrote {out_path} ({plural(len(rep.goals), 'goal verdict')}, "
          f"{plural(len(rendered), 'chart')} in {charts_dir})")
    if chart_problem and want_charts:
        print(f"report.py: charts skipped: {chart_problem}", file=sys.stderr)
    for e in errors:
        print(f"report.py: error: {e}", file=sys.stderr)
    if require_charts and (chart_problem or len(rendered) < len(rep.charts)):
        print("report.py: error: --require-charts, but the charts were not all rendered",
              file=sys.stderr)
        return 3
    return 1 if errors else 0


def main():
    ap = argparse.ArgumentParser(
        description="Write bench/RESULTS.md and PNG charts from a bench/regen.sh results "
                    "directory.")
    ap.add_argument("results_dir", nargs="?", help="the results directory of one regen.sh run")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "RESULTS.md"))
    ap.add_argument("--charts", default=os.path.join(REPO, "bench", "charts"),
                    help="where the PNGs go (linked relative to --out)")
    ap.add_argument("--gnuplot", default="gnuplot", help="the gnuplot executable")
    ap.add_argument("--no-charts", action="store_true", help="do not render charts")
    ap.add_argument("--require-charts", action="store_true",
                    help="fail (exit 3) when the charts cannot be rendered")
    ap.add_argument("--machine", action="store_true",
                    help="print this machine's facts as 'key: value' lines and exit")
    opts = ap.parse_args()
    if opts.machine:
        for k, v in machine_facts().items():
            print(f"{k}: {v}")
        return 0
    if not opts.results_dir:
        ap.error("RESULTS_DIR is required (or --machine)")
    if not os.path.isdir(opts.results_dir):
        print(f"report.py: error: results directory '{opts.results_dir}' does not exist",
              file=sys.stderr)
        return 2
    if opts.no_charts and opts.require_charts:
        ap.error("--no-charts and --require-charts contradict each other")
    try:
        return build(opts.results_dir, opts.out, opts.charts, opts.gnuplot, not opts.no_charts,
                     opts.require_charts)
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
