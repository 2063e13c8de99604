#!/usr/bin/env bash
# `make up|preview|destroy|rotate|drift STACK=<env>`: run pulumi for one stack,
# after checking everything a newcomer may be missing, each with what to do about it.
#
#   prepare ACTION STACK
#           only the set-up and the checks, which take seconds: make runs this
#           first, then builds the virtualenvs (the policy pack's takes ~30 s),
#           then runs ACTION, which repeats the (then instant) checks
#   rotate  pulumi up, replacing the cache's private key now (forced rotation):
#           the certificate and both Swarm secrets follow, the service is updated
#           in place. A stack with several caches (msr-cache:caches) says which
#           with CACHE=<name> (make rotate STACK=prod CACHE=asia)
#   drift   pulumi refresh --preview-only --expect-no-changes: fails when the swarm
#           no longer matches the state (label removed by hand, service edited);
#           runs `check` first
#   check   fails when a cache's certificate expires within 30 days (CHECK_DAYS),
#           naming the cache and saying when and how to renew it: every cache of
#           the stack output `caches` (its certificateNotAfter), or, for a stack
#           deployed before that output existed, the output certificateNotAfter
#
# Set-up it does by itself (README "The two commands"):
#   - no `pulumi` on PATH: installs the pinned CLI (scripts/pulumi-cli.env) into
#     .pulumi/bin, checksum verified (scripts/install-pulumi.sh)
#   - dev only, no backend logged in (or dev's state already there): keeps dev's
#     state in .pulumi/state, a local file backend inside this checkout, with a
#     generated passphrase in .pulumi/dev-passphrase; staging and prod need an
#     explicit `pulumi login`, so that their state never lands on a laptop by accident
#   - dev only, no docker:host, no DOCKER_HOST and no Swarm manager on the local
#     socket: uses, or starts, the local swarm (scripts/swarm.sh, as `make swarm-up`)
#
# For tests: MSRC_PULUMI_DIR (default .pulumi) and MSRC_SWARM_SH (default
# scripts/swarm.sh).
set -uo pipefail

preparing=
if [ "${1:-}" = prepare ]; then
  preparing=1
  shift
fi
action=${1:-}
stack=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
pulumi_dir=${MSRC_PULUMI_DIR:-$root/.pulumi}
swarm_sh=${MSRC_SWARM_SH:-$root/scripts/swarm.sh}

fail() { printf 'msr-cache: %s\n' "$*" >&2; exit 1; }
# What the set-up did: said once, by `prepare`.
note() { [ -z "$preparing" ] || printf 'msr-cache: %s\n' "$*" >&2; }

[ -n "$stack" ] || fail "say which stack: make $action STACK=<env>, one of: $(ls stacks | sed -n 's/^Pulumi\.\(.*\)\.yaml$/\1/p' | grep -v '^test-' | xargs)"
[ -f "stacks/Pulumi.$stack.yaml" ] || fail "no stacks/Pulumi.$stack.yaml; copy one of the files in stacks/ and edit it"

# --- The Pulumi CLI -------------------------------------------------------------
# One installed into the project before wins over the one on PATH.
if [ -x "$pulumi_dir/bin/pulumi" ]; then PATH="$pulumi_dir/bin:$PATH"; fi
if ! command -v pulumi >/dev/null 2>&1; then
  note "the Pulumi CLI is not installed: installing the pinned version into $pulumi_dir/bin (scripts/pulumi-cli.env)"
  bin=$("$root/scripts/install-pulumi.sh" "$pulumi_dir") ||
    fail "the Pulumi CLI is not installed (https://www.pulumi.com/docs/install/), and installing the pinned \
version into $pulumi_dir/bin failed (above); it downloads its own provider plugins too, so run this on a \
machine with Internet access"
  PATH="$bin:$PATH"
fi

