#!/usr/bin/env bash
# A throwaway multi-node Docker Swarm on this one machine, for the tests, the
# rehearsal and the benchmark. Nothing of it touches the host's docker0, a
# daemon that happens to run, or the host's iptables beyond one FORWARD rule.
#
#   scripts/swarm.sh up [NODES]   start NODES nodes (default 3, or $NODES):
#                                   msrc-manager  10.77.0.11  the manager DOCKER_HOST points at
#                                   msrc-cache    10.77.0.12  a worker: the cache's node
#                                   msrc-msr      10.77.0.13  a worker: the MSR stand-in and the
#                                                             registry every node pulls images from
#                                   msrc-node4..  10.77.0.14.. more workers
#                                 each its own dockerd (Debian's docker.io) in its own network
#                                 and UTS namespace, with its own data root, exec root and
#                                 socket, joined on the bridge msrc-br0 (10.77.0.1 on the host).
#                                 A no-op when the swarm is already up.
#   scripts/swarm.sh down         remove everything `up` made: daemons, their containers,
#                                 namespaces, bridge, FORWARD rule and /tmp/msrc-swarm
#   scripts/swarm.sh with [--keep] -- CMD...
#                                 hold the swarm lock, bring the swarm up when it is not,
#                                 run CMD with DOCKER_HOST and MSRC_SWARM set, then stop the
#                                 swarm again only if this call started it (not with --keep).
#                                 When CMD fails, the nodes' logs are copied to build/swarm/logs.
#   scripts/swarm.sh release      stop a swarm that `with --keep` started (make rehearse-down)
#   scripts/swarm.sh env          print `export DOCKER_HOST=... MSRC_SWARM=...` when up
#   scripts/swarm.sh status       say whether it is up (exit 0) or not (exit 1)
#   scripts/swarm.sh node-add NAME | node-rm NAME
#                                 one more worker, or remove one (the "node gone" tests)
#   scripts/swarm.sh packages     install the Debian packages the tests use when absent
#
# The swarm is the machine's, not a checkout's: its state lives in /tmp/msrc-swarm
# (short paths: unix socket paths are limited to 108 bytes) and one lock,
# /run/lock/msrc-swarm.lock ($MSRC_SWARM_LOCK), lets one `make test`/`rehearse`/`bench`
# use it at a time.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
STATE=/tmp/msrc-swarm
LOCK=${MSRC_SWARM_LOCK:-/run/lock/msrc-swarm.lock}
BRIDGE=msrc-br0
NET=10.77.0
HOST_IP=$NET.1
REGISTRY_PORT=5999
# Only what we made carries this prefix: netns, veth and data.
PREFIX=msrc-
BASE_NODES=(msrc-manager msrc-cache msrc-msr)
UNAVAILABLE="$repo/build/swarm/unavailable"
LOGS="$repo/build/swarm/logs"

log() { printf 'swarm: %s\n' "$*" >&2; }
die() {
  printf 'swarm: error: %s\n' "$*" >&2
  exit 1
}

# Docker truly cannot run here: say why, so the tests skip with that reason
# (and CI, where it must run, fails).
unavailable() {
  mkdir -p "$(dirname "$UNAVAILABLE")"
  printf '%s\n' "$*" >"$UNAVAILABLE"
  log "unavailable: $*"
  [ "${CI:-}" = true ] && die "under CI the swarm must start: $*"
  exit 0
}

# --- packages ------------------------------------------------------------------------

# Debian packages, as "command-to-check package" pairs.
PACKAGES=("dockerd docker.io" "iptables iptables" "docker-registry docker-registry" "busybox busybox-static")

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

# --- nodes ---------------------------------------------------------------------------

