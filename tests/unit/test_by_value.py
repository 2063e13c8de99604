"""components/by_value.py: the dynamic providers (node label, MSR registration) are
serialized once per process, and what the program sends the engine is byte for byte
what pulumi.dynamic.Resource sends: the same types, URNs, inputs and `__provider`,
so a deployed stack's state does not change. The cached pickle still runs in a fresh
interpreter that cannot import this project."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pulumi
import pulumi.dynamic as dyn
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from components import by_value
from components.by_value import ByValueResource, serialized_provider
from components.node_label import NodeLabel, NodeLabelProvider
from components.registration import Registration, RegistrationProvider
from rehearsal.engine import ROOT, RecordingMocks, Run, is_secret_wrapper, run_program
from tests.unit.test_registration import TOKEN, FakeMsr, msr  # noqa: F401 - the fixture

LABEL = "pulumi-python:dynamic/msrcache:NodeLabel"
REGISTRATION = "pulumi-python:dynamic/msrcache:Registration"
REGISTER = {"register": True, "msrUser": "admin", "msrToken": TOKEN, "cacheName": "region-asia"}


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Each test starts as a new process would: nothing serialized yet."""
    by_value._SERIALIZED.clear()
    yield
    by_value._SERIALIZED.clear()


def as_pulumi_does(
    self: ByValueResource,
    provider: dyn.ResourceProvider,
    name: str,
    props: dict[str, Any],
    opts: pulumi.ResourceOptions | None = None,
) -> None:
    dyn.Resource.__init__(self, provider, name, props, opts)


def engine_view(run: Run) -> dict[str, Any]:
    """Everything the engine is told about every resource, by name."""
    m = run.mocks
    return {
        r.name: {
            "type": r.typ,
            "urn": m.urns[r.name],
            "inputs": r.inputs,
            "parent": m.parents.get(r.name),
            "dependencies": m.dependencies.get(r.name),
            "deleteBeforeReplace": m.delete_before_replace.get(r.name),
        }
        for r in m.resources
        if r.typ in (LABEL, REGISTRATION)
    }


def test_the_program_sends_what_pulumi_dynamic_resource_would_send() -> None:
    ours = run_program(REGISTER, secret_keys=("msrToken",))
    by_value._SERIALIZED.clear()
    with mock.patch.object(ByValueResource, "__init__", as_pulumi_does):
        pulumis = run_program(REGISTER, secret_keys=("msrToken",))
    assert {v["type"] for v in engine_view(ours).values()} == {LABEL, REGISTRATION}
    assert engine_view(ours) == engine_view(pulumis)

    # The whole program too: every URN as before (the root stack is registered once per process).
    def urns(run: Run) -> dict[str, str]:
        return {n: u for n, u in run.mocks.urns.items() if "::pulumi:pulumi:Stack::" not in u}

    assert urns(ours) == urns(pulumis) and len(urns(ours)) >= 14


def test_the_provider_string_is_pulumis_and_in_plain_text() -> None:
    run = run_program(REGISTER, secret_keys=("msrToken",))
    for typ, cls in ((LABEL, NodeLabelProvider), (REGISTRATION, RegistrationProvider)):
        sent = next(r for r in run.resources if r.typ == typ).inputs["__provider"]
        # serialize_as_secret_always = False and no secret captured: readable, as before.
        assert isinstance(sent, str) and not is_secret_wrapper(sent)
        assert sent == serialize_provider(cls())


def test_each_provider_class_is_serialized_once_per_process() -> None:
    calls: list[type] = []
    real = by_value.serialize_provider

    def counting(provider: dyn.ResourceProvider) -> str:
        calls.append(type(provider))
        return real(provider)

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="msr-cache", stack="dev", preview=False)

    @pulumi.runtime.test
    def body() -> Any:
        labels = [
            NodeLabel(f"label-{i}", node=f"node{i}", label="dtr.cache", service=f"s{i}") for i in range(5)
        ]
        entries = [
            Registration(f"entry-{i}", "https://msr", "", "admin", "t", f"c{i}", f"https://c{i}")
            for i in range(3)
        ]
        return pulumi.Output.all(*[r.urn for r in [*labels, *entries]])

    with mock.patch.object(by_value, "serialize_provider", counting):
        body()
    assert sorted(c.__name__ for c in calls) == ["NodeLabelProvider", "RegistrationProvider"]
    sent = {r.name: r.inputs["__provider"] for r in mocks.resources}
    assert len({sent[f"label-{i}"] for i in range(5)}) == 1
    assert len({sent[f"entry-{i}"] for i in range(3)}) == 1