# --- The state backend ----------------------------------------------------------
# dev, with no backend chosen: the project's own file backend. Once dev's state is
# there it stays there, even after a `pulumi login`, so that it is not orphaned
# (remove .pulumi/state after `pulumi stack export`/`import` to move it).
if [ "$stack" = dev ] && [ -z "${PULUMI_BACKEND_URL:-}" ] &&
  { [ -d "$pulumi_dir/state/.pulumi" ] || ! pulumi whoami >/dev/null 2>&1; }; then
  mkdir -p "$pulumi_dir/state" || fail "cannot create $pulumi_dir/state for dev's local state"
  export PULUMI_BACKEND_URL="file://$pulumi_dir/state"
  note "dev: keeping the stack's state in $pulumi_dir/state (a local file backend in this checkout, \
as no backend is logged in); \`pulumi login\` is needed for staging and prod"
  if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    if [ ! -s "$pulumi_dir/dev-passphrase" ]; then
      (umask 077 && head -c 32 /dev/urandom | base64 >"$pulumi_dir/dev-passphrase") ||
        fail "cannot write $pulumi_dir/dev-passphrase (dev's secrets passphrase)"
      note "dev: its secrets are encrypted with a generated passphrase, kept in $pulumi_dir/dev-passphrase"
    fi
    export PULUMI_CONFIG_PASSPHRASE_FILE="$pulumi_dir/dev-passphrase"
  fi
fi

pulumi whoami >/dev/null 2>&1 || fail "Pulumi is not logged in to a state backend: run \`pulumi login\` \
(or \`pulumi login --local\` / \`pulumi login s3://...\` for a self-managed backend)"

# --- The swarm ------------------------------------------------------------------
command -v docker >/dev/null 2>&1 || fail "the docker CLI is not installed; it is needed to reach the swarm"
manager_answers() {
  DOCKER_HOST=$1 timeout 20 docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null | grep -qx true
}
configured=
if docker_host=$(pulumi config get docker:host --stack "$stack" 2>/dev/null); then configured=1; else docker_host=${DOCKER_HOST:-}; fi
if ! manager_answers "$docker_host" && [ "$stack" = dev ] && [ -z "$configured" ] && [ -z "${DOCKER_HOST:-}" ]; then
  # dev's cacheNode is `self`: the manager, here msrc-manager of the local swarm.
  if ! "$swarm_sh" status >/dev/null 2>&1; then
    note "dev: no Swarm manager on the local socket: starting the local swarm (make swarm-up; make swarm-down removes it)"
    "$swarm_sh" up >&2 || fail "cannot reach a Swarm manager on the local socket, and the local swarm did not start (above)"
    "$swarm_sh" status >/dev/null 2>&1 || fail "cannot reach a Swarm manager on the local socket, and the local \
swarm cannot start here: $(cat build/swarm/unavailable 2>/dev/null || echo 'see above'). Set DOCKER_HOST to a \
manager, or run \`docker swarm init\` on this engine"
  fi
  eval "$("$swarm_sh" env)"
  docker_host=${DOCKER_HOST:-}
  note "dev: using the local swarm (DOCKER_HOST=$docker_host; cacheNode self is its manager). Its nodes pull \
only from its own registry (${MSRC_REGISTRY:-}), not Docker Hub: set msr-cache:image to an image there, or see \
it work with \`make rehearse STACK=dev\`"
fi
manager_answers "$docker_host" || fail "cannot reach a Swarm manager at ${docker_host:-the local socket}: set DOCKER_HOST (or \
\`pulumi config set docker:host ...\`), or load an MKE client bundle (source env.sh)"

[ -z "$preparing" ] || exit 0

# The names of the stack's caches (msr-cache:caches[i].name), one a line, in the
# stack's order; nothing for a stack without caches (its one cache).
cache_names() {
  local i=0 name
  while [ "$i" -lt 1000 ] && name=$(pulumi config get --path "caches[$i].name" --stack "$stack" 2>/dev/null); do
    printf '%s\n' "$name"
    i=$((i + 1))
  done
}
# Lines as one comma-separated list.
listed() { paste -sd, - | sed 's/,/, /g'; }

