#!/usr/bin/env python3
"""Offline checker of a failover soak history (tests/soak/failover_soak.py).

The history is JSON lines. Each increment of a counter by 1 is one operation with a unique
idempotency key (client, seq):

  {"type":"invoke","client":C,"seq":S,"counter":ID}
  {"type":"ok","client":C,"seq":S,"counter":ID,"value":V}     acknowledged; V = value after it
  {"type":"info","client":C,"seq":S,"counter":ID,"error":E}   outcome unknown (gave up)
  {"type":"fail","client":C,"seq":S,"counter":ID,"error":E}   certainly not applied
  {"type":"final","counter":ID,"value":V}                     read after the run
  {"type":"meta",...} and {"type":"nemesis",...}              ignored here

Verdicts, per counter with A acknowledged, I unknown operations and final value V:
  lost acknowledged increments   V < A
  duplicated effects             V > A + I
  split brain                    two different acknowledged operations saw the same value
                                 (two activations both committed the same sequence)
  unread                         a counter without a final value
  minority acknowledged          an operation acknowledged through a node more than
                                 GRACE_S after it was isolated ({"type":"nemesis",
                                 "action":"isolate"|"heal","node":N}) and before it healed

Exit status: 0 when no violation, 1 when there is one (printed), 2 for an unusable history.
"""

import collections
import json
import sys

# Seconds after an isolation during which an acknowledgement through the isolated node may
# still be one whose majority was reached before the cut.
GRACE_S = 1.0


def check(lines):
    ok = collections.Counter()
    info = collections.Counter()
    invoked = collections.Counter()
    values = collections.defaultdict(dict)  # counter -> value -> (client, seq)
    final = {}
    seed = None
    violations = []
    isolated = {}  # node -> time it was cut off
    minority = 0
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            e = json.loads(line)
        except ValueError:
            raise ValueError("line %d is not JSON" % n)
        t = e.get("type")
        if t == "meta":
            seed = e.get("seed")
        elif t == "nemesis" and e.get("action") == "isolate":
            isolated[e["node"]] = e["t"]
        elif t == "nemesis" and e.get("action") == "heal":
            isolated.pop(e["node"], None)
        elif t == "invoke":
            invoked[e["counter"]] += 1
        elif t == "ok":
            c = e["counter"]
            ok[c] += 1
            via = e.get("node")
            if via in isolated and e.get("t", 0) > isolated[via] + GRACE_S:
                minority += 1
                violations.append(
                    "minority acknowledged: %s: operation %s acknowledged through %s %.2f s "
                    "after it was isolated" % (c, (e["client"], e["seq"]), via,
                                               e["t"] - isolated[via]))
            v = e.get("value")
            key = (e["client"], e["seq"])
            if v in values[c] and values[c][v] != key:
                violations.append(
                    "split brain: %s: operations %s and %s were both acknowledged with value %s"
                    % (c, values[c][v], key, v))
            values[c][v] = key
        elif t == "info":
            info[e["counter"]] += 1
        elif t == "final":
            final[e["counter"]] = e["value"]
    counters = set(invoked) | set(final)
    lost = dup = 0
    for c in sorted(counters):
        if c not in final:
            violations.append("unread: %s has no final value" % c)
            continue
        v, a, i = final[c], ok[c], info[c]
        if v < a:
            lost += a - v
            violations.append("lost: %s: %d acknowledged increments, final value %d" % (c, a, v))
        elif v > a + i:
            dup += v - a - i
            violations.append(
                "duplicated: %s: final value %d exceeds %d acknowledged + %d unknown" % (c, v, a, i))
    summary = {
        "seed": seed,
        "counters": len(counters),
        "acknowledged": sum(ok.values()),
        "unknown": sum(info.values()),
        "lost_acknowledged": lost,
        "duplicated": dup,
        "minority_acknowledged": minority,
        "violations": len(violations),
    }
    return summary, violations


def main(argv):
    if len(argv) != 2:
        print("usage: check_history.py HISTORY.jsonl", file=sys.stderr)
        return 2
    try:
        with open(argv[1]) as f:
            summary, violations = check(f)
    except (OSError, ValueError, KeyError) as e:
        print("check_history: unusable history %s: %s" % (argv[1], e), file=sys.stderr)
        return 2
    for v in violations[:50]:
        print("VIOLATION " + v)
    if len(violations) > 50:
        print("... and %d more" % (len(violations) - 50))
    print(json.dumps(summary))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
