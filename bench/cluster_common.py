"""Shared by the cluster benchmarks (cluster_down.py, failover_time.py, migration_pause.py):
agent-node processes on 127.0.0.1 with their own data directories, polling, quantiles. Every
node takes the admin key of ADMIN_KEY_FILE (--admin-key-file) and every request carries it;
the file is removed when the script ends (normally, by an exception, sys.exit or SIGTERM, as
regen.sh's time limit sends; not after SIGKILL)."""

import atexit
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

# One admin key per benchmark run, in a file only this user can read.
ADMIN_KEY = "hive-bench-admin-" + os.urandom(16).hex()
ADMIN_KEY_FILE = os.path.join("/tmp", f"hive-bench-admin-key-{os.getpid()}")
with open(os.open(ADMIN_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    f.write(ADMIN_KEY + "\n")
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def remove_admin_key_file():
    try:
        os.unlink(ADMIN_KEY_FILE)
    except FileNotFoundError:
        pass


# atexit runs after the scripts' own `finally: stop_all(nodes)`, so the nodes are gone first.
atexit.register(remove_admin_key_file)


_stopping = False  # stop_all has begun: the script is ending, a SIGTERM must not cut it short


def _terminated(signum, _frame):
    # SIGTERM (timeout, kill) -> SystemExit: the scripts' finally blocks stop the nodes and
    # atexit removes the key file, instead of dying with both left behind. Once stop_all has
    # begun it is ignored: raised there it would leave nodes unwaited and data directories.
    if not _stopping:
        sys.exit(128 + signum)


if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _terminated)


def get_nodes(gateway):
    req = urllib.request.Request(f"http://{gateway}/v1/cluster/nodes", headers=AUTH)
    with urllib.request.urlopen(req, timeout=2) as r:
        return {n["name"]: n for n in json.load(r)["nodes"]}


STARTED = []  # every Node started by this process: stop_all stops these too


class Node:
    def __init__(self, binary, name, data, seed_port, extra=()):
        self.binary, self.name, self.data, self.seed_port = binary, name, data, seed_port
        self.extra = list(extra)
        self.proc = None
        self.gateway = None
        self.cluster_port = None

    def start(self):
        args = [self.binary, "--name", self.name, "--data-dir", self.data,
                "--gateway", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                "--cluster", "127.0.0.1:0", "--admin-key-file", ADMIN_KEY_FILE,
                "--log-level", os.environ.get("HIVE_BENCH_LOG_LEVEL", "warn")]
        if self.seed_port:
            args += ["--seed", f"127.0.0.1:{self.seed_port}"]
        args += self.extra
        log = open(os.path.join(self.data + ".log"), "a")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        if self not in STARTED:
            STARTED.append(self)
        line = self.proc.stdout.readline()
        m = re.search(r"gateway https?://([^ ]+) .* cluster [^ ]+:(\d+)", line)
        if not m:
            sys.exit(f"{self.name} did not start: {line!r}")
        self.gateway, self.cluster_port = m.group(1), int(m.group(2))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_until(pred, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(0.001)
    return False


def quantile(xs, q):
    """Nearest-rank quantile: the smallest value with at least q of the values at or below it
    (p99 of 100 values is the 99th, of 30 values the largest)."""
    xs = sorted(xs)
    rank = math.ceil(round(q * len(xs), 9))  # (round: 0.99 * 100 is 99.00000000000001)
    return xs[min(len(xs) - 1, max(rank, 1) - 1)]


def request(gateway, method, path, body=None, timeout=10, headers=None):
    """One HTTP request with a JSON body; returns (status, parsed JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{gateway}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **AUTH,
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(), e.code
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def form_cluster(binary, root, names, extra=()):
    """Starts one node per name (the first seeds the others) and waits until all see all up."""
    nodes = []
    first = Node(binary, names[0], os.path.join(root, names[0]), None, extra)
    first.start()
    nodes.append(first)
    for name in names[1:]:
        n = Node(binary, name, os.path.join(root, name), first.cluster_port, extra)
        n.start()
        nodes.append(n)

    def all_up():
        return all(all(v.get(x, {}).get("status") == "up" for x in names)
                   for v in (get_nodes(n.gateway) for n in nodes))

    if not wait_until(all_up, 20):
        stop_all(nodes)
        sys.exit("the cluster did not form")
    return nodes, all_up


def stop_all(nodes):
    """Stops `nodes` and any other node this process started (one that form_cluster started
    before an error or a SIGTERM, which the caller's list does not have yet)."""
    global _stopping
    _stopping = True
    nodes = list(nodes) + [n for n in STARTED if n not in nodes]
    for n in nodes:
        if n.proc and n.proc.poll() is not None and n.proc.returncode != 0:
            print(f"{n.name} had exited by itself with status {n.proc.returncode} "
                  f"(log: {n.data}.log)", file=sys.stderr)
        if n.proc and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGTERM)
    for n in nodes:
        if n.proc:
            try:
                n.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                n.proc.kill()
