"""NodeLabelProvider against a fake Docker client: a cache node Swarm would not
run the cache on (drained, paused, down) is refused at once, naming the node,
the reason and the fix, instead of ending in a converge timeout; destroy and
refresh of such a node still work. The connection comes from the stack config
and environment when the provider runs, never from the state; a label that was
there before, or that another service needs, survives destroy."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest
from pulumi.dynamic import Config, ConfigureRequest

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


class FakeService:
    def __init__(self, name: str, *constraints: str) -> None:
        self.id = f"id-{name}"
        self.attrs = {
            "Spec": {"Name": name, "TaskTemplate": {"Placement": {"Constraints": list(constraints)}}}
        }


class FakeServices:
    def __init__(self) -> None:
        self.running: list[FakeService] = []

    def list(self) -> list[FakeService]:
        return list(self.running)


class FakeClient:
    def __init__(self, *nodes: FakeNode) -> None:
        self.nodes = FakeNodes(list(nodes))
        self.services = FakeServices()

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"NodeID": self.nodes.list()[0].id}}


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def swarm(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> dict[str, FakeNode]:
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
    client.nodes = FakeNodes(list(nodes.values()))
    monkeypatch.setattr(NodeLabelProvider, "client", lambda _self: client)
    return nodes


BUNDLE_CONFIG = {
    "docker:host": "tcp://manager.example.com:2376",
    "docker:certPath": "/bundle",
    "msr-cache:cacheNode": "msrc-cache",
}


def configured(config: dict[str, Any]) -> NodeLabelProvider:
    """The provider as the engine hands it the stack config (all keys, namespaced)."""
    provider = NodeLabelProvider()
    provider.configure(ConfigureRequest(Config(raw_config=config, project_name="msr-cache")))
    return provider


def props(node: str) -> dict[str, Any]:
    return {
        "node": node,
        "label": LABEL,
        "value": "true",
        "service": "msr-cache-dev",
    }


def outs(node: FakeNode, written_as: str) -> dict[str, Any]:
    """The state a successful create on this node would have recorded."""
    return {
        **props(written_as),
        "node_id": node.id,
        "hostname": node.attrs["Description"]["Hostname"],
        "preexisting": False,
        "previous_value": "",
    }


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
        configured(BUNDLE_CONFIG).create(props("msrc-drained"))
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


# --- the connection: resolved when the provider runs, never kept in the state ----

NO_ENV: dict[str, str] = {}


def test_connection_comes_from_docker_config_first() -> None:
    env = {"DOCKER_HOST": "tcp://env.example.com:2376", "DOCKER_CERT_PATH": "/env-bundle"}
    provider = configured(BUNDLE_CONFIG)
    assert provider.connection(provider.docker_config, env) == (
        "tcp://manager.example.com:2376",
        "/bundle",
        True,
    )


def test_connection_falls_back_to_the_environment_like_docker_from_env() -> None:
    env = {
        "DOCKER_HOST": "tcp://env.example.com:2376",
        "DOCKER_CERT_PATH": "/env-bundle",
        "DOCKER_TLS_VERIFY": "1",
    }
    provider = configured({"msr-cache:cacheNode": "msrc-cache"})
    assert provider.connection(provider.docker_config, env) == (
        "tcp://env.example.com:2376",
        "/env-bundle",
        True,
    )


def test_connection_verifies_the_manager_unless_docker_tls_verify_says_not_to() -> None:
    env = {"DOCKER_HOST": "tcp://env.example.com:2376", "DOCKER_CERT_PATH": "/b", "DOCKER_TLS_VERIFY": "0"}
    assert NodeLabelProvider.connection({}, env)[2] is False
    assert NodeLabelProvider.connection({}, {"DOCKER_CERT_PATH": "/b"})[2] is True


def test_unconfigured_provider_uses_the_environment_alone() -> None:
    assert NodeLabelProvider().connection(NodeLabelProvider().docker_config, NO_ENV) == (None, None, True)


def test_no_input_or_state_key_holds_the_connection(swarm: dict[str, FakeNode]) -> None:
    provider = configured(BUNDLE_CONFIG)
    result = provider.create(props("msrc-cache"))
    values = [str(v) for v in {**props("msrc-cache"), **(result.outs or {})}.values()]
    assert not [v for v in values if "/" in v or "example.com" in v]
    assert not set(result.outs or {}) & {"docker_host", "docker_cert_path", "docker_tls_verify"}


LEGACY = {
    "docker_host": "unix:///tmp/ci-1234/docker.sock",
    "docker_cert_path": "/tmp/ci-1234",
    "docker_tls_verify": True,
}


def test_a_state_with_the_old_connection_inputs_is_updated_in_place_not_replaced(
    swarm: dict[str, FakeNode],
) -> None:
    old = {**outs(swarm["active"], "msrc-cache"), **LEGACY}
    result = NodeLabelProvider().diff(f"id-active/{LABEL}", old, props("msrc-cache"))
    assert (result.changes, result.replaces, result.delete_before_replace) == (True, [], False)


def test_updating_an_old_state_drops_its_recorded_connection(swarm: dict[str, FakeNode]) -> None:
    old = {**outs(swarm["active"], "msrc-cache"), **LEGACY}
    del old["preexisting"], old["previous_value"]
    result = NodeLabelProvider().update(f"id-active/{LABEL}", old, props("msrc-cache"))
    assert result.outs is not None
    assert not set(result.outs) & set(LEGACY)
    assert "/tmp/ci-1234" not in repr(result.outs)
    assert (result.outs["value"], result.outs["preexisting"]) == ("true", False)


def test_refresh_of_an_old_state_drops_its_recorded_connection(swarm: dict[str, FakeNode]) -> None:
    old = {**outs(swarm["active"], "msrc-cache"), **LEGACY}
    result = NodeLabelProvider().read(f"id-active/{LABEL}", old)
    assert result.outs is not None and not set(result.outs) & set(LEGACY)


# --- a label the stack did not make, or that another service needs ------------


def test_create_records_that_the_label_was_not_there(swarm: dict[str, FakeNode]) -> None:
    result = NodeLabelProvider().create(props("msrc-cache"))
    assert result.outs is not None
    assert (result.outs["preexisting"], result.outs["previous_value"]) == (False, "")


def test_create_on_a_node_already_labelled_records_it_and_says_so(
    swarm: dict[str, FakeNode], capsys: pytest.CaptureFixture[str]
) -> None:
    swarm["active"].update({**swarm["active"].attrs["Spec"], "Labels": {LABEL: "true"}})
    result = NodeLabelProvider().create(props("msrc-cache"))
    assert result.outs is not None
    assert (result.outs["preexisting"], result.outs["previous_value"]) == (True, "true")
    assert "msrc-cache already carries dtr.cache=true" in capsys.readouterr().err


def test_delete_leaves_a_label_that_was_there_before_and_says_so(
    swarm: dict[str, FakeNode], capsys: pytest.CaptureFixture[str]
) -> None:
    node = swarm["active"]
    node.update({**node.attrs["Spec"], "Labels": {LABEL: "true"}})
    created = NodeLabelProvider().create(props("msrc-cache"))
    capsys.readouterr()
    NodeLabelProvider().delete(created.id, created.outs or {})
    assert node.labels == {LABEL: "true"}
    assert capsys.readouterr().err == (
        "msr-cache: left dtr.cache=true on Swarm node msrc-cache: it was there before this stack; "
        "remove it by hand if nothing needs it (docker node update --label-rm dtr.cache msrc-cache)\n"
    )


def test_delete_puts_back_the_value_a_label_had_before(swarm: dict[str, FakeNode]) -> None:
    node = swarm["active"]
    node.update({**node.attrs["Spec"], "Labels": {LABEL: "false"}})
    created = NodeLabelProvider().create(props("msrc-cache"))
    assert node.labels == {LABEL: "true"}
    NodeLabelProvider().delete(created.id, created.outs or {})
    assert node.labels == {LABEL: "false"}


def test_delete_leaves_a_label_another_service_is_constrained_on_and_names_it(
    swarm: dict[str, FakeNode], client: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    created = NodeLabelProvider().create(props("msrc-cache"))
    client.services.running.append(FakeService("msr-cache-prod", "node.labels.dtr.cache == true"))
    NodeLabelProvider().delete(created.id, created.outs or {})
    assert swarm["active"].labels == {LABEL: "true"}
    assert capsys.readouterr().err == (
        "msr-cache: left dtr.cache=true on Swarm node msrc-cache: service(s) msr-cache-prod are constrained "
        "on it; remove it by hand once they are gone (docker node update --label-rm dtr.cache msrc-cache)\n"
    )


def test_delete_is_not_held_back_by_the_stacks_own_service(
    swarm: dict[str, FakeNode], client: FakeClient
) -> None:
    # A new cacheNode replaces the label (deleted first) while the service still runs.
    created = NodeLabelProvider().create(props("msrc-cache"))
    client.services.running.append(FakeService("msr-cache-dev", "node.labels.dtr.cache==true"))
    NodeLabelProvider().delete(created.id, created.outs or {})
    assert LABEL not in swarm["active"].labels


@pytest.mark.parametrize(
    "constraints",
    [
        ("node.labels.msr.cache == true",),
        ("node.labels.dtr.cache.other == true",),
        ("node.labels.dtr.cache == true", "node.hostname == msrc-manager"),
    ],
    ids=["another-label", "a-longer-label", "pinned-to-another-node"],
)
def test_delete_removes_a_label_no_other_service_could_need_here(
    swarm: dict[str, FakeNode], client: FakeClient, constraints: tuple[str, ...]
) -> None:
    created = NodeLabelProvider().create(props("msrc-cache"))
    client.services.running.append(FakeService("other", *constraints))
    NodeLabelProvider().delete(created.id, created.outs or {})
    assert LABEL not in swarm["active"].labels


def test_delete_keeps_a_label_a_service_pinned_to_this_node_needs(
    swarm: dict[str, FakeNode], client: FakeClient
) -> None:
    created = NodeLabelProvider().create(props("msrc-cache"))
    client.services.running.append(
        FakeService("other", "NODE.LABELS.dtr.cache == true", "node.hostname==MSRC-CACHE")
    )
    NodeLabelProvider().delete(created.id, created.outs or {})
    assert swarm["active"].labels == {LABEL: "true"}


def test_delete_of_a_state_written_before_preexisting_was_recorded_removes_the_label(
    swarm: dict[str, FakeNode],
) -> None:
    node = swarm["active"]
    NodeLabelProvider().create(props("msrc-cache"))
    old = {**outs(node, "msrc-cache"), **LEGACY}
    del old["preexisting"], old["previous_value"], old["service"]
    NodeLabelProvider().delete(f"{node.id}/{LABEL}", old)
    assert LABEL not in node.labels
