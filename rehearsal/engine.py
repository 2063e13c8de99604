"""The imitation of the Pulumi engine that the unit tests and the rehearsal share.

Run the real __main__.py under Pulumi's mocks and record what it registers, with
the resource options the engine acts on (dependencies, delete_before_replace,
replacement_trigger, ignore_changes, retain_on_delete). The unit tests use it
as it is (RecordingMocks; StatefulMocks keep outputs across runs, as the
state does); the rehearsal's applier (rehearsal/applier.py) extends the same
mocks to create each resource for real on the swarm.

The mocks answer like the providers would, closely enough for the program's
own logic: pulumi-tls resources return real keys and certificates made with
`cryptography` from their inputs (SANs, validity, CA signing), random
passwords a value of the requested length, and Swarm objects an auto-name
(logical name + suffix) when no name is given. Values that the real provider
marks secret are returned as secrets.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import runpy
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf.json_format import MessageToDict
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.sync_await import _sync_await

from rehearsal import pki
from rehearsal.resources import HANDLERS, Context, Created

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "__main__.py"
PROJECT = "msr-cache"

SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig


def secret(value: Any) -> dict[str, Any]:
    return {SECRET_SIG: SECRET_VALUE, "value": value}


def is_secret_wrapper(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE


def unwrap(value: Any) -> Any:
    """The plain value, with every secret wrapper removed."""
    if is_secret_wrapper(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def plain_strings(value: Any) -> list[str]:
    """Every string in `value` that is NOT inside a secret wrapper."""
    if is_secret_wrapper(value):
        return []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in plain_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in plain_strings(v)]
    return [value] if isinstance(value, str) else []


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]  # as sent, secrets still wrapped
    state: dict[str, Any]

    @property
    def plain(self) -> dict[str, Any]:
        return unwrap(self.inputs)


# Certificates and requests come from the rehearsal's tls handlers, which never touch Docker.
_CERT_HANDLERS = {
    typ: HANDLERS[typ]
    for typ in (
        "tls:index/selfSignedCert:SelfSignedCert",
        "tls:index/certRequest:CertRequest",
        "tls:index/locallySignedCert:LocallySignedCert",
    )
}
_NO_DOCKER = Context(client=None, log=lambda _m: None)


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:7]


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Registered] = []
        self.urns: dict[str, str] = {}
        self.dependencies: dict[str, list[str]] = {}
        self.delete_before_replace: dict[str, bool] = {}
        self.replacement_triggers: dict[str, Any] = {}
        self.ignore_changes: dict[str, list[str]] = {}
        self.retain_on_delete: dict[str, bool] = {}
        self.parents: dict[str, str] = {}

    def generation(self, name: str) -> int:
        """How many times `name` has been made anew (StatefulMocks); picks fresh keys and names."""
        return 0

    def call(self, args: pulumi.runtime.MockCallArgs) -> Any:
        return {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        plain = unwrap(args.inputs)
        state: dict[str, Any] = dict(args.inputs)
        typ = args.typ
        if typ == "tls:index/privateKey:PrivateKey":
            key: pki.PrivateKey
            if plain["algorithm"] == "RSA":
                key = pki.rsa_key(int(plain.get("rsaBits", 2048)), slot=self.generation(args.name))
            else:
                assert plain.get("ecdsaCurve") == "P256", "ECDSA key without P256"
                key = pki.ec_key()
            state["privateKeyPem"] = secret(pki.key_pem(key))
        elif typ in _CERT_HANDLERS:
            # Certificates and requests as the rehearsal makes them: real PEMs from
            # every tls input (one implementation for both; only keys are cached here).
            state.update(_CERT_HANDLERS[typ].create(_NO_DOCKER, args.name, plain).outputs)
        elif typ == "random:index/randomPassword:RandomPassword":
            alphabet = string.ascii_letters + string.digits
            digest = hashlib.sha256(args.name.encode()).digest() * 4
            state["result"] = secret(
                "".join(alphabet[b % len(alphabet)] for b in digest)[: int(plain["length"])]
            )
        if typ.startswith("docker:") and "name" not in plain:
            # Auto-naming: a new suffix when the resource is made anew.
            salt = (
                args.name if not self.generation(args.name) else f"{args.name}#{self.generation(args.name)}"
            )
            state["name"] = f"{args.name}-{_suffix(salt)}"
        self.resources.append(Registered(typ, args.name, dict(args.inputs), state))
        return f"{args.name}-id", state


def goal_inputs(
    old_inputs: dict[str, Any] | None, inputs: dict[str, Any], ignored: list[str]
) -> dict[str, Any]:
    """The inputs the engine compares and applies: with `ignore_changes`, the old
    values of those inputs, where the resource has them."""
    if old_inputs is None:
        return inputs
    return {**inputs, **{k: old_inputs[k] for k in ignored if k in old_inputs}}


def unchanged(
    old_inputs: dict[str, Any], old_trigger: Any, inputs: dict[str, Any], trigger: Any, renew: bool
) -> bool:
    """Whether the engine leaves a resource as it is: the same (goal) inputs, the same
    replacement_trigger, and (a certificate) not in its renewal window."""
    return old_inputs == inputs and old_trigger == trigger and not renew


class StatefulMocks(RecordingMocks):
    """Mocks with a memory, like the engine's state between two `pulumi up`s.

    A resource registered again with the same inputs and replacement trigger
    keeps its outputs (no change); otherwise it is made anew (a new key, a new
    auto-name) and listed in `changed`. Pass the previous run's mocks to carry
    the memory over.
    """

    def __init__(self, previous: StatefulMocks | None = None) -> None:
        super().__init__()
        self.memory: dict[str, tuple[str, Any, Any, dict[str, Any]]] = (
            dict(previous.memory) if previous else {}
        )
        self.generations: dict[str, int] = dict(previous.generations) if previous else {}
        self.changed: set[str] = set()

    def generation(self, name: str) -> int:
        return self.generations.get(name, 0)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        plain, trigger = unwrap(args.inputs), self.replacement_triggers.get(args.name)
        old = self.memory.get(args.name)
        if old is not None and old[0] == args.typ:
            plain = goal_inputs(old[1], plain, self.ignore_changes.get(args.name, []))
        # The applier's rule too: a certificate in its renewal window is made anew.
        due = getattr(_CERT_HANDLERS.get(args.typ), "due", None)
        renew = old is not None and due is not None and due(Created(args.name, old[3]), plain)
        if old is not None and old[0] == args.typ and unchanged(old[1], old[2], plain, trigger, renew):
            self.resources.append(Registered(args.typ, args.name, dict(args.inputs), old[3]))
            return f"{args.name}-id", old[3]
        if old is not None:
            self.changed.add(args.name)
            self.generations[args.name] = self.generation(args.name) + 1
        id_, state = super().new_resource(args)
        self.memory[args.name] = (args.typ, plain, trigger, state)
        return id_, state


def _record_registration(self: MockMonitor, request: Any) -> Any:
    """MockResourceArgs carries neither dependencies nor resource options; record
    them from the request (deleteBeforeReplace before new_resource runs, as the
    rehearsal needs it to replace a resource)."""
    if isinstance(self.mocks, RecordingMocks):
        self.mocks.dependencies[request.name] = list(request.dependencies)
        self.mocks.delete_before_replace[request.name] = bool(request.deleteBeforeReplace)
        self.mocks.parents[request.name] = request.parent
        if request.HasField("replacement_trigger"):
            self.mocks.replacement_triggers[request.name] = MessageToDict(request.replacement_trigger)
        self.mocks.ignore_changes[request.name] = list(request.ignoreChanges)
        self.mocks.retain_on_delete[request.name] = bool(request.retainOnDelete)
    response = _register_resource(self, request)
    if isinstance(self.mocks, RecordingMocks):
        self.mocks.urns[request.name] = response.urn
    return response


_register_resource = MockMonitor.RegisterResource
MockMonitor.RegisterResource = _record_registration  # type: ignore[method-assign]


@dataclass
class Run:
    mocks: RecordingMocks
    exports: dict[str, Any] = field(default_factory=dict)
    secret_exports: set[str] = field(default_factory=set)
    logs: list[str] = field(default_factory=list)

    @property
    def resources(self) -> list[Registered]:
        return self.mocks.resources

    def urn_of(self, name: str) -> str:
        return self.mocks.urns[name]

    def engine_urn(self, name: str) -> str:
        """The URN the Pulumi engine gives `name`. The mock monitor abbreviates
        URNs to the parent's last type; the engine uses the parent's whole
        qualified type and leaves out the root stack (deployment.generateURN)."""
        by_urn = {urn: n for n, urn in self.mocks.urns.items()}
        types = {r.name: r.typ for r in self.resources}
        chain, current = [], name
        while current in types:
            chain.append(types[current])
            current = by_urn.get(self.mocks.parents.get(current, ""), "")
        stack, project = pulumi.get_stack(), pulumi.get_project()
        return f"urn:pulumi:{stack}::{project}::{'$'.join(reversed(chain))}::{name}"

    def dependencies_of(self, name: str) -> list[str]:
        return self.mocks.dependencies[name]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, got {[r.name for r in found]}"
        return found[0]

    def named(self, name: str) -> Registered:
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"expected one resource named {name}"
        return found[0]

    @property
    def service(self) -> dict[str, Any]:
        return self.one("docker:index/service:Service").plain

    def secret_data(self, role: str) -> str:
        import base64

        return base64.b64decode(self.named(f"msr-cache-files-{role}").plain["data"]).decode()

    @property
    def config_yml(self) -> str:
        # A Swarm secret, not a config: it holds http.secret.
        return self.secret_data("config-yml")


BASE_CONFIG = {
    "msrHost": "msr.example.com",
    "cacheHost": "cache.example.com",
    "cacheNode": "node1",
    # Registration needs MSR's credentials; the tests of it set them.
    "register": False,
}


def run_program(
    config: dict[str, Any] | None = None,
    secret_keys: tuple[str, ...] = (),
    stack: str = "dev",
    base: dict[str, Any] | None = None,
    preview: bool = False,
    mocks: RecordingMocks | None = None,
) -> Run:
    """Run __main__.py with `base` + `config` as the stack's msr-cache: settings.

    `mocks` answers the registrations: RecordingMocks by default; the rehearsal
    passes one that creates every resource for real.
    """
    mocks = mocks or RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview)
    values = {**(BASE_CONFIG if base is None else base), **(config or {})}
    pulumi.runtime.set_all_config(
        {
            f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v)
            for k, v in values.items()
            if v is not None
        },
        secret_keys=[f"{PROJECT}:{k}" for k in secret_keys],
    )
    run = Run(mocks)
    outputs: dict[str, pulumi.Output[Any]] = {}

    def record_export(name: str, value: Any) -> None:
        outputs[name] = pulumi.Output.from_input(value)

    real_export = pulumi.export
    pulumi.export = record_export
    # pulumi.dynamic.serialize_provider wraps two pickle methods per dynamic
    # resource and never unwraps them (pulumi 3.272): without this, hundreds of
    # runs in one process nest them into a RecursionError.
    pickler = {n: getattr(pickle._Pickler, n) for n in ("_batch_setitems", "save_dict")}
    try:

        @pulumi.runtime.test
        def body() -> Any:
            runpy.run_path(str(MAIN), run_name="__main__")
            return pulumi.Output.all(*outputs.values())

        body()
    finally:
        pulumi.export = real_export
        for attr, method in pickler.items():
            setattr(pickle._Pickler, attr, method)
    for name, out in outputs.items():
        run.exports[name] = _sync_await(out.future())
        if _sync_await(out.is_secret()):
            run.secret_exports.add(name)
    return run


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