sock() { printf 'unix://%s/%s/docker.sock' "$STATE" "$1"; }
dk() {
  local node=$1
  shift
  DOCKER_HOST=$(sock "$node") docker "$@"
}
answers() { DOCKER_HOST=$(sock "$1") timeout 10 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

# The address of a node: fixed by its position, so image names and certificates
# can name them (.11 manager, .12 cache, .13 msr, then .14 and up).
address_of() {
  local node=$1 i
  for i in "${!BASE_NODES[@]}"; do
    [ "${BASE_NODES[$i]}" = "$node" ] && {
      echo "$NET.$((11 + i))"
      return
    }
  done
  if [[ $node =~ ^msrc-node([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 4 ] && [ "${BASH_REMATCH[1]}" -le 60 ]; then
    echo "$NET.$((10 + BASH_REMATCH[1]))"
    return
  fi
  # Other names (node-add): the first free address from .100.
  local n
  for n in $(seq 100 250); do
    if ! grep -qs "\"$NET.$n\"" "$STATE"/*/address.json; then
      echo "$NET.$n"
      return
    fi
  done
  die "no free address for node $node"
}

node_names() {
  local count=$1 i
  for ((i = 0; i < count; i++)); do
    if [ "$i" -lt 3 ]; then echo "${BASE_NODES[$i]}"; else echo "msrc-node$((i + 1))"; fi
  done
}

host_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    local taken
    taken=$({ ip -4 -o addr show; ip -4 route show; } | grep -F " $NET." || true)
    [ -z "$taken" ] || die "$NET.0/24 is already in use on this machine, and the test swarm needs it: $taken"
    ip link add "$BRIDGE" type bridge
    ip addr add "$HOST_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  # The host's FORWARD policy may be DROP (any dockerd on the host sets it):
  # without this one rule the nodes cannot reach each other through the bridge.
  iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null ||
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
}

start_node() {
  local node=$1 addr=$2 dir="$STATE/$1"
  mkdir -p "$dir"
  printf '{"hostname": "%s", "address": "%s"}\n' "$node" "$addr" >"$dir/address.json"
  ip netns add "$node"
  ip link add "v-$node" type veth peer name eth0 netns "$node"
  ip link set "v-$node" master "$BRIDGE" up
  ip -n "$node" addr add "$addr/24" dev eth0
  ip -n "$node" link set eth0 up
  ip -n "$node" link set lo up
  # No default route: nothing a node does can leave this machine (a lookup of a
  # public registry fails at once instead of sending packets out).
  # The daemon's own config file: a /etc/docker/daemon.json on the host is not ours.
  cat >"$dir/daemon.json" <<EOF
{
  "insecure-registries": ["$NET.0/24"],
  "log-driver": "json-file",
  "features": {"buildkit": false}
}
EOF
  log "starting $node ($addr)"
  # nsenter --net, not `ip netns exec`: that remounts /sys and dockerd then fails
  # with "Devices cgroup isn't mounted". setsid and 9>&-: the daemon must not
  # hold the caller's terminal or its lock.
  setsid nsenter --net="/run/netns/$node" unshare --uts sh -c \
    "hostname $node; exec dockerd --config-file '$dir/daemon.json' --data-root '$dir/data' \
       --exec-root '$dir/exec' -H '$(sock "$node")' --pidfile '$dir/dockerd.pid'" \
    </dev/null >"$dir/dockerd.log" 2>&1 9>&- &
}

wait_node() {
  local node=$1 i
  for i in $(seq 1 120); do
    answers "$node" && return 0
    if [ "$i" -gt 4 ] && ! pgrep -f -- "-H $(sock "$node")" >/dev/null; then
      tail -n 20 "$STATE/$node/dockerd.log" >&2 || true
      return 1
    fi
    sleep 0.25
  done
  return 1
}

join_node() {
  local node=$1 addr=$2 token
  token=$(dk msrc-manager swarm join-token -q worker)
  dk "$node" swarm join --token "$token" --advertise-addr "$addr" --listen-addr "$addr:2377" \
    "$NET.11:2377" >/dev/null
}

write_nodes_json() {
  local first=1 f
  {
    printf '{\n  "bridge": "%s",\n  "hostAddress": "%s",\n  "registry": "%s:%s",\n  "nodes": [\n' \
      "$BRIDGE" "$HOST_IP" "$NET.13" "$REGISTRY_PORT"
    for f in "$STATE"/msrc-*/address.json; do
      local node
      node=$(basename "$(dirname "$f")")
      [ $first -eq 1 ] || printf ',\n'
      first=0
      printf '    {"hostname": "%s", "address": "%s", "dockerHost": "%s"}' \
        "$node" "$(sed -n 's/.*"address": "\([^"]*\)".*/\1/p' "$f")" "$(sock "$node")"
    done
    printf '\n  ]\n}\n'
  } >"$STATE/nodes.json.tmp"
  mv "$STATE/nodes.json.tmp" "$STATE/nodes.json"
}

is_up() {
  [ -f "$STATE/nodes.json" ] || return 1
  answers msrc-manager || return 1
  [ "$(dk msrc-manager info --format '{{.Swarm.LocalNodeState}}/{{.Swarm.ControlAvailable}}' 2>/dev/null)" = active/true ]
}

save_logs() {
  local f
  mkdir -p "$LOGS"
  for f in "$STATE"/msrc-*/dockerd.log; do
    [ -f "$f" ] && cp "$f" "$LOGS/$(basename "$(dirname "$f")").log"
  done
  log "the nodes' dockerd logs are in $LOGS"
}

up() {
  local count=${1:-${NODES:-3}}
  [[ $count =~ ^[0-9]+$ ]] && [ "$count" -ge 3 ] && [ "$count" -le 50 ] ||
    die "NODES must be a number from 3 to 50 (got '$count'): manager, cache and msr are the first three"
  rm -f "$UNAVAILABLE"
  if is_up; then
    log "already up ($(node_list)); DOCKER_HOST=$(sock msrc-manager)"
    return 0
  fi
  [ "$(id -u)" = 0 ] || unavailable "the local swarm needs root (network namespaces, a bridge, one iptables rule)"
  packages
  local cmd
  for cmd in dockerd docker iptables ip nsenter unshare setsid flock; do
    command -v "$cmd" >/dev/null 2>&1 || unavailable "$cmd is not installed"
  done
  # Anything left from an earlier, broken run goes first.
  if [ -d "$STATE" ] || ip link show "$BRIDGE" >/dev/null 2>&1 || ip netns list | grep -q "^$PREFIX"; then
    log "removing what an earlier run left"
    down
  fi
  if ! ip netns add msrc-probe 2>/dev/null; then
    unavailable "cannot create a network namespace here (ip netns add failed)"
  fi
  ip netns del msrc-probe
  mkdir -p "$STATE"
  trap 'log "up failed; removing what it made"; save_logs; down' ERR
  host_network
  local node
  mapfile -t nodes < <(node_names "$count")
  for node in "${nodes[@]}"; do start_node "$node" "$(address_of "$node")"; done
  for node in "${nodes[@]}"; do
    wait_node "$node" || {
      log "$node's dockerd did not answer within 30 s"
      false
    }
  done
  dk msrc-manager swarm init --advertise-addr "$NET.11" --listen-addr "$NET.11:2377" >/dev/null
  for node in "${nodes[@]:1}"; do join_node "$node" "$(address_of "$node")"; done
  write_nodes_json
  trap - ERR
  log "swarm up: $(node_list)"
  log "DOCKER_HOST=$(sock msrc-manager)"
}

node_list() {
  local f out=()
  for f in "$STATE"/msrc-*/address.json; do
    [ -f "$f" ] && out+=("$(basename "$(dirname "$f")")=$(sed -n 's/.*"address": "\([^"]*\)".*/\1/p' "$f")")
  done
  echo "${out[*]}"
}

stop_node() {
  local node=$1 dir="$STATE/$1" pid=""
  [ -f "$dir/dockerd.pid" ] && pid=$(cat "$dir/dockerd.pid" 2>/dev/null || true)
  [ -n "$pid" ] || pid=$(pgrep -f -- "-H $(sock "$node")" | head -1 || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  # Whatever is left when the daemon was killed (a run stopped with kill -9):
  # processes in the node's namespace (docker-proxy, a stuck daemon), those
  # started with its paths (containerd, the shims), and the containers' own
  # processes, which live in namespaces of their own and are found by their
  # container IDs in their cgroup.
  if ip netns list | grep -q "^$node\b"; then
    ip netns pids "$node" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  fi
  pkill -9 -f -- "$dir/" 2>/dev/null || true
  local id
  for id in $(ls "$dir/data/containers" 2>/dev/null); do
    grep -ls -- "$id" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3 | xargs -r kill -9 2>/dev/null || true
  done
}

remove_node_files() {
  local node=$1
  # Overlay, shm and secrets mounts of the node's containers.
  grep -o " $STATE/$node/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  ip netns del "$node" 2>/dev/null || true
  ip link del "v-$node" 2>/dev/null || true
  rm -rf "${STATE:?}/$node"
}

down() {
  local node
  local found=()
  mapfile -t found < <({
    ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX" || true
    ls -1 "$STATE" 2>/dev/null | grep "^$PREFIX" || true
  } | sort -u)
  for node in "${found[@]}"; do stop_node "$node"; done
  for node in "${found[@]}"; do remove_node_files "$node"; done
  ip link del "$BRIDGE" 2>/dev/null || true
  if command -v iptables >/dev/null 2>&1; then
    while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null; do :; done
  fi
  grep -o " $STATE[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$STATE"
  [ ${#found[@]} -eq 0 ] || log "down: removed ${found[*]}"
}

node_add() {
  local node=${1:?node-add NAME}
  [[ $node =~ ^msrc-[a-z0-9-]+$ ]] || die "node names start with msrc- (got '$node')"
  is_up || die "the swarm is not up"
  [ -d "$STATE/$node" ] && die "$node exists"
  local addr
  addr=$(address_of "$node")
  start_node "$node" "$addr"
  wait_node "$node" || {
    save_logs
    stop_node "$node"
    remove_node_files "$node"
    die "$node's dockerd did not start"
  }
  join_node "$node" "$addr"
  write_nodes_json
  log "added $node ($addr)"
}

node_rm() {
  local node=${1:?node-rm NAME}
  case " ${BASE_NODES[*]} " in *" $node "*) die "$node is one of the base nodes; use down" ;; esac
  [ -d "$STATE/$node" ] || die "no node $node"
  local id
  id=$(dk msrc-manager node ls --filter "name=$node" -q 2>/dev/null | head -1 || true)
  stop_node "$node"
  remove_node_files "$node"
  [ -n "$id" ] && dk msrc-manager node rm --force "$id" >/dev/null 2>&1 || true
  write_nodes_json
  log "removed $node"
}

env_lines() {
  is_up || return 0
  printf 'export DOCKER_HOST=%s\nexport MSRC_SWARM=%s\nexport MSRC_MSR_HOST=%s\nexport MSRC_REGISTRY=%s\n' \
    "$(sock msrc-manager)" "$STATE/nodes.json" "$(sock msrc-msr)" "$NET.13:$REGISTRY_PORT"
}

# with [--keep] -- CMD...: the lock, the swarm, CMD, and stopping what we started.
with() {
  local keep=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --keep) keep=1 ;;
      --) shift; break ;;
      *) die "usage: $0 with [--keep] -- CMD..." ;;
    esac
    shift
  done
  [ $# -gt 0 ] || die "usage: $0 with [--keep] -- CMD..."
  if [ "$(id -u)" != 0 ]; then
    # No swarm without root: `up` records why, and CMD runs without it.
    (up) || exit 1
    "$@"
    return
  fi
  exec 9>>"$LOCK"
  if ! flock -n 9; then
    die "another run is using the local swarm: $(cat "$LOCK.owner" 2>/dev/null || echo "lock $LOCK is held"); wait for it to finish"
  fi
  printf 'pid %s, started %s: %s\n' "$$" "$(date -u +%H:%M:%SZ)" "$*" >"$LOCK.owner"
  local started=0
  if ! is_up; then
    # In a subshell: where Docker cannot run, `up` says why and exits 0, and
    # CMD still runs (the tests then skip, naming the reason).
    (up) || exit 1
    if ! is_up; then
      # Docker cannot run here: CMD runs without it and says so (tests skip).
      "$@"
      return
    fi
    started=1
  fi
  eval "$(env_lines)"
  local status=0
  MSRC_SWARM_LOCKED=1 "$@" || status=$?
  [ $status -eq 0 ] || save_logs
  if [ $started -eq 1 ]; then
    # Kept only for a kept rehearsal: one that failed or was interrupted has
    # removed itself, and its swarm goes with it.
    if [ $keep -eq 1 ] && [ $status -eq 0 ]; then
      touch "$STATE/started-for-keep"
    else
      down
    fi
  fi
  return $status
}

release() {
  if [ -f "$STATE/started-for-keep" ]; then
    log "stopping the swarm that a kept rehearsal started"
    down
  fi
}

case "${1:-}" in
  up)
    shift
    exec 9>>"$LOCK"
    flock -n 9 || die "another run is using the local swarm: $(cat "$LOCK.owner" 2>/dev/null || echo "lock $LOCK is held")"
    up "$@"
    # Brought up by hand: it stays up until `make swarm-down`, whoever started it.
    rm -f "$STATE/started-for-keep"
    ;;
  down)
    exec 9>>"$LOCK"
    if [ -z "${MSRC_SWARM_LOCKED:-}" ] && ! flock -n 9; then
      die "the local swarm is in use: $(cat "$LOCK.owner" 2>/dev/null || echo "lock $LOCK is held"); wait for that run to finish"
    fi
    down
    ;;
  with) shift; with "$@" ;;
  release) release ;;
  env) env_lines ;;
  status)
    if is_up; then
      echo "up: $(node_list); DOCKER_HOST=$(sock msrc-manager)"
    else
      echo "down"
      exit 1
    fi
    ;;
  node-add) shift; node_add "$@" ;;
  node-rm) shift; node_rm "$@" ;;
  packages) packages ;;
  *) echo "usage: $0 up [NODES]|down|with [--keep] -- CMD|release|env|status|node-add NAME|node-rm NAME|packages" >&2; exit 2 ;;
esac
