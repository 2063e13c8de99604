#!/usr/bin/env bash
# `make up|preview|destroy STACK=<env>`: run pulumi for one stack, after checking
# everything a newcomer may be missing, each with what to do about it.
set -uo pipefail

action=${1:-}
stack=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

fail() { printf 'msr-cache: %s\n' "$*" >&2; exit 1; }

[ -n "$stack" ] || fail "say which stack: make $action STACK=<env>, one of: $(ls stacks | sed -n 's/^Pulumi\.\(.*\)\.yaml$/\1/p' | xargs)"
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

pulumi stack select "$stack" >/dev/null 2>&1 || pulumi stack init "$stack" || fail "could not create stack $stack"
exec pulumi "$action" --stack "$stack"
