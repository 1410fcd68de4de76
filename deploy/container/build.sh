#!/usr/bin/env bash
# Builds the parley container image locally, with no registry:
#   1. the binary's shared libraries, as `ldd` lists them, mapped to their Debian packages;
#   2. a root filesystem of exactly those packages (and what they depend on), unpacked by
#      `mmdebstrap --variant=extract` from the Debian mirror this machine's apt sources name
#      (read at run time: no mirror address is written here), plus a `parley` user (10001),
#      its data directory and the packages' copyright files, without apt or dpkg;
#   3. `docker build` of deploy/container/Dockerfile (FROM scratch, that root filesystem,
#      the binary), tagged as asked.
#
#   deploy/container/build.sh [--binary PATH] [--tag IMAGE:TAG]
#
# Defaults: the debug binary of $CARGO_TARGET_DIR (or ./target), tag parley:dev. Needs root (or
# sudo) for mmdebstrap and docker; installs mmdebstrap from Debian when it is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
binary="${CARGO_TARGET_DIR:-$repo/target}/debug/parley"
tag="parley:dev"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --tag) tag="${2:?--tag needs IMAGE:TAG}"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { printf '[image] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

[ -x "$binary" ] || fail "$binary is not an executable (build it: cargo build --workspace --all-targets)"
command -v docker >/dev/null || fail "docker is not installed"
if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mmdebstrap >/dev/null
fi

# 1. The libraries the binary loads, and the packages that ship them on this machine (the
# image's libraries must be these versions or newer, so they come from this machine's suite).
missing="$(ldd "$binary" | grep 'not found' || true)"
[ -z "$missing" ] || fail "$binary needs libraries this machine lacks: $missing"
packages=()
while read -r lib; do
  [ -n "$lib" ] || continue
  pkg=""
  # Merged /usr: dpkg may know the file under /lib or /usr/lib.
  for path in "$lib" "$(readlink -f "$lib")" "${lib#/usr}" "/usr${lib}"; do
    pkg="$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)" && [ -n "$pkg" ] && break
  done
  [ -n "$pkg" ] || fail "no Debian package ships $lib (dpkg -S)"
  packages+=("$pkg")
done < <(ldd "$binary" | awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}' | sort -u)
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
log "binary: $binary ($(( $(stat -c %s "$binary") / 1024 / 1024 )) MiB); libraries from: ${packages[*]}"

# 2. The root filesystem, from this machine's suite and its apt sources of that suite.
# shellcheck disable=SC1091
suite="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ -n "$suite" ] || fail "no VERSION_CODENAME in /etc/os-release: cannot tell the Debian suite"
sources=()
for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$file" ] && grep -Eqs "^[^#]*\\b${suite}\\b" "$file" && sources+=("$file")
done
[ ${#sources[@]} -gt 0 ] || fail "no apt source of suite $suite in /etc/apt/sources.list{,.d}"
log "root filesystem: Debian $suite from ${sources[*]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mmdebstrap --quiet --variant=extract --format=directory --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
  "$suite" "$root" "${sources[@]}" \
  || fail "mmdebstrap could not make the root filesystem (is the Debian mirror reachable?)"
# The extract variant runs no maintainer scripts (nor mmdebstrap's hooks): the user, the
# directories and the cleanup are done here.
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nparley:x:10001:10001:parley:/var/lib/parley:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nparley:x:10001:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
mkdir -p "$root/etc/parley" "$root/var/lib/parley" "$root/tmp" "$root/usr/share/parley"
chown 10001:10001 "$root/var/lib/parley"
chmod 0750 "$root/var/lib/parley"
chmod 1777 "$root/tmp"
# A record of what the image holds, then no package manager: nothing runs apt in a container.
(cd "$root/usr/share/doc" && ls) >"$root/usr/share/parley/debian-packages"
rm -rf "$root/etc/apt" "$root/var/lib/apt" "$root/var/cache/apt" "$root/etc/dpkg" \
  "$root/var/lib/dpkg" "$root/var/log" "$root/dev"
tar --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
rm -rf "$root"

# 3. The image.
cp "$binary" "$work/parley"
# Debug information is most of a debug build's size; symbols stay, so backtraces keep names.
if command -v strip >/dev/null; then
  strip --strip-debug "$work/parley"
  log "binary without debug information: $(( $(stat -c %s "$work/parley") / 1024 / 1024 )) MiB"
fi
cp "$here/Dockerfile" "$work/Dockerfile"
log "docker build -t $tag"
# The classic builder: it needs no BuildKit frontend image (nothing can be pulled here).
DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" "$work" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; fail "docker build of $tag failed"; }
# The image must run here: the binary finds its libraries and answers.
version="$(docker run --rm --network none --entrypoint /usr/local/bin/parley "$tag" --version | head -1)" \
  || fail "$tag does not run: parley --version failed inside it"
user="$(docker image inspect -f '{{.Config.User}}' "$tag")"
[ "${user%%:*}" != "0" ] && [ -n "$user" ] || fail "$tag runs as root (User=$user)"
size="$(docker image inspect -f '{{.Size}}' "$tag")"
log "built $tag: $version, user $user, $((size / 1024 / 1024)) MiB"
