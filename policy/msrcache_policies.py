"""The msr-cache policies: what every deployment of this program must look like.

Each policy is a plain function, ``check(resource_type, name, props, secret_outputs)``,
that returns violation messages (empty when the resource complies or the policy does not
apply to its type), wrapped in a mandatory ``ResourceValidationPolicy``. The functions
know nothing of the engine, so the tests run them on the program's real registrations.

What a resource policy sees (pulumi-policy 1.21, ``policy.py`` ``Analyze`` and
``deserialize.py``):

- ``props`` are the resource's *inputs*, with camelCase wire names
  (``taskSpec.containerSpec.image``). Nested values are read-only proxies that raise
  ``UnknownValueError`` on a value not known yet (during preview: ids, names, anything
  computed from another resource's output). ``plain()`` turns them into dicts and lists
  with ``UNKNOWN`` in those places, and every check reports nothing about what is
  ``UNKNOWN``; the same check runs again on ``pulumi up``, when the values are known.
- Secret values arrive **decrypted and unmarked**: ``Analyze`` deserializes with
  ``proxy_secrets=False``, which drops the secret wrapper. So the ``data`` of the
  Swarm secret that holds ``config.yml`` (base64, secret because of ``http.secret``)
  is readable here whenever it is known; the TLS, blob-TTL and shared-storage policies
  read it. Messages echo only the TLS paths, ``blobttl``, ``storage.delete.enabled`` and
  the names of the storage drivers, never other parts of ``config.yml`` (bucket names,
  keys and passwords stay out of them).

Limitation of the secret policy (``secret-inputs-marked-secret``): a policy cannot see
whether an input value was passed as a secret. pulumi-policy strips the marker before
the policy runs (only ``Remediate`` keeps it, for remediations), and this is an open
request upstream (pulumi/pulumi-policy#241: "It's not currently possible to check if a
stack config value or property is a secret from policies"). What the engine does pass
is the resource option ``additionalSecretOutputs`` (``args.opts``), and that is what
this policy checks: the property must be listed there, so the engine encrypts it in the
state whatever the program passed in. For ``Secret.data``, ``PrivateKey.privateKeyPem``,
``LocallySignedCert.caPrivateKeyPem`` and ``RandomPassword.result`` the provider SDKs
add the option themselves; for ``ServiceConfig.data`` only the program does
(components/swarm_files.py), and that is the one this policy really guards. Whether the
*input* was wrapped with ``pulumi.Output.secret`` is covered by the unit tests under
mocks (tests/unit/test_program.py), not by this pack.

Other limits: a resource policy sees one resource, so the TLS policy checks both halves
separately (the service mounts ``cache.cert.pem``/``cache.key.pem`` and a config at the
path its entrypoint reads, as a secret; every ``config.yml`` names exactly those two
files in ``http.tls``) rather than following the service's ``secretId`` to its secret.
``config.yml`` is a ``docker:index/secret:Secret`` (it holds ``http.secret``, and any API
client can read a Swarm config's data), told from the PEM secrets by its data: a secret
whose data decodes to a YAML mapping is ``config.yml``. A
``docker:index/serviceConfig:ServiceConfig`` is read as ``config.yml`` too (the program
made one before it moved ``config.yml`` to a secret); one whose data is not base64 YAML
is reported, and a service that mounts its ``config.yml`` from a config is refused.

One policy needs two resources at once: ``replicas-need-shared-storage``. Several tasks
share their layers either through a shared volume at /var/lib/registry (on the service)
or through object storage (s3, azure, gcs, swift, oss: the ``storage:`` section of
``config.yml``, on the Swarm secret, with no mount at all), so it is a *stack* policy
(``StackValidationPolicy``): it sees every resource's outputs, decrypted as above
(``AnalyzeStack`` deserializes the same way), and finds a service's ``config.yml`` among
the resources the service depends on and the secret named by the mount at its
entrypoint's path, keeping only that name when it is known (so with several caches in a
stack each service is judged by its own file). A stack policy runs once all resources
are registered: at the end of ``pulumi preview`` (and of the preview ``pulumi up`` runs
first), and at the end of the update itself, when the resources are already made. A
violation found only then (a new stack's ``config.yml`` is unknown in its first
preview, as ``http.secret`` is generated) fails the update after the fact; ``pulumi up
--skip-preview`` has no preview to stop it earlier.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

# The value rules the settings apply too (the pack's virtualenv installs the project).
from components import rules

# The program's file layout, from the program itself.
from components.registry_config import CACHE_CERT, CACHE_KEY, CONFIG_PATH, SECRETS_DIR, STORAGE_ROOT

# Resource types, as the engine names them (type tokens, not passwords: S105).
SERVICE: Final = "docker:index/service:Service"
SERVICE_CONFIG: Final = "docker:index/serviceConfig:ServiceConfig"
SWARM_SECRET: Final = "docker:index/secret:Secret"  # noqa: S105
PRIVATE_KEY: Final = "tls:index/privateKey:PrivateKey"
LOCALLY_SIGNED_CERT: Final = "tls:index/locallySignedCert:LocallySignedCert"
RANDOM_PASSWORD: Final = "random:index/randomPassword:RandomPassword"  # noqa: S105
SELF_SIGNED_CERT: Final = "tls:index/selfSignedCert:SelfSignedCert"
# The cache's registration with MSR (components/registration.py): holds MSR's token.
REGISTRATION: Final = "pulumi-python:dynamic/msrcache:Registration"
CERTIFICATES: Final = (SELF_SIGNED_CERT, LOCALLY_SIGNED_CERT)


# Properties that must be in additionalSecretOutputs, by resource type.
SECRET_PROPERTIES: Final[Mapping[str, tuple[str, ...]]] = {
    SWARM_SECRET: ("data",),
    SERVICE_CONFIG: ("data",),  # holds http.secret; only the program marks it
    PRIVATE_KEY: ("privateKeyPem",),
    LOCALLY_SIGNED_CERT: ("caPrivateKeyPem",),
    RANDOM_PASSWORD: ("result",),  # http.secret itself
    REGISTRATION: ("token",),  # the MSR admin's access token
}

# Volume driver options that make a `local` volume a network mount, shared by nodes.
SHARED_LOCAL_TYPES: Final = frozenset({"nfs", "nfs4", "cifs"})

# config.yml storage drivers that keep layers in object storage every task reaches
# (Distribution's drivers; `s3aws` is the s3 driver's other registered name).
OBJECT_STORAGE_DRIVERS: Final = frozenset({"s3", "s3aws", "azure", "gcs", "swift", "oss"})
# The keys of config.yml's `storage:` that are options, not drivers (Distribution's
# configuration.Storage: exactly one other key names the driver).
STORAGE_OPTIONS: Final = frozenset({"delete", "redirect", "cache", "maintenance", "tag"})


# ---------------------------------------------------------------------------
# Values as the engine gives them
# ---------------------------------------------------------------------------


class _Unknown:
    """A value the engine does not know yet (preview)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()

