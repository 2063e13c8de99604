"""The settings' typed model: one pydantic model per object key, and the form of
every single value (each validator raises ValueError("expected ...") or a
message of its own; components/settings_messages.py turns it into the line the
operator reads). Value rules shared with the policy pack are in rules.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationInfo
from pydantic.alias_generators import to_camel

from components import certs, rotation, rules
from components.rules import is_ip

# The object keys: Pulumi.yaml cannot declare them, so their defaults are the
# models' field defaults.
OBJECT_KEYS = ("tls", "storage", "secretFiles")
# Keys holding a list, not declared in Pulumi.yaml either: the nodes of a
# cache with several, and the caches of a stack with several.
LIST_KEYS = ("nodes", "caches")
# What a `caches` entry may set besides its name; every other key is the
# stack's (the top-level value is each entry's default).
ENTRY_KEYS = (
    "cacheHost", "cachePort", "cacheNode", "nodes", "replicas", "upstream", "upstreamCaPem",
    "publishMode", "storage", "tls", "blobTtl", "logLevel", "image", "cacheName", "serviceName",
)  # fmt: skip

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


def _from_rule(problem_of: Callable[[str], str | None]) -> Callable[[str], str]:
    """A field validator from a shared rule (components/rules.py): the rule's
    reason, which ends in the expected form, is what the operator reads."""

    def validate(value: str) -> str:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)
        return value

    return validate


host = _from_rule(rules.host_problem)


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


Host = Annotated[str, AfterValidator(host)]
Port = Annotated[int, Field(ge=1, le=65535)]
NodeName = Annotated[str, AfterValidator(_node)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
Image = Annotated[str, AfterValidator(_from_rule(rules.image_problem))]
BlobTtl = Annotated[str, AfterValidator(_from_rule(rules.blob_ttl_problem))]
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


class Model(BaseModel):
    # Keys are camelCase in stack config, snake_case in Python.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# A month before expiry: room for one missed weekly or monthly `pulumi up`.
DEFAULT_RENEW_BEFORE_HOURS = 720


class TlsSettings(Model):
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


_URL_RE = re.compile(r"^https?://[^\s/?#]+(?::[0-9]{1,5})?/?$")


def _endpoint(value: str) -> str:
    if value and not _URL_RE.match(value):
        raise ValueError(
            "expected an http(s):// URL of the S3-compatible endpoint, e.g. https://s3.example.com"
        )
    return value


def _auth_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+(?::[0-9]{1,5})?(/\S*)?$", value):
        raise ValueError(
            "expected the http(s):// URL of the Keystone identity service, e.g. https://keystone:5000/v3"
        )
    return value


Endpoint = Annotated[str, AfterValidator(_endpoint)]
Required = Annotated[str, Field(min_length=1)]
RootDirectory = Annotated[str, Field(pattern=r"^(/[^\s]*)?$")]


class S3Storage(Model):
    """`storage.s3`: Distribution's s3 driver. Without accessKey and secretKey the
    driver uses the node's IAM role (instance profile or environment)."""

    bucket: Required
    region: Required
    region_endpoint: Endpoint = ""
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    encrypt: bool = False
    secure: bool = True
    v4_auth: bool = True
    # Distribution's minimum is 5 MiB (S3's smallest multipart part).
    chunk_size: Annotated[int, Field(ge=5 * 2**20)] | None = None
    root_directory: RootDirectory = ""


class AzureStorage(Model):
    """`storage.azure`: Distribution's azure driver."""

    account_name: Required
    account_key: SecretStr
    container: Required


class GcsStorage(Model):
    """`storage.gcs`: Distribution's gcs driver. keyfile is the service account's
    JSON key (mounted as a Swarm secret); without it, the node's default
    credentials."""

    bucket: Required
    keyfile: SecretStr | None = None
    root_directory: RootDirectory = ""


class SwiftStorage(Model):
    """`storage.swift`: Distribution's swift driver (OpenStack object storage)."""

    username: Required
    password: SecretStr
    auth_url: Annotated[str, AfterValidator(_auth_url)]
    container: Required


# Storage shared by every task of a cache, wherever it runs: what replicas > 1 need.
OBJECT_STORAGE_MODES = ("s3", "azure", "gcs", "swift")
# The local volume driver mounting a network file system is shared too.
SHARED_LOCAL_TYPES = ("nfs", "nfs4", "cifs")


class StorageSettings(Model):
    """`msr-cache:storage`: where cached layers live."""

    mode: Literal["container", "volume", "s3", "azure", "gcs", "swift"] = "container"
    volume_name: VolumeName = ""
    driver: Annotated[str, Field(min_length=1, max_length=128)] = "local"
    driver_opts: dict[str, str] = {}
    # Keep the volume Pulumi made (retain_on_delete) when the stack is destroyed
    # or the volume renamed. Off by default: `pulumi destroy` leaves nothing of
    # the stack behind (a test cache must not); set it where the layers are worth
    # more than the disk (refetching them is a full pull over the WAN).
    retain: bool = False
    # The object store of mode s3, azure, gcs or swift (only the mode's own).
    s3: S3Storage | None = None
    azure: AzureStorage | None = None
    gcs: GcsStorage | None = None
    swift: SwiftStorage | None = None

    @property
    def shared(self) -> bool:
        """Whether every node sees the same layers: object storage, a volume
        driver other than local, or the local driver mounting NFS/CIFS."""
        if self.mode in OBJECT_STORAGE_MODES:
            return True
        if self.mode != "volume":
            return False
        fs_type = self.driver_opts.get("type", "").lower()
        return self.driver != "local" or fs_type in SHARED_LOCAL_TYPES


