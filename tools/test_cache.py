"""`make test-cache ENV=<env>`: a throwaway copy of an environment's cache, checked, then removed.

    python -m tools.test_cache <env> [--pull REPO:TAG] [--port N] [--keep-on-failure] ...

With the Pulumi Automation API this creates a uniquely named stack
(`test-<env>-<UTC yyyymmddHHMMSS>-<8 hex>`) of this project, copies the
`msr-cache:*` and `docker:*` configuration of `stacks/Pulumi.<env>.yaml` into
it, runs `pulumi up` with the real `__main__.py`, runs `tools.smoke.smoke_check`
against the cache it deployed, and then always destroys the stack and removes
it, also when `up` or the check fails or the run is interrupted.

What the test stack does NOT take from the environment, so that it cannot touch
the environment's own cache:
  - `serviceName` is the test stack's name (the Swarm service, and the default
    volume name `<serviceName>-data`);
  - `nodeLabel` is a per-run label (`--label` to choose one): destroying the
    test stack removes its label from the node, and removing the environment's
    label would unschedule the environment's cache;
  - `storage.volumeName` is dropped, so the volume is `<serviceName>-data`
    (a shared named volume would be deleted by the test's destroy);
  - `cacheName` is the test stack's name: with `register` on, the test cache
    is registered with MSR under its own name, and the test's destroy removes
    that registration, never the environment's.
With `caches` (several caches), each entry gets its own: `serviceName` and
`cacheName` `<test stack>-<name>` (the top-level ones, every entry's default,
would collide and are not copied), `storage.volumeName` dropped, and each
cache's node label is `<label>.<name>`. The test stack's name is cut so that
`<test stack>-<name>` is a valid Swarm service name.
The node (`cacheNode`) and port (`cachePort`, or `--port`; with `caches`,
`--port N` gives entry i port N+i) are the environment's: a test cache on the
node and port where the environment's cache runs cannot publish that port.

After `pulumi up` every cache is smoke-checked: the stack's one cache by its
outputs `cacheUrl` and `certificatePem`, the caches of `caches` by the `caches`
output (its `cacheUrl` and `certificateSha256`, each cache on its own).

Secure (`secure:`) values are copied with `pulumi config cp`, which decrypts
them with the environment stack's secrets provider and encrypts them with the
test stack's; no value is ever printed.

Exit codes: 0 up and smoke check passed and the stack is gone; 1 the test
failed (the stack is gone, or kept with --keep-on-failure); 2 refused before
anything was created; 3 clean-up failed (the commands to finish by hand are
printed); 130 interrupted (and cleaned up).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import enum
import functools
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import yaml

from components.rules import CREDENTIAL_OPTION
from components.settings import SettingsError
from components.settings_stack import entry_raw
from tools.redact import REDACT, install_excepthook, redact
from tools.smoke import SmokeError, SmokeResult, smoke_check
from tools.stack_file import StackFileError, is_encrypted, problems, project_values, read_document

ROOT = Path(__file__).resolve().parent.parent
INSTALL_URL = "https://www.pulumi.com/docs/install/"
PROG = "test-cache"

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_CLEANUP_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# Namespaces copied from the environment's stack file (besides the project's own).
COPIED_NAMESPACES = ("docker",)
# Values that must be secrets (components/settings.py refuses them in plain text,
# unless another value of their top-level key is encrypted, which makes the CLI
# treat the whole key as secret): set as secrets on the test stack. Below a key,
# or below a `caches` entry.
SECRET_LEAVES = (
    "tls.caKeyPem", "tls.keyPem", "storage.s3.accessKey", "storage.s3.secretKey",
    "storage.azure.accountKey", "storage.gcs.keyfile", "storage.swift.password",
)  # fmt: skip
# A Swarm service name (and MSR's name for a cache) has at most 63 characters.
MAX_NAME = 63

_STACK_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# A key below a `caches` entry: `caches[1].tls.keyPem`.
_ENTRY_PREFIX_RE = re.compile(r"^caches\[\d+\]\.")
_PLAIN_SEGMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What `pulumi config set --path` turns into a bool or an int (strconv.Atoi; a
# leading 0 keeps it a string), so a string leaf that looks like this would
# change type on the way.
_COERCED_RE = re.compile(r"^(?:true|false|[+-]?(?:0|[1-9][0-9]*))$")
# Secrets the CLI may hold in this process's environment (a passphrase, a token).
SECRET_ENV = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_ACCESS_TOKEN")


# Every line this tool prints goes through `redact`: its messages quote the CLI,
# Docker and the registry, and those may quote a secret.
def say(message: str) -> None:
    print(redact(f"{PROG}: {message}"), flush=True)


def complain(message: str) -> None:
    print(redact(f"{PROG}: {message}"), file=sys.stderr, flush=True)


class Refusal(Exception):
    """A prerequisite is missing; nothing was created (exit 2)."""


class ConfigError(Refusal):
    """The environment's configuration cannot be copied faithfully."""


class StepError(Exception):
    """A Pulumi step failed; the message is one line, without any config value."""


# ---------------------------------------------------------------------------
# Pure parts: the stack name, the config to set, the smoke check's target
# ---------------------------------------------------------------------------


def unique_stack_name(
    env: str, now: dt.datetime | None = None, token: str | None = None, reserve: int = 0
) -> str:
    """`test-<env>-<UTC yyyymmddHHMMSS>-<8 hex>`: a valid, unique Pulumi stack name.

    The environment part is cut to 30 characters so that the name is also a
    valid Swarm service name (at most 63), which the test stack uses; and
    shorter when `reserve` characters are appended to it (`-<cache name>`, the
    service name of each cache of `caches`).
    """
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    token = token or secrets.token_hex(4)
    fixed = len(f"test--{now:%Y%m%d%H%M%S}-{token}")
    keep = max(1, min(30, MAX_NAME - fixed - reserve))
    safe_env = re.sub(r"[^A-Za-z0-9_.-]", "-", env)[:keep] or "env"
    return f"test-{safe_env}-{now:%Y%m%d%H%M%S}-{token}"


