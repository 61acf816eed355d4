#!/usr/bin/env python3
"""The failover checker can fail: it flags lost, duplicated and split-brain histories and
passes a clean one (tests/soak/check_history.py)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_history  # noqa: E402


def lines(*events):
    return [json.dumps(e) for e in events]


def op(kind, client, seq, counter, **kw):
    e = {"type": kind, "client": client, "seq": seq, "counter": counter}
    e.update(kw)
    return e


def main():
    clean = lines({"type": "meta", "seed": 7},
                  op("invoke", 0, 1, "s/c"), op("ok", 0, 1, "s/c", value=1),
                  op("invoke", 0, 2, "s/c"), op("info", 0, 2, "s/c", error="timeout"),
                  op("invoke", 1, 1, "s/c"), op("ok", 1, 1, "s/c", value=3),
                  {"type": "final", "counter": "s/c", "value": 3})
    summary, v = check_history.check(clean)
    assert not v and summary["acknowledged"] == 2 and summary["seed"] == 7, (summary, v)
    # Unknown outcomes may or may not have applied: 2 is fine too.
    summary, v = check_history.check(clean[:-1] + lines({"type": "final", "counter": "s/c",
                                                         "value": 2}))
    assert not v, v
    lost = clean[:-1] + lines({"type": "final", "counter": "s/c", "value": 1})
    summary, v = check_history.check(lost)
    assert summary["lost_acknowledged"] == 1 and any(x.startswith("lost") for x in v), v
    dup = clean[:-1] + lines({"type": "final", "counter": "s/c", "value": 5})
    summary, v = check_history.check(dup)
    assert summary["duplicated"] == 2 and any(x.startswith("duplicated") for x in v), v
    split = lines(op("invoke", 0, 1, "s/c"), op("ok", 0, 1, "s/c", value=1),
                  op("invoke", 1, 1, "s/c"), op("ok", 1, 1, "s/c", value=1),
                  {"type": "final", "counter": "s/c", "value": 2})
    summary, v = check_history.check(split)
    assert any(x.startswith("split brain") for x in v), v
    unread = clean[:-1]
    summary, v = check_history.check(unread)
    assert any(x.startswith("unread") for x in v), v
    cut = lines({"type": "nemesis", "action": "isolate", "node": "n1", "t": 100.0},
                op("invoke", 0, 1, "s/c"), op("ok", 0, 1, "s/c", value=1, node="n2", t=103.0),
                op("invoke", 0, 2, "s/c"), op("ok", 0, 2, "s/c", value=2, node="n1", t=100.5),
                op("invoke", 0, 3, "s/c"), op("ok", 0, 3, "s/c", value=3, node="n1", t=104.0),
                {"type": "nemesis", "action": "heal", "node": "n1", "t": 105.0},
                op("invoke", 0, 4, "s/c"), op("ok", 0, 4, "s/c", value=4, node="n1", t=106.0),
                {"type": "final", "counter": "s/c", "value": 4})
    summary, v = check_history.check(cut)
    assert summary["minority_acknowledged"] == 1 and len(v) == 1, (summary, v)
    print("check_history: clean passes; lost, duplicated, split brain, unread and minority acks are caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