_UNKNOWN_SENTINELS: Final = frozenset(
    {
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    }
)
# How a secret travels on the wire (pulumi-policy deserialize.py); Analyze unwraps it
# already, this is for props taken straight from a program's registration.
_SIG_KEY: Final = "4dabf18193072939515e22adb298388d"
_SECRET_SIG: Final = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (a type signature)


def plain(value: Any) -> Any:
    """`value` as dicts, lists and scalars, with UNKNOWN where the engine does not know it.

    Accepts pulumi-policy's unknown-checking proxies, raw sentinel strings, secret
    wrappers (wire form or ``pulumi_policy.Secret``) and ordinary values.
    """
    if isinstance(value, Secret):
        return plain(value.value)
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        keys = list(value)
        if _SIG_KEY in keys and "value" in keys and _item(value, _SIG_KEY) == _SECRET_SIG:
            return _item(value, "value")
        return {key: _item(value, key) for key in keys}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_item(value, index) for index in range(len(value))]
    return value


def _item(container: Any, key: Any) -> Any:
    try:
        return plain(container[key])
    except UnknownValueError:
        return UNKNOWN


def _get(value: Any, *path: str) -> Any:
    """The value at `path`: UNKNOWN when it or a parent is unknown, None when absent."""
    for key in path:
        if value is UNKNOWN:
            return UNKNOWN
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _known_list(value: Any) -> list[Any] | None:
    """`value` as a list (None or absent is empty); None when the list itself is unknown."""
    if value is UNKNOWN:
        return None
    return list(value) if isinstance(value, list) else []


