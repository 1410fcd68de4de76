#!/usr/bin/env bash
# Real mail servers for the email tests: Debian's Dovecot (IMAP, a passwd-file of users,
# maildirs) and Postfix (SMTP submission, delivering into Dovecot over LMTP, so a mail to an
# unknown user comes back as a real DSN bounce). Both run as private instances with their own
# config files under <dir>, listening on loopback only; the system's services are untouched.
# Postfix delivers nothing off this machine: every domain but the test domain is an error.
# Both speak TLS with a certificate for 127.0.0.1 and localhost from a private test CA made
# here with openssl (<dir>/tls/ca.pem): STARTTLS on the plain ports (optional, so plaintext
# clients keep working) and implicit TLS on IMAPS and SMTPS ports of their own.
#
#   servers.sh start <dir>       install if missing, start both, write <dir>/env
#   servers.sh stop <dir>        stop both
#   servers.sh smtp-stop <dir>   stop Postfix only (a test of SMTP being down)
#   servers.sh smtp-start <dir>  start Postfix again
#
# <dir>/env exports what the tests read:
#   MAIL_TEST_DIR        <dir>
#   MAIL_TEST_IMAP_PORT  Dovecot IMAP on 127.0.0.1 (plaintext LOGIN/PLAIN allowed; STARTTLS)
#   MAIL_TEST_IMAPS_PORT Dovecot IMAPS on 127.0.0.1 (TLS from the first byte)
#   MAIL_TEST_SMTP_PORT  Postfix SMTP on 127.0.0.1 (no auth needed from loopback; STARTTLS)
#   MAIL_TEST_SMTPS_PORT Postfix SMTPS on 127.0.0.1 (TLS from the first byte)
#   MAIL_TEST_CA         the test CA's certificate (PEM) the servers' certificate chains to
#   MAIL_TEST_DOMAIN     the domain whose users are listed below
#   MAIL_TEST_PASSWORD   every user's password
#   MAIL_TEST_SCRIPT     this script, for smtp-stop / smtp-start
# (Not PARLEY_*: nodes the tests start inherit the environment, and PARLEY_* overrides their
# config.)
# Users (password "secret-password" each): support, customer, other, box1..box11 @ the domain.
set -euo pipefail

DOMAIN=example.test
PASSWORD=secret-password
USERS=(support customer other box1 box2 box3 box4 box5 box6 box7 box8 box9 box10 box11)
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

log() { printf '[mail] %s\n' "$*" >&2; }
die() { printf '[mail] error: %s\n' "$*" >&2; exit 1; }

install_if_missing() {
  local missing=()
  [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
  [ -e /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
  [ -x /usr/sbin/postfix ] || missing+=(postfix)
  command -v openssl >/dev/null || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    die "${missing[*]} missing and not root: apt-get install ${missing[*]}"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # Postfix asks what kind of site it is; "No configuration" leaves the system one idle.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

free_port() {
  python3 - <<'EOF' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 ))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$what did not listen on 127.0.0.1:$port"
}

# A private CA and a server certificate for 127.0.0.1 and localhost signed by it (EC P-256,
# valid 30 days; every start makes new ones).
write_certificates() {
  local tls=$1/tls
  mkdir -p "$tls"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 30 \
    -subj "/CN=Parley test mail CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>>"$tls/openssl.log" || die "openssl, the test CA: $(tail -n 3 "$tls/openssl.log")"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" \
    2>>"$tls/openssl.log" || die "openssl, the server key: $(tail -n 3 "$tls/openssl.log")"
  printf '%s\n' "basicConstraints = critical,CA:FALSE" "keyUsage = critical,digitalSignature" \
    "extendedKeyUsage = serverAuth" "subjectAltName = IP:127.0.0.1,DNS:localhost" \
    >"$tls/server.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 30 -extfile "$tls/server.ext" -out "$tls/server.pem" \
    2>>"$tls/openssl.log" || die "openssl, the server certificate: $(tail -n 3 "$tls/openssl.log")"
  # The keys are read by the servers' master processes (root); clients get the CA.
  chmod 0600 "$tls/ca.key" "$tls/server.key"
  chmod 0644 "$tls/ca.pem" "$tls/server.pem"
}

write_dovecot() {
  local dir=$1 imap=$2 lmtp=$3 imaps=$4
  mkdir -p "$dir/dovecot/run" "$dir/dovecot/state" "$dir/mail"
  chown mail:mail "$dir/mail"
  : >"$dir/dovecot/users"
  for user in "${USERS[@]}"; do
    echo "$user@$DOMAIN:{PLAIN}$PASSWORD::::::" >>"$dir/dovecot/users"
  done
  chmod 0644 "$dir/dovecot/users"
  cat >"$dir/dovecot/dovecot.conf" <<EOF
instance_name = parley-test-$imap
base_dir = $dir/dovecot/run
state_dir = $dir/dovecot/state
log_path = $dir/dovecot/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <$dir/tls/server.pem
ssl_key = <$dir/tls/server.key
# Plaintext logins stay allowed on the plain port (the tests' own clients use it).
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Lu
first_valid_uid = 8
mail_location = maildir:$dir/mail/%Lu
mail_uid = mail
mail_gid = mail
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu $dir/dovecot/users
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$dir/mail/%Lu
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp
  }
}
service anvil {
  chroot =
}
protocol imap {
  imap_idle_notify_interval = 1 secs
}
EOF
}

