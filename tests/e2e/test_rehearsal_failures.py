"""A rehearsal whose cache cannot start: it says Swarm's reason within seconds,
not after the converge timeout, and destroy removes everything it made."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rehearsal import upstream as up
from rehearsal.engine import ROOT
from rehearsal.localswarm import LocalSwarm
from rehearsal.stack import for_local_swarm
from tools.stack_file import read_stack

pytestmark = pytest.mark.docker

DEV = read_stack(ROOT / "stacks/Pulumi.dev.yaml")
PORT = 5477
LABEL = "com.mirantis.msr-cache.stack"


@pytest.fixture
def port_taken(swarm: LocalSwarm, test_images: None) -> Iterator[None]:
    """Another process on the cache node already listens on the cache's port."""
    client = swarm.cache.client()
    squatter = client.containers.run(
        swarm.stand_in_image,
        detach=True,
        name="msrc-port-squatter",
        entrypoint=["/bin/busybox", "httpd", "-f", "-p", "5000"],
        ports={"5000/tcp": (swarm.cache.address, PORT)},
        restart_policy={"Name": "no"},
    )
    try:
        deadline = time.monotonic() + 30
        while squatter.reload() or squatter.status != "running":
            assert time.monotonic() < deadline, f"the squatter did not start: {squatter.logs()!r}"
            time.sleep(0.3)
        yield
    finally:
        squatter.remove(force=True)


def test_a_taken_port_fails_fast_with_swarms_reason_and_destroy_removes_all(
    port_taken: None,
    rehearsals: Callable[[str], Any],
    upstream: up.Upstream,
    docker_client: Any,
    swarm: LocalSwarm,
) -> None:
    rehearsal = rehearsals("e2e-port-taken")
    settings = for_local_swarm(
        DEV, upstream, swarm.cache.hostname, {"cachePort": PORT}, image=swarm.stand_in_image
    )
    started = time.monotonic()
    with pytest.raises(
        Exception, match=r"task failed \d+ times; Swarm says: .*(address already in use|port)"
    ) as err:
        rehearsal.apply(settings.config, settings.secret_keys)
    assert time.monotonic() - started < 90, "it waited for the converge timeout (5 min)"
    print(f"refused after {time.monotonic() - started:.1f} s: {str(err.value).splitlines()[0]}")
    mine = {"label": f"{LABEL}=e2e-port-taken"}
    # The service was made, so it is in the state, and destroy removes it first.
    assert any(r.typ == "docker:index/service:Service" for r in rehearsal.state.resources)
    rehearsal.destroy()
    assert docker_client.services.list(filters=mine) == []
    assert docker_client.secrets.list(filters=mine) == []