def _what(resource_type: str, name: str) -> str:
    return f"{resource_type} '{name}'"


# ---------------------------------------------------------------------------
# 1. image pinned
# ---------------------------------------------------------------------------


def check_image_pinned(
    resource_type: str, name: str, props: Mapping[str, Any], secret_outputs: Collection[str] = ()
) -> list[str]:
    """Service `taskSpec.containerSpec.image` has a tag other than `latest`, or a digest."""
    if resource_type != SERVICE:
        return []
    image = _get(props, "taskSpec", "containerSpec", "image")
    where = f"{_what(resource_type, name)}: taskSpec.containerSpec.image"
    if image is UNKNOWN:
        return []
    if not isinstance(image, str) or not image:
        return [f"{where} is not set; expected {rules.IMAGE_FORM}"]
    problem = rules.image_problem(image)
    return [f"{where} '{image}' {problem}"] if problem else []


# ---------------------------------------------------------------------------
# config.yml, read from the Swarm secret (or a ServiceConfig) that holds it
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ConfigText:
    document: Mapping[str, Any] | None
    problem: str | None  # why it could not be read; None when read or not visible


def _read_config(props: Mapping[str, Any]) -> _ConfigText:
    """config.yml from `data` (standard base64) or `dataRaw`; nothing when unknown or absent."""
    data = props.get("data")
    raw = props.get("dataRaw")
    if data is UNKNOWN or (data is None and raw is UNKNOWN):
        return _ConfigText(None, None)
    if isinstance(data, str):
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return _ConfigText(None, "data is not standard base64 of UTF-8 text")
    elif isinstance(raw, str):
        text = raw
    else:
        return _ConfigText(None, None)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return _ConfigText(None, "data does not decode to YAML")
    if not isinstance(document, Mapping):
        return _ConfigText(None, "data does not decode to a YAML mapping")
    return _ConfigText(document, None)


def _config_yml(resource_type: str, props: Mapping[str, Any]) -> _ConfigText | None:
    """The config.yml this resource holds; None when it holds none (another type, or a
    Swarm secret whose data is not a YAML mapping: a PEM, or not known yet)."""
    if resource_type == SERVICE_CONFIG:
        return _read_config(props)
    if resource_type == SWARM_SECRET:
        config = _read_config(props)
        return config if config.document is not None else None
    return None


def _unreadable(resource_type: str, name: str, problem: str) -> str:
    return (
        f"{_what(resource_type, name)}: {problem}; expected the cache's config.yml "
        "(Docker Distribution configuration), standard base64-encoded"
    )


# ---------------------------------------------------------------------------
# 2. TLS always configured
# ---------------------------------------------------------------------------


def _secret_file(file_name: str) -> str:
    """A secret mount's file name as a bare name ('x' and '/run/secrets/x' are the same file)."""
    prefix = SECRETS_DIR + "/"
    return file_name[len(prefix) :] if file_name.startswith(prefix) else file_name


def _entrypoint_config(container: Mapping[str, Any]) -> str | _Unknown:
    """Where the entrypoint reads config.yml: its last argument when that is a path,
    else CONFIG_PATH; UNKNOWN when the commands are not known."""
    commands = container.get("commands")
    if commands is None:
        return CONFIG_PATH
    if not isinstance(commands, list) or UNKNOWN in commands:
        return UNKNOWN
    last = commands[-1] if commands else None
    return last if isinstance(last, str) and last.startswith("/") else CONFIG_PATH


