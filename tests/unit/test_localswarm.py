"""Reading the local swarm's nodes.json (scripts/swarm.sh writes it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.localswarm import LocalSwarm, SwarmUnavailable


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "bridge": "msrc-br0",
        "hostAddress": "10.77.0.1",
        "registry": "10.77.0.13:5999",
        "nodes": [
            {"hostname": h, "address": a, "dockerHost": f"unix:///tmp/msrc-swarm/{h}/docker.sock"}
            for h, a in [
                ("msrc-cache", "10.77.0.12"),
                ("msrc-manager", "10.77.0.11"),
                ("msrc-msr", "10.77.0.13"),
            ]
        ],
    }
    return base | changes


class FakeNode:
    def __init__(self, hostname: str, addr: str) -> None:
        self.attrs = {"Description": {"Hostname": hostname}, "Status": {"Addr": addr}}


class FakeManager:
    """A manager whose `docker node ls --filter name=` matches by prefix, as Swarm's does."""

    def __init__(self, *nodes: FakeNode) -> None:
        self._nodes = nodes
        self.nodes = self

    def list(self, filters: dict[str, str]) -> list[FakeNode]:
        return [n for n in self._nodes if n.attrs["Description"]["Hostname"].startswith(filters["name"])]


def test_roles_are_found_by_hostname_whatever_the_order() -> None:
    swarm = LocalSwarm.parse(doc())
    assert (swarm.manager.address, swarm.cache.address, swarm.msr.address) == (
        "10.77.0.11",
        "10.77.0.12",
        "10.77.0.13",
    )
    assert swarm.cache.docker_host == "unix:///tmp/msrc-swarm/msrc-cache/docker.sock"


def test_test_images_are_named_after_the_swarms_registry() -> None:
    swarm = LocalSwarm.parse(doc(registry="10.77.0.13:6000"))
    assert swarm.stand_in_image == "10.77.0.13:6000/msrc-test/dtr-content-cache-stand-in:2.8.2"
    assert swarm.upstream_image == "10.77.0.13:6000/msrc-test/upstream-registry:2.8.2"


def test_a_missing_address_falls_back_to_the_one_swarm_recorded() -> None:
    d = doc()
    del d["nodes"][0]["address"]
    manager = FakeManager(FakeNode("msrc-cache-old", "10.77.0.99"), FakeNode("msrc-cache", "10.77.0.42"))
    assert LocalSwarm.parse(d, manager=manager).cache.address == "10.77.0.42"


def test_a_missing_address_without_a_manager_is_a_clear_error() -> None:
    d = doc()
    d["nodes"][0]["address"] = ""
    with pytest.raises(SwarmUnavailable, match="no address for msrc-cache"):
        LocalSwarm.parse(d)


def test_a_swarm_without_a_cache_node_names_the_nodes_it_has() -> None:
    d = doc()
    d["nodes"] = [n for n in d["nodes"] if n["hostname"] != "msrc-cache"]
    with pytest.raises(SwarmUnavailable, match=r"no node 'msrc-cache' \(nodes: msrc-manager, msrc-msr\)"):
        LocalSwarm.parse(d)


def test_from_env_says_how_to_start_the_swarm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSRC_SWARM", raising=False)
    with pytest.raises(SwarmUnavailable, match="make swarm-up"):
        LocalSwarm.from_env()


def test_from_env_reads_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps(doc()))
    monkeypatch.setenv("MSRC_SWARM", str(path))
    assert LocalSwarm.from_env().registry == "10.77.0.13:5999"


def test_from_env_with_a_broken_file_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text("{")
    monkeypatch.setenv("MSRC_SWARM", str(path))
    with pytest.raises(SwarmUnavailable, match=r"cannot read the local swarm.s .*nodes.json"):
        LocalSwarm.from_env()
