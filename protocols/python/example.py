#!/usr/bin/env python3
"""Example: a counter through hive's HTTP API with hive_client (standard library only).

    python3 protocols/python/example.py --url http://127.0.0.1:8080 \\
        --token-file hive-data/admin.key [--tenant demo]

Spawns TENANT/py-counter, tells it +2 three times, asks +1, reads it back, shows its
inspection and a refused call, creates a viewer key and shows that it may read but not
write, then stops the counter. Prints one line per step; exits 1 if a step does not give
what it should.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hive_client import Client, HiveError  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("HIVE_URL", "http://127.0.0.1:8080"))
    p.add_argument("--token", default=os.environ.get("HIVE_TOKEN"))
    p.add_argument("--token-file")
    p.add_argument("--tenant", default="demo")
    a = p.parse_args()
    token = a.token
    if a.token_file:
        with open(a.token_file) as f:
            token = f.read().strip()
    if not token:
        sys.exit("example.py: give --token, --token-file or $HIVE_TOKEN")

    agent = f"{a.tenant}/py-counter"
    with Client(a.url, token=token) as c:
        print("spawned", c.spawn(agent, "counter"))
        for _ in range(3):
            c.tell(agent, {"op": "add", "by": 2})
        print("ask add 1 ->", c.ask(agent, {"op": "add", "by": 1}))
        value = c.ask(agent, {"op": "get"})["value"]
        print("value", value)
        if value != 7:
            sys.exit(f"example.py: expected 7, got {value}")
        print("node", c.inspect(agent).get("node"))
        try:
            c.ask(f"{a.tenant}/no-such-agent", {"op": "get"})
            sys.exit("example.py: asking a missing agent should fail")
        except HiveError as e:
            print("refused as expected:", e.status, e.code)
        made = c.create_key("viewer", "py-example", tenant=a.tenant)
        with Client(a.url, token=made["key"]) as viewer:
            print("viewer sees", [x["id"] for x in viewer.agents()])
            try:
                viewer.tell(agent, {"op": "add", "by": 1})
                sys.exit("example.py: a viewer must not tell")
            except HiveError as e:
                print("viewer may not tell:", e.status, e.code)
        c.revoke_key(made["id"])
        c.stop(agent)
        print("stopped", agent)


if __name__ == "__main__":
    main()
