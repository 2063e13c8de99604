"""A stack file's configuration, pointed at the local swarm for a rehearsal.

What changes and why (each change is reported):
- msrHost/msrPort/msrCaCert: the upstream stand-in and its private CA
  (fetchMsrCa off: the CA is given);
- cacheNode: the local swarm's cache node (msrc-cache); publishMode host (no
  routing mesh here);
- image: the content-cache stand-in (the real image cannot be pulled here);
- TLS material stored encrypted (`secure:`, which only the Pulumi CLI can
  decrypt) is replaced by test material of the same kind: a test CA for
  caSigned, a test root, intermediate and leaf (with the stack's names) for
  provided. What is in plain text was checked as written before (a provided
  certificate's expiry, SANs and chain);
- an encrypted cacheHost: a stand-in name; other encrypted top-level values:
  their defaults; encrypted storage driver options: a local volume.
The stack file is checked as written (tools.stack_file) before any of this:
a stack `pulumi up` would refuse never reaches here.
Everything else (cacheHost, cachePort, tls mode/key type/SANs/validity,
storage, label, log level, TTL, service name) is the stack's own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from components.settings import is_ip
from rehearsal import pki
from rehearsal.upstream import Upstream
from tools.stack_file import holds_encrypted, is_encrypted


@dataclass
class RehearsalConfig:
    config: dict[str, Any]
    secret_keys: tuple[str, ...]
    client_ca_pem: str | None
    """PEM that verifies the cache's certificate; None for selfSigned (the
    certificate itself is the trust anchor, known only after apply)."""
    notes: list[str] = field(default_factory=list)


# Stand-ins for top-level values the rehearsal cannot read (encrypted) and must have.
_UNREADABLE_STAND_INS = {"cacheHost": "rehearsal-cache.example.com"}


def for_local_swarm(
    stack: dict[str, Any],
    upstream: Upstream,
    node: str,
    overrides: dict[str, Any] | None = None,
    *,
    image: str,
) -> RehearsalConfig:
    """`stack`: the stack file's values (tools.stack_file.read_stack), already
    checked as written; `node`: the cache node's hostname; `image`: the
    content-cache stand-in. Every value swapped is said in `notes`."""
    config = copy.deepcopy(stack)
    notes: list[str] = []
    replaced = {
        "msrHost", "msrPort", "msrCaCert", "fetchMsrCa", "cacheNode", "publishMode", "image",
        "register", "msrUser", "msrToken",
    }  # fmt: skip
    for key in sorted(k for k, v in config.items() if is_encrypted(v) and k not in replaced):
        if key in _UNREADABLE_STAND_INS:
            config[key] = _UNREADABLE_STAND_INS[key]
            notes.append(
                f"{key} -> {config[key]} (encrypted in the stack file: only the Pulumi CLI reads it)"
            )
        else:
            del config[key]
            notes.append(f"{key} is encrypted in the stack file (only the Pulumi CLI reads it): its default")
    config |= {
        "msrHost": upstream.host,
        "msrPort": upstream.port,
        "msrCaCert": upstream.ca_pem,
        "fetchMsrCa": False,
        "cacheNode": node,
        "publishMode": "host",
        "image": image,
        # The stand-in is MSR here: the rehearsal always registers the cache
        # with it, as its admin, whatever the stack says of register.
        "register": True,
        "msrUser": upstream.admin_user,
        "msrToken": upstream.admin_token,
    }
    notes.append(f"msrHost/msrPort/msrCaCert -> the MSR stand-in {upstream.url} (private test CA)")
    notes.append(
        f"register -> true; msrUser/msrToken -> the MSR stand-in's {upstream.admin_user} "
        f"(was register: {str(stack.get('register', True)).lower()})"
    )
    notes.append(f"cacheNode -> {node}; publishMode -> host; image -> {image} (stand-in)")
    storage = config.get("storage")
    if isinstance(storage, dict) and holds_encrypted(storage):
        # An encrypted driver option (a share's credentials) cannot be read, and
        # the share is not reachable from the local swarm: a local volume of the
        # same name stands in.
        config["storage"] = {k: v for k, v in storage.items() if k not in {"driver", "driverOpts"}}
        notes.append("storage.driver/driverOpts -> a local volume (encrypted in the stack file)")
    config |= overrides or {}

    tls = dict(config.get("tls") or {})
    mode = tls.get("mode", "selfSigned")
    client_ca: str | None = None
    host = str(config.get("cacheHost") or "")
    if mode == "caSigned":
        if not _readable(tls, "caCertPem", "caKeyPem"):
            why = _why(tls, "caCertPem", "caKeyPem")
            ca = pki.make_ca("msr-cache rehearsal CA")
            tls |= {"caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}
            notes.append(f"tls.caCertPem/caKeyPem -> a test CA ({why})")
        client_ca = tls["caCertPem"]
    elif mode == "provided" and not _readable(tls, "certPem", "keyPem", "chainPem"):
        # The stack's own certificate was checked as written (expiry, SANs,
        # chain); without its key it cannot be served, so a test leaf with the
        # same names is.
        why = _why(tls, "certPem", "keyPem", "chainPem")
        root = pki.make_ca("msr-cache rehearsal root")
        inter = pki.make_ca("msr-cache rehearsal intermediate", issuer=root)
        names = [host, *tls.get("dnsNames", [])]
        dns = [n for n in names if not is_ip(n)]
        ips = [n for n in names if is_ip(n)] + list(tls.get("ipAddresses", []))
        leaf = pki.make_leaf(host, dns=dns, ips=ips, issuer=inter)
        tls |= {"certPem": leaf.cert_pem, "keyPem": leaf.key_pem, "chainPem": inter.cert_pem}
        notes.append(f"tls.certPem/keyPem/chainPem -> a test leaf and intermediate ({why})")
        client_ca = root.cert_pem
    tls = {k: v for k, v in tls.items() if not is_encrypted(v)}
    config["tls"] = tls
    # Every encrypted value is gone or replaced by now; what is left to keep
    # secret is the stand-in's token and the private key material put in.
    secret_keys = ("msrToken", "tls") if mode != "selfSigned" else ("msrToken",)
    return RehearsalConfig(config, secret_keys, client_ca, notes)


def _readable(tls: dict[str, Any], *fields: str) -> bool:
    """Every one of the mode's PEM fields that is given is readable, and the
    required ones (all but chainPem) are given."""
    if any(is_encrypted(tls.get(f)) for f in fields):
        return False
    return all(tls.get(f) for f in fields if f != "chainPem")


def _why(tls: dict[str, Any], *fields: str) -> str:
    encrypted = [f for f in fields if is_encrypted(tls.get(f))]
    if encrypted:
        return f"{', '.join(encrypted)} encrypted in the stack file; the rest was checked as written"
    return "not in the stack values given"
