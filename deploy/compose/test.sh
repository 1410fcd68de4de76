#!/usr/bin/env bash
# The compose deployment test (`./dev.sh test-deploy`): builds the image from the given binary,
# then runs test_compose.py: five nodes over three sites up from the image, a site cut off
# (packets dropped) and healed under customers and agents on every site, a rolling upgrade of
# the five containers under load, and the chaos target file's faults, each checked by the
# chaos runner's oracle. About 6 minutes; needs root (nsenter, iptables), Docker and
# docker-compose. Cleans up everything it started, also when it fails or is interrupted.
#
#   deploy/compose/test.sh PATH/TO/parley PATH/TO/parley-chaos [--report FILE] [--skip-faults]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
parley="${1:?usage: deploy/compose/test.sh PATH/TO/parley PATH/TO/parley-chaos [--report FILE]}"
chaos="${2:?usage: deploy/compose/test.sh PATH/TO/parley PATH/TO/parley-chaos [--report FILE]}"
shift 2
log() { printf '[test-deploy] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root: the site cut enters the containers' network namespaces"
[ -x "$parley" ] || fail "$parley is not an executable"
[ -x "$chaos" ] || fail "$chaos is not an executable"
command -v docker >/dev/null || fail "docker is not installed"
command -v docker-compose >/dev/null || fail "docker-compose is not installed"
command -v nsenter >/dev/null && command -v iptables >/dev/null || fail "nsenter and iptables are needed"
python3 -c 'import tomllib' 2>/dev/null || fail "python3 >= 3.11 is needed (tomllib)"
docker info >/dev/null 2>&1 || fail "the Docker daemon does not answer"
for port in 18101 18102 18103 18104 18105; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is in use"; fi
done

image="parley:test-deploy"
project="parley-test"
cleanup() {
  docker-compose -p "$project" -f "$here/docker-compose.yml" down -v --remove-orphans -t 20 >/dev/null 2>&1 || true
  docker rmi "$image" "parley:upgrade-test" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
"$here/../container/build.sh" --binary "$parley" --tag "$image"
log "image built in $(( $(date +%s) - started )) s"
python3 "$here/test_compose.py" --image "$image" --chaos "$(cd "$(dirname "$chaos")" && pwd)/$(basename "$chaos")" \
  --project "$project" "$@"
