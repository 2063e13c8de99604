"""End-to-end fixtures: the local swarm that `make test` (scripts/swarm.sh) starts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNAVAILABLE = ROOT / "build/swarm/unavailable"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client for a Swarm manager, or a skip that says why there is none."""
    import docker

    if UNAVAILABLE.exists():
        pytest.skip(f"Docker cannot run here: {UNAVAILABLE.read_text().strip()}")
    if not os.environ.get("DOCKER_HOST"):
        pytest.skip("DOCKER_HOST is not set; run these tests with `make test` (or make e2e)")
    client = docker.from_env()
    try:
        info = client.info()
    except docker.errors.DockerException as exc:
        pytest.fail(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer: {exc}")
    if info["Swarm"]["LocalNodeState"] != "active" or not info["Swarm"]["ControlAvailable"]:
        pytest.fail("the Docker daemon is not a Swarm manager; scripts/swarm.sh up makes it one")
    yield client
    client.close()


@pytest.fixture
def node(docker_client: Any) -> Any:
    return docker_client.nodes.get(docker_client.info()["Swarm"]["NodeID"])