def check_tls_configured(
    resource_type: str, name: str, props: Mapping[str, Any], secret_outputs: Collection[str] = ()
) -> list[str]:
    """The service mounts cache.cert.pem, cache.key.pem and the config its entrypoint
    reads; config.yml's http.tls names those two files."""
    if resource_type == SERVICE:
        return _service_tls(resource_type, name, props)
    config = _config_yml(resource_type, props)
    return [] if config is None else _config_tls(resource_type, name, config)


def _service_tls(resource_type: str, name: str, props: Mapping[str, Any]) -> list[str]:
    what = _what(resource_type, name)
    container = _get(props, "taskSpec", "containerSpec")
    if container is UNKNOWN:
        return []
    if not isinstance(container, Mapping):
        container = {}
    problems: list[str] = []

    secrets = _known_list(container.get("secrets"))
    if secrets is not None:
        names = [_get(s, "fileName") for s in secrets]
        if UNKNOWN not in names:
            files = {_secret_file(n) for n in names if isinstance(n, str)}
            missing = [f for f in (CACHE_CERT, CACHE_KEY) if f not in files]
            if missing:
                problems.append(
                    f"{what}: does not mount the TLS secret(s) {', '.join(missing)} "
                    f"(mounted: {', '.join(sorted(files)) or 'none'}); expected "
                    f"taskSpec.containerSpec.secrets with fileName {CACHE_CERT} and {CACHE_KEY}"
                )

    # config.yml: where the entrypoint reads it (its last argument), as a secret.
    configs = _known_list(container.get("configs"))
    wanted = _entrypoint_config(container)
    if isinstance(wanted, str) and configs is not None and secrets is not None:
        config_targets = [_get(c, "fileName") for c in configs]
        secret_targets = [_get(s, "fileName") for s in secrets]
        if UNKNOWN not in config_targets + secret_targets:
            if wanted in config_targets:
                problems.append(
                    f"{what}: mounts {wanted} (config.yml, which holds http.secret) from a Swarm "
                    "config, whose data any API client can read (docker config inspect); expected "
                    f"it as a secret: taskSpec.containerSpec.secrets with fileName {wanted}"
                )
            elif wanted not in secret_targets:
                shown = ", ".join(str(t) for t in secret_targets + config_targets) or "none"
                problems.append(
                    f"{what}: the entrypoint reads {wanted}, but nothing is mounted there (files: "
                    f"{shown}), so config.yml (which enables TLS) is missing; expected "
                    f"taskSpec.containerSpec.secrets with fileName {wanted} holding the cache's config.yml"
                )
    return problems


def _config_tls(resource_type: str, name: str, config: _ConfigText) -> list[str]:
    if config.problem:
        return [_unreadable(resource_type, name, config.problem)]
    if config.document is None:
        return []
    tls = _get(config.document, "http", "tls")
    what = f"{_what(resource_type, name)}: config.yml http.tls"
    expected = {"certificate": f"{SECRETS_DIR}/{CACHE_CERT}", "key": f"{SECRETS_DIR}/{CACHE_KEY}"}
    form = f"certificate: {expected['certificate']} and key: {expected['key']}"
    if not isinstance(tls, Mapping):
        return [f"{what} is not set, so the cache would serve plain HTTP; expected {form}"]
    problems = []
    for field, path in expected.items():
        value = tls.get(field)
        if not value:
            problems.append(f"{what}.{field} is not set; expected {form}")
        elif value != path:
            problems.append(f"{what}.{field} is '{value}', not the mounted secret; expected {field}: {path}")
    return problems


# ---------------------------------------------------------------------------
# 3. placement and restart
# ---------------------------------------------------------------------------

_LABEL_CONSTRAINT_RE: Final = re.compile(
    r"^node\.labels\.[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\s*==\s*true$"
)


def _replicas(props: Mapping[str, Any]) -> int | None:
    """The replicated service's task count; None when not replicated or not known."""
    replicas = _get(props, "mode", "replicated", "replicas")
    if isinstance(replicas, (int, float)) and not isinstance(replicas, bool):
        return int(replicas)
    return None


