"""End-to-end fixtures: the local multi-node swarm that `make test` uses
(scripts/swarm.sh): the manager in DOCKER_HOST, the cache node, the msr node."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rehearsal.localswarm import LocalSwarm, SwarmUnavailable

ROOT = Path(__file__).resolve().parents[2]
UNAVAILABLE = ROOT / "build/swarm/unavailable"
# The end-to-end tests' S3 stand-in (make rehearse uses 5980).
STORE_PORT = 5985


@pytest.fixture(scope="session")
def swarm() -> LocalSwarm:
    """The local swarm's nodes, or a skip that says why there is none."""
    if UNAVAILABLE.exists():
        pytest.skip(f"Docker cannot run here: {UNAVAILABLE.read_text().strip()}")
    if not os.environ.get("MSRC_SWARM"):
        pytest.skip("MSRC_SWARM is not set; run these tests with `make test` (or make e2e)")
    try:
        return LocalSwarm.from_env()
    except SwarmUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def docker_client(swarm: LocalSwarm) -> Iterator[Any]:
    """A client for the Swarm manager, where the program's resources are created."""
    import docker

    client = docker.from_env()
    try:
        info = client.info()
    except docker.errors.DockerException as exc:
        pytest.fail(f"DOCKER_HOST={os.environ.get('DOCKER_HOST')} does not answer: {exc}")
    if info["Swarm"]["LocalNodeState"] != "active" or not info["Swarm"]["ControlAvailable"]:
        pytest.fail("the Docker daemon is not a Swarm manager; scripts/swarm.sh up makes it one")
    if info["Name"] != swarm.manager.hostname:
        pytest.fail(f"DOCKER_HOST is {info['Name']}, not the local swarm's manager {swarm.manager.hostname}")
    # The tests deploy the dev stack's label and port on the cache node: a cache
    # already there (a kept rehearsal) would collide with them and lose its label.
    others = sorted(
        s.attrs["Spec"]["Labels"]["com.mirantis.msr-cache.stack"]
        for s in client.services.list(filters={"label": "com.mirantis.msr-cache.stack"})
    )
    if others:
        pytest.exit(
            f"the local swarm already runs a cache of stack(s) {', '.join(others)} (a kept rehearsal?): "
            "remove it first with `make rehearse-down`",
            returncode=1,
        )
    yield client
    client.close()


@pytest.fixture(scope="session")
def cache_client(swarm: LocalSwarm) -> Iterator[Any]:
    """The cache node's own daemon: its containers and volumes."""
    client = swarm.cache.client()
    yield client
    client.close()


@pytest.fixture
def node(docker_client: Any, swarm: LocalSwarm) -> Any:
    """The cache node, as the manager sees it."""
    return docker_client.nodes.get(swarm.cache.hostname)


@pytest.fixture
def manager_node(docker_client: Any) -> Any:
    return docker_client.nodes.get(docker_client.info()["Swarm"]["NodeID"])


@pytest.fixture(scope="session")
def test_images(swarm: LocalSwarm) -> None:
    """The upstream and content-cache stand-in images, served to every node (a no-op when up to date)."""
    import subprocess

    proc = subprocess.run(
        [str(ROOT / "rehearsal/images/build.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"rehearsal/images/build.sh failed:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def upstream(swarm: LocalSwarm, test_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The "MSR" stand-in on the msr node: a TLS registry with a private CA, for the whole session."""
    from rehearsal import upstream as up

    started = up.start(swarm, tmp_path_factory.mktemp("upstream"), port=5910)
    yield started
    up.stop(swarm, port=5910)


@pytest.fixture
def store(swarm: LocalSwarm, tmp_path: Path) -> Iterator[Any]:
    """The S3 stand-in (rehearsal/object_store.py) on the msr node, for one test;
    its secret key is one the leak scan looks for."""
    from rehearsal import object_store
    from tests.support.leakscan import remember

    started = object_store.start(swarm, tmp_path / "store", STORE_PORT)
    remember(started.secret_key, "the object store's secret key")
    yield started
    object_store.stop(STORE_PORT)


@pytest.fixture
def applied_log() -> list[str]:
    """What the rehearsal did (created/updated/deleted ...), in order."""
    return []


@pytest.fixture
def rehearsals(
    docker_client: Any, swarm: LocalSwarm, test_images: None, applied_log: list[str]
) -> Iterator[Any]:
    """Make Rehearsal objects; every one is destroyed after the test, pass or fail,
    with the volumes Swarm made for it on any node."""
    from rehearsal.applier import Rehearsal
    from rehearsal.deploy import destroy_leaving_nothing

    made: list[Rehearsal] = []

    def make(stack: str) -> Rehearsal:
        made.append(Rehearsal(docker_client, stack, log=applied_log.append))
        return made[-1]

    yield make
    for r in reversed(made):
        destroy_leaving_nothing(r, swarm, log=lambda _m: None)


@pytest.fixture
def deploy(
    rehearsals: Callable[[str], Any], upstream: Any, tmp_path: Path, swarm: LocalSwarm
) -> Callable[..., Any]:
    """Apply the dev stack (with `overrides`) to the cache node and wait until it
    serves; a `rehearsal` given carries the state of an earlier apply."""
    from rehearsal.deploy import apply_and_serve
    from tools.stack_file import read_stack

    dev = read_stack(ROOT / "stacks/Pulumi.dev.yaml")

    def go(stack: str, overrides: dict[str, Any] | None = None, rehearsal: Any = None) -> Any:
        return apply_and_serve(
            rehearsal or rehearsals(stack),
            dev,
            upstream,
            tmp_path / stack,
            overrides,
            log=lambda _m: None,
            swarm=swarm,
        )

    return go


@pytest.fixture
def applied_kinds(applied_log: list[str]) -> Callable[[str], list[str]]:
    """What the rehearsal `verb`-ed ("created", "updated", "deleted"), as
    "<Type> <name>", sorted: its log lines without the real names."""

    def kinds(verb: str) -> list[str]:
        return sorted(
            line.split(" (")[0].removeprefix(verb + " ") for line in applied_log if line.startswith(verb)
        )

    return kinds
