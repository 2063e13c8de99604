"""Swarm tasks of a deployed cache, as the end-to-end tests handle them."""

from __future__ import annotations

import time
from typing import Any

from rehearsal.deploy import Deployed
from rehearsal.localswarm import LocalSwarm


def container_of(swarm: LocalSwarm, client: Any, task: dict[str, Any]) -> Any:
    """The task's container, from the daemon of the node it runs on."""
    hostname = client.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"]
    return swarm.node(hostname).client().containers.get(task["Status"]["ContainerStatus"]["ContainerID"])


def wait_replacement(
    deployed: Deployed, old_task: str, timeout: float = 60, hint: str = ""
) -> dict[str, Any]:
    """The running task that replaced `old_task`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [t for t in deployed.running_tasks() if t["ID"] != old_task]
        if fresh:
            return fresh[0]
        time.sleep(0.2)
    raise AssertionError(f"no new task replaced {old_task} within {timeout} s{hint}")
