#!/usr/bin/env bash
# `make up|preview|destroy|rotate|drift STACK=<env>`: run pulumi for one stack,
# after checking everything a newcomer may be missing, each with what to do about it.
#
#   rotate  pulumi up, replacing the cache's private key now (forced rotation):
#           the certificate and both Swarm secrets follow, the service is updated
#           in place
#   drift   pulumi refresh --preview-only --expect-no-changes: fails when the swarm
#           no longer matches the state (label removed by hand, service edited)
set -uo pipefail

action=${1:-}
stack=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

fail() { printf 'msr-cache: %s\n' "$*" >&2; exit 1; }

[ -n "$stack" ] || fail "say which stack: make $action STACK=<env>, one of: $(ls stacks | sed -n 's/^Pulumi\.\(.*\)\.yaml$/\1/p' | grep -v '^test-' | xargs)"
[ -f "stacks/Pulumi.$stack.yaml" ] || fail "no stacks/Pulumi.$stack.yaml; copy one of the files in stacks/ and edit it"

command -v pulumi >/dev/null 2>&1 || fail "the Pulumi CLI is not installed (https://www.pulumi.com/docs/install/); \
it downloads its own provider plugins, so run this on a machine with Internet access"

pulumi whoami >/dev/null 2>&1 || fail "Pulumi is not logged in to a state backend: run \`pulumi login\` \
(or \`pulumi login --local\` / \`pulumi login s3://...\` for a self-managed backend)"

command -v docker >/dev/null 2>&1 || fail "the docker CLI is not installed; it is needed to reach the swarm"
if ! docker_host=$(pulumi config get docker:host --stack "$stack" 2>/dev/null); then docker_host=${DOCKER_HOST:-}; fi
DOCKER_HOST=$docker_host timeout 20 docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null | grep -qx true \
  || fail "cannot reach a Swarm manager at ${docker_host:-the local socket}: set DOCKER_HOST (or \
\`pulumi config set docker:host ...\`), or load an MKE client bundle (source env.sh)"

case "$action" in
  rotate)
    pulumi stack select "$stack" >/dev/null 2>&1 || fail "stack $stack does not exist yet: make up STACK=$stack first"
    mode=$(pulumi config get --path tls.mode --stack "$stack" 2>/dev/null || echo selfSigned)
    [ "$mode" != provided ] || fail "tls.mode is provided: rotate by setting the new tls.certPem and tls.keyPem, then make up"
    urn=$(.venv/bin/python -c 'import sys; from components.rotation import key_urn; print(key_urn(sys.argv[1]))' "$stack") \
      || fail "could not compute the key's URN (make venv first)"
    exec pulumi up --stack "$stack" --replace "$urn" --policy-pack policy
    ;;
  drift)
    pulumi stack select "$stack" >/dev/null 2>&1 || fail "stack $stack does not exist yet: nothing to compare"
    exec pulumi refresh --stack "$stack" --preview-only --expect-no-changes
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
