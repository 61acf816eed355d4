#!/usr/bin/env python3
"""Kill -9 to "down": how long the surviving members of a 3-node cluster take to list a killed
node as down, over repeated kills (issue #4's goal: p99 < 1 s).

Starts three agent-node processes on 127.0.0.1 (ephemeral ports, temporary data directories),
then KILLS times: SIGKILL a random node other than the seed, poll GET /v1/cluster/nodes on both
survivors every millisecond until both list it as down, restart it on its data directory and
wait until all three list it up again. Prints each measurement, p50/p99/max, and writes JSON.

  python3 bench/cluster_down.py [--kills 20] [--seed N] [--node build/release/nodes/agent-node]
                                [--json out.json]
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

from cluster_common import form_cluster, get_nodes, quantile, stop_all, wait_until


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--node", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                   "release", "nodes", "agent-node"))
    ap.add_argument("--json", default=None)
    opts = ap.parse_args()
    seed = opts.seed if opts.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    print(f"cluster_down: seed {seed} (repeat with --seed {seed}), {opts.kills} kills", flush=True)
    root = tempfile.mkdtemp(prefix="hive-down-")
    nodes = []
    try:
        nodes, all_up = form_cluster(opts.node, root, ["n1", "n2", "n3"])
        samples = []
        for k in range(opts.kills):
            victim = rng.choice(nodes[1:])
            survivors = [n for n in nodes if n is not victim]
            time.sleep(rng.uniform(0.2, 0.5))
            t0 = time.monotonic()
            victim.kill()
            ok = wait_until(lambda: all(get_nodes(s.gateway)[victim.name]["status"] == "down"
                                        for s in survivors), 10)
            dt = (time.monotonic() - t0) * 1000
            if not ok:
                sys.exit(f"kill {k + 1}: {victim.name} not declared down within 10 s")
            samples.append(dt)
            print(f"  kill {k + 1}/{opts.kills}: {victim.name} down on both survivors after "
                  f"{dt:.1f} ms", flush=True)
            victim.start()
            if not wait_until(all_up, 20):
                sys.exit(f"kill {k + 1}: {victim.name} did not rejoin")
        p50, p99, mx = quantile(samples, 0.5), quantile(samples, 0.99), max(samples)
        print(f"kill -9 -> down on every survivor: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"max {mx:.1f} ms over {len(samples)} kills (1 ms polling of /v1/cluster/nodes)")
        print(f"goal (p99 < 1000 ms): {'met' if p99 < 1000 else 'NOT met'}")
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump({"scenario": "cluster_down", "seed": seed, "kills": len(samples),
                           "samples_ms": samples, "p50_ms": p50, "p99_ms": p99, "max_ms": mx},
                          f, indent=1)
    finally:
        stop_all(nodes)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