def cache_entry_names(stack_doc: Mapping[str, Any], project: str = "msr-cache") -> list[str]:
    """The names of the `caches` entries of a stack file (none without `caches`)."""
    config = stack_doc.get("config")
    found = config.items() if isinstance(config, Mapping) else []
    for key, caches in found:
        if str(key) in (f"{project}:caches", f"{project}:config:caches") and isinstance(caches, list):
            return [e["name"] for e in caches if isinstance(e, Mapping) and isinstance(e.get("name"), str)]
    return []


def default_label(stack: str) -> str:
    """A node label of this run only, e.g. `msr-cache-test.1a2b3c4d`."""
    return f"msr-cache-test.{stack.rsplit('-', 1)[-1].lower()}"


@dataclass(frozen=True)
class Setting:
    """One `pulumi config set` on the test stack.

    `value` None means: copy this key from the environment's stack with
    `pulumi config cp` (its value is encrypted in the stack file).
    """

    key: str
    value: str | None
    secret: bool
    path: bool

    def __repr__(self) -> str:  # never show a value, not even in a test failure
        shown = "<copied>" if self.value is None else "<value>"
        return f"Setting({self.key!r}, {shown}, secret={self.secret}, path={self.path})"


@dataclass(frozen=True)
class CachePlan:
    """One cache of `caches` on the test stack: its name, and what its smoke check trusts."""

    name: str
    tls_mode: str
    """The cache's tls.mode, its own or the stack's ("unknown" when it is encrypted)."""
    ca_cert_pem: str | None
    """caSigned: the CA certificate from the stack file, when it is there in plain text."""


@dataclass(frozen=True)
class ConfigPlan:
    settings: tuple[Setting, ...]
    notes: tuple[str, ...]
    tls_mode: str
    """The environment's tls.mode ("unknown" when it is encrypted)."""
    ca_cert_pem: str | None
    """caSigned: the CA certificate from the stack file, when it is there in plain text."""
    secrets_provider: str | None
    """The environment's `secretsprovider:`, given to the test stack too."""
    environments: tuple[str, ...] = ()
    """ESC environments the environment's stack imports."""
    caches: tuple[CachePlan, ...] = ()
    """The caches of `caches`, in the stack's order; none for a stack's one cache."""

    @property
    def copied_keys(self) -> list[str]:
        return [s.key for s in self.settings if s.value is None]


def _segment(name: Any, key: str) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"{key}: has a non-string map key; copy this stack's config by hand")
    if _PLAIN_SEGMENT_RE.match(name):
        return f".{name}"
    if any(c in name for c in '"=\\'):
        raise ConfigError(f'{key}: the map key {name!r} cannot be written as a config path (", = or \\)')
    return f'["{name}"]'


