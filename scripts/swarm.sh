#!/usr/bin/env bash
# A single-node Docker Swarm for the tests, on this machine only.
#
#   scripts/swarm.sh up    reuse a reachable Docker daemon, or install Debian's
#                          docker.io and start one with its own data root and
#                          socket; make it a swarm on 127.0.0.1
#   scripts/swarm.sh down  undo only what `up` did (stop the daemon it started,
#                          or leave the swarm it created)
#   scripts/swarm.sh env   print `export DOCKER_HOST=...` for the swarm
#   scripts/swarm.sh packages
#                          install the Debian packages the tests use when absent:
#                          docker.io, docker-registry and busybox-static (the test
#                          images and the stand-in's unit tests are built from them)
#
# State lives in build/swarm/ so `down` knows what it owns.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/build/swarm"
own="/tmp/msrc-docker"          # short path: unix socket paths are limited to 108 bytes
own_sock="unix://$own/docker.sock"
mkdir -p "$state"

log() { printf 'swarm: %s\n' "$*" >&2; }

reachable() { DOCKER_HOST="$1" timeout 10 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

swarm_state() { DOCKER_HOST="$1" docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }

skip() {
  # Docker truly cannot run here: say why, and let the tests skip with that reason.
  printf '%s\n' "$*" >"$state/unavailable"
  rm -f "$state/docker_host"
  log "unavailable: $*"
  exit 0
}

# Debian packages the tests need, as "command-to-check package" pairs.
PACKAGES=("dockerd docker.io" "docker-registry docker-registry" "busybox busybox-static")

packages() {
  local missing=() pair
  for pair in "${PACKAGES[@]}"; do
    command -v "${pair%% *}" >/dev/null 2>&1 || missing+=("${pair#* }")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages (install them as root): ${missing[*]}"
    # CI must not turn a missing package into skipped tests.
    [ "${CI:-}" = true ] && exit 1
    return 0
  fi
  log "installing Debian's ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    log "apt-get install ${missing[*]} failed"
    [ "${CI:-}" = true ] && exit 1
  fi
  return 0
}

install_engine() {
  command -v dockerd >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then skip "dockerd is not installed and we are not root to install docker.io"; fi
  log "installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || skip "apt-get update failed"
  apt-get install -y -qq docker.io >/dev/null || skip "apt-get install docker.io failed"
}

start_engine() {
  install_engine
  if [ "$(id -u)" != 0 ]; then skip "starting dockerd needs root"; fi
  mkdir -p "$own"
  log "starting dockerd on $own_sock"
  dockerd --data-root "$own/data" --exec-root "$own/exec" -H "$own_sock" \
          --pidfile "$own/pid" >"$own/log" 2>&1 &
  echo $! >"$state/dockerd.pid"
  for _ in $(seq 1 60); do
    reachable "$own_sock" && return 0
    if ! kill -0 "$(cat "$state/dockerd.pid")" 2>/dev/null; then
      tail -n 20 "$own/log" >&2 || true
      skip "dockerd exited at start (see $own/log)"
    fi
    sleep 0.5
  done
  skip "dockerd did not answer within 30 s (see $own/log)"
}

up() {
  rm -f "$state/unavailable"
  command -v docker >/dev/null 2>&1 || install_engine
  host=""
  # Only one daemon per machine works (they fight over docker0 and iptables):
  # reuse one that answers, ours from an earlier run first.
  for candidate in "$own_sock" "${DOCKER_HOST:-}" "unix:///var/run/docker.sock"; do
    [ -n "$candidate" ] || continue
    if reachable "$candidate"; then host=$candidate; break; fi
  done
  if [ -z "$host" ]; then
    start_engine
    host=$own_sock
  else
    log "reusing the Docker daemon at $host"
  fi
  case "$(swarm_state "$host")" in
    active) log "swarm already active" ;;
    *)
      DOCKER_HOST=$host docker swarm init --advertise-addr 127.0.0.1 >/dev/null
      touch "$state/swarm-created"
      log "swarm initialised on 127.0.0.1"
      ;;
  esac
  printf '%s\n' "$host" >"$state/docker_host"
  log "DOCKER_HOST=$host"
}

down() {
  host=$(cat "$state/docker_host" 2>/dev/null || true)
  if [ -f "$state/dockerd.pid" ]; then
    pid=$(cat "$state/dockerd.pid")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping the dockerd we started (pid $pid)"
      kill "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$state/dockerd.pid" "$state/swarm-created"
  elif [ -f "$state/swarm-created" ] && [ -n "$host" ]; then
    log "leaving the swarm we created on $host"
    DOCKER_HOST=$host docker swarm leave --force >/dev/null 2>&1 || true
    rm -f "$state/swarm-created"
  fi
  rm -f "$state/docker_host"
}

case "${1:-}" in
  up) up ;;
  packages) packages ;;
  down) down ;;
  env) [ -f "$state/docker_host" ] && printf 'export DOCKER_HOST=%s\n' "$(cat "$state/docker_host")" ;;
  *) echo "usage: $0 up|down|env|packages" >&2; exit 2 ;;
esac
