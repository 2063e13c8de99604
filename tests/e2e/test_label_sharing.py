"""The cache node's label when it is not this stack's alone, on the real swarm.

Staging and prod (or a test cache) on one node all use `dtr.cache` on it, and
a manual deployment may have set it before any stack: destroying one stack must
not take the label from under another's placement constraint, nor remove a
label the stack did not set. Each stack is applied with the rehearsal applier,
which runs the label provider as the engine does and logs what it tells the
operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rehearsal.deploy import Deployed
from rehearsal.localswarm import LocalSwarm
from tests.support.tasks import container_of, wait_replacement

pytestmark = pytest.mark.docker

LABEL = "dtr.cache"


@pytest.fixture
def unlabelled(docker_client: Any, swarm: LocalSwarm) -> Iterator[Callable[[], dict[str, str]]]:
    """The cache node without dtr.cache before the test and after it (after every
    stack's teardown: a stack that found the label in place leaves it). Yields
    a function that reads the node's labels now."""

    def labels() -> dict[str, str]:
        node = docker_client.nodes.get(swarm.cache.hostname)
        return dict(node.attrs["Spec"].get("Labels") or {})

    def remove() -> None:
        node = docker_client.nodes.get(swarm.cache.hostname)
        spec = dict(node.attrs["Spec"])
        if LABEL in (spec.get("Labels") or {}):
            spec["Labels"] = {k: v for k, v in spec["Labels"].items() if k != LABEL}
            node.update(spec)

    remove()
    yield labels
    remove()


@pytest.fixture
def deploy(unlabelled: Any, deploy: Callable[..., Deployed]) -> Callable[..., Deployed]:
    """conftest's deploy, after `unlabelled`: the label is removed after the rehearsals are destroyed."""
    return deploy


def kill_and_wait_for_a_new_task(
    deployed: Deployed, swarm: LocalSwarm, docker_client: Any, timeout: float = 60
) -> dict[str, Any]:
    (task,) = deployed.running_tasks()
    container_of(swarm, docker_client, task).kill()
    return wait_replacement(deployed, task["ID"], timeout, hint=": the node lost its label?")


def said(log: list[str], text: str) -> list[str]:
    return [line for line in log if text in line]


def test_destroying_one_of_two_stacks_on_a_node_leaves_the_others_label_and_task(
    deploy: Callable[..., Deployed],
    unlabelled: Callable[[], dict[str, str]],
    node: Any,
    swarm: LocalSwarm,
    docker_client: Any,
    applied_log: list[str],
) -> None:
    first = deploy("e2e-share-a")
    second = deploy("e2e-share-b", {"cachePort": 5444, "serviceName": "msr-cache-e2e-share-b"})
    assert unlabelled()[LABEL] == "true"
    assert said(applied_log, f"Swarm node {swarm.cache.hostname} already carries {LABEL}=true")

    applied_log.clear()
    first.rehearsal.destroy()
    assert unlabelled()[LABEL] == "true"
    assert said(
        applied_log,
        f"left {LABEL}=true on Swarm node {swarm.cache.hostname}: service(s) msr-cache-e2e-share-b",
    )

    # The survivor's task can still be placed: killed, it comes back on the node.
    fresh = kill_and_wait_for_a_new_task(second, swarm, docker_client)
    assert fresh["NodeID"] == node.id
    second.registry().wait_ready(60)


def test_a_label_set_by_hand_before_the_stack_survives_its_destroy(
    deploy: Callable[..., Deployed],
    unlabelled: Callable[[], dict[str, str]],
    docker_client: Any,
    swarm: LocalSwarm,
    applied_log: list[str],
) -> None:
    node = docker_client.nodes.get(swarm.cache.hostname)
    node.update({**node.attrs["Spec"], "Labels": {**(node.attrs["Spec"].get("Labels") or {}), LABEL: "true"}})

    deployed = deploy("e2e-prelabel")
    applied_log.clear()
    deployed.rehearsal.destroy()

    assert unlabelled()[LABEL] == "true"
    assert said(
        applied_log, f"left {LABEL}=true on Swarm node {swarm.cache.hostname}: it was there before this stack"
    )
