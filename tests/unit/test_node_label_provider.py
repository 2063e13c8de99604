"""NodeLabelProvider against a fake Docker client: a cache node Swarm would not
run the cache on (drained, paused, down) is refused at once, naming the node,
the reason and the fix, instead of ending in a converge timeout; destroy and
refresh of such a node still work."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest

from components.node_label import NodeLabelProvider

LABEL = "dtr.cache"


class FakeNode:
    """The parts of docker.models.nodes.Node the provider uses."""

    def __init__(
        self,
        node_id: str,
        hostname: str,
        availability: str = "active",
        state: str = "ready",
        message: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.id = node_id
        status: dict[str, Any] = {"State": state}
        if message is not None:
            status["Message"] = message
        self.attrs: dict[str, Any] = {
            "ID": node_id,
            "Spec": {"Availability": availability, "Role": "worker", "Labels": dict(labels or {})},
            "Status": status,
            "Description": {"Hostname": hostname},
        }

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.attrs["Spec"].get("Labels") or {})

    def update(self, spec: dict[str, Any]) -> bool:
        self.attrs["Spec"] = dict(spec)
        return True

    def reload(self) -> None:
        pass


class FakeNodes:
    def __init__(self, nodes: list[FakeNode]) -> None:
        self._nodes = nodes

    def get(self, node: str) -> FakeNode:
        for n in self._nodes:
            if node in (n.id, n.attrs["Description"]["Hostname"]):
                return n
        raise docker.errors.NotFound(f"node {node} not found")

    def list(self) -> list[FakeNode]:
        return list(self._nodes)


class FakeClient:
    def __init__(self, *nodes: FakeNode) -> None:
        self.nodes = FakeNodes(list(nodes))

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"NodeID": self.nodes.list()[0].id}}


@pytest.fixture
def swarm(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeNode]:
    """A manager, an active cache node, and one node in each unusable condition."""
    nodes = {
        "manager": FakeNode("id-manager", "msrc-manager"),
        "active": FakeNode("id-active", "msrc-cache"),
        "drained": FakeNode("id-drained", "msrc-drained", availability="drain"),
        "paused": FakeNode("id-paused", "msrc-paused", availability="pause"),
        "down": FakeNode("id-down", "msrc-down", state="down", message="heartbeat failure"),
        "disconnected": FakeNode("id-disc", "msrc-disc", state="disconnected"),
        "labelled-drained": FakeNode(
            "id-ld", "msrc-ld", availability="drain", labels={LABEL: "true", "zone": "a"}
        ),
    }
    client = FakeClient(*nodes.values())
    monkeypatch.setattr(NodeLabelProvider, "client", staticmethod(lambda _props: client))
    return nodes


def props(node: str) -> dict[str, Any]:
    return {
        "node": node,
        "label": LABEL,
        "value": "true",
        "docker_host": "tcp://manager.example.com:2376",
        "docker_cert_path": "/bundle",
        "docker_tls_verify": True,
    }


def outs(node: FakeNode, written_as: str) -> dict[str, Any]:
    """The state a successful create on this node would have recorded."""
    return {**props(written_as), "node_id": node.id, "hostname": node.attrs["Description"]["Hostname"]}


# --- create ---------------------------------------------------------------------


def test_create_on_a_drained_node_names_it_and_how_to_make_it_active(swarm: dict[str, FakeNode]) -> None:
    with pytest.raises(Exception) as err:
        NodeLabelProvider().create(props("msrc-drained"))
    assert str(err.value) == (
        "Swarm node 'msrc-drained' is drained (availability: drain): Swarm starts no task there, "
        "so the cache could not run; make it active (docker node update --availability active "
        "msrc-drained) or set msr-cache:cacheNode to another node"
    )


def test_create_on_a_drained_node_does_not_label_it(swarm: dict[str, FakeNode]) -> None:
    with pytest.raises(Exception, match="is drained"):
        NodeLabelProvider().create(props("msrc-drained"))
    assert LABEL not in swarm["drained"].labels


def test_create_on_a_paused_node_says_it_is_paused(swarm: dict[str, FakeNode]) -> None:
    with pytest.raises(Exception) as err:
        NodeLabelProvider().create(props("msrc-paused"))
    assert str(err.value).startswith(
        "Swarm node 'msrc-paused' is paused (availability: pause): Swarm starts no task there"
    )
    assert "docker node update --availability active msrc-paused" in str(err.value)


def test_create_on_a_down_node_names_its_state_and_message(swarm: dict[str, FakeNode]) -> None:
    with pytest.raises(Exception) as err:
        NodeLabelProvider().create(props("msrc-down"))
    assert str(err.value) == (
        "Swarm node 'msrc-down' is down (state: down, message: heartbeat failure): its engine does "
        "not answer the manager; bring it back or set msr-cache:cacheNode to another node "
        "(docker node ls)"
    )


def test_create_on_a_disconnected_node_says_it_is_disconnected(swarm: dict[str, FakeNode]) -> None:
    with pytest.raises(Exception, match=r"^Swarm node 'msrc-disc' is disconnected \(state: disconnected\):"):
        NodeLabelProvider().create(props("msrc-disc"))


def test_error_names_the_hostname_when_the_node_is_given_by_id(swarm: dict[str, FakeNode]) -> None:
    with pytest.raises(Exception) as err:
        NodeLabelProvider().create(props("id-drained"))
    assert str(err.value).startswith("Swarm node 'id-drained' (hostname 'msrc-drained') is drained")
    assert "docker node update --availability active id-drained" in str(err.value)


def test_error_does_not_echo_the_connection_settings(swarm: dict[str, FakeNode]) -> None:
    with pytest.raises(Exception) as err:
        NodeLabelProvider().create(props("msrc-drained"))
    assert "manager.example.com" not in str(err.value) and "/bundle" not in str(err.value)


def test_create_on_an_active_ready_node_adds_the_label(swarm: dict[str, FakeNode]) -> None:
    result = NodeLabelProvider().create(props("msrc-cache"))
    assert swarm["active"].labels[LABEL] == "true"
    assert result.id == f"id-active/{LABEL}"


# --- update ---------------------------------------------------------------------


def test_update_on_a_drained_node_names_it_and_the_reason(swarm: dict[str, FakeNode]) -> None:
    node = swarm["labelled-drained"]
    drifted = {**outs(node, "msrc-ld"), "value": ""}
    with pytest.raises(Exception, match=r"^Swarm node 'msrc-ld' is drained \(availability: drain\):"):
        NodeLabelProvider().update(f"{node.id}/{LABEL}", drifted, props("msrc-ld"))


def test_update_on_a_down_node_names_it_and_the_reason(swarm: dict[str, FakeNode]) -> None:
    node = swarm["down"]
    with pytest.raises(Exception, match=r"^Swarm node 'msrc-down' is down \(state: down, message: "):
        NodeLabelProvider().update(f"{node.id}/{LABEL}", outs(node, "msrc-down"), props("msrc-down"))


def test_update_on_an_active_ready_node_puts_the_label_back(swarm: dict[str, FakeNode]) -> None:
    node = swarm["active"]
    drifted = {**outs(node, "msrc-cache"), "value": ""}
    NodeLabelProvider().update(f"{node.id}/{LABEL}", drifted, props("msrc-cache"))
    assert node.labels[LABEL] == "true"


# --- diff -----------------------------------------------------------------------


def test_diff_onto_a_drained_node_fails_naming_it(swarm: dict[str, FakeNode]) -> None:
    old = outs(swarm["active"], "msrc-cache")
    with pytest.raises(Exception, match=r"^Swarm node 'msrc-drained' is drained"):
        NodeLabelProvider().diff(f"id-active/{LABEL}", old, props("msrc-drained"))


def test_diff_on_an_unchanged_node_that_went_down_fails_naming_it(swarm: dict[str, FakeNode]) -> None:
    old = outs(swarm["down"], "msrc-down")
    with pytest.raises(Exception, match=r"^Swarm node 'msrc-down' is down"):
        NodeLabelProvider().diff(f"id-down/{LABEL}", old, props("msrc-down"))


def test_diff_moving_off_a_drained_node_to_an_active_one_replaces_it(swarm: dict[str, FakeNode]) -> None:
    old = outs(swarm["labelled-drained"], "msrc-ld")
    result = NodeLabelProvider().diff(f"id-ld/{LABEL}", old, props("msrc-cache"))
    assert (result.changes, result.replaces, result.delete_before_replace) == (True, ["node"], True)


def test_diff_on_an_unchanged_active_ready_node_reports_no_change(swarm: dict[str, FakeNode]) -> None:
    old = outs(swarm["active"], "msrc-cache")
    result = NodeLabelProvider().diff(f"id-active/{LABEL}", old, props("msrc-cache"))
    assert (result.changes, result.replaces) == (False, [])


# --- delete and read: destroy and refresh of a drained node still work ----------


def test_delete_on_a_drained_node_removes_only_the_label(swarm: dict[str, FakeNode]) -> None:
    node = swarm["labelled-drained"]
    NodeLabelProvider().delete(f"{node.id}/{LABEL}", outs(node, "msrc-ld"))
    assert node.labels == {"zone": "a"}


def test_read_on_a_drained_node_reports_the_label(swarm: dict[str, FakeNode]) -> None:
    node = swarm["labelled-drained"]
    result = NodeLabelProvider().read(f"{node.id}/{LABEL}", outs(node, "msrc-ld"))
    assert result.outs is not None
    assert (result.id, result.outs["value"]) == (f"{node.id}/{LABEL}", "true")
