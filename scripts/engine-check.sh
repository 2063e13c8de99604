#!/usr/bin/env bash
# The real Pulumi engine on the local swarm, for the dev stack: `pulumi up`,
# `pulumi preview --expect-no-changes` (no perpetual diff), `pulumi destroy`, then
# a check that nothing of the stack is left on the swarm (service, secret, config,
# volume, node label). What the `engine` GitHub workflow runs (`make engine-check`).
#
# It shares the rehearsal's pieces: the local swarm (scripts/swarm.sh, under its
# lock), the stand-in images (rehearsal/images/build.sh) and the same kind of "MSR"
# stand-in (Docker Distribution with TLS from a private CA, on the msr node).
# The dev stack's own image (mirantis/dtr-content-cache) cannot be pulled there, so
# msr-cache:image is the stand-in, and msrHost/msrPort/msrCaCert point at the
# stand-in upstream. It runs on a copy of the project, with a local file backend in
# a temporary directory: the checkout, its stacks/Pulumi.dev.yaml and any logged-in
# backend are not touched.
#
# Needs root (the local swarm), Debian's docker-registry and busybox-static, the
# project's .venv and policy/venv (make engine-check builds them), and Internet
# access for the Pulumi CLI (installed when absent: scripts/install-pulumi.sh) and
# its provider plugins (scripts/pulumi-plugins.sh).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf 'engine-check: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

if [ -z "${MSRC_SWARM:-}" ]; then
  # Run again under the swarm lock, with its environment (DOCKER_HOST, MSRC_*).
  exec scripts/swarm.sh with -- bash -c '
    if [ -z "${MSRC_SWARM:-}" ]; then
      echo "engine-check: error: no Docker here: $(cat build/swarm/unavailable 2>/dev/null)" >&2; exit 1; fi
    exec "$0"' "$root/scripts/engine-check.sh"
fi

[ -x .venv/bin/python ] && [ -x policy/venv/bin/python ] || die "make venv policy-venv first (or make engine-check)"
if [ -x .pulumi/bin/pulumi ]; then PATH="$root/.pulumi/bin:$PATH"; fi
if ! command -v pulumi >/dev/null 2>&1; then
  bin=$(scripts/install-pulumi.sh) || die "the Pulumi CLI is not installed, and installing the pinned version failed (above)"
  PATH="$bin:$PATH"
fi
command -v openssl >/dev/null 2>&1 || die "openssl is not installed; it makes the MSR stand-in's certificates"

STACK=dev
LABEL=com.mirantis.msr-cache.stack=$STACK
UPSTREAM_PORT=5998
UPSTREAM_CONTAINER=msrc-engine-check-upstream
IMAGE=$MSRC_REGISTRY/msrc-test/dtr-content-cache-stand-in:2.8.2
UPSTREAM_IMAGE=$MSRC_REGISTRY/msrc-test/upstream-registry:2.8.2
msr_address=${MSRC_REGISTRY%:*}