def check_placement_and_restart(
    resource_type: str, name: str, props: Mapping[str, Any], secret_outputs: Collection[str] = ()
) -> list[str]:
    """Placed by a `node.labels.<label> == true` constraint (the label may be a cache's
    own, e.g. node.labels.dtr.cache.asia); several replicas at most one per node
    (placement.maxReplicas 1); restarted on failure."""
    if resource_type != SERVICE:
        return []
    what = _what(resource_type, name)
    problems = []
    constraints = _known_list(_get(props, "taskSpec", "placement", "constraints"))
    labelled = (
        constraints is None
        or UNKNOWN in constraints
        or any(isinstance(c, str) and _LABEL_CONSTRAINT_RE.match(c.strip()) for c in constraints)
    )
    if not labelled:
        shown = ", ".join(repr(c) for c in constraints or []) or "none"
        problems.append(
            f"{what}: taskSpec.placement.constraints ({shown}) select no labelled node; "
            "expected a constraint of the form 'node.labels.<label> == true', e.g. "
            "node.labels.dtr.cache == true"
        )
    replicas = _replicas(props)
    per_node = _get(props, "taskSpec", "placement", "maxReplicas")
    if replicas is not None and replicas > 1 and per_node is not UNKNOWN and per_node != 1:
        got = "not set (Swarm's default 0 is no limit)" if per_node is None else f"{per_node!r}"
        if isinstance(per_node, (int, float)) and not isinstance(per_node, bool):
            got = f"{int(per_node)}" + (" (no limit)" if per_node == 0 else "")
        problems.append(
            f"{what}: runs {replicas} replicas with taskSpec.placement.maxReplicas {got}, so Swarm "
            "may put two on one node: that node's loss stops both, and with a host-mode port the "
            "second cannot start; expected maxReplicas: 1 (at most one task per labelled node)"
        )
    condition = _get(props, "taskSpec", "restartPolicy", "condition")
    if condition is not UNKNOWN and condition != "on-failure":
        got = f"'{condition}'" if condition is not None else "not set (Swarm's default is any)"
        problems.append(f"{what}: taskSpec.restartPolicy.condition is {got}; expected 'on-failure'")
    return problems


# ---------------------------------------------------------------------------
# 4. secret-bearing properties marked secret
# ---------------------------------------------------------------------------


def check_secrets_marked(
    resource_type: str, name: str, props: Mapping[str, Any], secret_outputs: Collection[str] = ()
) -> list[str]:
    """Secret-bearing properties are listed in the resource's additionalSecretOutputs.

    See the module docstring: whether the input was passed as a secret is not visible to
    a policy; the engine-visible guarantee is additionalSecretOutputs.
    """
    wanted = SECRET_PROPERTIES.get(resource_type, ())
    missing = [p for p in wanted if p not in secret_outputs]
    if not missing:
        return []
    listed = ", ".join(sorted(secret_outputs)) or "none"
    return [
        f"{_what(resource_type, name)}: {', '.join(missing)} holds secret material but is not in "
        f"additionalSecretOutputs (listed: {listed}), so the state could keep it in plain text; "
        f"expected ResourceOptions(additional_secret_outputs=[{', '.join(repr(m) for m in missing)}]) "
        "and the value passed as pulumi.Output.secret"
    ]


# ---------------------------------------------------------------------------
# 5. blobttl within bounds
# ---------------------------------------------------------------------------


def check_blob_ttl(
    resource_type: str, name: str, props: Mapping[str, Any], secret_outputs: Collection[str] = ()
) -> list[str]:
    """config.yml's downstream middleware has options.blobttl from 1h to 720h, and
    storage.delete.enabled is true (the cache expires layers by deleting them), whatever
    the storage driver."""
    config = _config_yml(resource_type, props)
    if config is None:
        return []
    if config.problem:
        return [_unreadable(resource_type, name, config.problem)]
    if config.document is None:
        return []
    what = f"{_what(resource_type, name)}: config.yml"
    form = rules.BLOB_TTL_FORM
    registry = _get(config.document, "middleware", "registry")
    entries = [e for e in registry or [] if isinstance(e, Mapping) and e.get("name") == "downstream"]
    problems = _delete_enabled(what, config.document)
    if not entries:
        problems.append(
            f"{what} has no downstream middleware (middleware.registry entry named downstream); "
            f"expected it, with options.blobttl {form}"
        )
    for entry in entries:
        ttl = _get(entry, "options", "blobttl")
        if ttl is None:
            problems.append(f"{what} downstream options.blobttl is not set; expected {form}")
            continue
        problem = (
            rules.blob_ttl_problem(ttl) if isinstance(ttl, str) else f"is not a Go duration; expected {form}"
        )
        if problem:
            problems.append(f"{what} downstream options.blobttl {ttl!r} {problem}")
    return problems


