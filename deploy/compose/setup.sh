#!/usr/bin/env bash
# Makes what the compose cluster mounts, once (files that exist are kept, so a restart keeps
# its certificates and secrets):
#   $PARLEY_STATE/ca/            the cluster CA and the five node certificates (`parley certs`,
#                                run from the image as its non-root user)
#   $PARLEY_STATE/admin-token    the admin credential (for `parley ctl`, the chaos runner)
#   $PARLEY_STATE/node-N/        what node N mounts read-only at /run/parley: cluster-secret,
#                                admin-token, tls/{ca.pem,node.pem,node.key}; owned by the
#                                image's user (10001), nothing else can read the keys
#   $PARLEY_STATE/chaos-target.toml   the chaos runner's target file with the admin token
#
#   PARLEY_STATE=DIR PARLEY_IMAGE=parley:dev deploy/compose/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${PARLEY_STATE:-$here/.state}"
image="${PARLEY_IMAGE:-parley:dev}"
uid=10001
log() { printf '[compose] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

docker image inspect "$image" >/dev/null 2>&1 || fail "no image $image: build it with deploy/container/build.sh --tag $image"
mkdir -p "$state/ca"
secret() { head -c 48 /dev/urandom | base64 | tr -d '/+=\n' | head -c 48; }
umask 077
[ -s "$state/cluster-secret" ] || secret >"$state/cluster-secret"
[ -s "$state/admin-token" ] || secret >"$state/admin-token"

if [ ! -s "$state/ca/node-5.key" ]; then
  log "making the cluster CA and node certificates with parley certs ($image)"
  as_root chown "$uid:$uid" "$state/ca"
  docker run --rm --network none --user "$uid:$uid" -v "$state/ca:/certs" "$image" \
    certs --dir /certs --nodes 1,2,3,4,5 >/dev/null \
    || fail "parley certs failed in $image"
fi

for n in 1 2 3 4 5; do
  dir="$state/node-$n"
  as_root rm -rf "$dir"
  mkdir -p "$dir/tls"
  as_root cp "$state/ca/ca.pem" "$dir/tls/ca.pem"
  as_root cp "$state/ca/node-$n.pem" "$dir/tls/node.pem"
  as_root cp "$state/ca/node-$n.key" "$dir/tls/node.key"
  cp "$state/cluster-secret" "$dir/cluster-secret"
  cp "$state/admin-token" "$dir/admin-token"
  as_root chown -R "$uid:$uid" "$dir"
  as_root chmod -R u=rX,go= "$dir"
done

# The runner's target file: the committed one, with this cluster's ports and admin token.
{
  printf 'admin_token = "%s"\n' "$(cat "$state/admin-token")"
  sed -e "s#127.0.0.1:8101#127.0.0.1:${PARLEY_PORT_1:-8101}#" \
      -e "s#127.0.0.1:8102#127.0.0.1:${PARLEY_PORT_2:-8102}#" \
      -e "s#127.0.0.1:8103#127.0.0.1:${PARLEY_PORT_3:-8103}#" \
      -e "s#127.0.0.1:8104#127.0.0.1:${PARLEY_PORT_4:-8104}#" \
      -e "s#127.0.0.1:8105#127.0.0.1:${PARLEY_PORT_5:-8105}#" \
      "$here/chaos-target.toml"
} >"$state/chaos-target.toml"
log "state in $state (admin token: $state/admin-token)"
