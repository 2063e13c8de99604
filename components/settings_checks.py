"""Checks across fields (a mode and the material it needs, rotation and renewal
against validity, PEMs that must parse and match), run on whatever parts of the
settings are valid so that one run lists every problem."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic.alias_generators import to_camel

from components import certs, rotation
from components.settings_messages import Problem
from components.settings_model import (
    DEFAULT_RENEW_BEFORE_HOURS,
    OBJECT_STORAGE_MODES,
    Model,
    Settings,
    StorageSettings,
    TlsSettings,
    object_fields,
)
from components.settings_model import host as host_form


@dataclass(frozen=True)
class _Parts:
    """The parts of the settings the cross-checks need; None where invalid."""

    tls: TlsSettings | None
    storage: StorageSettings | None
    cache_host: str | None
    fetch_msr_ca: bool
    msr_ca_cert: str
    register: bool
    msr_user: str
    msr_token_set: bool
    cache_node: str = ""
    nodes: tuple[str, ...] = ()
    replicas: int | None = 1
    upstream: str = ""
    upstream_ca_pem: str = ""


def valid_parts(values: Mapping[str, Any], s: Settings | None, now: dt.datetime | None) -> _Parts:
    if s is not None:
        return _Parts(
            s.tls, s.storage, s.cache_host, s.fetch_msr_ca, s.msr_ca_cert,
            s.register_cache, s.msr_user, bool(s.msr_token.get_secret_value()),
            s.cache_node, tuple(s.nodes), s.replicas, s.upstream, s.upstream_ca_pem,
        )  # fmt: skip

    def part(model: type[Model], key: str) -> Any:
        # Without its unknown fields (reported already), so that a misspelt
        # field does not hide the checks of the others.
        given = values.get(key) or {}
        if isinstance(given, Mapping):
            given = {k: v for k, v in given.items() if k in object_fields(key)}
        try:
            return model.model_validate(given, context={"now": now})
        except ValidationError:
            return None

    host = values.get("cacheHost")
    try:
        host = host_form(host) if isinstance(host, str) else None
    except ValueError:
        host = None
    ca = values.get("msrCaCert")
    node = values.get("cacheNode")
    nodes = values.get("nodes")
    replicas = values.get("replicas")
    upstream = values.get("upstream")
    upstream_ca = values.get("upstreamCaPem")
    return _Parts(
        tls=part(TlsSettings, "tls"),
        storage=part(StorageSettings, "storage"),
        cache_host=host,
        fetch_msr_ca=values.get("fetchMsrCa") in (True, "true", "True"),
        msr_ca_cert=ca if isinstance(ca, str) else "",
        register=values.get("register") not in (False, "false", "False"),
        msr_user=str(values.get("msrUser") or ""),
        msr_token_set=bool(values.get("msrToken")),
        cache_node=node if isinstance(node, str) else "",
        nodes=tuple(n for n in nodes if isinstance(n, str)) if isinstance(nodes, list) else (),
        replicas=replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else None,
        upstream=upstream if isinstance(upstream, str) else "",
        upstream_ca_pem=upstream_ca if isinstance(upstream_ca, str) else "",
    )


def cross_checks(
    s: _Parts, now: dt.datetime | None, encrypted: frozenset[str] = frozenset()
) -> list[Problem]:
    """`encrypted`: dotted paths of values that are present but unreadable (a
    stack file's `secure:` values, seen by the operator tools): they count as
    set, and the checks of their content are skipped."""
    problems: list[Problem] = []
    if s.fetch_msr_ca and (s.msr_ca_cert or "msrCaCert" in encrypted):
        problems.append(Problem("fetchMsrCa", "is true while msrCaCert is set; expected only one of the two"))
    problems.extend(_registration_checks(s, encrypted))
    if s.tls is not None:
        problems.extend(_tls_checks(s.tls, s.cache_host, now, encrypted))
    if s.storage is not None:
        problems.extend(_storage_checks(s.storage, encrypted))
    problems.extend(_placement_checks(s, encrypted))
    if (s.upstream_ca_pem or "upstreamCaPem" in encrypted) and not s.upstream.startswith("https://"):
        problems.append(
            Problem(
                "upstreamCaPem",
                "is set, but upstream is not a parent cache's URL; expected it unset, or upstream: "
                "https://<parent cache> (MSR's CA is msrCaCert; a cache of the stack is trusted by itself)",
            )
        )
    return problems


def _placement_checks(s: _Parts, encrypted: frozenset[str]) -> list[Problem]:
    """Where the tasks run: one node or several, and no more tasks than nodes."""
    problems: list[Problem] = []
    has_node = bool(s.cache_node) or "cacheNode" in encrypted
    has_nodes = bool(s.nodes) or any(p == "nodes" or p.startswith("nodes.") for p in encrypted)
    if has_node and has_nodes:
        problems.append(
            Problem(
                "nodes", "is set while cacheNode is set; expected only one of the two (nodes for several)"
            )
        )
    elif not (has_node or has_nodes):
        problems.append(
            Problem(
                "cacheNode",
                "is required; expected the hostname of the Swarm node that runs the cache (see docker node "
                "ls), or self; or nodes: [<node>, ...] for a cache on several nodes",
            )
        )
    seen: set[str] = set()
    for node in s.nodes:
        if node.lower() in seen:
            problems.append(Problem("nodes", f"lists {node} twice; expected each node once"))
        seen.add(node.lower())
    count = len(s.nodes) or (1 if has_node else 0)
    if s.replicas is not None and count and s.replicas > count and "nodes" not in encrypted:
        problems.append(
            Problem(
                "replicas",
                f"is {s.replicas}, but the cache has {count} labelled node{'s' if count > 1 else ''} and "
                f"runs at most one task per node; expected at most {count}, or more nodes in nodes",
            )
        )
    if s.replicas and s.replicas > 1 and s.storage is not None and not s.storage.shared:
        problems.append(
            Problem(
                "replicas",
                f"is {s.replicas}, but storage.mode {s.storage.mode} keeps the layers on each node, so each "
                "task would keep its own cache and an upload begun on one fails on another; expected shared "
                "storage: storage.mode s3, azure, gcs or swift, or volume with a shared driver (NFS or CIFS "
                "driverOpts), or replicas: 1",
            )
        )
    return problems


def _storage_checks(storage: StorageSettings, encrypted: frozenset[str]) -> list[Problem]:
    """Each storage mode with its own settings only."""
    problems: list[Problem] = []
    if storage.mode != "volume" and _volume_settings(storage, encrypted):
        problems.append(
            Problem(
                "storage.mode",
                f"is {storage.mode}, but volume settings (volumeName, driverOpts) are given; "
                "expected mode volume",
            )
        )
    for mode in OBJECT_STORAGE_MODES:
        given = getattr(storage, mode) is not None or any(
            p.startswith(f"storage.{mode}.") or p == f"storage.{mode}" for p in encrypted
        )
        if given and storage.mode != mode:
            problems.append(
                Problem(
                    f"storage.{mode}",
                    f"is only used with storage.mode {mode}, but storage.mode is {storage.mode}; "
                    f"expected it unset, or storage.mode {mode}",
                )
            )
        if not given and storage.mode == mode:
            problems.append(
                Problem(
                    f"storage.{mode}",
                    f"is required with storage.mode {mode}; expected an object with {_OBJECT_FIELDS[mode]} "
                    "(see README, Storage)",
                )
            )
    s3 = storage.s3
    if s3 is not None:
        access = s3.access_key is not None or "storage.s3.accessKey" in encrypted
        secret = s3.secret_key is not None or "storage.s3.secretKey" in encrypted
        if access != secret:
            missing = "storage.s3.secretKey" if access else "storage.s3.accessKey"
            problems.append(
                Problem(
                    missing,
                    "is required with the other S3 key; expected both accessKey and secretKey (as secrets), "
                    "or neither to use the node's IAM role",
                )
            )
    return problems


# What each object-storage mode's object holds, for the error that asks for it.
_OBJECT_FIELDS = {
    "s3": "bucket and region (accessKey and secretKey as secrets, or neither for an IAM role)",
    "azure": "accountName, accountKey (a secret) and container",
    "gcs": "bucket (and keyfile, the service account's JSON key, as a secret)",
    "swift": "username, password (a secret), authUrl and container",
}


def _registration_checks(s: _Parts, encrypted: frozenset[str]) -> list[Problem]:
    """Registering with MSR takes an admin's credentials; without them `up`
    would fail half-way, after the service was made."""
    if not s.register:
        return []
    problems = []
    if not (s.msr_user or "msrUser" in encrypted):
        problems.append(
            Problem(
                "msrUser",
                "is required while register is true; expected the MSR admin user that registers the "
                "cache (pulumi config set msrUser <user>), or register: false",
            )
        )
    if not (s.msr_token_set or "msrToken" in encrypted):
        problems.append(
            Problem(
                "msrToken",
                "is required while register is true; expected that user's access token or password as a "
                "secret (pulumi config set --secret msrToken), or register: false",
            )
        )
    return problems


def _volume_settings(storage: StorageSettings, encrypted: frozenset[str]) -> bool:
    if storage.volume_name or storage.driver_opts:
        return True
    return any(path.startswith(("storage.volumeName", "storage.driverOpts")) for path in encrypted)


_MODE_FIELDS = {
    "selfSigned": set(),
    "caSigned": {"ca_cert_pem", "ca_key_pem"},
    "provided": {"cert_pem", "key_pem", "chain_pem"},
}
_MATERIAL = ("ca_cert_pem", "ca_key_pem", "cert_pem", "key_pem", "chain_pem")


def _tls_checks(
    tls: TlsSettings, cache_host: str | None, now: dt.datetime | None, encrypted: frozenset[str]
) -> list[Problem]:
    problems: list[Problem] = []
    for field in _MATERIAL:
        present = getattr(tls, field) or f"tls.{to_camel(field)}" in encrypted
        if present and field not in _MODE_FIELDS[tls.mode]:
            users = [m for m, fs in _MODE_FIELDS.items() if field in fs]
            problems.append(
                Problem(
                    f"tls.{to_camel(field)}",
                    f"is only used with tls.mode {users[0]}, but tls.mode is {tls.mode}; "
                    f"expected it unset, or tls.mode {users[0]}",
                )
            )
    if tls.mode == "caSigned":
        problems.extend(_check_ca(tls, now, encrypted))
    elif tls.mode == "provided":
        problems.extend(_check_provided(tls, cache_host, now, encrypted))
    problems.extend(_check_rotation(tls))
    problems.extend(_check_renewal(tls))
    return problems


def _check_renewal(tls: TlsSettings) -> list[Problem]:
    hours = tls.renew_before_hours
    if hours is None:
        return []
    if tls.mode == "provided":
        return [
            Problem(
                "tls.renewBeforeHours",
                "cannot renew a provided certificate; expected it unset with tls.mode provided "
                "(renew by setting the new tls.certPem and tls.keyPem)",
            )
        ]
    # At or past half the validity, a renewed certificate is at once due again:
    # every `pulumi up` would replace it.
    if hours * 2 >= tls.validity_hours:
        return [
            Problem(
                "tls.renewBeforeHours",
                f"{hours} is not below half of tls.validityHours ({tls.validity_hours}); expected e.g. "
                f"{max(1, min(DEFAULT_RENEW_BEFORE_HOURS, tls.validity_hours // 4))}",
            )
        ]
    return []


def _check_rotation(tls: TlsSettings) -> list[Problem]:
    if tls.rotate_every is None:
        return []
    if tls.mode == "provided":
        return [
            Problem(
                "tls.rotateEvery",
                "cannot rotate a provided certificate; expected it unset with tls.mode provided "
                "(rotate by setting the new tls.certPem and tls.keyPem)",
            )
        ]
    hours = rotation.period_hours(tls.rotate_every)
    if hours < 24 or hours > tls.validity_hours - 24:
        return [
            Problem(
                "tls.rotateEvery",
                f"{tls.rotate_every} must be at least 24h and at least 24h shorter than "
                f"tls.validityHours ({tls.validity_hours}h), so a rotation happens before expiry; "
                f"expected e.g. {max(24, tls.validity_hours // 4 * 3)}h",
            )
        ]
    return []


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value else ""


def _check_pem(
    key: str,
    loader: Callable[[str], Any],
    text: str,
    problems: list[Problem],
    form: str,
    encrypted: frozenset[str],
) -> Any:
    """The loaded PEM, or None (a problem added, unless the value is encrypted:
    there, but not readable, so the checks that need it are skipped)."""
    if key in encrypted:
        return None
    if not text:
        problems.append(Problem(key, f"is required for this tls.mode; expected {form}"))
        return None
    try:
        return loader(text)
    except certs.PemError as exc:
        problems.append(Problem(key, f"{exc}; expected {form}"))
        return None


def _check_ca(tls: TlsSettings, now: dt.datetime | None, encrypted: frozenset[str]) -> list[Problem]:
    problems: list[Problem] = []
    ca_certs = _check_pem(
        "tls.caCertPem", certs.load_certificates, tls.ca_cert_pem or "", problems,
        "the internal CA's PEM certificate", encrypted,
    )  # fmt: skip
    ca_key = _check_pem(
        "tls.caKeyPem", certs.load_private_key, _secret(tls.ca_key_pem), problems,
        "the internal CA's unencrypted PEM private key, set as a secret", encrypted,
    )  # fmt: skip
    if ca_certs:
        ca = ca_certs[0]
        if not certs.is_ca(ca):
            problems.append(
                Problem(
                    "tls.caCertPem",
                    "is not a CA certificate (basicConstraints CA:TRUE missing); "
                    "expected the certificate of the CA that signs the cache certificate",
                )
            )
        if certs.is_expired(ca, now):
            problems.append(Problem("tls.caCertPem", "has expired; expected a CA valid now"))
        if ca_key is not None and not certs.key_matches_certificate(ca_key, ca):
            problems.append(
                Problem("tls.caKeyPem", "does not match tls.caCertPem; expected the CA certificate's key")
            )
    return problems


def _check_provided(
    tls: TlsSettings, cache_host: str | None, now: dt.datetime | None, encrypted: frozenset[str]
) -> list[Problem]:
    problems: list[Problem] = []
    chain = _check_pem(
        "tls.certPem", certs.load_certificates, tls.cert_pem or "", problems,
        "the cache's PEM certificate", encrypted,
    )  # fmt: skip
    key = _check_pem(
        "tls.keyPem", certs.load_private_key, _secret(tls.key_pem), problems,
        "the cache's unencrypted PEM private key, set as a secret", encrypted,
    )  # fmt: skip
    intermediates: list[Any] = []
    if tls.chain_pem:
        intermediates = _check_pem(
            "tls.chainPem", certs.load_certificates, tls.chain_pem, problems,
            "the intermediate CA certificate(s) in PEM", encrypted,
        ) or []  # fmt: skip
    if chain:
        leaf = chain[0]
        if key is not None and not certs.key_matches_certificate(key, leaf):
            problems.append(
                Problem("tls.keyPem", "does not match tls.certPem; expected the certificate's key")
            )
        if cache_host is not None and not certs.covers_host(leaf, cache_host):
            dns, ips = certs.subject_alt_names(leaf)
            names = ", ".join(dns + ips) or "none"
            problems.append(
                Problem(
                    "tls.certPem",
                    f"does not cover cacheHost {cache_host} (its subject alternative names: "
                    f"{names}); expected a certificate whose SANs include cacheHost",
                )
            )
        if certs.is_expired(leaf, now):
            problems.append(
                Problem(
                    "tls.certPem",
                    f"expired on {certs.not_after(leaf):%Y-%m-%d}; expected a valid certificate",
                )
            )
        if intermediates and leaf.issuer != intermediates[0].subject:
            problems.append(
                Problem(
                    "tls.chainPem",
                    "does not start with the issuer of tls.certPem; "
                    "expected the intermediate that signed it first",
                )
            )
    return problems
