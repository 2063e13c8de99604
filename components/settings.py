"""Stack configuration, validated into one typed `Settings` object.

Every key lives in the `msr-cache:` namespace. Scalar keys and their defaults are
declared once, in Pulumi.yaml (the Pulumi CLI enforces their types); this module
reads those defaults from there, so the program, the tests and the CLI agree.
The object keys `tls` and `storage` cannot be declared in Pulumi.yaml, so their
defaults are the field defaults below.

All problems are collected and reported together, each naming its key and the
expected form, before any resource is registered. Secret values (private keys)
are held as `SecretStr` and never appear in an error.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
)
from pydantic.alias_generators import to_camel

from components import certs, rotation, rules
from components.rules import is_ip

NAMESPACE = "msr-cache"
PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"

# ---------------------------------------------------------------------------
# Forms of single values. Each validator raises ValueError("expected ...");
# the message is what the operator reads after the key name.
# ---------------------------------------------------------------------------

_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_LABEL_KEY_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$")
_SERVICE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
_VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_fqdn(value: str) -> bool:
    """A dotted DNS name (not an IP): what a client can resolve from anywhere."""
    return "." in value and rules.is_dns_name(value)


def _host(value: str) -> str:
    problem = rules.host_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _node(value: str) -> str:
    if not _NODE_RE.match(value):
        raise ValueError("expected a Swarm node hostname or node ID")
    return value


def _label_key(value: str) -> str:
    if not _LABEL_KEY_RE.match(value):
        raise ValueError(
            "expected a node label key of lower-case letters, digits, '.', '-' or '_' "
            "(dtr.cache for MSR 2, msr.cache for MSR 3)"
        )
    return value


def _image(value: str) -> str:
    problem = rules.image_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _blob_ttl(value: str) -> str:
    problem = rules.blob_ttl_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _rotation_period(value: str) -> str:
    rotation.period_hours(value)  # ValueError names the expected form
    return value


def _service_name(value: str) -> str:
    if value and not _SERVICE_RE.match(value):
        raise ValueError(
            "expected a Swarm service name of letters, digits, '-', '_' or '.' (at most 63), "
            "or empty for msr-cache-<stack>"
        )
    return value


def _volume_name(value: str) -> str:
    if value and not _VOLUME_RE.match(value):
        raise ValueError("expected a Docker volume name of letters, digits, '_', '.' or '-'")
    return value


def _ca_pem(value: str, info: ValidationInfo) -> str:
    if value:
        now = (info.context or {}).get("now")
        try:
            for cert in certs.load_certificates(value):
                if certs.is_expired(cert, now):
                    raise ValueError("holds an expired certificate; expected a valid PEM CA certificate")
        except certs.PemError as exc:
            raise ValueError(f"{exc}; expected PEM certificate text") from None
    return value


Host = Annotated[str, AfterValidator(_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
NodeName = Annotated[str, AfterValidator(_node)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
Image = Annotated[str, AfterValidator(_image)]
BlobTtl = Annotated[str, AfterValidator(_blob_ttl)]
RotationPeriod = Annotated[str, AfterValidator(_rotation_period)]
ServiceName = Annotated[str, AfterValidator(_service_name)]
VolumeName = Annotated[str, AfterValidator(_volume_name)]
CaPem = Annotated[str, AfterValidator(_ca_pem)]
IpAddress = Annotated[str, AfterValidator(lambda v: v if is_ip(v) else _raise("expected an IP address"))]
DnsName = Annotated[
    str,
    AfterValidator(lambda v: v if rules.is_dns_name(v) else _raise("expected a DNS name")),
]


def _raise(message: str) -> Any:
    raise ValueError(message)


class _Model(BaseModel):
    # Keys are camelCase in stack config, snake_case in Python.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# A month before expiry: room for one missed weekly or monthly `pulumi up`.
DEFAULT_RENEW_BEFORE_HOURS = 720


class TlsSettings(_Model):
    """`msr-cache:tls`: where the cache's key and certificate come from."""

    mode: Literal["selfSigned", "caSigned", "provided"] = "selfSigned"
    key_algorithm: Literal["RSA", "ECDSA"] = "RSA"
    rsa_bits: Literal[2048, 3072, 4096] = 4096
    validity_hours: Annotated[int, Field(ge=24, le=87600)] = 8760
    # Planned rotation period ("2160h", "90d"); None: only forced rotation.
    rotate_every: RotationPeriod | None = None
    # Hours before expiry from which `pulumi up` renews the certificate (pulumi-tls
    # early_renewal_hours); None: the default below. There is no "never": a
    # certificate that is never renewed expires under a running cache, and the
    # policy pack refuses one.
    renew_before_hours: Annotated[int, Field(ge=1, le=87600)] | None = None

    @property
    def effective_renew_before_hours(self) -> int:
        """30 days, or a quarter of the validity for shorter-lived certificates."""
        if self.renew_before_hours is not None:
            return self.renew_before_hours
        return min(DEFAULT_RENEW_BEFORE_HOURS, self.validity_hours // 4)

    dns_names: list[DnsName] = []
    ip_addresses: list[IpAddress] = []
    # caSigned: the internal CA that signs the cache certificate.
    ca_cert_pem: str | None = None
    ca_key_pem: SecretStr | None = None
    # provided: the operator's own certificate, key and intermediate chain.
    cert_pem: str | None = None
    key_pem: SecretStr | None = None
    chain_pem: str | None = None


class StorageSettings(_Model):
    """`msr-cache:storage`: where cached layers live."""

    mode: Literal["container", "volume"] = "container"
    volume_name: VolumeName = ""
    driver: Annotated[str, Field(min_length=1, max_length=128)] = "local"
    driver_opts: dict[str, str] = {}
    # Keep the volume Pulumi made (retain_on_delete) when the stack is destroyed
    # or the volume renamed. Off by default: `pulumi destroy` leaves nothing of
    # the stack behind (a test cache must not); set it where the layers are worth
    # more than the disk (refetching them is a full pull over the WAN).
    retain: bool = False


def _file_mode(value: str) -> str:
    if not _FILE_MODE_RE.match(value):
        raise ValueError('expected a quoted octal file mode, e.g. "0444" or "0400"')
    return value


_FILE_MODE_RE = re.compile(r"^0?[0-7]{3}$")
FileMode = Annotated[str, AfterValidator(_file_mode)]


class SecretFilesSettings(_Model):
    """`msr-cache:secretFiles`: mode and owner of the secret files Swarm mounts
    for the cache (certificates, key, config.yml). The defaults are Swarm's own,
    which the documented stack file uses."""

    mode: FileMode = "0444"
    uid: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    gid: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0

    @property
    def mode_bits(self) -> int:
        return int(self.mode, 8)


class Settings(_Model):
    msr_host: Host
    msr_port: Port
    msr_ca_cert: CaPem
    fetch_msr_ca: bool
    cache_host: Host
    cache_port: Port
    cache_node: NodeName
    node_label: LabelKey
    image: Image
    blob_ttl: BlobTtl
    log_level: Literal["error", "warn", "info", "debug"]
    publish_mode: Literal["ingress", "host"]
    service_name: ServiceName
    tls: TlsSettings = TlsSettings()
    storage: StorageSettings = StorageSettings()
    secret_files: SecretFilesSettings = SecretFilesSettings()
    # The keys the operator stored as Pulumi secrets: errors raised later (the
    # MSR CA fetch) must not quote their values either.
    _secret_keys: frozenset[str] = PrivateAttr(default=frozenset())

    def redact(self, message: str) -> str:
        """`message` with the values of secret keys blanked out."""
        raw = {"msrHost": self.msr_host, "cacheHost": self.cache_host, "cacheNode": self.cache_node}
        for key, value in raw.items():
            if key in self._secret_keys and len(value) >= 4:
                message = message.replace(value, "[secret]")
        return message

    @property
    def upstream_url(self) -> str:
        return f"https://{_url_host(self.msr_host)}:{self.msr_port}"

    @property
    def cache_url(self) -> str:
        """The URL clients use: http.host in config.yml and the stack's cacheUrl."""
        port = "" if self.cache_port == 443 else f":{self.cache_port}"
        return f"https://{_url_host(self.cache_host)}{port}"

    def effective_service_name(self, stack: str) -> str:
        return self.service_name or f"msr-cache-{stack}"

    def effective_volume_name(self, stack: str) -> str:
        return self.storage.volume_name or f"{self.effective_service_name(stack)}-data"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# Keys whose values may be echoed in an error (never the tls object: it holds keys).
_ECHO_SAFE = {
    "msrHost", "msrPort", "fetchMsrCa", "cacheHost", "cachePort", "cacheNode", "nodeLabel",
    "image", "blobTtl", "logLevel", "publishMode", "serviceName",
    "tls.mode", "tls.keyAlgorithm", "tls.rsaBits", "tls.validityHours", "tls.rotateEvery",
    "tls.renewBeforeHours",
    "storage.mode", "storage.volumeName", "storage.driver", "storage.retain",
    "secretFiles.mode", "secretFiles.uid", "secretFiles.gid",
}  # fmt: skip

# The expected form per key, for pydantic's own errors (missing, wrong type,
# not one of the choices), which do not know our vocabulary.
_FORMS = {
    "msrHost": "MSR's host name or IP address, e.g. msr.example.com",
    "msrPort": "an integer from 1 to 65535",
    "cachePort": "an integer from 1 to 65535",
    "fetchMsrCa": "true or false",
    "cacheHost": "the host name clients use for the cache, e.g. cache-asia.example.com",
    "cacheNode": "the hostname of the Swarm node that runs the cache (see docker node ls), or self",
    "logLevel": "one of error, warn, info, debug",
    "publishMode": "one of ingress, host",
    "tls": "an object with mode selfSigned, caSigned or provided (see README)",
    "tls.mode": "one of selfSigned, caSigned, provided",
    "tls.keyAlgorithm": "one of RSA, ECDSA",
    "tls.rsaBits": "one of 2048, 3072, 4096",
    "tls.validityHours": "an integer number of hours from 24 to 87600",
    "tls.rotateEvery": "a period in whole hours or days, e.g. 2160h or 90d, 24h+ below tls.validityHours",
    "tls.renewBeforeHours": "a whole number of hours from 1 to below half of tls.validityHours, e.g. 720",
    "tls.dnsNames": "a list of DNS names",
    "tls.ipAddresses": "a list of IP addresses",
    "storage": "an object with mode container or volume (see README)",
    "storage.mode": "one of container, volume",
    "storage.driver": "a Docker volume driver name, e.g. local",
    "storage.driverOpts": "a map of option names to string values",
    "storage.retain": "true or false",
    "secretFiles": 'an object with mode (e.g. "0444"), uid and gid (see README)',
    "secretFiles.mode": 'a quoted octal file mode, e.g. "0444" or "0400"',
    "secretFiles.uid": "a numeric user ID, e.g. 0",
    "secretFiles.gid": "a numeric group ID, e.g. 0",
}

_OBJECT_KEYS = ("tls", "storage", "secretFiles")
_SECRET_PATHS = {"tls.caKeyPem": "tls.caKeyPem", "tls.keyPem": "tls.keyPem"}


@dataclass(frozen=True)
class Problem:
    key: str  # path below the namespace, e.g. "tls.mode"
    message: str

    def __str__(self) -> str:
        # A key comes from the operator (an unknown field's name): one line per problem.
        return f"{NAMESPACE}:{_printable(self.key)}: {self.message}"


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


class SettingsError(Exception):
    """The stack configuration is invalid; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(
            f"The stack configuration is invalid ({len(problems)} {noun}):\n{lines}\n"
            f"Set values with `pulumi config set <key> <value>` (or --path for tls.* and "
            f"storage.*); README.md lists every key."
        )


@cache
def _declared() -> dict[str, Any]:
    """Pulumi.yaml's `config:` block, read once per process."""
    with PROJECT_FILE.open(encoding="utf-8") as fh:
        return dict((yaml.safe_load(fh) or {}).get("config", {}))


def project_defaults() -> dict[str, Any]:
    """Defaults declared in Pulumi.yaml's `config:` block, by key."""
    return {key: spec["default"] for key, spec in _declared().items() if "default" in spec}


def known_keys() -> set[str]:
    return set(_declared()) | set(_OBJECT_KEYS)


def parse_settings(
    raw: Mapping[str, Any],
    secret_keys: frozenset[str] = frozenset(),
    now: dt.datetime | None = None,
) -> Settings:
    """Validate raw stack values (key -> value, without namespace) into Settings.

    `secret_keys` are the keys the operator stored as Pulumi secrets; private keys
    given in plain text are refused so they never sit unencrypted in a stack file.
    Raises SettingsError listing every problem.
    """
    problems: list[Problem] = []
    known = known_keys()
    for key in sorted(set(raw) - known):
        hint = difflib.get_close_matches(key, sorted(known), n=1)
        tip = f" (did you mean {hint[0]}?)" if hint else ""
        problems.append(
            Problem(
                key,
                f"is not a setting of this program{tip}; expected one of {', '.join(sorted(known))}",
            )
        )

    values = {**project_defaults(), **{k: v for k, v in raw.items() if k in known}}
    for key in _OBJECT_KEYS:
        if values.get(key) is None:
            values.pop(key, None)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(values, context={"now": now})
    except ValidationError as exc:
        problems.extend(_from_pydantic(exc, values, secret_keys))
    # Cross-field checks run on whatever parts are valid, so one run lists
    # every problem, not only the field errors.
    problems.extend(_cross_checks(_valid_parts(values, settings, now), now))
    tls_raw = raw.get("tls")
    if isinstance(tls_raw, Mapping):
        for field in ("caKeyPem", "keyPem"):
            if tls_raw.get(field) and "tls" not in secret_keys:
                problems.append(
                    Problem(
                        f"tls.{field}",
                        "is stored in plain text; expected a Pulumi secret: "
                        f"pulumi config set --secret --path tls.{field} < key.pem",
                    )
                )
    if problems:
        raise SettingsError(_redacted(problems, raw, secret_keys))
    assert settings is not None
    settings._secret_keys = secret_keys
    return settings


def _secret_texts(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _secret_texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _secret_texts(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _redacted(problems: list[Problem], raw: Mapping[str, Any], secret_keys: frozenset[str]) -> list[Problem]:
    """Problems with every value stored as a secret blanked out, wherever a
    message came to quote it (a cross-check naming cacheHost, say)."""
    texts = sorted(
        {t for key in secret_keys for t in _secret_texts(raw.get(key)) if len(t) >= 4}, key=len, reverse=True
    )
    out = []
    for problem in problems:
        message = problem.message
        for text in texts:
            message = message.replace(text, "[secret]")
        out.append(Problem(problem.key, message))
    return out


def _from_pydantic(
    exc: ValidationError, values: Mapping[str, Any], secret_keys: frozenset[str]
) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in err["loc"])
        base = re.sub(r"\.\d+$", "", key)  # tls.dnsNames.0 -> tls.dnsNames
        form: str | None = _FORMS.get(base)
        if err["type"] == "missing":
            message = "is required"
        elif err["type"] == "extra_forbidden":
            message, form = "is not a known field", _FORMS.get(str(err["loc"][0]))
        elif err["type"] == "value_error":
            # Our validators say "expected <form>" or describe the fault themselves.
            text = str(err["msg"]).removeprefix("Value error, ")
            if text.startswith("expected "):
                message, form = "is not valid", text.removeprefix("expected ")
            else:
                message, form = text, None
        else:
            message, form = "is not valid", form or str(err["msg"])
        if form:
            message += f"; expected {form}"
        shown = _lookup(values, key) if key in _ECHO_SAFE and key.split(".")[0] not in secret_keys else None
        if shown is not None:
            message += f" ({_echo(str(shown))})"
        problems.append(Problem(key, message))
    return problems


def _echo(text: str) -> str:
    """What an error may show of a value: never PEM text (a key pasted into the
    wrong setting), at most 80 characters of anything else."""
    if "-----" in text or "PRIVATE KEY" in text.upper():
        return "got PEM text, not shown"
    return f"got {text[:80]!r}"


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class _Parts:
    """The parts of the settings the cross-checks need; None where invalid."""

    tls: TlsSettings | None
    storage: StorageSettings | None
    cache_host: str | None
    fetch_msr_ca: bool
    msr_ca_cert: str


def _valid_parts(values: Mapping[str, Any], s: Settings | None, now: dt.datetime | None) -> _Parts:
    if s is not None:
        return _Parts(s.tls, s.storage, s.cache_host, s.fetch_msr_ca, s.msr_ca_cert)

    def part(model: type[_Model], key: str) -> Any:
        try:
            return model.model_validate(values.get(key) or {}, context={"now": now})
        except ValidationError:
            return None

    host = values.get("cacheHost")
    try:
        host = _host(host) if isinstance(host, str) else None
    except ValueError:
        host = None
    ca = values.get("msrCaCert")
    return _Parts(
        tls=part(TlsSettings, "tls"),
        storage=part(StorageSettings, "storage"),
        cache_host=host,
        fetch_msr_ca=values.get("fetchMsrCa") in (True, "true", "True"),
        msr_ca_cert=ca if isinstance(ca, str) else "",
    )


def _cross_checks(s: _Parts, now: dt.datetime | None) -> list[Problem]:
    problems: list[Problem] = []
    if s.fetch_msr_ca and s.msr_ca_cert:
        problems.append(Problem("fetchMsrCa", "is true while msrCaCert is set; expected only one of the two"))
    if s.tls is not None:
        problems.extend(_tls_checks(s.tls, s.cache_host, now))
    if s.storage and s.storage.mode == "container" and (s.storage.volume_name or s.storage.driver_opts):
        problems.append(
            Problem("storage.mode", "is container, but volume settings are given; expected mode volume")
        )
    return problems


_MODE_FIELDS = {
    "selfSigned": set(),
    "caSigned": {"ca_cert_pem", "ca_key_pem"},
    "provided": {"cert_pem", "key_pem", "chain_pem"},
}
_MATERIAL = ("ca_cert_pem", "ca_key_pem", "cert_pem", "key_pem", "chain_pem")


def _tls_checks(tls: TlsSettings, cache_host: str | None, now: dt.datetime | None) -> list[Problem]:
    problems: list[Problem] = []
    for field in _MATERIAL:
        if getattr(tls, field) and field not in _MODE_FIELDS[tls.mode]:
            users = [m for m, fs in _MODE_FIELDS.items() if field in fs]
            problems.append(
                Problem(
                    f"tls.{to_camel(field)}",
                    f"is only used with tls.mode {users[0]}, but tls.mode is {tls.mode}; "
                    f"expected it unset, or tls.mode {users[0]}",
                )
            )
    if tls.mode == "caSigned":
        problems.extend(_check_ca(tls, now))
    elif tls.mode == "provided":
        problems.extend(_check_provided(tls, cache_host, now))
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


def _check_pem(key: str, loader: Callable[[str], Any], text: str, problems: list[Problem], form: str) -> Any:
    if not text:
        problems.append(Problem(key, f"is required for this tls.mode; expected {form}"))
        return None
    try:
        return loader(text)
    except certs.PemError as exc:
        problems.append(Problem(key, f"{exc}; expected {form}"))
        return None


def _check_ca(tls: TlsSettings, now: dt.datetime | None) -> list[Problem]:
    problems: list[Problem] = []
    ca_certs = _check_pem(
        "tls.caCertPem", certs.load_certificates, tls.ca_cert_pem or "", problems,
        "the internal CA's PEM certificate",
    )  # fmt: skip
    ca_key = _check_pem(
        "tls.caKeyPem", certs.load_private_key, _secret(tls.ca_key_pem), problems,
        "the internal CA's unencrypted PEM private key, set as a secret",
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


def _check_provided(tls: TlsSettings, cache_host: str | None, now: dt.datetime | None) -> list[Problem]:
    problems: list[Problem] = []
    chain = _check_pem(
        "tls.certPem", certs.load_certificates, tls.cert_pem or "", problems,
        "the cache's PEM certificate",
    )  # fmt: skip
    key = _check_pem(
        "tls.keyPem", certs.load_private_key, _secret(tls.key_pem), problems,
        "the cache's unencrypted PEM private key, set as a secret",
    )  # fmt: skip
    intermediates: list[Any] = []
    if tls.chain_pem:
        intermediates = _check_pem(
            "tls.chainPem", certs.load_certificates, tls.chain_pem, problems,
            "the intermediate CA certificate(s) in PEM",
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


# ---------------------------------------------------------------------------
# Reading from Pulumi config
# ---------------------------------------------------------------------------


def raw_from_pulumi_config() -> tuple[dict[str, Any], frozenset[str]]:
    """Every `msr-cache:` key the stack sets (decoded), and which are secrets.

    Read raw rather than through typed getters so that a wrong type becomes one
    of the listed problems instead of the first exception.
    """
    import contextlib
    import json

    from pulumi.runtime import config as rc

    merged = {**rc.get_config_env(), **rc.CONFIG.get()}
    # A program run gets its secret keys in PULUMI_CONFIG_SECRET_KEYS; the mocks
    # (set_all_config) keep them in-process. Both count.
    secret_env = set(rc.get_config_secret_keys_env())
    prefix = f"{NAMESPACE}:"
    raw: dict[str, Any] = {}
    secret: set[str] = set()
    for full_key in merged:
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        value = rc.get_config(full_key)
        if key in _OBJECT_KEYS and isinstance(value, str):
            # Not JSON: left as text, which validation reports as "not an object".
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        raw[key] = value
        if full_key in secret_env or rc.is_config_secret(full_key):
            secret.add(key)
    return raw, frozenset(secret)


def load_settings() -> Settings:
    """Settings for the running stack; raises pulumi.RunError (no traceback) when invalid."""
    import pulumi

    raw, secret_keys = raw_from_pulumi_config()
    try:
        return parse_settings(raw, secret_keys)
    except SettingsError as exc:
        raise pulumi.RunError(str(exc)) from None
