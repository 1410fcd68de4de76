#!/usr/bin/env bash
# Cuts nodes of the compose cluster off from the others, and heals, with packets DROPPED (the
# other side sees silence, as on a broken WAN link, not connection resets): iptables rules in
# a chain PARLEY_CUT inside each cut node's network namespace (entered with nsenter), dropping
# everything to and from every address of the nodes on the other side. The host's own rules
# and Docker's are not touched. Needs root (or sudo) on the Docker host.
#
#   deploy/compose/partition.sh cut site-a|site-b|site-c   # a site from the other two
#   deploy/compose/partition.sh cut --nodes 1,2 --from 3,4,5
#   deploy/compose/partition.sh heal                        # every node, every rule
#   deploy/compose/partition.sh show                        # the rules in place
#
# The rules live in the container's namespace: a node whose container restarts is healed.
# The compose project is $COMPOSE_PROJECT_NAME (default "parley").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fail() { printf '[partition] %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
all="1 2 3 4 5"
site_nodes() {
  case "$1" in
    site-a) echo "1 2" ;;
    site-b) echo "3 4" ;;
    site-c) echo "5" ;;
    *) fail "unknown site $1 (site-a, site-b, site-c)" ;;
  esac
}
in_ns() { local pid="$1"; shift; as_root nsenter -t "$pid" -n iptables -w "$@"; }

cut() {
  local nodes="$1" from="$2" n m pid ip
  [ -n "$nodes" ] && [ -n "$from" ] || fail "nothing to cut"
  for n in $nodes; do
    pid="$("$here/node.sh" pid "$n")"
    in_ns "$pid" -N PARLEY_CUT 2>/dev/null || true
    in_ns "$pid" -C INPUT -j PARLEY_CUT 2>/dev/null || in_ns "$pid" -I INPUT -j PARLEY_CUT
    in_ns "$pid" -C OUTPUT -j PARLEY_CUT 2>/dev/null || in_ns "$pid" -I OUTPUT -j PARLEY_CUT
    for m in $from; do
      for ip in $("$here/node.sh" ips "$m"); do
        in_ns "$pid" -A PARLEY_CUT -s "$ip" -j DROP
        in_ns "$pid" -A PARLEY_CUT -d "$ip" -j DROP
      done
    done
  done
  printf '[partition] cut nodes %s off from nodes %s (packets dropped)\n' "$nodes" "$from" >&2
}

heal() {
  local n pid
  for n in $all; do
    pid="$("$here/node.sh" pid "$n" 2>/dev/null)" || continue
    in_ns "$pid" -F PARLEY_CUT 2>/dev/null || true
  done
  printf '[partition] healed\n' >&2
}

case "${1:-}" in
  cut)
    shift
    if [ "${1:-}" = "--nodes" ]; then
      nodes="${2:?--nodes needs ids}"; [ "${3:-}" = "--from" ] || fail "usage: cut --nodes 1,2 --from 3,4,5"
      from="${4:?--from needs ids}"
      cut "${nodes//,/ }" "${from//,/ }"
    else
      site="${1:?usage: partition.sh cut SITE | cut --nodes A,B --from C,D}"
      nodes="$(site_nodes "$site")"
      from="$(for n in $all; do [[ " $nodes " == *" $n "* ]] || printf '%s ' "$n"; done)"
      cut "$nodes" "$from"
    fi ;;
  heal) heal ;;
  show)
    for n in $all; do
      pid="$("$here/node.sh" pid "$n" 2>/dev/null)" || { echo "node $n: not running"; continue; }
      echo "node $n: $(in_ns "$pid" -S PARLEY_CUT 2>/dev/null | grep -c DROP || true) drop rules"
    done ;;
  *) fail "usage: partition.sh cut SITE | cut --nodes A,B --from C,D | heal | show" ;;
esac
