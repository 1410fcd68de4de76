#!/usr/bin/env bash
# The API contract test: a one-node cluster from node.toml, then schemathesis against its
# /api/v1/openapi.json with schemathesis.toml: no server error, every answer in the document,
# schema-valid requests accepted and schema-invalid ones refused. Part of `./dev.sh test`.
#
#   node/tests/api-contract/run.sh PATH/TO/parley
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
parley="${1:?usage: run.sh PATH/TO/parley}"
admin_token="local-demo-admin-token-change-me-0123456789"
url="http://127.0.0.1:18101"

# Through the interpreter, so a fresh install works without a PATH change (pyenv shims).
if ! python3 -m schemathesis.cli --version >/dev/null 2>&1; then
  echo "[api-contract] installing schemathesis from PyPI" >&2
  python3 -m pip install --quiet "schemathesis>=4.32,<5"
fi

data="$(mktemp -d -t parley-api-contract-XXXXXX)"
# Mutual TLS between nodes, as in production (a one-node cluster has no peer, but the node
# loads and checks its certificate all the same).
"$parley" certs --dir "$data/certs" --nodes 1 >/dev/null
PARLEY_DATA_DIR="$data" PARLEY_TLS__CA_FILE="$data/certs/ca.pem" \
  PARLEY_TLS__CERT_FILE="$data/certs/node-1.pem" PARLEY_TLS__KEY_FILE="$data/certs/node-1.key" \
  "$parley" serve --config "$here/node.toml" >"$data/node.log" 2>&1 &
node=$!
cleanup() {
  kill -TERM "$node" 2>/dev/null || true
  wait "$node" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 1 120); do
  if curl -fsS "$url/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$node" 2>/dev/null; then
    echo "[api-contract] the node exited; its log:" >&2
    cat "$data/node.log" >&2
    exit 1
  fi
  sleep 0.5
done
curl -fsS "$url/readyz" >/dev/null || { echo "[api-contract] the node never became ready" >&2; cat "$data/node.log" >&2; exit 1; }

# The agent operations run with a logged-in demo agent's token, the others with the admin
# credential (schemathesis.toml).
agent_token="$(curl -fsS -X POST "$url/api/v1/agents/login" -H 'Content-Type: application/json' \
  -d '{"agent_id": "alice", "password": "parley-demo"}' | jq -r .token)"
[ -n "$agent_token" ] && [ "$agent_token" != null ] || { echo "[api-contract] the demo agent could not log in" >&2; exit 1; }

echo "[api-contract] schemathesis against $url/api/v1/openapi.json" >&2
cd "$data"
PARLEY_ADMIN_TOKEN="$admin_token" PARLEY_AGENT_TOKEN="$agent_token" python3 -m schemathesis.cli --config-file "$here/schemathesis.toml" run \
  --no-color "$url/api/v1/openapi.json"
