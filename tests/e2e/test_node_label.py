"""The node-label provider against a real swarm, run the way Pulumi runs it:
serialized, then unpickled in a separate process that cannot import this project,
configured with the stack config, and reaching Docker through that process's
own environment."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from pulumi.dynamic.dynamic import serialize_provider

from components.node_label import NodeLabelProvider

pytestmark = pytest.mark.docker


@pytest.fixture
def label() -> str:
    return f"msrcache.test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def props(node: Any, label: str) -> dict[str, Any]:
    return {
        "node": node.attrs["Description"]["Hostname"],
        "label": label,
        "value": "true",
        "service": "msr-cache-e2e-label",
    }


def labels_of(node: Any) -> dict[str, str]:
    node.reload()
    return dict(node.attrs["Spec"].get("Labels") or {})


@pytest.fixture(autouse=True)
def remove_test_label(docker_client: Any, label: str) -> Any:
    yield
    for node in docker_client.nodes.list():
        spec = dict(node.attrs["Spec"])
        if label in (spec.get("Labels") or {}):
            spec["Labels"] = {k: v for k, v in spec["Labels"].items() if k != label}
            node.update(spec)


SCRIPT = """
import base64, json, sys
import dill
from pulumi.dynamic import Config, ConfigureRequest
provider = dill.loads(base64.b64decode(sys.argv[1]))
# As the engine's provider host does: configure with the stack config first.
provider.configure(ConfigureRequest(Config(raw_config=json.loads(sys.argv[4]), project_name="msr-cache")))
op, args = sys.argv[2], json.loads(sys.argv[3])
try:
    result = getattr(provider, op)(*args)
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"result": None if result is None else vars(result)}))
"""


def call(
    op: str,
    *args: Any,
    env: dict[str, str] | None = None,
    config: dict[str, str] | None = None,
    pickled: str | None = None,
) -> dict[str, Any]:
    """Run one provider method in a fresh interpreter, from /tmp, without this project,
    with `env` over this process's environment and `config` as the stack config."""
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in {"PYTHONPATH"}}
    pickled = pickled or serialize_provider(NodeLabelProvider())
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, pickled, op, json.dumps(args), json.dumps(config or {})],
        cwd="/tmp",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_provider_does_not_need_this_project_to_run() -> None:
    pickled = base64.b64decode(serialize_provider(NodeLabelProvider()))
    # A by-reference pickle names the module; the source path may appear in code objects.
    assert b"components.node_label" not in pickled


def test_create_adds_the_label_on_the_cache_node_only(
    node: Any, manager_node: Any, props: dict, label: str
) -> None:
    out = call("create", props)["result"]
    assert labels_of(node)[label] == "true"
    assert out["id"] == f"{node.id}/{label}"
    assert out["outs"]["value"] == "true"
    assert label not in labels_of(manager_node)


def test_read_sees_a_label_removed_by_hand(node: Any, props: dict, label: str) -> None:
    created = call("create", props)["result"]
    node.reload()
    spec = dict(node.attrs["Spec"])
    spec["Labels"] = {k: v for k, v in spec["Labels"].items() if k != label}
    node.update(spec)
    read = call("read", created["id"], created["outs"])["result"]
    assert read["outs"]["value"] == ""
    diff = call("diff", created["id"], read["outs"], props)["result"]
    assert diff["changes"] is True and diff["replaces"] == []


def test_update_puts_a_drifted_label_back(node: Any, props: dict, label: str) -> None:
    created = call("create", props)["result"]
    drifted = {**created["outs"], "value": ""}
    call("update", created["id"], drifted, props)
    assert labels_of(node)[label] == "true"


def test_delete_removes_only_its_label(node: Any, props: dict, label: str) -> None:
    before = labels_of(node)
    created = call("create", props)["result"]
    call("delete", created["id"], created["outs"])
    assert labels_of(node) == before