def _delete_enabled(what: str, document: Mapping[str, Any]) -> list[str]:
    enabled = _get(document, "storage", "delete", "enabled")
    if enabled is True:
        return []
    got = "not set (Distribution's default is false)" if enabled is None else f"{enabled!r}"
    return [
        f"{what} storage.delete.enabled is {got}, so the cache cannot delete the layers blobttl "
        "expires; expected storage.delete.enabled: true (with any storage driver: filesystem, "
        "s3, azure, gcs, swift or oss)"
    ]


# ---------------------------------------------------------------------------
# 6. more than one task only with shared storage
# ---------------------------------------------------------------------------


_STORAGE_TARGETS: Final = (STORAGE_ROOT, STORAGE_ROOT + "/")


def _is_shared(mount: Mapping[str, Any]) -> bool | None:
    """True for a volume whose driver shares data between nodes; None when unknown."""
    kind = mount.get("type")
    options = mount.get("volumeOptions")
    if UNKNOWN in (kind, options):
        return None
    if kind != "volume":
        return False
    driver = _get(options, "driverName")
    driver_opts = _get(options, "driverOptions")
    if UNKNOWN in (driver, driver_opts):
        return None
    if driver and driver != "local":
        return True
    # The local driver mounting a network file system (type: nfs, o: addr=...) is shared.
    fs_type = driver_opts.get("type") if isinstance(driver_opts, Mapping) else None
    if fs_type is UNKNOWN:
        return None
    return isinstance(fs_type, str) and fs_type.lower() in SHARED_LOCAL_TYPES


@dataclass(frozen=True)
class StackResource:
    """One resource as a stack policy sees it: its outputs, plain(), and the URNs of the
    resources it depends on."""

    resource_type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackViolation:
    urn: str
    message: str


def _storage_drivers(document: Mapping[str, Any]) -> list[str]:
    """The storage drivers config.yml names (Distribution wants exactly one)."""
    storage = document.get("storage")
    if not isinstance(storage, Mapping):
        return []
    return sorted(str(key) for key in storage if key not in STORAGE_OPTIONS)


def _config_document(props: Mapping[str, Any]) -> Mapping[str, Any] | _Unknown | None:
    """config.yml held by a Swarm secret or ServiceConfig: UNKNOWN while its data is not
    known, None when it holds no YAML mapping (a PEM, or unreadable)."""
    config = _read_config(props)
    if config.document is not None:
        return config.document
    if config.problem is None and (props.get("data") is UNKNOWN or props.get("dataRaw") is UNKNOWN):
        return UNKNOWN
    return None


def _configs_of(service: StackResource, by_urn: Mapping[str, StackResource]) -> list[Any] | _Unknown:
    """The config.yml documents `service` may read: the Swarm secrets (or configs) it
    depends on or that have the name it mounts at its entrypoint's path, narrowed to that
    name when it is known. UNKNOWN when one of them is not known yet."""
    container = _get(service.props, "taskSpec", "containerSpec")
    container = container if isinstance(container, Mapping) else {}
    path = _entrypoint_config(container)
    mounted = [
        (_get(m, "fileName"), _get(m, kind))
        for field, kind in (("secrets", "secretName"), ("configs", "configName"))
        for m in _known_list(container.get(field)) or []
    ]
    # The name mounted there, when every mount is known; else any config.yml it depends on.
    known = path is not UNKNOWN and all(UNKNOWN not in pair for pair in mounted)
    wanted = {n for f, n in mounted if f == path and isinstance(n, str)} if known else set()
    linked = [by_urn[u] for u in service.dependencies if u in by_urn]
    named = [r for r in by_urn.values() if isinstance(r.props.get("name"), str) and r.props["name"] in wanted]
    documents: list[Any] = []
    for resource in {r.urn: r for r in [*linked, *named]}.values():
        if resource.resource_type not in (SWARM_SECRET, SERVICE_CONFIG):
            continue
        name = resource.props.get("name")
        if wanted and isinstance(name, str) and name not in wanted:
            continue  # another cache's config.yml, or a PEM
        document = _config_document(resource.props)
        if document is UNKNOWN:
            return UNKNOWN
        if document is not None:
            documents.append(document)
    return documents


