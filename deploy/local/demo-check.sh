#!/usr/bin/env bash
# Checks a running `./dev.sh cluster` demo as a new user would try it, through its public
# surfaces only: the pages, a chat from start to agent reply, and an email to the demo mailbox
# that alice answers and that arrives in the customer's mailbox.
#
#   deploy/local/demo-check.sh DIR [PID]   DIR: the demo's directory (DEV_DEMO_DIR), whose
#                                           cluster.log has `./dev.sh cluster`'s output;
#                                           PID: that command's process, if it should be waited on
#
# Exits non-zero with the step that failed. `./dev.sh test` runs it (cmd_demo_check).
set -euo pipefail

dir=${1:?usage: demo-check.sh DIR [PID]}
pid=${2:-}
N1=http://127.0.0.1:8001 N2=http://127.0.0.1:8002 N3=http://127.0.0.1:8003
J='content-type: application/json'
CUSTOMER=customer@example.test
CUSTOMER_PASSWORD=secret-password

step() { printf '[demo-check] %s\n' "$*" >&2; }
fail() { printf '[demo-check] FAILED: %s\n' "$*" >&2; exit 1; }

# Polls `$@` (a command printing something) every 0.5 s for up to $1 seconds until it prints
# a non-empty line; prints that.
poll() {
  local within=$1 out
  shift
  for _ in $(seq 1 $((within * 2))); do
    out=$("$@" 2>/dev/null || true)
    if [ -n "$out" ] && [ "$out" != null ]; then printf '%s\n' "$out"; return 0; fi
    sleep 0.5
  done
  return 1
}

step "waiting for the cluster and its demo data (the build comes first)"
running() {
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then echo gone; return; fi
  grep -q "Parley is running" "$dir/cluster.log" && echo yes
}
[ "$(poll 1200 running)" = yes ] || fail "./dev.sh cluster did not come up: see $dir/cluster.log"
# shellcheck disable=SC1091
. "$dir/data/mail/env"

step "pages on every node"
for node in "$N1" "$N2" "$N3"; do
  for page in chat agent supervisor admin; do
    curl -fsS "$node/$page" | grep -qi '<html' || fail "$node/$page is not a page"
  done
done

step "alice signs in on node 2, ready for chat and email"
ALICE=$(curl -fsS -XPOST "$N2/api/v1/agents/login" -H "$J" \
  -d '{"agent_id":"alice","password":"parley-demo"}' | jq -r .token)
[ -n "$ALICE" ] && [ "$ALICE" != null ] || fail "alice could not sign in"
AUTH="authorization: Bearer $ALICE"
curl -fsS -XPUT "$N2/api/v1/agents/me/availability" -H "$J" -H "$AUTH" \
  -d '{"channels":{"chat":true,"email":true}}' >/dev/null || fail "alice could not get ready"

# The id of the activity of `channel` offered or assigned to alice, if any.
alice_activity() {
  curl -fsS "$N3/api/v1/agents/me/activities" -H "$AUTH" \
    | jq -r --arg ch "$1" '[.activities[] | select(.channel == $ch)][0].id // empty'
}

step "a customer chats on node 1; alice accepts on node 3 and answers on node 2"
START=$(curl -fsS -XPOST "$N1/api/v1/chats" -H "$J" -d '{"request_id":"demo-check-1",
  "queue_id":"sales","customer":{"name":"Ada","email":"ada@example.com"},
  "question":"Where is my order?"}')
CHAT=$(echo "$START" | jq -r .chat_id)
TOKEN=$(echo "$START" | jq -r .token)
[ -n "$CHAT" ] && [ "$CHAT" != null ] || fail "no chat started: $START"
OFFERED=$(poll 30 alice_activity chat) || fail "the chat was never offered to alice"
[ "$OFFERED" = "$CHAT" ] || fail "alice was offered $OFFERED, not the chat $CHAT"
curl -fsS -XPOST "$N3/api/v1/activities/$CHAT/accept" -H "$AUTH" >/dev/null \
  || fail "alice could not accept the chat"
curl -fsS -XPOST "$N2/api/v1/chats/$CHAT/messages" -H "$J" -H "$AUTH" \
  -d '{"client_msg_id":"a1","text":"Let me check that for you."}' >/dev/null \
  || fail "alice could not answer"
agent_text() {
  curl -fsS "$N1/api/v1/chats/$CHAT/events?after=0" -H "authorization: Bearer $TOKEN" \
    | jq -r '.events[] | select(.type == "message" and .client_msg_id == "a1") | .text'
}
[ "$(poll 15 agent_text)" = "Let me check that for you." ] \
  || fail "the customer never saw alice's answer"
curl -fsS -XPOST "$N2/api/v1/activities/$CHAT/complete" -H "$J" -H "$AUTH" -d '{}' >/dev/null \
  || fail "alice could not complete the chat"

step "an email to the demo mailbox reaches alice"
SUBJECT="Demo check $(date +%s%N)"
printf 'From: Ada <%s>\r\nTo: support@example.test\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\nDate: %s\r\n\r\nWhere is my parcel?\r\n' \
  "$CUSTOMER" "$SUBJECT" "demo-check-$(date +%s%N)" "$(date -R)" \
  | curl -fsS "smtp://127.0.0.1:$MAIL_TEST_SMTP_PORT" --mail-from "$CUSTOMER" \
      --mail-rcpt support@example.test -T - || fail "the mail server did not take the mail"
EMAIL=$(poll 60 alice_activity email) || fail "the email never became alice's work"
curl -fsS -XPOST "$N3/api/v1/activities/$EMAIL/accept" -H "$AUTH" >/dev/null \
  || fail "alice could not accept the email"
CASE=$(curl -fsS "$N1/api/v1/emails/$EMAIL" -H "$AUTH")
echo "$CASE" | jq -e --arg s "$SUBJECT" '.. | strings | select(. == $s)' >/dev/null \
  || fail "the case does not show the mail's subject: $CASE"

step "alice replies; the reply arrives in the customer's mailbox"
curl -fsS -XPOST "$N2/api/v1/emails/$EMAIL/reply" -H "$J" -H "$AUTH" \
  -d '{"client_id":"demo-check-reply","text":"Your parcel ships today."}' >/dev/null \
  || fail "alice's reply was not taken"
arrived() {
  curl -fsS "imap://127.0.0.1:$MAIL_TEST_IMAP_PORT/INBOX" -u "$CUSTOMER:$CUSTOMER_PASSWORD" \
    -X "SEARCH SUBJECT \"$SUBJECT\" BODY \"Your parcel ships today.\"" \
    | sed -n 's/^\* SEARCH \([0-9].*\)$/\1/p'
}
poll 60 arrived >/dev/null || fail "the reply never reached $CUSTOMER's mailbox"
step "ok: pages, a chat and an email round trip on the demo cluster"
