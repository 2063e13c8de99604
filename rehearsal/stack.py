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


def read_stack(path: Path) -> dict[str, Any]:
    """The stack file's msr-cache: keys (project prefix removed)."""
    doc = yaml.safe_load(path.read_text()) or {}
    config = doc.get("config") or {}
    return {k.removeprefix(f"{PROJECT}:"): v for k, v in config.items() if k.startswith(f"{PROJECT}:")}


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