# Every cache's certificate end against CHECK_DAYS (30): each cache of the stack
# output `caches`; a stack deployed before that output existed has only the
# top-level certificateNotAfter of its one cache.
check_certificate() {
  local caches not_after=
  caches=$(pulumi stack output caches --json --stack "$stack" 2>/dev/null) || caches=
  case "$caches" in '' | null | '{}') caches= ;; esac
  if [ -z "$caches" ]; then
    not_after=$(pulumi stack output certificateNotAfter --stack "$stack" 2>/dev/null) && [ -n "$not_after" ] ||
      fail "stack $stack has no caches output and no certificateNotAfter output: make up STACK=$stack first"
  fi
  case "${CHECK_DAYS:-30}" in '' | *[!0-9]*) fail "CHECK_DAYS=${CHECK_DAYS:-} is not a whole number of days" ;; esac
  python3 - "$stack" "${CHECK_DAYS:-30}" "$caches" "$not_after" <<'PY'
import datetime as dt
import json
import subprocess
import sys

stack, limit, caches_json, top_not_after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
now = dt.datetime.now(dt.UTC)


def config(path):
    """`pulumi config get --path PATH` of the stack; None when it is not set."""
    try:
        done = subprocess.run(
            ["pulumi", "config", "get", "--path", path, "--stack", stack],
            capture_output=True, text=True, timeout=120, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


names = None


def entry_index(name):
    """The index of cache `name` in msr-cache:caches; None for the stack's one cache."""
    global names
    if names is None:
        names = []
        while len(names) < 1000 and (found := config(f"caches[{len(names)}].name")) is not None:
            names.append(found)
    return names.index(name) if name in names else None


def how(name):
    """What renews cache `name`'s certificate (None: the stack's one cache)."""
    i = entry_index(name) if name is not None else None
    entry = f"caches[{i}]." if i is not None else ""
    mode = (config(entry + "tls.mode") if entry else None) or config("tls.mode") or "selfSigned"
    if mode == "provided":
        # An entry's own certificate, or the stack's that the entry inherits.
        at = entry if entry and (config(entry + "tls.mode") or config(entry + "tls.certPem")) else ""
        return f"set the renewed {at}tls.certPem (and {at}tls.keyPem), then make up STACK={stack}"
    which = f" CACHE={name}" if i is not None else ""
    return f"make up STACK={stack} renews it (tls.renewBeforeHours), or make rotate STACK={stack}{which}"


def check(name, text):
    """True when the certificate of cache `name` (None: the stack's one cache) ends after the limit."""
    whose = f"{stack}: cache {name}: the certificate" if name is not None else f"{stack}: the cache's certificate"
    try:
        end = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        where = f"{stack}: cache {name}'s" if name is not None else f"stack {stack}'s"
        print(f"msr-cache: {where} certificateNotAfter is not a date: {text!r}", file=sys.stderr)
        return False
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.UTC)
    days = (end - now).total_seconds() / 86400
    when = end.strftime("%Y-%m-%d %H:%M UTC")
    if days > limit:
        print(f"msr-cache: {whose} expires {when}, in {days:.0f} days")
        return True
    state = "EXPIRED" if days <= 0 else f"expires in {days:.0f} days"
    print(f"msr-cache: {whose} {state} ({when}), within {limit} days: {how(name)}", file=sys.stderr)
    return False


if not caches_json:
    sys.exit(0 if check(None, top_not_after) else 1)
try:
    caches = json.loads(caches_json)
except ValueError:
    caches = None
if not isinstance(caches, dict):
    sys.exit(f"msr-cache: {stack}: the caches output is not a map of caches: make up STACK={stack}")
