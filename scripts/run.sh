#!/usr/bin/env bash
# run.sh: install what is missing, build agent-node (Release) and start one node in the
# foreground with its embedded defaults:
#
#   node name  node1
#   data       ./hive-data (in the repository root)
#   gateway    http://127.0.0.1:8080   (HTTP/JSON API, /healthz, /readyz)
#   metrics    http://127.0.0.1:9464/metrics
#
#   bash scripts/run.sh [agent-node flags...]     e.g. --gateway 127.0.0.1:0 --log-level debug
#
# Extra arguments go to agent-node unchanged (`--help` lists them; config/hive.toml lists every
# key). The node replaces this script's process, so Ctrl-C (SIGINT) reaches it directly and it
# stops cleanly: stops accepting, drains, stops its actors, exits 0.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bash "$repo/scripts/setup.sh" release --target agent-node

node="$repo/build/release/nodes/agent-node"
[[ -x "$node" ]] || { echo "==> run: error: $node was not built" >&2; exit 1; }

# The address to print: the gateway flag if given, else the default.
gateway="127.0.0.1:8080"
metrics="127.0.0.1:9464"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --gateway=*) gateway="${args[i]#--gateway=}" ;;
    --gateway) gateway="${args[i + 1]:-$gateway}" ;;
    --metrics=*) metrics="${args[i]#--metrics=}" ;;
    --metrics) metrics="${args[i + 1]:-$metrics}" ;;
  esac
done
[[ "$gateway" == *:0 ]] && gateway="<gateway HOST:PORT from the ready line>"
[[ "$metrics" == *:0 ]] && metrics="<metrics HOST:PORT from the ready line>"

cat <<EOF
==> run: starting agent-node; data in $repo/hive-data; Ctrl-C stops it.
==> run: once it prints its ready line, from another terminal:
    curl -s -X POST http://$gateway/v1/agents -d '{"id":"acme/c1","kind":"counter","config":{}}'
    curl -s -X POST http://$gateway/v1/agents/acme/c1/ask -d '{"op":"add","by":5}'
    curl -s http://$gateway/v1/agents/acme/c1
    curl -s http://$metrics/metrics | grep '^hive_'
==> run: README.md has the full tour.
EOF

# Run from the repository root so the default data directory is ./hive-data there.
cd "$repo"
exec "$node" "$@"