write_postfix() {
  local dir=$1 smtp=$2 lmtp=$3 smtps=$4
  mkdir -p "$dir/postfix/conf" "$dir/postfix/queue" "$dir/postfix/data"
  chown postfix "$dir/postfix/data"
  cat >"$dir/postfix/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/postfix/queue
data_directory = $dir/postfix/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.$DOMAIN
mydomain = $DOMAIN
myorigin = $DOMAIN
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject
# Accept unknown users of the test domain at RCPT: Dovecot refuses them at delivery and
# Postfix sends the sender a real DSN.
smtpd_reject_unlisted_recipient = no
virtual_mailbox_domains = $DOMAIN
virtual_transport = lmtp:inet:127.0.0.1:$lmtp
# Nothing leaves this machine.
default_transport = error:no delivery outside the test domain
relay_transport = error:no delivery outside the test domain
local_transport = error:no local delivery
alias_maps =
alias_database =
biff = no
maillog_file_prefixes = $dir
maillog_file = $dir/postfix/maillog
bounce_queue_lifetime = 0
maximal_queue_lifetime = 1h
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtpd_banner = \$myhostname ESMTP
# STARTTLS offered on the submission port (not required); implicit TLS on the smtps one.
smtpd_tls_cert_file = $dir/tls/server.pem
smtpd_tls_key_file = $dir/tls/server.key
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
EOF
  cat >"$dir/postfix/conf/master.cf" <<EOF
127.0.0.1:$smtp inet n - n - - smtpd
127.0.0.1:$smtps inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

start_postfix() {
  local dir=$1
  # Postfix reports to a terminal or syslog only; `script` gives it a terminal to report on.
  script -qec "/usr/sbin/postfix -c '$dir/postfix/conf' start" /dev/null >>"$dir/postfix/start.log" 2>&1 \
    || die "postfix did not start: $(tail -n 5 "$dir/postfix/start.log")"
  # shellcheck disable=SC1091
  . "$dir/env"
  wait_port "$MAIL_TEST_SMTP_PORT" postfix
  wait_port "$MAIL_TEST_SMTPS_PORT" "postfix smtps"
}

stop_postfix() {
  local dir=$1
  [ -d "$dir/postfix/conf" ] || return 0
  /usr/sbin/postfix -c "$dir/postfix/conf" stop >>"$dir/postfix/start.log" 2>&1 || true
  # `stop` returns before the listener is gone.
  # shellcheck disable=SC1091
  . "$dir/env"
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MAIL_TEST_SMTP_PORT") 2>/dev/null || return 0
    sleep 0.1
  done
}

cmd_start() {
  local dir=$1
  install_if_missing
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  # Postfix and Dovecot drop to their own users, which must reach their files under <dir>
  # (mktemp -d makes it private to root).
  chmod 755 "$dir"
  # A server that did not start leaves none running.
  trap 'cmd_stop "$dir"' EXIT
  local imap imaps lmtp smtp smtps
  imap=$(free_port); imaps=$(free_port); lmtp=$(free_port); smtp=$(free_port)
  smtps=$(free_port)
  cat >"$dir/env" <<EOF
export MAIL_TEST_DIR=$dir
export MAIL_TEST_IMAP_PORT=$imap
export MAIL_TEST_IMAPS_PORT=$imaps
export MAIL_TEST_SMTP_PORT=$smtp
export MAIL_TEST_SMTPS_PORT=$smtps
export MAIL_TEST_CA=$dir/tls/ca.pem
export MAIL_TEST_DOMAIN=$DOMAIN
export MAIL_TEST_PASSWORD=$PASSWORD
export MAIL_TEST_SCRIPT=$SCRIPT
EOF
  write_certificates "$dir"
  write_dovecot "$dir" "$imap" "$lmtp" "$imaps"
  write_postfix "$dir" "$smtp" "$lmtp" "$smtps"
  /usr/sbin/dovecot -c "$dir/dovecot/dovecot.conf" \
    || die "dovecot did not start: $(tail -n 5 "$dir/dovecot/dovecot.log" 2>/dev/null)"
  wait_port "$imap" "dovecot imap"
  wait_port "$imaps" "dovecot imaps"
  cp "$dir/dovecot/run/master.pid" "$dir/dovecot/pid"
  wait_port "$lmtp" "dovecot lmtp"
  start_postfix "$dir"
  trap - EXIT
  log "dovecot imap 127.0.0.1:$imap (imaps $imaps), postfix smtp 127.0.0.1:$smtp" \
    "(smtps $smtps), test CA $dir/tls/ca.pem; env in $dir/env"
}

cmd_stop() {
  local dir=$1
  [ -f "$dir/env" ] || return 0
  stop_postfix "$dir"
  if [ -f "$dir/dovecot/pid" ]; then
    local pid
    pid=$(cat "$dir/dovecot/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    rm -f "$dir/dovecot/pid"
  fi
}

[ $# -eq 2 ] || { echo "usage: $0 start|stop|smtp-stop|smtp-start <dir>" >&2; exit 2; }
case "$1" in
  start) cmd_start "$2" ;;
  stop) cmd_stop "$2" ;;
  smtp-stop) stop_postfix "$2" ;;
  smtp-start) start_postfix "$2" ;;
  *) echo "usage: $0 start|stop|smtp-stop|smtp-start <dir>" >&2; exit 2 ;;
esac