def _replicas_storage(service: StackResource, by_urn: Mapping[str, StackResource]) -> list[str]:
    props = service.props
    replicas = _replicas(props)
    if replicas is not None and replicas > 1:
        tasks = f"runs {replicas} replicas"
    elif _get(props, "mode", "global") is True:
        tasks = "runs in global mode (one task per matching node)"
    else:
        return []
    mounts = _known_list(_get(props, "taskSpec", "containerSpec", "mounts"))
    if mounts is None or any(m is UNKNOWN or _get(m, "target") is UNKNOWN for m in mounts):
        return []
    storage = [m for m in mounts if isinstance(m, Mapping) and m.get("target") in _STORAGE_TARGETS]
    shared = [_is_shared(m) for m in storage]
    if None in shared or any(shared):
        return []
    documents = _configs_of(service, by_urn)
    if isinstance(documents, _Unknown):
        return []
    drivers = [_storage_drivers(d) for d in documents]
    if any(len(d) == 1 and d[0] in OBJECT_STORAGE_DRIVERS for d in drivers):
        return []
    found = "a mount that is not shared (no volume, or the local driver)" if storage else "no mount"
    if not drivers:
        in_config = "no config.yml of its own in this stack to show object storage"
    else:
        named = sorted({", ".join(d) or "no storage driver" for d in drivers})
        in_config = f"config.yml storage {' / '.join(named)}, not object storage"
    return [
        f"{_what(service.resource_type, service.name)}: {tasks} but has {found} at {STORAGE_ROOT} and "
        f"{in_config}, so each task keeps its own cache and uploads started on one task fail on "
        "another; expected object storage every task shares (config.yml storage: s3, azure, gcs, "
        "swift or oss; msr-cache:storage.mode s3, azure, gcs or swift), or a mount with target "
        f"{STORAGE_ROOT}, type volume and volumeOptions.driverName of a shared driver (not local, "
        "unless driverOptions.type is nfs, nfs4 or cifs), or replicas: 1"
    ]


def check_replicas_shared_storage(resources: Sequence[StackResource]) -> list[StackViolation]:
    """More than one task (replicas > 1, or global mode) needs shared storage: object
    storage in the service's config.yml, or /var/lib/registry on a shared volume."""
    by_urn = {r.urn: r for r in resources}
    return [
        StackViolation(service.urn, message)
        for service in resources
        if service.resource_type == SERVICE
        for message in _replicas_storage(service, by_urn)
    ]


# ---------------------------------------------------------------------------
# The policies
# ---------------------------------------------------------------------------

Check = Callable[[str, str, Mapping[str, Any], Collection[str]], list[str]]


# ---------------------------------------------------------------------------
# 7. certificates renewed before they expire
# ---------------------------------------------------------------------------


def check_certificate_renewed(
    resource_type: str, name: str, props: Mapping[str, Any], secret_outputs: Collection[str] = ()
) -> list[str]:
    """A certificate the program makes has earlyRenewalHours from 1 to below half
    its validity, so a `pulumi up` in that window renews it before it expires."""
    if resource_type not in CERTIFICATES:
        return []
    renew, validity = props.get("earlyRenewalHours"), props.get("validityPeriodHours")
    if renew is UNKNOWN or validity is UNKNOWN:
        return []
    what = f"{_what(resource_type, name)}: earlyRenewalHours"
    form = "from 1 to below half of validityPeriodHours (msr-cache:tls.renewBeforeHours)"
    if not isinstance(renew, (int, float)) or renew < 1:
        shown = renew if renew is not None else "not set"
        return [f"{what} is {shown}: the certificate is never renewed and expires; expected {form}"]
    if isinstance(validity, (int, float)) and renew * 2 >= validity:
        return [f"{what} {renew} puts the certificate in its renewal window for good; expected {form}"]
    return []


