"""Deploy a stack to the local swarm and check it serves: shared by
`make rehearse` and the end-to-end scenarios."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearsal.applier import Rehearsal
from rehearsal.engine import Run
from rehearsal.localswarm import LocalSwarm, Node
from rehearsal.stack import RehearsalConfig, for_local_swarm
from rehearsal.upstream import Upstream
from tools.smoke import Registry

SERVE_TIMEOUT = 90.0


@dataclass
class Deployed:
    rehearsal: Rehearsal
    run: Run
    settings: RehearsalConfig
    ca_file: Path
    seconds_to_serve: float
    node: Node
    """The cache node: the label is there, the task runs there, the port is published there."""

    @property
    def config(self) -> dict[str, Any]:
        return self.settings.config

    @property
    def address(self) -> tuple[str, int]:
        """Where clients reach the cache: host mode publishes on the cache node's address."""
        return (self.node.address, int(self.config.get("cachePort", 443)))

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
    swarm: LocalSwarm | None = None,
) -> Deployed:
    """Apply `stack` (a stack file's msr-cache: keys) to the swarm's cache node
    and wait until the cache answers /v2/ there."""
    swarm = swarm or LocalSwarm.from_env()
    settings = for_local_swarm(stack, upstream, swarm.cache.hostname, overrides, image=swarm.stand_in_image)
    node = swarm.node(str(settings.config["cacheNode"]))
    for note in settings.notes:
        log(f"rehearse: {note}")
    started = time.monotonic()
    run = rehearsal.apply(settings.config, settings.secret_keys)
    workdir.mkdir(parents=True, exist_ok=True)
    ca_file = workdir / "cache-ca.pem"
    # selfSigned: the certificate is its own trust anchor.
    ca_file.write_text(settings.client_ca_pem or run.exports["certificatePem"])
    deployed = Deployed(rehearsal, run, settings, ca_file, 0.0, node)
    log(f"rehearse: waiting for {run.exports['cacheUrl']} at {deployed.address[0]}:{deployed.address[1]}")
    deployed.registry().wait_ready(SERVE_TIMEOUT)
    deployed.seconds_to_serve = round(time.monotonic() - started, 2)
    log(
        f"rehearse: the cache answers /v2/ over verified TLS "
        f"({deployed.seconds_to_serve} s after apply began)"
    )
    return deployed


def pulumi_volumes(rehearsal: Rehearsal) -> list[str]:
    """Names of the docker.Volume resources in the rehearsal's state."""
    return [
        str(r.created.outputs.get("name") or r.created.id)
        for r in rehearsal.state.resources
        if r.typ == "docker:index/volume:Volume"
    ]


def remove_node_volumes(node: Node, names: list[str], log: Callable[[str], None] = print) -> None:
    """Remove the volumes Swarm made on the cache node for the service's mount.

    `pulumi destroy` removes the docker.Volume resource, which the Docker API
    created on the manager Pulumi talks to; the cache node's volume, holding
    the cached layers, stays (README, "Storage"). A rehearsal leaves nothing,
    so it removes that one too.
    """
    import docker.errors

    client = node.client()
    for name in names:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.volumes.get(name).remove()
                log(f"rehearse: removed volume {name} on {node.hostname} (pulumi destroy leaves it)")
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError as exc:
                # The task's container may still be stopping and holding it.
                if "in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def destroy_leaving_nothing(rehearsal: Rehearsal, node: Node, log: Callable[[str], None] = print) -> None:
    """`pulumi destroy`, then the volume Swarm made on the cache node for the
    service's mount, which destroy leaves (with the cached layers)."""
    volumes = pulumi_volumes(rehearsal)
    rehearsal.destroy()
    remove_node_volumes(node, volumes, log=log)
