"""Deploy a stack to the local swarm and check it serves: shared by
`make rehearse` and the end-to-end scenarios."""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.settings import is_ip
from rehearsal.applier import Rehearsal
from rehearsal.engine import Run
from rehearsal.localswarm import LocalSwarm, Node
from rehearsal.stack import RehearsalConfig, RehearsedCache, for_local_swarm
from rehearsal.upstream import Upstream
from tools.smoke import Registry

if TYPE_CHECKING:
    from rehearsal.object_store import ObjectStore

SERVE_TIMEOUT = 90.0


@dataclass
class DeployedCache:
    """One cache of the rehearsed stack, serving on the local swarm."""

    key: str
    """Its key in the `caches` export: the entry's name, or the one cache's MSR name."""
    plan: RehearsedCache
    exports: dict[str, Any]
    """Its entry of the `caches` export (cacheUrl, serviceName, registrationId, ...)."""
    ca_file: Path
    nodes: tuple[Node, ...]
    """Its nodes, one per task: the label is there, the tasks run there, the port is published there."""
    client: Any = field(repr=False)
    """The manager's client."""
    seconds_to_serve: float = 0.0

    @property
    def node(self) -> Node:
        return self.nodes[0]

    @property
    def port(self) -> int:
        return self.plan.cache_port

    @property
    def address(self) -> tuple[str, int]:
        """Where clients reach the cache: host mode publishes on the node's address."""
        return (self.node.address, self.port)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every task's address (one per node)."""
        return [(n.address, self.port) for n in self.nodes]

    @property
    def server_name(self) -> str:
        return self.plan.cache_host

    @property
    def cache_url(self) -> str:
        return str(self.exports["cacheUrl"])

    def registry(self, address: tuple[str, int] | None = None) -> Registry:
        return Registry(address or self.address, self.server_name, str(self.ca_file))

    def service(self) -> Any:
        return self.client.services.get(self.exports["serviceName"])

    def running_tasks(self) -> list[dict[str, Any]]:
        tasks = self.service().tasks(filters={"desired-state": "running"})
        return [t for t in tasks if t["Status"]["State"] == "running"]


@dataclass
class Deployed:
    rehearsal: Rehearsal
    run: Run
    settings: RehearsalConfig
    caches: dict[str, DeployedCache]
    """Every cache, keyed as the `caches` export, in the stack's order."""

    @property
    def config(self) -> dict[str, Any]:
        return self.settings.config

    @property
    def only(self) -> DeployedCache:
        """The stack's one cache; with several, say which (caches[name])."""
        if len(self.caches) != 1:
            raise ValueError(
                f"the stack has {len(self.caches)} caches ({', '.join(self.caches)}): use caches[name]"
            )
        return next(iter(self.caches.values()))

    # The one cache's, as before stacks had several.
    @property
    def ca_file(self) -> Path:
        return self.only.ca_file

    @property
    def seconds_to_serve(self) -> float:
        return max(c.seconds_to_serve for c in self.caches.values())

    @property
    def node(self) -> Node:
        return self.only.node

    @property
    def address(self) -> tuple[str, int]:
        return self.only.address

    @property
    def server_name(self) -> str:
        return self.only.server_name

    def registry(self) -> Registry:
        return self.only.registry()

    def service(self) -> Any:
        return self.only.service()

    def running_tasks(self) -> list[dict[str, Any]]:
        return self.only.running_tasks()


def cache_nodes(swarm: LocalSwarm) -> list[str]:
    """The nodes caches may run on, in order of preference: the cache node, the
    other workers, then the manager; never the msr node (the stand-ins)."""
    others = sorted(n.hostname for n in swarm.nodes if n not in (swarm.cache, swarm.manager, swarm.msr))
    return [swarm.cache.hostname, *others, swarm.manager.hostname]


