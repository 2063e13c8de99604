"""Deploy a stack to the local swarm and check it serves: shared by
`make rehearse` and the end-to-end scenarios."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rehearsal.applier import Rehearsal
from tests.rehearsal.stack import RehearsalConfig, for_local_swarm
from tests.rehearsal.upstream import Upstream
from tests.support.program import Run
from tools.smoke import Registry

SERVE_TIMEOUT = 90.0


def local_node(client: Any) -> Any:
    return client.nodes.get(client.info()["Swarm"]["NodeID"])


@dataclass
class Deployed:
    rehearsal: Rehearsal
    run: Run
    settings: RehearsalConfig
    ca_file: Path
    seconds_to_serve: float

    @property
    def config(self) -> dict[str, Any]:
        return self.settings.config

    @property
    def address(self) -> tuple[str, int]:
        """Where the cache listens on this machine: host mode publishes on the node."""
        return ("127.0.0.1", int(self.config.get("cachePort", 443)))

    @property
    def server_name(self) -> str:
        return str(self.config["cacheHost"])

    def registry(self) -> Registry:
        return Registry(self.address, self.server_name, str(self.ca_file))

    def service(self) -> Any:
        return self.rehearsal.ctx.client.services.get(self.run.exports["serviceName"])

    def running_tasks(self) -> list[dict[str, Any]]:
        tasks = self.service().tasks(filters={"desired-state": "running"})
        return [t for t in tasks if t["Status"]["State"] == "running"]


def apply_and_serve(
    rehearsal: Rehearsal,
    stack: dict[str, Any],
    upstream: Upstream,
    workdir: Path,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> Deployed:
    """Apply `stack` (a stack file's msr-cache: keys) and wait until the cache answers /v2/."""
    node = local_node(rehearsal.ctx.client).attrs["Description"]["Hostname"]
    settings = for_local_swarm(stack, upstream, node, overrides)
    for note in settings.notes:
        log(f"rehearse: {note}")
    started = time.monotonic()
    run = rehearsal.apply(settings.config, settings.secret_keys)
    workdir.mkdir(parents=True, exist_ok=True)
    ca_file = workdir / "cache-ca.pem"
    # selfSigned: the certificate is its own trust anchor.
    ca_file.write_text(settings.client_ca_pem or run.exports["certificatePem"])
    deployed = Deployed(rehearsal, run, settings, ca_file, 0.0)
    log(f"rehearse: waiting for {run.exports['cacheUrl']} at {deployed.address[0]}:{deployed.address[1]}")
    deployed.registry().wait_ready(SERVE_TIMEOUT)
    deployed.seconds_to_serve = round(time.monotonic() - started, 2)
    log(
        f"rehearse: the cache answers /v2/ over verified TLS "
        f"({deployed.seconds_to_serve} s after apply began)"
    )
    return deployed