def _scalar(value: Any, key: str, path: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if path and _COERCED_RE.match(value):
            raise ConfigError(
                f"{key}: is the string {value!r}, which `pulumi config set --path` would store as a "
                "number or boolean; quote-proof values only, or set it on a test stack by hand"
            )
        return value
    if not path and isinstance(value, float):
        return repr(value)
    raise ConfigError(
        f"{key}: a {type(value).__name__} value cannot be copied with `pulumi config set --path` "
        "unchanged; use a string, integer or boolean"
    )


def _is_secret_leaf(key: str) -> bool:
    """Whether a path setting's key (`msr-cache:tls.keyPem`, `msr-cache:caches[0].tls.keyPem`)
    holds a value that must be a secret."""
    below = _ENTRY_PREFIX_RE.sub("", key.split(":", 1)[-1])
    return below in SECRET_LEAVES


def _leaves(key: str, value: Any, path: bool, notes: list[str]) -> Iterator[Setting]:
    """Settings that rebuild `value` under `key` (a full key, a path below it when `path`)."""
    if is_encrypted(value):
        yield Setting(key, None, True, path)
    elif isinstance(value, Mapping):
        if not value:
            notes.append(f"{key}: empty map, not copied (the same as absent)")
        for name, child in value.items():
            yield from _leaves(key + _segment(name, key), child, True, notes)
    elif isinstance(value, list):
        if not value:
            notes.append(f"{key}: empty list, not copied (the same as absent)")
        for i, child in enumerate(value):
            item = list(_leaves(f"{key}[{i}]", child, True, notes))
            # The CLI sets a list item by its index, plain values first and the encrypted
            # ones after (`config cp`): an item with no plain value would not exist yet
            # when the next item is set.
            if not any(s.value is not None for s in item):
                raise ConfigError(
                    f"{key}[{i}]: a list item that is encrypted or empty cannot be copied item by item; "
                    "move the encrypted value out of the list, give the item a plain value too, "
                    "or copy the stack's config by hand"
                )
            yield from item
    elif value is None:
        notes.append(f"{key}: has no value, not copied (the program's default applies)")
    else:
        secret = path and _is_secret_leaf(key)
        if secret:
            notes.append(
                f"{key}: is in plain text in the stack file (accepted only because another value of its key "
                "is encrypted); set as a secret on the test stack. Encrypt it in the stack file too: "
                "`pulumi config set --secret --path`"
            )
        yield Setting(key, _scalar(value, key, path), secret, path)


def _config_key(raw_key: Any, env: str) -> tuple[str, str]:
    """(namespace, name) of a stack file's config key, both of its forms
    (`ns:name`, `ns:config:name`); tools/stack_file.py refused any other."""
    namespace, sep, name = str(raw_key).partition(":")
    name = name.removeprefix("config:")
    if not sep or not namespace or not name:
        raise ConfigError(f"stacks/Pulumi.{env}.yaml: config key {raw_key!r} has no namespace")
    return namespace, name


def _tls_trust(tls: Any) -> tuple[str, str | None]:
    """(tls.mode, the caSigned CA certificate in plain text) of a cache's tls object."""
    if is_encrypted(tls):
        return "unknown", None
    if not isinstance(tls, Mapping):
        return "selfSigned", None
    mode = tls.get("mode") or "selfSigned"
    mode = mode if isinstance(mode, str) else "unknown"
    ca_cert = tls.get("caCertPem")
    return mode, ca_cert if mode == "caSigned" and isinstance(ca_cert, str) and ca_cert else None


def _entry_tls(top: Any, own: Any) -> Any:
    """The tls object of a `caches` entry, as components/settings_stack.py merges it:
    the entry's fields over the stack's, or the entry's alone when it sets `mode`."""
    if own is None:
        return top
    if is_encrypted(own) or not isinstance(own, Mapping) or "mode" in own:
        return own
    if is_encrypted(top):
        return top  # its mode is the stack's, which only the CLI can read
    return {**(top if isinstance(top, Mapping) else {}), **own}


def _drop_volume_name(key: str, storage: Any, notes: list[str]) -> Any:
    """`storage` without `volumeName`: the test volume is `<serviceName>-data`."""
    if is_encrypted(storage):
        raise ConfigError(
            f"{key}: is encrypted as a whole, so its volumeName cannot be left out (the test's destroy "
            "would delete a volume the environment uses); encrypt only its credentials "
            "(`pulumi config set --secret --path`)"
        )
    if isinstance(storage, Mapping) and "volumeName" in storage:
        notes.append(
            f"{key}.volumeName: not copied, the test volume is <serviceName>-data "
            "(destroying the test stack deletes its volume)"
        )
        return {k: v for k, v in storage.items() if k != "volumeName"}
    return storage


def _test_entries(
    caches: Any, top: Mapping[str, Any], *, ns: str, stack: str, port: int | None, notes: list[str]
) -> tuple[list[dict[str, Any]], tuple[CachePlan, ...]]:
    """The `caches` entries of the test stack: each with its own service and MSR name
    `<stack>-<name>`, without volumeName, on port N+i with --port N."""
    if not isinstance(caches, list):
        raise ConfigError(
            f"{ns}caches: is encrypted as a whole, so the test stack cannot give each cache a name of its "
            "own; encrypt only the values that are secret (`pulumi config set --secret --path`)"
        )
    entries: list[dict[str, Any]] = []
    plans: list[CachePlan] = []
    for i, entry in enumerate(caches):
        key = f"{ns}caches[{i}]"
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str):
            raise ConfigError(f"{key}.name: is not a plain name; the test stack names its caches after it")
        own = f"{stack}-{name}"
        if len(own) > MAX_NAME:
            raise ConfigError(
                f"{key}: the test cache's service name {own} would be longer than {MAX_NAME} characters"
            )
        if port is not None and port + i > 65535:
            raise ConfigError(f"{key}.cachePort: --port {port} gives it {port + i}, above 65535")
        # `name` first: the CLI creates the item with it before any encrypted value is copied in.
        test_entry: dict[str, Any] = {"name": name}
        for k, v in entry.items():
            if k in ("name", "serviceName", "cacheName") or (k == "cachePort" and port is not None):
                continue
            test_entry[k] = _drop_volume_name(f"{key}.storage", v, notes) if k == "storage" else v
        test_entry["serviceName"] = own
        test_entry["cacheName"] = own
        if port is not None:
            test_entry["cachePort"] = port + i
        entries.append(test_entry)
        plans.append(CachePlan(name, *_tls_trust(_entry_tls(top.get("tls"), entry.get("tls")))))
    return entries, tuple(plans)


def _where(values: Mapping[str, Any]) -> str:
    """A cache's node(s) and port, as a note says them (not an encrypted one)."""
    nodes = values.get("nodes") or values.get("cacheNode")
    if isinstance(nodes, list) and all(isinstance(n, str) for n in nodes):
        nodes = ", ".join(nodes)
    node_text = nodes if isinstance(nodes, str) and nodes else "its cacheNode"
    port = values.get("cachePort", 443)
    port_text = port if isinstance(port, int | str) else "its cachePort"
    return f"node {node_text}, port {port_text}"