work=$(mktemp -d /tmp/msrc-engine-check.XXXXXX)
cleanup() {
  DOCKER_HOST=$MSRC_MSR_HOST docker rm -f "$UPSTREAM_CONTAINER" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say "building and serving the stand-in images"
rehearsal/images/build.sh

# --- The MSR stand-in: Distribution over TLS from a private CA, on the msr node -----
say "starting the MSR stand-in on $msr_address:$UPSTREAM_PORT"
pki=$work/pki
mkdir -p "$pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=msr-cache engine-check CA" \
  -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$msr_address" -keyout "$pki/key.pem" -out "$pki/req.csr" 2>/dev/null
printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$msr_address" >"$pki/ext.cnf"
openssl x509 -req -in "$pki/req.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
  -extfile "$pki/ext.cnf" -out "$pki/cert.pem" 2>/dev/null
chmod 0644 "$pki"/*.pem
printf '%s\n' 'version: 0.1' 'log: {level: warn}' \
  'http: {addr: "0.0.0.0:5000", tls: {certificate: /pki/cert.pem, key: /pki/key.pem}}' \
  'storage: {filesystem: {rootdirectory: /var/lib/registry}}' >"$pki/config.yml"
DOCKER_HOST=$MSRC_MSR_HOST docker rm -f "$UPSTREAM_CONTAINER" >/dev/null 2>&1 || true
DOCKER_HOST=$MSRC_MSR_HOST docker run -d --name "$UPSTREAM_CONTAINER" -v "$pki:/pki:ro" \
  -v "$pki/config.yml:/etc/docker/registry/config.yml:ro" \
  -p "$msr_address:$UPSTREAM_PORT:5000" "$UPSTREAM_IMAGE" >/dev/null
for _ in $(seq 1 40); do
  if curl -sf --cacert "$pki/ca.pem" "https://$msr_address:$UPSTREAM_PORT/v2/" >/dev/null; then break; fi
  sleep 0.25
done
curl -sf --cacert "$pki/ca.pem" "https://$msr_address:$UPSTREAM_PORT/v2/" >/dev/null ||
  die "the MSR stand-in does not answer on https://$msr_address:$UPSTREAM_PORT/v2/"

# --- A copy of the project, its own state backend ----------------------------------
project=$work/project
mkdir -p "$project"
tar -C "$root" --exclude=./.git --exclude=./.venv --exclude=./policy/venv --exclude=./build \
  --exclude=./.pulumi --exclude='*/__pycache__' --exclude=./.mypy_cache --exclude=./.hypothesis -c . |
  tar -C "$project" -x
ln -s "$root/.venv" "$project/.venv"
ln -s "$root/policy/venv" "$project/policy/venv"
mkdir -p "$work/state"
export PULUMI_BACKEND_URL="file://$work/state"
PULUMI_CONFIG_PASSPHRASE=$(head -c 24 /dev/urandom | base64)
export PULUMI_CONFIG_PASSPHRASE
export PULUMI_SKIP_UPDATE_CHECK=true
cd "$project"

say "provider plugins at the versions the locked SDKs declare"
scripts/pulumi-plugins.sh

pulumi stack init "$STACK" >/dev/null
pulumi config set --stack "$STACK" msr-cache:image "$IMAGE"
pulumi config set --stack "$STACK" msr-cache:msrHost "$msr_address"
pulumi config set --stack "$STACK" msr-cache:msrPort "$UPSTREAM_PORT"
pulumi config set --stack "$STACK" msr-cache:msrCaCert -- "$(cat "$pki/ca.pem")"

# A label that was there before the stack is not the stack's to remove.
label_before=$(docker node inspect self --format '{{ index .Spec.Labels "dtr.cache" }}')

say "pulumi up"
pulumi up --stack "$STACK" --yes --skip-preview --policy-pack policy

say "the cache answers with the certificate the stack exported"
pulumi stack output --stack "$STACK" certificatePem >"$work/cache.pem"
manager_address=$(docker info --format '{{.Swarm.NodeAddr}}')
port=$(pulumi config get --stack "$STACK" msr-cache:cachePort)
ok=
for _ in $(seq 1 60); do
  if curl -sf --cacert "$work/cache.pem" --resolve "localhost:$port:$manager_address" \
    "https://localhost:$port/v2/" >/dev/null; then
    ok=1
    break
  fi
  sleep 1
done
[ -n "$ok" ] || die "the cache does not answer on https://localhost:$port/v2/ (node $manager_address)"

say "pulumi preview --expect-no-changes (no perpetual diff)"
pulumi preview --stack "$STACK" --expect-no-changes --policy-pack policy

say "pulumi destroy"
pulumi destroy --stack "$STACK" --yes --skip-preview

say "nothing of the stack is left on the swarm"
left=()
for kind in service secret config volume; do
  ids=$(docker "$kind" ls --quiet --filter "label=$LABEL")
  [ -z "$ids" ] || left+=("$kind: $(echo "$ids" | xargs)")
done
node_label=$(docker node inspect self --format '{{ index .Spec.Labels "dtr.cache" }}')
[ -z "$node_label" ] || [ -n "$label_before" ] || left+=("node label dtr.cache=$node_label on $(docker node inspect self --format '{{.Description.Hostname}}')")
[ ${#left[@]} -eq 0 ] || die "left after destroy: ${left[*]}"
resources=$(pulumi stack export --stack "$STACK" | .venv/bin/python -c \
  'import json,sys; print(len(json.load(sys.stdin)["deployment"].get("resources") or []))')
[ "$resources" = 0 ] || die "the state still holds $resources resources after destroy"
pulumi stack rm --stack "$STACK" --yes >/dev/null
say "passed: up, preview with no changes, destroy, nothing left"