failed = []
for name, cache in sorted(caches.items()):
    not_after = cache.get("certificateNotAfter") if isinstance(cache, dict) else None
    if not not_after:
        print(
            f"msr-cache: {stack}: cache {name}: the caches output has no certificateNotAfter for it: "
            f"make up STACK={stack}",
            file=sys.stderr,
        )
        failed.append(name)
    elif not check(name, not_after):
        failed.append(name)
if failed:
    print(
        f"msr-cache: {stack}: {len(failed)} of {len(caches)} caches fail the certificate check "
        f"({limit} days): {', '.join(failed)}",
        file=sys.stderr,
    )
    sys.exit(1)
PY
}

case "$action" in
  rotate)
    pulumi stack select "$stack" >/dev/null 2>&1 || fail "stack $stack does not exist yet: make up STACK=$stack first"
    # Which cache: the stack's one cache, or with caches the entry named CACHE (the
    # only one when the list has one).
    names=$(cache_names)
    cache=${CACHE:-}
    entry=
    if [ -z "$names" ]; then
      [ -z "$cache" ] || fail "stack $stack has no caches list: its one cache is rotated by make rotate STACK=$stack, without CACHE"
    else
      if [ -z "$cache" ]; then
        [ "$(printf '%s\n' "$names" | wc -l)" -eq 1 ] ||
          fail "stack $stack has several caches ($(printf '%s\n' "$names" | listed)): say which, \
make rotate STACK=$stack CACHE=<name>"
        cache=$names
      fi
      index=$(printf '%s\n' "$names" | grep -nxF -- "$cache" | head -n1 | cut -d: -f1)
      [ -n "$index" ] || fail "stack $stack has no cache $cache; its caches are: $(printf '%s\n' "$names" | listed)"
      entry="caches[$((index - 1))]."
    fi
    mode=
    [ -z "$entry" ] || mode=$(pulumi config get --path "${entry}tls.mode" --stack "$stack" 2>/dev/null) || mode=
    [ -n "$mode" ] || mode=$(pulumi config get --path tls.mode --stack "$stack" 2>/dev/null) || mode=
    [ "${mode:-selfSigned}" != provided ] ||
      fail "${entry}tls.mode is provided: rotate by setting the new ${entry}tls.certPem and ${entry}tls.keyPem, then make up"
    # The key's URN: the one cache's (components.rotation.key_urn), or that of the
    # component msr-cache-<name> (components.caches) for a cache of caches.
    urn=$(.venv/bin/python - "$stack" "${entry:+$cache}" <<'PY'
import sys

from components.caches import ROOT_NAME
from components.rotation import key_urn

stack, name = sys.argv[1], sys.argv[2]
urn = key_urn(stack)
one = f"::{ROOT_NAME}-tls-key"
assert urn.endswith(one), urn
print(urn[: -len(one)] + f"::{ROOT_NAME}-{name}-tls-key" if name else urn)
PY
    ) || fail "could not compute the key's URN (make venv first)"
    exec pulumi up --stack "$stack" --replace "$urn" --policy-pack policy
    ;;
  check)
    pulumi stack select "$stack" >/dev/null 2>&1 || fail "stack $stack does not exist yet: nothing to check"
    check_certificate
    ;;
  drift)
    pulumi stack select "$stack" >/dev/null 2>&1 || fail "stack $stack does not exist yet: nothing to compare"
    status=0
    check_certificate || status=1
    pulumi refresh --stack "$stack" --preview-only --expect-no-changes || status=1
    exit $status
    ;;
  up|preview)
    pulumi stack select "$stack" >/dev/null 2>&1 || pulumi stack init "$stack" || fail "could not create stack $stack"
    # The guardrails in policy/ (make builds policy/venv) apply to every preview and up.
    exec pulumi "$action" --stack "$stack" --policy-pack policy
    ;;
  *)
    pulumi stack select "$stack" >/dev/null 2>&1 || fail "stack $stack does not exist: nothing to $action"
    exec pulumi "$action" --stack "$stack"
    ;;
esac