def apply_and_serve(
    rehearsal: Rehearsal,
    stack: dict[str, Any],
    upstream: Upstream,
    workdir: Path,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    swarm: LocalSwarm | None = None,
    store: ObjectStore | None = None,
) -> Deployed:
    """Apply `stack` (a stack file's msr-cache: keys) to the swarm, each cache
    on its nodes (the stack's one cache on the cache node), and wait until
    every cache answers /v2/ over verified TLS on every node it runs on.
    `store`: the S3 stand-in, for a stack with object storage."""
    swarm = swarm or LocalSwarm.from_env()
    settings = for_local_swarm(
        stack, upstream, swarm.cache.hostname, overrides,
        image=swarm.stand_in_image, nodes=cache_nodes(swarm), store=store,
    )  # fmt: skip
    for note in settings.notes:
        log(f"rehearse: {note}")
    hosts = parent_hosts(settings, swarm)
    for line in hosts:
        address, name = line.split(" ", 1)
        log(f"rehearse: {name} resolves to {address} in the caches' containers (a parent cache; DNS there)")
    started = time.monotonic()
    run = _apply(rehearsal, settings, hosts)
    workdir.mkdir(parents=True, exist_ok=True)
    exported: dict[str, Any] = run.exports["caches"]
    caches: dict[str, DeployedCache] = {}
    for (key, exports), plan in zip(exported.items(), settings.caches, strict=True):
        ca_file = workdir / ("cache-ca.pem" if not settings.listed else f"cache-ca-{plan.name}.pem")
        # selfSigned: the certificate is its own trust anchor.
        ca_file.write_text(plan.client_ca_pem or served_certificate_pem(run, plan))
        nodes = tuple(swarm.node(n) for n in plan.nodes)
        caches[key] = DeployedCache(key, plan, exports, ca_file, nodes, rehearsal.ctx.client)
    deployed = Deployed(rehearsal, run, settings, caches)
    for cache in caches.values():
        where = ", ".join(f"{host}:{port}" for host, port in cache.addresses)
        log(f"rehearse: waiting for {cache.cache_url} at {where}")
        for task_address in cache.addresses:
            cache.registry(task_address).wait_ready(SERVE_TIMEOUT)
        cache.seconds_to_serve = round(time.monotonic() - started, 2)
        named = f"{cache.key} " if settings.listed else ""
        log(
            f"rehearse: the cache {named}answers /v2/ over verified TLS "
            f"({cache.seconds_to_serve} s after apply began)"
        )
    return deployed


def served_certificate_pem(run: Run, plan: RehearsedCache) -> str:
    """The certificate (and chain) the cache serves: its cache-cert Swarm secret."""
    if plan.name is None:
        return str(run.exports["certificatePem"])
    data = run.named(f"msr-cache-{plan.name}-files-cache-cert").plain["data"]
    return base64.b64decode(data).decode()


def parent_hosts(settings: RehearsalConfig, swarm: LocalSwarm) -> list[str]:
    """`<address> <cacheHost>` of each parent cache of the stack whose cacheHost
    is a name: a child's config.yml names it as its upstream, and on the local
    swarm no DNS knows it. Its (first) node's address, as production's DNS
    would answer with the node's or the load balancer's."""
    by_name = {c.name: c for c in settings.caches if c.name}
    lines = []
    for parent in sorted({c.parent for c in settings.caches if c.parent}):
        p = by_name.get(parent)
        if p is None or is_ip(p.cache_host) or p.cache_host == "localhost":
            continue
        lines.append(f"{swarm.node(p.nodes[0]).address} {p.cache_host}")
    return lines


def _apply(rehearsal: Rehearsal, settings: RehearsalConfig, hosts: list[str]) -> Run:
    """Apply, with `hosts` in every service's containers' /etc/hosts (ContainerSpec
    Hosts, as `docker service create --host`). It is not one of the program's
    inputs: it stands in for the DNS of the site, which the program does not
    manage either, so the state holds the program's inputs only."""
    if not hosts:
        return rehearsal.apply(settings.config, settings.secret_keys)
    client = rehearsal.ctx.client
    rehearsal.ctx.client = _WithHosts(client, hosts)
    try:
        return rehearsal.apply(settings.config, settings.secret_keys)
    finally:
        rehearsal.ctx.client = client


class _WithHosts:
    """A Docker client whose service creates and updates add `hosts` to the
    containers' /etc/hosts; everything else is the client's own."""

    def __init__(self, client: Any, hosts: list[str]) -> None:
        self._client = client
        self.api = _ApiWithHosts(client.api, hosts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _ApiWithHosts:
    def __init__(self, api: Any, hosts: list[str]) -> None:
        self._api = api
        self._hosts = hosts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def _task_template(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        template = kwargs.get("task_template")
        if isinstance(template, dict):
            container = dict(template.get("ContainerSpec") or {})
            container["Hosts"] = [*container.get("Hosts", []), *self._hosts]
            kwargs["task_template"] = {**template, "ContainerSpec": container}
        return kwargs

    def create_service(self, *args: Any, **kwargs: Any) -> Any:
        return self._api.create_service(*args, **self._task_template(kwargs))

    def update_service(self, *args: Any, **kwargs: Any) -> Any:
        return self._api.update_service(*args, **self._task_template(kwargs))


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


def destroy_leaving_nothing(
    rehearsal: Rehearsal, swarm: LocalSwarm, log: Callable[[str], None] = print
) -> None:
    """`pulumi destroy`, then the volumes Swarm made for the services' mounts,
    which destroy leaves (with the cached layers): on every node, as a stack's
    caches may run on several."""
    volumes = pulumi_volumes(rehearsal)
    rehearsal.destroy()
    remove_volumes_everywhere(swarm, volumes, log=log)


def remove_volumes_everywhere(
    swarm: LocalSwarm, names: list[str], log: Callable[[str], None] = print
) -> None:
    """remove_node_volumes on every node of the swarm: the caches of a stack may
    run on several (each node a task ran on has its own copy of the volume)."""
    for node in swarm.nodes:
        remove_node_volumes(node, names, log=log)


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
