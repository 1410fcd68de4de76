#!/usr/bin/env bash
# One node of the compose cluster, for the chaos runner's fault commands and for operators:
#
#   deploy/compose/node.sh kill|start|pause|resume|restart|stop|pid|ips|container N
#
# kill is SIGKILL (the container stops at once), pause freezes every process of the container
# (as SIGSTOP does), restart and stop send SIGTERM and wait for the drain (20 s at most).
# The compose project is $COMPOSE_PROJECT_NAME (default "parley").
set -euo pipefail
project="${COMPOSE_PROJECT_NAME:-parley}"
action="${1:?usage: node.sh kill|start|pause|resume|restart|stop|pid|ips|container N}"
n="${2:?usage: node.sh $action N}"
fail() { printf '[node.sh] %s\n' "$*" >&2; exit 1; }
container="$(docker ps -aq --filter "label=com.docker.compose.project=$project" \
  --filter "label=com.docker.compose.service=parley-$n")"
[ -n "$container" ] || fail "no container of node $n in compose project $project"
case "$action" in
  kill) docker kill --signal KILL "$container" >/dev/null ;;
  start) docker start "$container" >/dev/null ;;
  pause) docker pause "$container" >/dev/null ;;
  resume) docker unpause "$container" >/dev/null ;;
  restart) docker restart --time 20 "$container" >/dev/null ;;
  stop) docker stop --time 20 "$container" >/dev/null ;;
  pid)
    pid="$(docker inspect -f '{{.State.Pid}}' "$container")"
    [ "$pid" -gt 0 ] || fail "node $n is not running"
    echo "$pid" ;;
  ips) docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$container" ;;
  container) echo "$container" ;;
  *) fail "unknown action $action" ;;
esac
