#!/usr/bin/env bash
# Installs the provider plugins the locked provider SDKs declare, at exactly their
# versions. Each SDK package (pulumi-docker, pulumi-tls, pulumi-random) ships a
# pulumi-plugin.json naming its plugin and version; `pulumi up` and `preview` ask
# the program for these and use (or download) exactly them, so the lock
# (requirements.lock) pins the plugins too. This fetches them ahead, and fails
# early when one cannot be had.
#
# Usage: scripts/pulumi-plugins.sh          (the project's .venv; $PYTHON for another)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || { echo "plugins: $python is missing: make venv first" >&2; exit 1; }
command -v pulumi >/dev/null 2>&1 || { echo "plugins: the Pulumi CLI is not on PATH (scripts/install-pulumi.sh)" >&2; exit 1; }

wanted=$("$python" - <<'PY'
import json
from importlib import metadata

seen = set()
for dist in metadata.distributions():
    for f in dist.files or ():
        if f.name == "pulumi-plugin.json":
            doc = json.loads(f.read_text())
            if doc.get("resource") and doc.get("name") and doc.get("version"):
                seen.add((doc["name"], doc["version"].lstrip("v")))
for name, version in sorted(seen):
    print(name, version)
PY
)
[ -n "$wanted" ] || { echo "plugins: no provider SDK in $python's environment" >&2; exit 1; }
while read -r name version; do
  echo "plugins: resource $name v$version" >&2
  pulumi plugin install resource "$name" "$version" --exact
done <<<"$wanted"
