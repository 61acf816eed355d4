#!/usr/bin/env bash
# run.sh: install what is missing, build agent-node (Release) and start a local cluster of 3
# nodes on 127.0.0.1 (node1 in the foreground, node2 and node3 in the background):
#
#   node    gateway (HTTP/JSON)      binary protocol  metrics                         cluster endpoint  data
#   node1   http://127.0.0.1:8080    127.0.0.1:8180   http://127.0.0.1:9464/metrics   127.0.0.1:7101    ./hive-data/node1
#   node2   http://127.0.0.1:8081    127.0.0.1:8181   http://127.0.0.1:9465/metrics   127.0.0.1:7102    ./hive-data/node2
#   node3   http://127.0.0.1:8082    127.0.0.1:8182   http://127.0.0.1:9466/metrics   127.0.0.1:7103    ./hive-data/node3
#
# Every node takes the bootstrap admin key from ./hive-data/admin.key (--admin-key-file),
# generated here once (32 random bytes, mode 0600). Requests need it (or a key or JWT made
# with it): export HIVE_TOKEN=$(cat hive-data/admin.key) and send
# -H "Authorization: Bearer $HIVE_TOKEN"; agentctl reads $HIVE_TOKEN by itself.
#
# node2 and node3 join through node1 (--seed). Logs of node2 and node3 go to
# ./hive-data/nodeN.log; node1 logs to this terminal. Ctrl-C (or SIGTERM) stops all three
# cleanly: each stops accepting, leaves the cluster, drains, stops its actors, exits 0.
#
#   bash scripts/run.sh [agent-node flags...]   extra flags go to every node (e.g. --log-level debug)
#   HIVE_NODES=1 bash scripts/run.sh [flags]    one standalone node, as node1 above (no cluster)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bash "$repo/scripts/setup.sh" release --target agent-node

node="$repo/build/release/nodes/agent-node"
[[ -x "$node" ]] || { echo "==> run: error: $node was not built" >&2; exit 1; }

nodes="${HIVE_NODES:-3}"
[[ "$nodes" == "1" || "$nodes" == "3" ]] || { echo "==> run: HIVE_NODES must be 1 or 3" >&2; exit 2; }

cd "$repo"
mkdir -p hive-data
key_file=hive-data/admin.key
if [[ ! -s "$key_file" ]]; then
  (umask 077 && printf 'hive-admin-%s\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" \
    > "$key_file")
  echo "==> run: generated the admin key in $repo/$key_file"
fi
auth=(--admin-key-file "$key_file")

if [[ "$nodes" == "1" ]]; then
  cat <<EOF
==> run: starting one agent-node; data in $repo/hive-data/node1; Ctrl-C stops it.
==> run: once it prints its ready line, from another terminal (in $repo):
    export HIVE_TOKEN=\$(cat $key_file)
    curl -s -H "Authorization: Bearer \$HIVE_TOKEN" -X POST http://127.0.0.1:8080/v1/agents -d '{"id":"acme/c1","kind":"counter"}'
    curl -s -H "Authorization: Bearer \$HIVE_TOKEN" -X POST http://127.0.0.1:8080/v1/agents/acme/c1/ask -d '{"op":"add","by":5}'
==> run: README.md has the full tour.
EOF
  exec "$node" --name node1 --data-dir hive-data/node1 --gateway 127.0.0.1:8080 \
    --binary 127.0.0.1:8180 --metrics 127.0.0.1:9464 "${auth[@]}" "$@"
fi

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

for i in 2 3; do
  "$node" --name "node$i" --data-dir "hive-data/node$i" --gateway "127.0.0.1:808$((i - 1))" \
    --binary "127.0.0.1:818$((i - 1))" --metrics "127.0.0.1:946$((i + 3))" --cluster "127.0.0.1:710$i" --seed 127.0.0.1:7101 "${auth[@]}" "$@" \
    > "hive-data/node$i.log" 2>&1 &
  pids+=($!)
done

cat <<EOF
==> run: starting a 3-node cluster; data in $repo/hive-data; Ctrl-C stops all three.
==> run:   node1 http://127.0.0.1:8080 (this terminal), node2 http://127.0.0.1:8081 and
           node3 http://127.0.0.1:8082 (logs in hive-data/node2.log, hive-data/node3.log)
==> run: once node1 prints its ready line, from another terminal (in $repo):
    export HIVE_TOKEN=\$(cat $key_file)
    curl -s -H "Authorization: Bearer \$HIVE_TOKEN" http://127.0.0.1:8080/v1/cluster/nodes
    curl -s -H "Authorization: Bearer \$HIVE_TOKEN" -X POST http://127.0.0.1:8080/v1/agents -d '{"id":"acme/c1","kind":"counter"}'
    curl -s -H "Authorization: Bearer \$HIVE_TOKEN" -X POST http://127.0.0.1:8082/v1/agents/acme/c1/ask -d '{"op":"add","by":5}'
==> run: README.md has the full tour.
EOF

"$node" --name node1 --data-dir hive-data/node1 --gateway 127.0.0.1:8080 \
  --binary 127.0.0.1:8180 --metrics 127.0.0.1:9464 --cluster 127.0.0.1:7101 --seed 127.0.0.1:7102 \
  --seed 127.0.0.1:7103 "${auth[@]}" "$@" &
pids+=($!)
wait "${pids[-1]}"