class Stateful(dyn.ResourceProvider):
    serialize_as_secret_always = False

    def __init__(self, region: str = "") -> None:
        super().__init__()
        self.region = region


def test_a_provider_unlike_a_fresh_one_is_serialized_on_its_own() -> None:
    plain, other = Stateful(), Stateful("eu")
    assert serialized_provider(plain) == (serialize_provider(Stateful()), False)
    assert serialized_provider(other) == (serialize_provider(Stateful("eu")), False)
    assert serialized_provider(other)[0] != serialized_provider(plain)[0]
    assert list(by_value._SERIALIZED) == [Stateful]


def test_a_secret_provider_stays_secret() -> None:
    class AlwaysSecret(dyn.ResourceProvider):
        pass  # serialize_as_secret_always is True by default

    class Thing(ByValueResource, module="test", name="Thing"):
        pass

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="msr-cache", stack="dev", preview=False)

    @pulumi.runtime.test
    def body() -> Any:
        return Thing(AlwaysSecret(), "thing", {"x": "1"}).urn

    body()
    (thing,) = mocks.resources
    assert thing.typ == "pulumi-python:dynamic/test:Thing"
    assert is_secret_wrapper(thing.inputs["__provider"])
    with pytest.raises(Exception, match="__provider"):
        ByValueResource(AlwaysSecret(), "bad", {"__provider": "x"})


# -- the cached string runs where the engine runs it ------------------------------------

NODE_LABEL_SCRIPT = """
import base64, json, sys
import dill
provider = dill.loads(base64.b64decode(open("provider.b64").read()))

class Node:
    def __init__(self):
        self.id = "id-cache"
        self.attrs = {"Spec": {"Availability": "active", "Labels": {}}, "Status": {"State": "ready"},
                      "Description": {"Hostname": "msrc-cache"}}
    def update(self, spec):
        self.attrs["Spec"] = dict(spec)
    def reload(self):
        pass

class Nodes:
    def __init__(self):
        self.node = Node()
    def get(self, name):
        return self.node
    def list(self):
        return [self.node]

class Client:
    nodes = Nodes()

provider.client = lambda: Client()
props = {"node": "msrc-cache", "label": "dtr.cache", "value": "true", "service": "msr-cache-dev"}
print(json.dumps({"check": len(provider.check({}, props).failures),
                  "module": type(provider).__module__,
                  "created": vars(provider.create(props)),
                  "labels": Client.nodes.node.attrs["Spec"]["Labels"]}))
"""

REGISTRATION_SCRIPT = """
import base64, json, sys
import dill
provider = dill.loads(base64.b64decode(open("provider.b64").read()))
props = json.load(open("props.json"))
print(provider.create(props).id)
try:
    provider.create(props | {"host": "https://other"})
except Exception as exc:
    print(type(exc).__name__)
"""


def in_fresh_interpreter(script: str, provider_b64: str, cwd: Path) -> str:
    """Run `script` where this project cannot be imported, as the engine's provider host does."""
    (cwd / "provider.b64").write_text(provider_b64)
    guard = f"import sys; sys.path = [p for p in sys.path if p.rstrip('/') != {str(ROOT)!r}]\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", guard + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_cached_node_label_provider_works_in_a_fresh_interpreter(tmp_path: Path) -> None:
    run = run_program()
    sent = next(r for r in run.resources if r.typ == LABEL).inputs["__provider"]
    # By value: a by-reference pickle would name the module.
    assert b"components.node_label" not in base64.b64decode(sent)
    out = json.loads(in_fresh_interpreter(NODE_LABEL_SCRIPT, sent, tmp_path))
    assert out["check"] == 0 and out["module"] == "__main__"
    assert out["created"]["id"] == "id-cache/dtr.cache"
    assert out["labels"] == {"dtr.cache": "true"}


def test_the_cached_registration_provider_works_in_a_fresh_interpreter(
    msr: tuple[FakeMsr, dict[str, Any]],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    fake, props = msr
    run = run_program(REGISTER, secret_keys=("msrToken",))
    sent = next(r for r in run.resources if r.typ == REGISTRATION).inputs["__provider"]
    assert TOKEN.encode() not in base64.b64decode(sent)
    (tmp_path / "props.json").write_text(json.dumps(props))
    made_id, error = in_fresh_interpreter(REGISTRATION_SCRIPT, sent, tmp_path).split()
    assert fake.caches[made_id]["name"] == "region-asia" and error == "RegistrationError"