@dataclass(frozen=True)
class PolicySpec:
    name: str
    description: str
    check: Check


SPECS: Final[tuple[PolicySpec, ...]] = (
    PolicySpec(
        "image-pinned",
        "The cache's image is pinned by an explicit tag (not latest) or a sha256 digest.",
        check_image_pinned,
    ),
    PolicySpec(
        "tls-configured",
        "The cache always serves TLS: it mounts cache.cert.pem and cache.key.pem and its "
        "config.yml names them in http.tls.",
        check_tls_configured,
    ),
    PolicySpec(
        "placement-and-restart",
        "The cache runs on a labelled node (node.labels.<label> == true) and restarts on failure.",
        check_placement_and_restart,
    ),
    PolicySpec(
        "secret-inputs-marked-secret",
        "Private keys, Swarm secret data, config.yml (http.secret) and the random http.secret "
        "are in additionalSecretOutputs, so the state encrypts them.",
        check_secrets_marked,
    ),
    PolicySpec(
        "blob-ttl-in-bounds",
        "config.yml's downstream blobttl is a Go duration from 1h to 720h (30 days).",
        check_blob_ttl,
    ),
    PolicySpec(
        "certificate-renewed",
        "A certificate the program makes is renewed by `pulumi up` before it expires "
        "(earlyRenewalHours from 1 to below half its validity).",
        check_certificate_renewed,
    ),
)


StackCheck = Callable[[Sequence[StackResource]], list[StackViolation]]


@dataclass(frozen=True)
class StackPolicySpec:
    name: str
    description: str
    check: StackCheck


STACK_SPECS: Final[tuple[StackPolicySpec, ...]] = (
    StackPolicySpec(
        "replicas-need-shared-storage",
        "More than one cache task only with shared storage: object storage (s3, azure, gcs, "
        "swift, oss) in its config.yml, or /var/lib/registry on a shared (non-local) volume.",
        check_replicas_shared_storage,
    ),
)


def check_all(
    resource_type: str, name: str, props: Mapping[str, Any], secret_outputs: Collection[str] = ()
) -> dict[str, list[str]]:
    """Every policy's violations for one resource, by policy name (empty lists omitted)."""
    found = {spec.name: spec.check(resource_type, name, props, secret_outputs) for spec in SPECS}
    return {policy: messages for policy, messages in found.items() if messages}


def _validator(check: Check) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        props = plain(args.props)
        secret_outputs = frozenset(args.opts.additional_secret_outputs or ())
        for message in check(args.resource_type, args.name, props, secret_outputs):
            report_violation(message, None)

    return validate


def resource_policy(spec: PolicySpec) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(
        name=spec.name,
        description=spec.description,
        validate=_validator(spec.check),
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def check_stack(resources: Sequence[StackResource]) -> dict[str, list[StackViolation]]:
    """Every stack policy's violations, by policy name (empty lists omitted)."""
    found = {spec.name: spec.check(resources) for spec in STACK_SPECS}
    return {policy: violations for policy, violations in found.items() if violations}


def _stack_validator(check: StackCheck) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            StackResource(
                r.resource_type, r.name, r.urn, plain(r.props), tuple(d.urn for d in r.dependencies)
            )
            for r in args.resources
        ]
        for violation in check(resources):
            report_violation(violation.message, violation.urn)

    return validate


def stack_policy(spec: StackPolicySpec) -> StackValidationPolicy:
    return StackValidationPolicy(
        name=spec.name,
        description=spec.description,
        validate=_stack_validator(spec.check),
        enforcement_level=EnforcementLevel.MANDATORY,
    )


POLICIES: Final[list[Policy]] = [
    *(resource_policy(spec) for spec in SPECS),
    *(stack_policy(spec) for spec in STACK_SPECS),
]
