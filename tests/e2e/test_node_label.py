"""The node-label provider against a real swarm, run the way Pulumi runs it:
serialized, then unpickled in a separate process that cannot import this project."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
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
        "docker_host": os.environ["DOCKER_HOST"],
        "docker_cert_path": None,
        "docker_tls_verify": True,
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
provider = dill.loads(base64.b64decode(sys.argv[1]))
op, args = sys.argv[2], json.loads(sys.argv[3])
try:
    result = getattr(provider, op)(*args)
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"result": None if result is None else vars(result)}))
"""


def call(op: str, *args: Any) -> dict[str, Any]:
    """Run one provider method in a fresh interpreter, from /tmp, without this project."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH"}}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, serialize_provider(NodeLabelProvider()), op, json.dumps(args)],
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
