"""The local multi-node swarm that `scripts/swarm.sh up` starts, as the
rehearsal, the end-to-end tests and the benchmark see it.

    msrc-manager  the manager the program talks to (DOCKER_HOST)
    msrc-cache    a worker: the cache's node (labelled, publishes the port)
    msrc-msr      a worker: the MSR stand-in and the registry of the test images

`scripts/swarm.sh` writes the nodes to $MSRC_SWARM (nodes.json): hostname,
address on the swarm's bridge, and the node's own Docker socket.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANAGER, CACHE, MSR = "msrc-manager", "msrc-cache", "msrc-msr"
TEST_IMAGE_VERSION = "2.8.2"


class SwarmUnavailable(RuntimeError):
    """No local swarm is up (or its description cannot be read)."""


@dataclass(frozen=True)
class Node:
    hostname: str
    address: str
    """The node's address on the swarm's bridge: where host-mode ports are published."""
    docker_host: str
    """The node's own daemon, for what Swarm does not show through the manager
    (containers, volumes and images of that node)."""

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.docker_host)


@dataclass(frozen=True)
class LocalSwarm:
    nodes: tuple[Node, ...]
    host_address: str
    """This machine's address on the bridge (the nodes reach it there)."""
    registry: str
    """host:port of the registry every node pulls the test images from."""

    def node(self, hostname: str) -> Node:
        for n in self.nodes:
            if n.hostname == hostname:
                return n
        known = ", ".join(n.hostname for n in self.nodes)
        raise SwarmUnavailable(f"the local swarm has no node {hostname!r} (nodes: {known})")

    @property
    def manager(self) -> Node:
        return self.node(MANAGER)

    @property
    def cache(self) -> Node:
        return self.node(CACHE)

    @property
    def msr(self) -> Node:
        return self.node(MSR)

    def image(self, name: str) -> str:
        return f"{self.registry}/msrc-test/{name}:{TEST_IMAGE_VERSION}"

    @property
    def upstream_image(self) -> str:
        return self.image("upstream-registry")

    @property
    def stand_in_image(self) -> str:
        return self.image("dtr-content-cache-stand-in")

    @classmethod
    def parse(cls, doc: dict[str, Any], manager: Any = None) -> LocalSwarm:
        """From nodes.json. A node without an address gets the one Swarm
        recorded for it (`docker node inspect`: Status.Addr), through `manager`."""
        nodes = []
        for item in doc.get("nodes") or []:
            address = item.get("address") or _swarm_address(manager, item["hostname"])
            nodes.append(Node(item["hostname"], address, item["dockerHost"]))
        swarm = cls(tuple(nodes), doc["hostAddress"], doc["registry"])
        for role in (MANAGER, CACHE, MSR):
            swarm.node(role)
        return swarm

    @classmethod
    def from_env(cls) -> LocalSwarm:
        path = os.environ.get("MSRC_SWARM")
        if not path:
            raise SwarmUnavailable(
                "MSRC_SWARM is not set: start the local swarm with `make swarm-up` "
                "(or run through make, which starts it)"
            )
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SwarmUnavailable(f"cannot read the local swarm's {path}: {exc}") from None
        return cls.parse(doc)


def _swarm_address(manager: Any, hostname: str) -> str:
    if manager is None:
        raise SwarmUnavailable(f"nodes.json gives no address for {hostname} and no manager to ask")
    for node in manager.nodes.list(filters={"name": hostname}):
        if node.attrs["Description"]["Hostname"] == hostname:
            return str(node.attrs["Status"]["Addr"])
    raise SwarmUnavailable(f"nodes.json gives no address for {hostname}, and Swarm has no such node")
