#!/usr/bin/env bash
# One command for the five-node, three-site cluster in Docker Compose:
#
#   deploy/compose/up.sh            build the binary and the image, make the certificates and
#                                   secrets (once), start the five nodes, wait until every one
#                                   is ready, print where to connect
#   deploy/compose/up.sh down       stop and remove the containers (the data volumes stay)
#   deploy/compose/up.sh destroy    also remove the data volumes and deploy/compose/.state
#
# Needs Docker and docker-compose (Debian: docker.io, docker-compose) and root or sudo (the image
# build and the site cuts). The first build compiles RocksDB: 15-30 minutes on two cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-parley}"
export PARLEY_IMAGE="${PARLEY_IMAGE:-parley:dev}"
export PARLEY_STATE="${PARLEY_STATE:-$here/.state}"
log() { printf '\033[1m[compose]\033[0m %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
command -v docker >/dev/null || fail "docker is not installed (Debian: apt-get install docker.io)"
command -v docker-compose >/dev/null || fail "docker-compose is not installed (Debian: apt-get install docker-compose)"
compose() { docker-compose -f "$here/docker-compose.yml" "$@"; }

case "${1:-up}" in
  down) compose down; exit 0 ;;
  destroy) compose down -v; rm -rf "$PARLEY_STATE"; exit 0 ;;
  up) ;;
  *) fail "usage: up.sh [up|down|destroy]" ;;
esac

log "building parley (the first build compiles RocksDB: 15-30 minutes on 2 cores)"
(cd "$repo" && cargo build --workspace --all-targets)
"$here/../container/build.sh" --binary "${CARGO_TARGET_DIR:-$repo/target}/debug/parley" --tag "$PARLEY_IMAGE"
"$here/setup.sh"
compose up -d
log "waiting for the five nodes to elect a leader and be ready"
for n in 1 2 3 4 5; do
  port_var="PARLEY_PORT_$n"; port="${!port_var:-810$n}"
  ready=""
  for _ in $(seq 1 120); do
    if curl -fsS --max-time 2 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 1
  done
  [ -n "$ready" ] || fail "node $n is not ready after 120 s; see: docker-compose -f $here/docker-compose.yml logs parley-$n"
done
cat <<MSG

Parley is running in Docker Compose: 5 nodes over 3 sites (project $COMPOSE_PROJECT_NAME).

  site-a   node 1  http://127.0.0.1:${PARLEY_PORT_1:-8101}    node 2  http://127.0.0.1:${PARLEY_PORT_2:-8102}
  site-b   node 3  http://127.0.0.1:${PARLEY_PORT_3:-8103}    node 4  http://127.0.0.1:${PARLEY_PORT_4:-8104}
  site-c   node 5  http://127.0.0.1:${PARLEY_PORT_5:-8105}

  cluster view:   curl -s http://127.0.0.1:${PARLEY_PORT_1:-8101}/api/v1/cluster
  members:        PARLEY_URL=http://127.0.0.1:${PARLEY_PORT_1:-8101} PARLEY_ADMIN_TOKEN=\$(cat $PARLEY_STATE/admin-token) \\
                    ${CARGO_TARGET_DIR:-$repo/target}/debug/parley ctl member list
  agents:         agent-a, agent-b, agent-c (one per site), password parley-demo; queue 'sales'
  cut a site off: deploy/compose/partition.sh cut site-a     (heal: deploy/compose/partition.sh heal)
  chaos runner:   ./dev.sh chaos --live --target $PARLEY_STATE/chaos-target.toml
  logs:           docker-compose -f deploy/compose/docker-compose.yml logs -f parley-1
  stop:           deploy/compose/up.sh down      (remove everything: deploy/compose/up.sh destroy)
MSG
