"""A stack file's configuration, pointed at the local swarm for a rehearsal.

What changes and why (each change is reported):
- msrHost/msrPort/msrCaCert: the upstream stand-in and its private CA
  (fetchMsrCa off: the CA is given);
- cacheNode: the local swarm's cache node (msrc-cache); publishMode host (no
  routing mesh here);
- image: the content-cache stand-in (the real image cannot be pulled here);
- TLS material missing from the stack file (`pulumi config set` adds it), or that
  is stored encrypted (`secure:`, which only the Pulumi CLI can decrypt), is
  replaced by test material of the same kind: a test CA for caSigned, a test
  root, intermediate and leaf for provided.
Everything else (cacheHost, cachePort, tls mode/key type/SANs/validity,
storage, label, log level, TTL, service name) is the stack's own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.settings import is_ip
from rehearsal import pki
from rehearsal.upstream import Upstream

PROJECT = "msr-cache"


@dataclass
class RehearsalConfig:
    config: dict[str, Any]
    secret_keys: tuple[str, ...]
    client_ca_pem: str | None
    """PEM that verifies the cache's certificate; None for selfSigned (the
    certificate itself is the trust anchor, known only after apply)."""
    notes: list[str] = field(default_factory=list)


class StackFileError(ValueError):
    """The stack file cannot be read as the Pulumi CLI reads it; says where and why."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping, as the Pulumi CLI's
    YAML reader (go-yaml v3) does, instead of letting the last one win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise StackFileError(
                    f"line {line}: key {key!r} is already defined at line {seen[key]}; "
                    "expected each key once (the Pulumi CLI refuses the file too)"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _config_name(key: Any) -> tuple[str, str]:
    """(namespace, name) of a stack config key, as the Pulumi CLI parses it
    (config.ParseKey): `<namespace>:<name>`, or the old `<namespace>:config:<name>`."""
    text = str(key)
    parts = text.split(":")
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    if len(parts) == 3 and parts[1] == "config" and parts[0] and parts[2]:
        return parts[0], parts[2]
    hint = f"; write it as {PROJECT}:{text}" if len(parts) == 1 and text else ""
    raise StackFileError(
        f"config key {text!r}: could not parse it as a configuration key (configuration keys should be "
        f"of the form `<namespace>:<name>`{hint}); the Pulumi CLI refuses the file too"
    )


def read_stack(path: Path) -> dict[str, Any]:
    """The stack file's msr-cache: keys (project prefix removed), read as the Pulumi
    CLI reads it: a bad YAML file, a key given twice, or a config key without its
    namespace is refused (StackFileError naming the file and the line), never
    ignored or silently overridden."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackFileError(f"{path}: cannot read it: {exc.strerror}") from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except StackFileError as exc:
        raise StackFileError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        tabs = " (YAML does not allow tabs for indentation)" if "'\\t'" in str(exc) else ""
        raise StackFileError(f"{path}: {where}not valid YAML: {problem}{tabs}") from None
    if not isinstance(doc, dict):
        raise StackFileError(f"{path}: expected a mapping with a `config:` key, got {type(doc).__name__}")
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise StackFileError(f"{path}: `config:` must be a mapping of `<namespace>:<name>` keys")
    found: dict[str, Any] = {}
    for key, value in config.items():
        try:
            namespace, name = _config_name(key)
        except StackFileError as exc:
            raise StackFileError(f"{path}: {exc}") from None
        if namespace != PROJECT:
            continue  # another namespace (docker:host, ...): not this program's setting
        if name in found:
            raise StackFileError(
                f"{path}: {PROJECT}:{name} is given twice (also as {PROJECT}:config:{name}); expected it once"
            )
        found[name] = value
    return found


def _encrypted(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def for_local_swarm(
    stack: dict[str, Any],
    upstream: Upstream,
    node: str,
    overrides: dict[str, Any] | None = None,
    *,
    image: str,
) -> RehearsalConfig:
    """`node`: the cache node's hostname; `image`: the content-cache stand-in."""
    config = copy.deepcopy(stack)
    notes: list[str] = []
    encrypted = sorted(k for k, v in config.items() if _encrypted(v))
    for key in encrypted:
        del config[key]
        notes.append(f"{key} is encrypted in the stack file (only the Pulumi CLI can read it): left out")
    config |= {
        "msrHost": upstream.host,
        "msrPort": upstream.port,
        "msrCaCert": upstream.ca_pem,
        "fetchMsrCa": False,
        "cacheNode": node,
        "publishMode": "host",
        "image": image,
    }
    notes.append(f"MSR -> upstream stand-in {upstream.url} (private test CA)")
    notes.append(f"cacheNode -> {node}; publishMode -> host; image -> {image} (stand-in)")
    config |= overrides or {}

    tls = {k: v for k, v in dict(config.get("tls") or {}).items() if not _encrypted(v)}
    mode = tls.get("mode", "selfSigned")
    client_ca: str | None = None
    # Missing or invalid keys are left for the program to report, as `pulumi up` would.
    host = str(config.get("cacheHost") or "")
    if mode == "caSigned":
        if not (tls.get("caCertPem") and tls.get("caKeyPem")):
            ca = pki.make_ca("msr-cache rehearsal CA")
            tls |= {"caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}
            notes.append("tls.caCertPem/caKeyPem -> a test CA (absent or encrypted in the stack file)")
        client_ca = tls["caCertPem"]
    elif mode == "provided" and not (tls.get("certPem") and tls.get("keyPem")):
        root = pki.make_ca("msr-cache rehearsal root")
        inter = pki.make_ca("msr-cache rehearsal intermediate", issuer=root)
        names = [host, *tls.get("dnsNames", [])]
        dns = [n for n in names if not is_ip(n)]
        ips = [n for n in names if is_ip(n)] + list(tls.get("ipAddresses", []))
        leaf = pki.make_leaf(host, dns=dns, ips=ips, issuer=inter)
        tls |= {"certPem": leaf.cert_pem, "keyPem": leaf.key_pem, "chainPem": inter.cert_pem}
        notes.append(
            "tls.certPem/keyPem/chainPem -> a test leaf and intermediate "
            "(absent or encrypted in the stack file)"
        )
        client_ca = root.cert_pem
    config["tls"] = tls
    secret_keys = ("tls",) if mode != "selfSigned" else ()
    return RehearsalConfig(config, secret_keys, client_ca, notes)