def plan_config(
    stack_doc: Mapping[str, Any],
    *,
    env: str,
    stack: str,
    project: str = "msr-cache",
    port: int | None = None,
    label: str | None = None,
) -> ConfigPlan:
    """The settings that make `stack` a copy of stack file `stack_doc`, minus what would collide.

    A pure function of the stack file's content: no CLI, no file access. The
    stack file has passed tools/stack_file.py's check (what `pulumi up` refuses).
    """
    config = stack_doc.get("config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"stacks/Pulumi.{env}.yaml: `config:` is not a map")
    ns = f"{project}:"
    label = label or default_label(stack)
    notes: list[str] = []
    settings: list[Setting] = []
    ignored: list[str] = []

    keys = [(*_config_key(raw_key, env), value) for raw_key, value in config.items()]
    top = {name: value for namespace, name, value in keys if namespace == project}
    listed = "caches" in top
    caches: tuple[CachePlan, ...] = ()
    for namespace, name, value in keys:
        full = f"{namespace}:{name}"
        if namespace != project and namespace not in COPIED_NAMESPACES:
            ignored.append(full)
            continue
        if namespace == project and name in ("serviceName", "nodeLabel", "cacheName"):
            continue  # replaced below (with caches: in each entry)
        if namespace == project and name == "cachePort" and port is not None:
            continue  # replaced below (with caches: in each entry)
        if namespace == project and name == "storage":
            value = _drop_volume_name(full, value, notes)
        if namespace == project and name == "caches":
            value, caches = _test_entries(value, top, ns=ns, stack=stack, port=port, notes=notes)
        settings.extend(_leaves(full, value, False, notes))

    label_note = (
        f"{ns}nodeLabel: {label} (a label of this run: destroying the test stack removes it from the node)"
    )
    if listed:
        settings.append(Setting(ns + "nodeLabel", label, False, False))
        notes.append(label_note)
        notes.append(
            f"{ns}caches: each cache's serviceName and cacheName are {stack}-<name>, and its node label "
            f"{label}.<name>; the top-level serviceName and cacheName are not copied (every cache's default, "
            "they would collide). Never the environment's service, label or MSR registration: with register "
            "on, each test cache is registered under its own name and destroying the test stack removes it"
        )
    else:
        settings.append(Setting(ns + "serviceName", stack, False, False))
        settings.append(Setting(ns + "nodeLabel", label, False, False))
        settings.append(Setting(ns + "cacheName", stack, False, False))
        notes.append(f"{ns}serviceName: {stack} (never the environment's service)")
        notes.append(label_note)
        notes.append(
            f"{ns}cacheName: {stack} (registered with MSR under its own name, when register is on; "
            "destroying the test stack removes that registration, never the environment's)"
        )
    if port is not None and listed:
        notes.append(f"{ns}caches[i].cachePort: {port}+i (--port {port}), one port per cache")
    elif port is not None:
        settings.append(Setting(ns + "cachePort", str(port), False, False))
        notes.append(f"{ns}cachePort: {port} (--port)")
    elif listed:
        entries = top["caches"] if isinstance(top["caches"], list) else []
        where = "; ".join(
            f"{e.get('name')}: {_where(entry_raw(top, e))}" for e in entries if isinstance(e, Mapping)
        )
        notes.append(
            f"the test caches run on {env}'s nodes and ports ({where}): if {env}'s caches run there on "
            "those ports, the test cannot publish them; pass --port N (cache i gets port N+i)"
        )
    else:
        notes.append(
            f"the test cache runs on {env}'s {_where(top)}: if {env}'s cache runs there on that port, the "
            "test cannot publish it; pass --port N"
        )
    if ignored:
        notes.append(f"not copied (other namespaces): {', '.join(sorted(ignored))}")

    tls_mode, ca_cert_pem = _tls_trust(top.get("tls"))

    provider = stack_doc.get("secretsprovider")
    envs = stack_doc.get("environment")
    environments: tuple[str, ...] = ()
    if isinstance(envs, list) and all(isinstance(e, str) for e in envs):
        environments = tuple(envs)
    elif envs:
        notes.append("`environment:` of the stack file is not a list of names; not copied")

    return ConfigPlan(
        settings=tuple(settings),
        notes=tuple(notes),
        tls_mode=tls_mode,
        ca_cert_pem=ca_cert_pem,
        secrets_provider=provider if isinstance(provider, str) else None,
        environments=environments,
        caches=caches,
    )


@dataclass(frozen=True)
class SmokeTarget:
    address: tuple[str, int]
    server_name: str
    ca_pem: str | None
    """PEM to write to a temporary CA file; None when `ca_file` is given, or when pinned."""
    ca_file: Path | None
    ca_source: str
    expected_cert_pem: str | None
    name: str | None = None
    """The cache's name in the `caches` output; None for the stack's one cache."""
    expected_sha256: str | None = None
    """The cache's certificateSha256 (a cache of `caches`: the map has no certificatePem)."""
    pinned: bool = False
    """Trust the certificate the cache serves, once its SHA-256 is `expected_sha256`."""


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _url_target(url: Any, whose: str) -> tuple[str, int]:
    """(host, port) of an https:// cacheUrl."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname:
        raise StepError(f"{whose} cacheUrl {url!r} is not an https:// URL")
    return parts.hostname, parts.port or 443


def smoke_target(
    outputs: Mapping[str, Any],
    plan: ConfigPlan,
    address: tuple[str, int] | None = None,
    ca_file: Path | None = None,
) -> SmokeTarget:
    """Where and how to check the stack's one cache, from the stack's outputs."""
    url, cert = outputs.get("cacheUrl"), outputs.get("certificatePem")
    if not isinstance(url, str) or not isinstance(cert, str):
        raise StepError("the stack has no cacheUrl or certificatePem output; did `pulumi up` finish?")
    server_name, port = _url_target(url, "the stack's")
    target = address or (server_name, port)
    if ca_file is not None:
        return SmokeTarget(target, server_name, None, ca_file, f"--ca-file {ca_file}", cert)
    if plan.tls_mode == "selfSigned":
        return SmokeTarget(target, server_name, cert, None, "certificatePem (self-signed)", cert)
    if plan.tls_mode == "caSigned" and plan.ca_cert_pem:
        return SmokeTarget(target, server_name, plan.ca_cert_pem, None, "tls.caCertPem of the stack", cert)
    return SmokeTarget(
        target,
        server_name,
        cert,
        None,
        f"certificatePem (tls.mode {plan.tls_mode}: this verifies only a self-signed certificate; "
        "pass --ca-file <its root CA> if the check fails with 'unable to get [local] issuer certificate')",
        cert,
    )


def cache_targets(
    outputs: Mapping[str, Any],
    plan: ConfigPlan,
    address: tuple[str, int] | None = None,
    addresses: Mapping[str, tuple[str, int]] | None = None,
    ca_file: Path | None = None,
) -> list[SmokeTarget]:
    """Where and how to check each cache of `caches`, from the stack's `caches` output.

    The map has each cache's cacheUrl and certificateSha256, not its certificate:
    a self-signed cache is trusted by the certificate it serves once that
    certificate's SHA-256 is the stack's (pinned), a caSigned one by the CA in
    the stack file, any by `--ca-file`. `addresses` maps a cache's name to where
    to connect instead of its cacheUrl's host and port; `address` is that of the
    only cache, when there is one.
    """
    found = outputs.get("caches")
    if not isinstance(found, Mapping) or not found:
        raise StepError("the stack has no caches output; did `pulumi up` finish?")
    addresses = addresses or {}
    targets = []
    for cache in plan.caches:
        out = found.get(cache.name)
        if not isinstance(out, Mapping):
            raise StepError(f"the caches output has no cache {cache.name}; did `pulumi up` finish?")
        sha = out.get("certificateSha256")
        if not isinstance(sha, str) or not sha:
            raise StepError(f"the caches output has no certificateSha256 for cache {cache.name}")
        server_name, port = _url_target(out.get("cacheUrl"), f"cache {cache.name}'s")
        default = address if len(plan.caches) == 1 else None
        target = addresses.get(cache.name) or default or (server_name, port)
        ca_pem: str | None = None
        pinned = False
        if ca_file is not None:
            source = f"--ca-file {ca_file}"
        elif cache.tls_mode == "caSigned" and cache.ca_cert_pem:
            ca_pem, source = cache.ca_cert_pem, "its tls.caCertPem"
        else:
            why = "self-signed"
            if cache.tls_mode != "selfSigned":
                why = (
                    f"tls.mode {cache.tls_mode}: this verifies only a self-signed certificate; "
                    "pass --ca-file <its root CA> if the check fails with 'unable to get [local] issuer "
                    "certificate'"
                )
            source, pinned = f"the certificate it serves, pinned by its certificateSha256 ({why})", True
        targets.append(
            SmokeTarget(
                target,
                server_name,
                ca_pem,
                ca_file,
                source,
                None,
                name=cache.name,
                expected_sha256=sha,
                pinned=pinned,
            )
        )
    return targets


def cli_error_line(text: str) -> str:
    """The CLI's own `error:` line from a failed command's output, or its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        m = re.search(r"\berror: (.+)", line)
        if m:
            return m.group(1)[:300]
    return (lines[-1] if lines else "no output")[:300]


# ---------------------------------------------------------------------------
# The orchestration, with its collaborators injected
# ---------------------------------------------------------------------------

OnOutput = Callable[[str], None]


class Backend(Protocol):
    """What the test needs from Pulumi; `AutomationBackend` is the real one."""

    def create(self, stack: str, secrets_provider: str | None) -> None: ...
    def set_config(self, settings: Sequence[Setting], environments: Sequence[str] = ()) -> None: ...
    def up(self, on_output: OnOutput) -> None: ...
    def outputs(self) -> dict[str, Any]: ...
    def destroy(self, on_output: OnOutput) -> None: ...
    def remove(self) -> None: ...


SmokeFn = Callable[..., SmokeResult]


@dataclass
class CacheTest:
    env: str
    stack: str
    plan: ConfigPlan
    root: Path = ROOT
    pull: tuple[str, str] | None = None
    address: tuple[str, int] | None = None
    """Where to connect instead of cacheUrl's host and port (the stack's one cache, or one of `caches`)."""
    ca_file: Path | None = None
    keep_on_failure: bool = False
    timeout: float = 90
    addresses: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """Per cache of `caches`, by name: where to connect instead of its cacheUrl's host and port."""


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Cleanup(enum.Enum):
    NOTHING = "nothing to clean"
    REMOVED = "removed"
    KEPT = "kept"
    FAILED = "failed"


def _echo(line: str) -> None:
    print(redact(line), flush=True)


def manual_commands(run: CacheTest, destroyed: bool) -> list[str]:
    cmds = [] if destroyed else [f"pulumi destroy --stack {run.stack}"]
    return [*cmds, f"pulumi stack rm {run.stack}"]


def _print_manual(run: CacheTest, destroyed: bool) -> None:
    complain(f"finish by hand, from {run.root}:")
    for cmd in manual_commands(run, destroyed):
        complain(f"  {cmd}")


def register_secrets(plan: ConfigPlan) -> None:
    """Tell the redactor the secrets this run holds in plain text: values set as secrets
    (a private key from the stack file) and credential options in plain values
    (a volume's `o: username=svc,password=...`), so that no quote of them is printed."""
    for s in plan.settings:
        if s.value is None:
            continue  # copied by the CLI: this process never sees the value
        if s.secret:
            REDACT.add(s.value)
        REDACT.add(*(m.group(2).strip("'\"") for m in CREDENTIAL_OPTION.finditer(s.value)))


def _smoke_one(run: CacheTest, target: SmokeTarget, smoke: SmokeFn) -> SmokeResult:
    whose = f" of cache {target.name}" if target.name else ""
    say(
        f"smoke check{whose}: https://{target.server_name} at {target.address[0]}:{target.address[1]}, "
        f"trusting {target.ca_source}" + (f", pulling {run.pull[0]}:{run.pull[1]}" if run.pull else "")
    )
    extra = {"expected_sha256": target.expected_sha256} if target.expected_sha256 else {}
    with tempfile.TemporaryDirectory(prefix="msrc-test-cache-") as tmp:
        ca_path = target.ca_file
        if ca_path is None and not target.pinned:
            ca_path = Path(tmp) / "ca.pem"
            ca_path.write_text(target.ca_pem or "")
        return smoke(
            target.address,
            target.server_name,
            None if ca_path is None else str(ca_path),
            expected_cert_pem=target.expected_cert_pem,
            pull=run.pull,
            timeout=run.timeout,
            **extra,
        )


def _smoke(
    run: CacheTest, outputs: Mapping[str, Any], smoke: SmokeFn
) -> list[tuple[str | None, SmokeResult]]:
    """The smoke check of every cache of the stack: (its name, its result). A cache
    of several that fails is said at once, and the others are checked still."""
    if not run.plan.caches:
        target = smoke_target(outputs, run.plan, run.address, run.ca_file)
        return [(None, _smoke_one(run, target, smoke))]
    targets = cache_targets(outputs, run.plan, run.address, run.addresses, run.ca_file)
    results: list[tuple[str | None, SmokeResult]] = []
    failed: list[str] = []
    for target in targets:
        try:
            results.append((target.name, _smoke_one(run, target, smoke)))
        except SmokeError as exc:
            if len(targets) == 1:
                raise
            complain(f"cache {target.name}: FAILED: {exc}")
            failed.append(str(target.name))
    if failed:
        raise SmokeError(
            f"{len(failed)} of {len(targets)} caches failed the smoke check: {', '.join(failed)} (above)"
        )
    return results


def _deployed(run: CacheTest, outputs: Mapping[str, Any]) -> list[str]:
    """What `pulumi up` deployed, a line per cache."""
    if not run.plan.caches:
        return [
            f"deployed {outputs.get('cacheUrl')} (service {outputs.get('serviceName')}, "
            f"node {outputs.get('node')}, label {outputs.get('label')})"
        ]
    found = outputs.get("caches")
    found = found if isinstance(found, Mapping) else {}
    lines = []
    for cache in run.plan.caches:
        out = found.get(cache.name)
        out = out if isinstance(out, Mapping) else {}
        nodes = out.get("nodes")
        node_text = ", ".join(str(n) for n in nodes) if isinstance(nodes, list) else nodes
        lines.append(
            f"deployed cache {cache.name}: {out.get('cacheUrl')} (service {out.get('serviceName')}, "
            f"nodes {node_text}, label {out.get('label')})"
        )
    return lines


def run_test(run: CacheTest, backend: Backend, smoke: SmokeFn = smoke_check) -> int:
    """Create, configure, up, smoke-check; then always destroy and remove. The exit code."""
    register_secrets(run.plan)
    for note in run.plan.notes:
        say(f"note: {note}")
    created = False
    outcome = Outcome.FAILED
    try:
        try:
            say(f"creating stack {run.stack} from stacks/Pulumi.{run.env}.yaml")
            backend.create(run.stack, run.plan.secrets_provider)
            created = True
            keys = [s.key for s in run.plan.settings]
            say(f"setting {len(keys)} config values: {', '.join(keys)}")
            if run.plan.copied_keys:
                say(f"copying encrypted values from stack {run.env}: {', '.join(run.plan.copied_keys)}")
            backend.set_config(run.plan.settings, run.plan.environments)
            say(f"pulumi up --stack {run.stack}")
            backend.up(_echo)
            outputs = backend.outputs()
            for line in _deployed(run, outputs):
                say(line)
            results = _smoke(run, outputs, smoke)
            for name, result in results:
                pulled = f", pulled {result.pulled_digest}" if result.pulled_digest else ""
                which = f"cache {name}" if name else "the cache"
                say(
                    f"{'' if name else 'PASSED: '}{which} answered over verified TLS in "
                    f"{result.seconds_to_serve}s with certificate {result.certificate_sha256[:16]}...{pulled}"
                )
            if run.plan.caches:
                say(f"PASSED: all {len(results)} caches ({', '.join(str(n) for n, _ in results)})")
            outcome = Outcome.PASSED
        except KeyboardInterrupt:
            outcome = Outcome.INTERRUPTED
            complain("interrupted" + ("; cleaning up" if created else ""))
            if not created:
                complain(f"if stack {run.stack} was created nevertheless: pulumi stack rm {run.stack}")
        except (StepError, SmokeError, OSError, ValueError) as exc:
            complain(f"FAILED: {exc}")
    finally:
        cleanup = _clean_up(run, backend, created, outcome)
    if cleanup is Cleanup.FAILED:
        return EXIT_CLEANUP_FAILED
    if outcome is Outcome.INTERRUPTED:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome is Outcome.PASSED else EXIT_FAILED


def _clean_up(run: CacheTest, backend: Backend, created: bool, outcome: Outcome) -> Cleanup:
    if not created:
        return Cleanup.NOTHING
    if outcome is not Outcome.PASSED and run.keep_on_failure:
        say(f"kept stack {run.stack} and its resources for debugging (--keep-on-failure); remove them with:")
        for cmd in manual_commands(run, destroyed=False):
            say(f"  {cmd}")
        return Cleanup.KEPT
    say(f"destroying stack {run.stack}")
    try:
        backend.destroy(_echo)
    except (StepError, KeyboardInterrupt) as exc:
        complain(f"clean-up FAILED: {exc or 'interrupted'}; stack {run.stack} and its resources remain")
        _print_manual(run, destroyed=False)
        return Cleanup.FAILED
    try:
        backend.remove()
    except (StepError, KeyboardInterrupt) as exc:
        complain(f"clean-up FAILED: {exc or 'interrupted'}; the resources are gone, the stack remains")
        _print_manual(run, destroyed=True)
        return Cleanup.FAILED
    say(f"removed stack {run.stack}")
    return Cleanup.REMOVED


# ---------------------------------------------------------------------------
# The real backend: a thin layer over pulumi.automation
# ---------------------------------------------------------------------------


class AutomationBackend:
    """`pulumi.automation` on this project directory (its Pulumi.yaml, __main__.py and .venv)."""

    def __init__(
        self,
        root: Path,
        env: str,
        auto: Any = None,
        lock_retries: int = 6,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if auto is None:
            from pulumi import automation as auto
        self.auto = auto
        self.root = root
        self.env = env
        self.stack: Any = None
        self.lock_retries = lock_retries
        self.sleep = sleep
        self._outputs: dict[str, Any] | None = None
        self._previous: str | None = None

    def _step(self, what: str, fn: Callable[[], Any], hint: str = "") -> Any:
        try:
            return fn()
        except self.auto.errors.CommandError as exc:
            raise StepError(f"{what} failed: {cli_error_line(str(exc))}{hint}") from None
        except FileNotFoundError:
            raise StepError(f"the Pulumi CLI is not installed: {INSTALL_URL}") from None
        except self.auto.errors.InvalidVersionError as exc:
            raise StepError(f"{what}: {exc}") from None

    def create(self, stack: str, secrets_provider: str | None) -> None:
        auto = self.auto

        def make() -> Any:
            ws = auto.LocalWorkspace(work_dir=str(self.root), secrets_provider=secrets_provider)
            try:
                current = ws.stack()
                self._previous = current.name if current else None
            except auto.errors.CommandError:
                self._previous = None
            return auto.Stack.create(stack, ws)

        self.stack = self._step(f"creating stack {stack}", make)

    def set_config(self, settings: Sequence[Setting], environments: Sequence[str] = ()) -> None:
        auto = self.auto
        if environments:
            self._step("adding the ESC environments", lambda: self.stack.add_environments(*environments))
        for path in (False, True):
            values = {
                s.key: auto.ConfigValue(value=s.value, secret=s.secret)
                for s in settings
                if s.value is not None and s.path is path
            }
            if values:
                what = "setting the config" + (" (paths)" if path else "")
                self._step(what, functools.partial(self.stack.set_all_config, values, path=path))
        ws = self.stack.workspace
        for s in settings:
            if s.value is None:
                # `pulumi config cp` decrypts with the source stack's secrets provider and
                # encrypts with the destination's; the Automation API has no wrapper for it.
                args = ["config", "cp", "--stack", self.env, "--dest", self.stack.name]
                args += ["--path", s.key] if s.path else [s.key]
                self._step(
                    f"copying encrypted {s.key} from stack {self.env}",
                    functools.partial(ws.pulumi_command.run, args, ws.work_dir, dict(ws.env_vars)),
                    f" (stack {self.env} must exist in this backend and its secrets must decrypt here, "
                    "e.g. with PULUMI_CONFIG_PASSPHRASE)",
                )

    def up(self, on_output: OnOutput) -> None:
        result = self._step(
            "pulumi up",
            # The same guardrails as make up (policy/, its venv built by make).
            lambda: self.stack.up(
                on_output=on_output,
                on_error=_stderr,
                show_secrets=False,
                policy_packs=[str(self.root / "policy")],
            ),
            " (its output is above)",
        )
        self._outputs = _values(result.outputs)

    def outputs(self) -> dict[str, Any]:
        if self._outputs is None:
            found = self._step("reading the outputs", self.stack.outputs)
            self._outputs = _values(found)
        return self._outputs

    def destroy(self, on_output: OnOutput) -> None:
        def destroy_waiting_for_the_lock() -> Any:
            # After an interrupted `up` the CLI may hold the stack's lock a little longer.
            for attempt in range(self.lock_retries + 1):
                try:
                    return self.stack.destroy(on_output=on_output, on_error=_stderr, show_secrets=False)
                except self.auto.errors.ConcurrentUpdateError:
                    if attempt == self.lock_retries:
                        raise
                    say("the stack is still locked by the interrupted update; retrying in 5s")
                    self.sleep(5)
            return None

        self._step("pulumi destroy", destroy_waiting_for_the_lock, " (its output is above)")

    def remove(self) -> None:
        ws = self.stack.workspace
        self._step(f"pulumi stack rm {self.stack.name}", lambda: ws.remove_stack(self.stack.name))
        if self._previous and self._previous != self.stack.name:
            with contextlib.suppress(self.auto.errors.CommandError):
                ws.select_stack(self._previous)  # give the operator back the stack they had selected


def _values(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's output values; the secret ones, now in plain text here, are never printed."""
    REDACT.add(*(v.value for v in outputs.values() if v.secret))
    return {k: v.value for k, v in outputs.items()}


def _stderr(line: str) -> None:
    print(redact(line), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def project_info(root: Path) -> tuple[str, Path]:
    """The project's name and its stack config directory, from Pulumi.yaml."""
    doc = yaml.safe_load((root / "Pulumi.yaml").read_text(encoding="utf-8")) or {}
    return str(doc.get("name", "msr-cache")), root / str(doc.get("stackConfigDir", "."))


def existing_envs(stacks_dir: Path) -> list[str]:
    names = (p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml"))
    return sorted(n for n in names if not n.startswith("test-"))


def checked_document(env: str, root: Path = ROOT) -> dict[str, Any]:
    """The environment's stack file, read as the Pulumi CLI reads it and checked
    as `pulumi up` checks it (tools/stack_file.py); Refusal listing every problem."""
    _, stacks_dir = project_info(root)
    path = stacks_dir / f"Pulumi.{env}.yaml"
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    if not path.is_file():
        raise Refusal(f"no {rel}; the stacks are: {', '.join(existing_envs(stacks_dir)) or 'none'}")
    try:
        doc = read_document(path)
        found = problems(project_values(doc, path))
    except StackFileError as exc:
        raise Refusal(str(exc)) from None
    if found:
        raise Refusal(f"{rel} is refused, as `pulumi up` of {env} would refuse it.\n{SettingsError(found)}")
    return doc


def preflight(env: str, root: Path = ROOT, run: Callable[..., Any] | None = None) -> Path:
    """Refuse, before anything is created, when the CLI, the stack file or a login is missing."""
    run = run or subprocess.run
    if shutil.which("pulumi") is None:
        raise Refusal(f"the Pulumi CLI is not installed: {INSTALL_URL}; make test-cache needs it")
    _, stacks_dir = project_info(root)
    path = stacks_dir / f"Pulumi.{env}.yaml"
    if not path.is_file():
        rel = path.relative_to(root) if path.is_relative_to(root) else path
        raise Refusal(f"no {rel}; the stacks are: {', '.join(existing_envs(stacks_dir)) or 'none'}")
    try:
        who = run(["pulumi", "whoami"], cwd=root, capture_output=True, text=True, timeout=120, check=False)
        logged_in = who.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        logged_in = False
    if not logged_in:
        raise Refusal(
            "the Pulumi CLI is not logged in to a backend (`pulumi whoami` failed): run `pulumi login`, "
            "or `pulumi login --local` to keep state on this machine"
        )
    return path


def _repo_tag(text: str) -> tuple[str, str]:
    repo, sep, tag = text.rpartition(":")
    if not sep or not repo or not tag or "/" in tag:
        raise argparse.ArgumentTypeError(f"expected REPO:TAG, e.g. library/busybox:1.36, got {text!r}")
    return repo, tag


def _address(text: str) -> tuple[str | None, tuple[str, int]]:
    """`[NAME=]HOST:PORT`: NAME is a cache of `caches`."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    elif not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", name):
        raise argparse.ArgumentTypeError(f"expected [NAME=]HOST:PORT with NAME a cache's name, got {text!r}")
    try:
        return name or None, parse_host_port(rest)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def chosen_addresses(
    given: Sequence[tuple[str | None, tuple[str, int]]], plan: ConfigPlan
) -> tuple[tuple[str, int] | None, dict[str, tuple[str, int]]]:
    """The --address options: (the one without a name, those of the caches by name);
    Refusal when one names no cache of the stack, or is ambiguous."""
    names = [c.name for c in plan.caches]
    unnamed = [a for n, a in given if n is None]
    named: dict[str, tuple[str, int]] = {}
    for name, address in given:
        if name is None:
            continue
        if not names:
            raise Refusal(f"--address {name}=...: the stack has no caches list; give --address HOST:PORT")
        if name not in names:
            raise Refusal(
                f"--address {name}=...: no cache {name} in the stack; its caches are: {', '.join(names)}"
            )
        if name in named:
            raise Refusal(f"--address {name}=... is given twice")
        named[name] = address
    if len(unnamed) > 1:
        raise Refusal("--address HOST:PORT is given twice; with caches, name each: --address NAME=HOST:PORT")
    if unnamed and len(names) > 1:
        raise Refusal(
            f"--address HOST:PORT: the stack has several caches ({', '.join(names)}); say which: "
            "--address NAME=HOST:PORT (once per cache; the others are reached at their cacheUrl)"
        )
    return (unnamed[0] if unnamed else None), named


def _label(text: str) -> str:
    # The form components/settings.py requires of nodeLabel.
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?", text):
        raise argparse.ArgumentTypeError(f"expected a node label key like dtr.cache, got {text!r}")
    return text


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tools.test_cache",
        description="Deploy a throwaway copy of an environment's cache, smoke-check it, destroy it.",
    )
    p.add_argument("env", help="the environment: stacks/Pulumi.<env>.yaml")
    p.add_argument("--pull", type=_repo_tag, metavar="REPO:TAG", help="also pull this image through it")
    p.add_argument("--port", type=_port, help="publish the test cache on this port instead of cachePort")
    p.add_argument(
        "--label", type=_label, help="node label key for the test cache (default: one of this run only)"
    )
    p.add_argument(
        "--address",
        type=_address,
        action="append",
        default=[],
        metavar="[NAME=]HOST:PORT",
        help="connect here instead of cacheUrl's host:port; with several caches, NAME=HOST:PORT for "
        "cache NAME (repeatable)",
    )
    p.add_argument("--ca-file", type=Path, help="PEM CA that verifies the cache (default: see README)")
    p.add_argument("--timeout", type=float, default=90, help="seconds to wait for /v2/ (default 90)")
    p.add_argument("--keep-on-failure", action="store_true", help="leave a failed test stack for debugging")
    return p.parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    backend_factory: Callable[[Path, str], Backend] | None = None,
    smoke: SmokeFn = smoke_check,
) -> int:
    install_excepthook()
    REDACT.add(*(os.environ[name] for name in SECRET_ENV if name in os.environ))
    args = parse_args(argv)
    try:
        # The stack file first: what `pulumi up` of the environment would refuse
        # is refused before the CLI is even looked for.
        doc = checked_document(args.env)
        preflight(args.env)
        if args.ca_file is not None and not args.ca_file.is_file():
            raise Refusal(f"--ca-file {args.ca_file}: no such file")
        project, _ = project_info(ROOT)
        # Room for `-<name>` after the stack's name in each cache's service name.
        reserve = max((len(name) + 1 for name in cache_entry_names(doc, project)), default=0)
        stack = unique_stack_name(args.env, reserve=reserve)
        plan = plan_config(doc, env=args.env, stack=stack, project=project, port=args.port, label=args.label)
        address, addresses = chosen_addresses(args.address, plan)
    except Refusal as exc:
        complain(str(exc))
        return EXIT_REFUSED
    backend = (backend_factory or AutomationBackend)(ROOT, args.env)
    run = CacheTest(
        env=args.env,
        stack=stack,
        plan=plan,
        pull=args.pull,
        address=address,
        ca_file=args.ca_file,
        keep_on_failure=args.keep_on_failure,
        timeout=args.timeout,
        addresses=addresses,
    )
    return run_test(run, backend, smoke)


if __name__ == "__main__":
    sys.exit(main())