def test_self_names_the_manager(manager_node: Any, node: Any, props: dict, label: str) -> None:
    out = call("create", {**props, "node": "self"})["result"]
    assert out["outs"]["node_id"] == manager_node.id
    assert labels_of(manager_node)[label] == "true"
    assert label not in labels_of(node)


def test_unknown_node_is_a_clear_error(docker_client: Any, props: dict) -> None:
    error = call("create", {**props, "node": "no-such-node"})["error"]
    hostname = ", ".join(sorted(n.attrs["Description"]["Hostname"] for n in docker_client.nodes.list()))
    assert error == (
        "Swarm node 'no-such-node' not found; "
        f"msr-cache:cacheNode must be one of: {hostname} (docker node ls)"
    )


def test_read_of_a_node_gone_from_the_swarm_reports_the_label_gone(props: dict) -> None:
    read = call("read", "gone/x", {**props, "node": "no-such-node"})["result"]
    assert read["id"] is None


# -- the connection is the one of the run, not the one at create ------------------


@pytest.fixture
def moved_bundle() -> Any:
    """Two ways to reach the manager, as CI's client bundle in a temp dir that is
    gone by the time of destroy: make(name) gives a dir holding a link to the
    manager's socket and a bundle's file names (a unix socket uses no TLS, but
    docker-py requires the files to exist)."""
    made: list[str] = []

    def make(name: str) -> dict[str, str]:
        # Short: unix socket paths are limited to 108 bytes.
        root = tempfile.mkdtemp(prefix=f"msrc-{name}-", dir="/tmp")
        made.append(root)
        socket = os.environ["DOCKER_HOST"].removeprefix("unix://")
        os.symlink(socket, os.path.join(root, "docker.sock"))
        for pem in ("ca.pem", "cert.pem", "key.pem"):
            Path(root, pem).touch()
        return {
            "DOCKER_HOST": f"unix://{root}/docker.sock",
            "DOCKER_CERT_PATH": root,
            "DOCKER_TLS_VERIFY": "1",
        }

    yield make
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


def registered_by_the_program(env: dict[str, str], props: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(inputs, pickled provider) of the NodeLabel as __main__.py registers it under
    `env`, retargeted at this test's node and label."""
    from rehearsal.engine import run_program

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        (label,) = run_program().of_type("pulumi-python:dynamic/msrcache:NodeLabel")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    inputs = dict(label.plain)
    pickled = inputs.pop("__provider")
    return {**inputs, "node": props["node"], "label": props["label"]}, pickled


def test_destroy_uses_the_connection_of_its_own_run(
    node: Any, props: dict, label: str, moved_bundle: Any
) -> None:
    """`pulumi up` with CI's bundle in one temp dir, `pulumi destroy` with it in another."""
    first, second = moved_bundle("create"), moved_bundle("destroy")
    inputs, pickled = registered_by_the_program(first, props)
    created = call("create", inputs, env=first, pickled=pickled)["result"]
    assert labels_of(node)[label] == "true"
    # Nothing of the first run's connection is in the state.
    assert first["DOCKER_CERT_PATH"] not in json.dumps(created)
    shutil.rmtree(first["DOCKER_CERT_PATH"])
    assert call("delete", created["id"], created["outs"], env=second, pickled=pickled) == {"result": None}
    assert label not in labels_of(node)


def test_refresh_uses_the_connection_of_its_own_run(
    node: Any, props: dict, label: str, moved_bundle: Any
) -> None:
    first, second = moved_bundle("create"), moved_bundle("refresh")
    created = call("create", props, env=first)["result"]
    shutil.rmtree(first["DOCKER_CERT_PATH"])
    read = call("read", created["id"], created["outs"], env=second)["result"]
    assert (read["id"], read["outs"]["value"]) == (created["id"], "true")


def test_docker_host_in_the_stack_config_wins_over_the_environment(
    node: Any, props: dict, label: str, moved_bundle: Any
) -> None:
    config = {"docker:host": moved_bundle("config")["DOCKER_HOST"]}
    out = call("create", props, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, config=config)
    assert out["result"]["id"] == f"{node.id}/{label}"