def _file_mode(value: str) -> str:
    if not _FILE_MODE_RE.match(value):
        raise ValueError('expected a quoted octal file mode, e.g. "0444" or "0400"')
    return value


_FILE_MODE_RE = re.compile(r"^0?[0-7]{3}$")
FileMode = Annotated[str, AfterValidator(_file_mode)]


class SecretFilesSettings(Model):
    """`msr-cache:secretFiles`: mode and owner of the secret files Swarm mounts
    for the cache (certificates, key, config.yml). The defaults are Swarm's own,
    which the documented stack file uses."""

    mode: FileMode = "0444"
    uid: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    gid: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0

    @property
    def mode_bits(self) -> int:
        return int(self.mode, 8)


# The model of each object key, for what is said about its fields.
OBJECT_MODELS: dict[str, type[Model]] = {
    "tls": TlsSettings,
    "storage": StorageSettings,
    "secretFiles": SecretFilesSettings,
}


def object_fields(key: str) -> set[str]:
    """The stack-file (camelCase) field names of object key `key`."""
    return {field.alias or name for name, field in OBJECT_MODELS[key].model_fields.items()}


_CACHE_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$")


def _cache_name(value: str) -> str:
    # MSR does not publish its rule for names; this is the docs' example form
    # ("region-asia") and what a Swarm object name may hold.
    if value and not _CACHE_NAME_RE.match(value):
        raise ValueError(
            "expected a name of letters, digits, '-', '_' or '.' (at most 63), e.g. region-asia, "
            "or empty for the stack name"
        )
    return value


CacheName = Annotated[str, AfterValidator(_cache_name)]


# A `caches` entry's name: it becomes part of Swarm object names, the node
# label key and MSR's name for the cache, so the strictest of those rules.
_ENTRY_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


def _entry_name(value: str) -> str:
    if not _ENTRY_NAME_RE.match(value):
        raise ValueError(
            "expected a name of lower-case letters, digits and '-' (at most 32, not starting or ending "
            "with '-'), e.g. asia"
        )
    return value


def _upstream(value: str) -> str:
    # A cache name of the stack, or a parent cache's URL; the stack-wide
    # checks resolve names (settings_stack.py).
    if value and not (_ENTRY_NAME_RE.match(value) or (_URL_RE.match(value) and value.startswith("https://"))):
        raise ValueError(
            "expected the name of another cache in msr-cache:caches, or the https:// URL of a parent "
            "cache outside the stack (with upstreamCaPem), or empty for MSR"
        )
    return value


def _cache_node(value: str) -> str:
    return _node(value) if value else value


EntryName = Annotated[str, AfterValidator(_entry_name)]
UpstreamRef = Annotated[str, AfterValidator(_upstream)]
# Swarm spreads a cache's tasks over its labelled nodes, at most one per node.
MAX_REPLICAS = 50


class Settings(Model):
    """The settings of one cache: the stack's keys, or one `caches` entry over them."""

    msr_host: Host
    msr_port: Port
    msr_ca_cert: CaPem
    fetch_msr_ca: bool
    cache_host: Host
    cache_port: Port
    # One of cacheNode and nodes is required (settings_checks.py).
    cache_node: Annotated[str, AfterValidator(_cache_node)] = ""
    nodes: list[NodeName] = []
    replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    # Where the cache fetches from: MSR (empty), another cache of the stack
    # (its name) or a parent cache outside it (its URL).
    upstream: UpstreamRef = ""
    upstream_ca_pem: CaPem = ""
    node_label: LabelKey
    image: Image
    blob_ttl: BlobTtl
    log_level: Literal["error", "warn", "info", "debug"]
    publish_mode: Literal["ingress", "host"]
    service_name: ServiceName
    # Registration with MSR (components/registration.py).
    # `register` in the stack; another name here (BaseModel's metaclass has a register()).
    register_cache: bool = Field(alias="register")
    cache_name: CacheName
    msr_user: str
    msr_token: SecretStr
    tls: TlsSettings = TlsSettings()
    storage: StorageSettings = StorageSettings()
    secret_files: SecretFilesSettings = SecretFilesSettings()
    # A `caches` entry's name; None for the stack's one cache without `caches`.
    name: EntryName | None = None
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
    def msr_url(self) -> str:
        return f"https://{_url_host(self.msr_host)}:{self.msr_port}"

    @property
    def cache_url(self) -> str:
        """The URL clients use: http.host in config.yml and the stack's cacheUrl."""
        port = "" if self.cache_port == 443 else f":{self.cache_port}"
        return f"https://{_url_host(self.cache_host)}{port}"

    @property
    def effective_nodes(self) -> list[str]:
        """The nodes that carry the cache's label: `nodes`, else `cacheNode`."""
        return list(self.nodes) or ([self.cache_node] if self.cache_node else [])

    @property
    def placement_label(self) -> str:
        """The node label key the cache's tasks are placed by. A cache of
        `caches` has its own (`dtr.cache.asia`), so that caches on different
        nodes never trade places; the stack's one cache keeps the documented
        `dtr.cache`."""
        return f"{self.node_label}.{self.name}" if self.name else self.node_label

    @property
    def parent_in_stack(self) -> str | None:
        """The name of the stack's cache this one fetches from, if any."""
        return self.upstream if self.upstream and not self.upstream.startswith("https://") else None

    def effective_service_name(self, stack: str) -> str:
        if self.service_name:
            return self.service_name
        return f"msr-cache-{stack}-{self.name}" if self.name else f"msr-cache-{stack}"

    def effective_cache_name(self, stack: str) -> str:
        if self.cache_name:
            return self.cache_name
        return f"{stack}-{self.name}" if self.name else stack

    def effective_volume_name(self, stack: str) -> str:
        return self.storage.volume_name or f"{self.effective_service_name(stack)}-data"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
