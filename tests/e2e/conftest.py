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


@pytest.fixture(scope="session")
def test_images(docker_client: Any) -> None:
    """The upstream and content-cache stand-in images (a no-op when up to date)."""
    import subprocess

    proc = subprocess.run(
        [str(ROOT / "tests/images/build.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"tests/images/build.sh failed:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def upstream(
    docker_client: Any, test_images: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The "MSR" stand-in: a TLS registry with a private CA, for the whole session."""
    from tests.rehearsal import upstream as up

    started = up.start(docker_client, tmp_path_factory.mktemp("upstream"), port=5910)
    yield started
    up.stop(docker_client, port=5910)


@pytest.fixture
def applied_log() -> list[str]:
    """What the rehearsal did (created/updated/deleted ...), in order."""
    return []


@pytest.fixture
def rehearsals(docker_client: Any, test_images: None, applied_log: list[str]) -> Iterator[Any]:
    """Make Rehearsal objects; every one is destroyed after the test, pass or fail."""
    from tests.rehearsal.applier import Rehearsal

    made: list[Rehearsal] = []

    def make(stack: str) -> Rehearsal:
        made.append(Rehearsal(docker_client, stack, log=applied_log.append))
        return made[-1]

    yield make
    for r in reversed(made):
        r.destroy()
