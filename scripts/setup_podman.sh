#!/usr/bin/env bash
# A Docker-API engine on a machine with no Docker and no container registry: Debian's podman,
# serving the Docker API on a unix socket, plus the images the docker tests use, built locally.
# Idempotent: what is already there (packages, service, images) is reused.
#
#   scripts/setup_podman.sh          set up; the last line printed is DOCKER_HOST=unix://...
#   scripts/setup_podman.sh --stop   stop the service and kill conmon processes of removed containers
#   scripts/setup_podman.sh --reap   only kill conmon processes of removed containers
#
# Honours OEC_PODMAN_DIR (socket, config, logs; default /tmp/oec-podman) and VENV (the python
# that can import sweagent_oec, used to lay out the test repo; default .venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${OEC_PODMAN_DIR:-/tmp/oec-podman}"
SOCK="$DIR/podman.sock"
PIDFILE="$DIR/service.pid"
PY="${VENV:-$ROOT/.venv}/bin/python"
[ -x "$PY" ] || PY=python3
BASE_IMAGE="oec-base:bookworm"
# The tinycalc task laid out as a SWE-smith image: named the way SWE-smith names its images,
# the repo at /testbed, the bug committed on a branch named after the instance.
TEST_IMAGE="swebench/swesmith.x86_64.oec_1776_tinycalc.00000000"
export CONTAINERS_CONF="$DIR/containers.conf"

log() { echo "[setup_podman] $*" >&2; }
die() { echo "setup_podman: $*" >&2; exit 1; }

service_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop_service() {
  local pid
  if pid="$(service_pid)"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped the service (pid $pid)"
  fi
  rm -f "$PIDFILE" "$SOCK"
}

# conmon processes of containers that no longer exist: they ignore SIGTERM, so SIGKILL them.
reap_conmon() {
  local pid cid
  for pid in $(pgrep -x conmon 2>/dev/null || true); do
    cid="$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -A1 -x -- -c | tail -1)" || continue
    if [ -n "$cid" ] && ! podman container exists "$cid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

# A failed debootstrap can leave /proc (or more) mounted inside the tree: unmount before deleting,
# and never delete across a mount point.
remove_rootfs() {
  local mnt
  for mnt in $(awk -v r="$1/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$mnt" 2>/dev/null || true
  done
  rm -rf --one-file-system "$1"
}

case "${1:-}" in
  --stop) stop_service; reap_conmon; exit 0 ;;
  --reap) reap_conmon; exit 0 ;;
  "") ;;
  *) die "unknown option $1 (use no option, --stop or --reap)" ;;
esac

mkdir -p "$DIR"
# One set-up at a time (two test runs may start together); the lock goes with this process.
exec 9> "$DIR/setup.lock"
flock -w 600 9 || die "another setup_podman.sh has held $DIR/setup.lock for 10 minutes"

# 1. Packages.
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
  [ "$(id -u)" = 0 ] || die "podman, runc and debootstrap are missing and installing them needs root"
  command -v apt-get >/dev/null || die "podman is missing and there is no apt-get to install it; install podman and runc"
  log "installing podman, runc, debootstrap (apt-get)"
  apt-get install -y -q podman runc debootstrap >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q podman runc debootstrap >/dev/null; } \
    || die "apt-get could not install podman runc debootstrap"
fi

# 2. Engine config: crun fails on this cgroup layout, runc works; the default nofile/nproc
# limits podman asks for are above what this machine allows. Every exec's conmon waits
# exit_command_delay (default 300 s) after the exec ends before it exits: one runtime makes
# a few execs, so a batch would pile up hundreds of them.
cat > "$CONTAINERS_CONF.tmp" <<'EOF'
[engine]
runtime = "runc"
exit_command_delay = 5

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
EOF
if ! cmp -s "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"; then
  mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
  stop_service  # a running service still has the old config
else
  rm "$CONTAINERS_CONF.tmp"
fi

# 3. The Docker-API service.
sock_ready() { "$PY" -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$SOCK" 2>/dev/null; }
if ! service_pid >/dev/null || ! sock_ready; then
  log "starting podman system service on $SOCK"
  rm -f "$SOCK"
  # setsid: the service must outlive this script and the pytest run that called it.
  # 9>&-: the service must not inherit (and so hold for ever) the set-up lock.
  # cd "$DIR": conmon works in the service's folder and leaves an `oom` file there when a container
  # is OOM-killed; never in the caller's checkout.
  (cd "$DIR" && exec setsid podman system service --time=0 "unix://$SOCK" > "$DIR/service.log" 2>&1 < /dev/null 9>&-) &
  echo $! > "$PIDFILE"
  for _ in $(seq 100); do sock_ready && break; sleep 0.1; done
  sock_ready || die "podman system service did not come up; see $DIR/service.log"
fi

# 4. Base image: no registry is reachable, so bootstrap Debian from the mirror apt already uses.
if ! podman image exists "$BASE_IMAGE"; then
  mirror="$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
            | awk '/^URIs:/ || /^deb / {print $2}' | grep -v security | head -1 || true)"
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
  root="$DIR/rootfs"
  log "debootstrap bookworm from $mirror (about a minute)"
  # Three tries: the mirror here now and then serves an index or a package that debootstrap rejects.
  for try in 1 2 3; do
    remove_rootfs "$root"
    debootstrap --variant=minbase --include=python3,python3-pytest,git,procps,ca-certificates \
      bookworm "$root" "$mirror" > "$DIR/debootstrap.log" 2>&1 && break
    cp "$root/debootstrap/debootstrap.log" "$DIR/debootstrap.inner.log" 2>/dev/null || true
    [ "$try" = 3 ] && { remove_rootfs "$root"; die "debootstrap failed 3 times; see $DIR/debootstrap.log"; }
    log "debootstrap failed (try $try), trying again"
  done
  tar -C "$root" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
  remove_rootfs "$root"
fi

# 5. The test image, built from the base by a container that lays out /testbed, then committed.
if ! podman image exists "$TEST_IMAGE"; then
  log "building $TEST_IMAGE"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"; podman rm -f oec-build-tinycalc >/dev/null 2>&1 || true' EXIT
  instance_id="$("$PY" - "$work" <<'EOF'
import sys
from pathlib import Path
from sweagent_oec.tasks.bundled import materialize_tinycalc
inst = materialize_tinycalc(sys.argv[1])
(Path(sys.argv[1]) / "bug.patch").write_text(inst.patch)
print(inst.instance_id)
EOF
)"
  podman rm -f oec-build-tinycalc >/dev/null 2>&1 || true
  podman run --name oec-build-tinycalc --network none -v "$work:/src:ro" "$BASE_IMAGE" bash -euc "
    git config --global user.name oec && git config --global user.email oec@localhost
    git clone -q /src/tinycalc /testbed && cd /testbed && git remote remove origin
    git checkout -q -b '$instance_id'
    git apply /src/bug.patch && git commit -qam 'Bug Patch'
    git checkout -q main" >/dev/null
  podman commit -q --change 'WORKDIR /testbed' oec-build-tinycalc "$TEST_IMAGE" >/dev/null
  podman rm -f oec-build-tinycalc >/dev/null
  rm -rf "$work"
  trap - EXIT
fi

echo "DOCKER_HOST=unix://$SOCK"
