"""Deploy a stack to the local swarm and check it serves: shared by
`make rehearse` and the end-to-end scenarios."""

from __future__ import annotations

import functools
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
    client = node.client()
    for name in names:
        # The task's container may still be stopping and holding it.
        if _remove_when_free(functools.partial(_remove_volume, client, name)):
            log(f"rehearse: removed volume {name} on {node.hostname} (pulumi destroy leaves it)")


def destroy_leaving_nothing(rehearsal: Rehearsal, node: Node, log: Callable[[str], None] = print) -> None:
    """`pulumi destroy`, then the volume Swarm made on the cache node for the
    service's mount, which destroy leaves (with the cached layers)."""
    volumes = pulumi_volumes(rehearsal)
    rehearsal.destroy()
    remove_node_volumes(node, volumes, log=log)


def remove_labelled(client: Any, stack: str, log: Callable[[str], None] = print) -> None:
    """Remove what Swarm still holds with the stack's label: a service first,
    then the secrets, configs and volumes it used. Catches what a run killed
    in the middle of a create made but could not record (a service whose
    convergence it was waiting for)."""
    from components.cache import LABEL_PREFIX

    mine = {"label": f"{LABEL_PREFIX}.stack={stack}"}
    for kind in (client.services, client.secrets, client.configs, client.volumes):
        for item in kind.list(filters=mine):
            if _remove_when_free(item.remove):
                log(f"rehearse: removed {type(item).__name__} {item.name}, which no state recorded")


def _remove_volume(client: Any, name: str) -> None:
    client.volumes.get(name).remove()


def _remove_when_free(remove: Callable[[], Any], seconds: float = 30) -> bool:
    """Call `remove`, retrying while Docker says the object is in use (a removed
    service's task still stopping); False when it was already gone."""
    import docker.errors

    deadline = time.monotonic() + seconds
    while True:
        try:
            remove()
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
