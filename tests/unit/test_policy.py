"""The policy pack in policy/: each policy alone, the real program under all of them, the pack.

Three levels:
- the pure check functions on tables of good and bad resources (and unknown values); the
  stack policy (replicas-need-shared-storage) on small stacks of a service and its config.yml;
- the real __main__.py under the mocks, every registered resource through every policy,
  both directly and through pulumi-policy's own analyzer servicer fed the request the
  engine would send (wire-format props with secret wrappers, additionalSecretOutputs; for
  the stack policy, every resource's outputs with its dependencies);
- policy/__main__.py run as the CLI runs it, with PolicyPack's gRPC server replaced.

The servicer (`_PolicyAnalyzerServicer`) and the module attributes patched in the last
test are private to pulumi-policy 1.21 (pinned <2 in policy/requirements.txt): they are
the only way to run the engine-facing path without the Pulumi CLI.
"""

from __future__ import annotations

import base64
import copy
import runpy
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pulumi_policy
import pulumi_policy.policy as policy_sdk
import pytest
import yaml
from google.protobuf import struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.mocks import MockMonitor
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE

from components import registry_config
from policy import msrcache_policies as mp
from rehearsal import pki
from rehearsal.engine import Run, run_program, secret

POLICY_DIR = Path(mp.__file__).resolve().parent
POLICY_NAMES = [spec.name for spec in mp.SPECS] + [spec.name for spec in mp.STACK_SPECS]
CONFIG_YML_SECRET = "msr-cache-files-config-yml"

# --- building resources ------------------------------------------------------------

DELETE = object()


def changed(props: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `props` with the dotted `path` set to `value` (or removed: DELETE)."""
    result = copy.deepcopy(props)
    node: Any = result
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return result


GOOD_SERVICE: dict[str, Any] = {
    "name": "msr-cache-dev",
    "mode": {"replicated": {"replicas": 1.0}},
    "taskSpec": {
        "containerSpec": {
            "image": "mirantis/dtr-content-cache:2.8.2",
            "commands": ["/start.sh", "/config.yml"],
            "secrets": [
                {"fileName": "cache.cert.pem", "fileMode": 256.0, "secretId": "c-id", "secretName": "c"},
                {"fileName": "cache.key.pem", "fileMode": 256.0, "secretId": "k-id", "secretName": "k"},
                {"fileName": "/config.yml", "fileMode": 292.0, "secretId": "cfg-id", "secretName": "cfg"},
            ],
        },
        "placement": {"constraints": ["node.labels.dtr.cache == true"]},
        "restartPolicy": {"condition": "on-failure", "delay": "5s", "window": "0s"},
    },
}
VOLUME_MOUNT = {"target": "/var/lib/registry", "type": "volume", "source": "data"}


def config_yml(**changes: Any) -> dict[str, Any]:
    """The program's own config.yml as a document, with top-level `changes`."""
    text = registry_config.render_config(
        registry_config.CacheConfig(
            cache_url="https://cache.example.com",
            upstreams=["https://msr.example.com:443"],
            http_secret="not-a-real-secret",
            trust_msr_ca=False,
        )
    )
    return {**yaml.safe_load(text), **changes}


def config_props(document: Any) -> dict[str, Any]:
    """Secret (or ServiceConfig) inputs holding `document` as the provider wants it (standard base64)."""
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    return {"data": base64.b64encode(text.encode()).decode()}


def with_tls(**tls: Any) -> dict[str, Any]:
    doc = config_yml()
    doc["http"]["tls"] = tls
    return config_props(doc)


def with_downstream(options: dict[str, Any] | None) -> dict[str, Any]:
    registry = [] if options is None else [{"name": "downstream", "options": options}]
    return config_props(config_yml(middleware={"registry": registry}))


def check(
    check_fn: mp.Check, typ: str, props: dict[str, Any], secret_outputs: tuple[str, ...] = ()
) -> list[str]:
    """Run one check as the wrapper does: on plain() props."""
    return check_fn(typ, "res", mp.plain(props), frozenset(secret_outputs))


def assert_rejected(messages: list[str], typ: str, fragment: str) -> None:
    assert messages, f"expected a violation mentioning {fragment!r}"
    assert any(fragment in m for m in messages), messages
    for message in messages:
        assert message.startswith(f"{typ} 'res'"), message  # names the resource
        assert "expected" in message, message  # and the expected form


# --- 1. image pinned ---------------------------------------------------------------

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "image",
    [
        "mirantis/dtr-content-cache:2.8.2",
        "127.0.0.1:5999/msrc-test/dtr-content-cache-stand-in:2.8.2",
        "registry.example.com:5000/mirantis/dtr-content-cache:2.8",
        f"mirantis/dtr-content-cache@{DIGEST}",
        f"127.0.0.1:5999/x/y:latest@{DIGEST}",  # the digest pins it
        "dtr-content-cache:v2.8.2-rc1",
    ],
)
def test_image_pinned_accepts(image: str) -> None:
    props = changed(GOOD_SERVICE, "taskSpec.containerSpec.image", image)
    assert check(mp.check_image_pinned, mp.SERVICE, props) == []


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("mirantis/dtr-content-cache:latest", "floating tag 'latest'"),
        ("127.0.0.1:5999/x/y:latest", "floating tag 'latest'"),
        ("mirantis/dtr-content-cache", "has no tag"),
        ("127.0.0.1:5999/x/y", "has no tag"),  # the port is not a tag
        ("localhost:5000/dtr-content-cache", "has no tag"),
        ("mirantis/dtr-content-cache@sha256:abc", "malformed digest"),
        ("mirantis/dtr-content-cache:", "is not an image reference"),
        (DELETE, "is not set"),
    ],
)
def test_image_pinned_rejects(image: Any, fragment: str) -> None:
    props = changed(GOOD_SERVICE, "taskSpec.containerSpec.image", image)
    assert_rejected(check(mp.check_image_pinned, mp.SERVICE, props), mp.SERVICE, fragment)


# --- 2. TLS always configured ------------------------------------------------------


@pytest.mark.parametrize(
    ("typ", "props"),
    [
        (mp.SERVICE, GOOD_SERVICE),
        (
            mp.SERVICE,
            changed(GOOD_SERVICE, "taskSpec.containerSpec.secrets.0.fileName", "/run/secrets/cache.cert.pem"),
        ),
        (
            mp.SERVICE,
            changed(
                GOOD_SERVICE,
                "taskSpec.containerSpec.secrets",
                [*GOOD_SERVICE["taskSpec"]["containerSpec"]["secrets"], {"fileName": "dtr.cert.pem"}],
            ),
        ),
        (
            mp.SERVICE,
            changed(
                GOOD_SERVICE,
                "taskSpec.containerSpec.secrets",
                [*GOOD_SERVICE["taskSpec"]["containerSpec"]["secrets"], {"fileName": "upstream.cert.pem"}],
            ),
        ),
        (mp.SWARM_SECRET, config_props(config_yml())),
        (mp.SWARM_SECRET, config_props(pki.make_ca("A PEM, not config.yml").cert_pem)),
        (mp.SERVICE_CONFIG, config_props(config_yml())),
        (mp.SERVICE_CONFIG, {"dataRaw": yaml.safe_dump(config_yml())}),
    ],
    ids=[
        "service",
        "absolute-secret-path",
        "with-msr-ca",
        "with-parent-cache-cert",
        "config-yml-secret",
        "pem-secret",
        "service-config",
        "service-config-dataRaw",
    ],
)
def test_tls_configured_accepts(typ: str, props: dict[str, Any]) -> None:
    assert check(mp.check_tls_configured, typ, props) == []


@pytest.mark.parametrize(
    ("typ", "props", "fragment"),
    [
        (
            mp.SERVICE,
            changed(
                GOOD_SERVICE,
                "taskSpec.containerSpec.secrets",
                GOOD_SERVICE["taskSpec"]["containerSpec"]["secrets"][:1],
            ),
            "does not mount the TLS secret(s) cache.key.pem",
        ),
        (
            mp.SERVICE,
            changed(GOOD_SERVICE, "taskSpec.containerSpec.secrets", DELETE),
            "cache.cert.pem, cache.key.pem",
        ),
        (
            mp.SERVICE,
            changed(
                GOOD_SERVICE,
                "taskSpec.containerSpec.secrets",
                GOOD_SERVICE["taskSpec"]["containerSpec"]["secrets"][:2],
            ),
            "the entrypoint reads /config.yml, but nothing is mounted there",
        ),
        (
            mp.SERVICE,
            changed(GOOD_SERVICE, "taskSpec.containerSpec.secrets.2.fileName", "/etc/registry.yml"),
            "the entrypoint reads /config.yml, but nothing is mounted there",
        ),
        (
            mp.SERVICE,
            changed(
                changed(
                    GOOD_SERVICE,
                    "taskSpec.containerSpec.secrets",
                    GOOD_SERVICE["taskSpec"]["containerSpec"]["secrets"][:2],
                ),
                "taskSpec.containerSpec.configs",
                [{"fileName": "/config.yml", "configId": "cfg-id", "configName": "cfg"}],
            ),
            "from a Swarm config, whose data any API client can read",
        ),
        (mp.SWARM_SECRET, with_tls(), "certificate is not set"),
        (mp.SWARM_SECRET, config_props(config_yml(http={"addr": ":443"})), "would serve plain HTTP"),
        (mp.SERVICE_CONFIG, config_props(config_yml(http={"addr": ":443"})), "would serve plain HTTP"),
        (
            mp.SWARM_SECRET,
            with_tls(certificate="/run/secrets/cache.cert.pem", key="/certs/other.key"),
            "key is '/certs/other.key', not the mounted secret",
        ),
        (mp.SERVICE_CONFIG, {"data": "not base64!"}, "not standard base64"),
        (mp.SERVICE_CONFIG, config_props("- just\n- a list\n"), "not decode to a YAML mapping"),
    ],
    ids=[
        "no-key-secret",
        "no-secrets",
        "no-config-yml",
        "config-yml-elsewhere",
        "config-yml-in-a-config",
        "tls-empty",
        "no-tls",
        "no-tls-service-config",
        "key-elsewhere",
        "not-base64",
        "not-a-mapping",
    ],
)
def test_tls_configured_rejects(typ: str, props: dict[str, Any], fragment: str) -> None:
    assert_rejected(check(mp.check_tls_configured, typ, props), typ, fragment)


def test_a_chained_caches_config_yml_trusting_its_parents_certificate_is_accepted() -> None:
    """A child cache's downstream middleware lists the parent's URL and certificate."""
    document = config_yml()
    options = document["middleware"]["registry"][0]["options"]
    options["upstreams"] = ["https://cache-asia.example.com:443"]
    options["cas"] = ["/run/secrets/upstream.cert.pem"]
    assert mp.check_all(mp.SWARM_SECRET, "res", mp.plain(config_props(document)), {"data"}) == {}


# --- 3. placement and restart ------------------------------------------------------


@pytest.mark.parametrize(
    "constraints",
    [
        ["node.labels.dtr.cache == true"],
        ["node.labels.msr.cache==true"],
        ["node.role == worker", "node.labels.dtr.cache == true"],
        ["node.labels.dtr.cache.asia == true"],  # a cache's own label, <nodeLabel>.<cacheName>
        ["node.labels.dtr.cache.eu-west_2 == true"],
    ],
)
def test_placement_and_restart_accepts(constraints: list[str]) -> None:
    props = changed(GOOD_SERVICE, "taskSpec.placement.constraints", constraints)
    assert check(mp.check_placement_and_restart, mp.SERVICE, props) == []


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("taskSpec.placement.constraints", ["node.role == manager"], "select no labelled node"),
        ("taskSpec.placement.constraints", ["node.labels.dtr.cache == false"], "select no labelled node"),
        ("taskSpec.placement.constraints", [], "(none) select no labelled node"),
        ("taskSpec.placement", DELETE, "select no labelled node"),
        ("taskSpec.restartPolicy.condition", "any", "condition is 'any'"),
        ("taskSpec.restartPolicy.condition", "none", "condition is 'none'"),
        ("taskSpec.restartPolicy", DELETE, "not set (Swarm's default is any)"),
    ],
)
def test_placement_and_restart_rejects(path: str, value: Any, fragment: str) -> None:
    props = changed(GOOD_SERVICE, path, value)
    assert_rejected(check(mp.check_placement_and_restart, mp.SERVICE, props), mp.SERVICE, fragment)


def spread(replicas: float, max_replicas: Any) -> dict[str, Any]:
    props = changed(GOOD_SERVICE, "mode.replicated.replicas", replicas)
    return props if max_replicas is DELETE else changed(props, "taskSpec.placement.maxReplicas", max_replicas)


def test_several_replicas_at_most_one_per_node_are_accepted() -> None:
    assert check(mp.check_placement_and_restart, mp.SERVICE, spread(3.0, 1.0)) == []


@pytest.mark.parametrize(
    ("max_replicas", "fragment"),
    [(DELETE, "maxReplicas not set"), (0.0, "maxReplicas 0 (no limit)"), (2.0, "maxReplicas 2")],
    ids=["unset", "no-limit", "two"],
)
def test_several_replicas_that_may_share_a_node_are_refused(max_replicas: Any, fragment: str) -> None:
    messages = check(mp.check_placement_and_restart, mp.SERVICE, spread(2.0, max_replicas))
    assert_rejected(messages, mp.SERVICE, fragment)
    assert "expected maxReplicas: 1" in messages[0]


def test_one_replica_needs_no_per_node_limit() -> None:
    assert check(mp.check_placement_and_restart, mp.SERVICE, spread(1.0, DELETE)) == []


def test_global_mode_needs_no_per_node_limit() -> None:
    props = changed(GOOD_SERVICE, "mode", {"global": True})
    assert check(mp.check_placement_and_restart, mp.SERVICE, props) == []


# --- 4. secret-bearing properties marked secret -----------------------------------

MARKED = [
    (mp.SWARM_SECRET, ("data",)),
    (mp.SERVICE_CONFIG, ("data",)),
    (mp.PRIVATE_KEY, ("privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8")),
    (mp.LOCALLY_SIGNED_CERT, ("caPrivateKeyPem", "caPrivateKeyPemWo")),
    (mp.RANDOM_PASSWORD, ("bcryptHash", "result")),
    (mp.REGISTRATION, ("token",)),
]


@pytest.mark.parametrize(
    ("typ", "secret_outputs"),
    [*MARKED, (mp.SERVICE, ()), ("tls:index/certRequest:CertRequest", ())],
)
def test_secrets_marked_accepts(typ: str, secret_outputs: tuple[str, ...]) -> None:
    assert check(mp.check_secrets_marked, typ, {}, secret_outputs) == []


@pytest.mark.parametrize(
    ("typ", "secret_outputs", "fragment"),
    [
        (mp.SERVICE_CONFIG, (), "data holds secret material but is not in additionalSecretOutputs"),
        (mp.SWARM_SECRET, ("labels",), "data holds secret material"),
        (mp.PRIVATE_KEY, ("privateKeyOpenssh",), "privateKeyPem holds secret material"),
        (mp.LOCALLY_SIGNED_CERT, (), "caPrivateKeyPem holds secret material"),
        (mp.RANDOM_PASSWORD, ("bcryptHash",), "result holds secret material"),
        (mp.REGISTRATION, (), "token holds secret material"),
    ],
)
def test_secrets_marked_rejects(typ: str, secret_outputs: tuple[str, ...], fragment: str) -> None:
    messages = check(mp.check_secrets_marked, typ, {}, secret_outputs)
    assert_rejected(messages, typ, fragment)
    assert "additional_secret_outputs=" in messages[0]


# --- 5. blobttl within bounds ------------------------------------------------------


@pytest.mark.parametrize("ttl", ["24h", "1h", "720h", "90m", "1h30m", "719h59m59s", "2592000s", "1.5h"])
def test_blob_ttl_accepts(ttl: str) -> None:
    props = with_downstream({"blobttl": ttl, "upstreams": ["https://msr.example.com:443"]})
    assert check(mp.check_blob_ttl, mp.SWARM_SECRET, props) == []


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"blobttl": "9999h"}, "'9999h' is longer than 720h"),
        ({"blobttl": "721h"}, "longer than 720h"),
        ({"blobttl": "720h1s"}, "longer than 720h"),
        ({"blobttl": "30m"}, "'30m' is shorter than 1h"),
        ({"blobttl": "59m59s"}, "shorter than 1h"),
        ({"blobttl": "-24h"}, "shorter than 1h"),
        ({"blobttl": "24 hours"}, "is not a Go duration"),
        ({"blobttl": "30d"}, "is not a Go duration"),
        ({"blobttl": 24}, "is not a Go duration"),
        ({"upstreams": ["https://msr.example.com:443"]}, "blobttl is not set"),
        (None, "has no downstream middleware"),
    ],
)
def test_blob_ttl_rejects(options: dict[str, Any] | None, fragment: str) -> None:
    messages = check(mp.check_blob_ttl, mp.SWARM_SECRET, with_downstream(options))
    assert_rejected(messages, mp.SWARM_SECRET, fragment)


def test_blob_ttl_is_read_from_a_service_config_too() -> None:
    messages = check(mp.check_blob_ttl, mp.SERVICE_CONFIG, with_downstream({"blobttl": "30m"}))
    assert_rejected(messages, mp.SERVICE_CONFIG, "shorter than 1h")


# Distribution's object-storage drivers with the keys the issue names (credentials made up).
OBJECT_STORAGE: dict[str, dict[str, Any]] = {
    "s3": {"bucket": "b", "region": "us-east-1", "accesskey": "AKIAEXAMPLE", "secretkey": "s3-secret-key"},
    "s3-iam-role": {"bucket": "b", "region": "us-east-1"},
    "s3aws": {"bucket": "b", "region": "us-east-1"},
    "azure": {"accountname": "acct", "accountkey": "azure-account-key", "container": "c"},
    "gcs": {"bucket": "b", "keyfile": "/run/secrets/gcs.json"},
    "swift": {"username": "u", "password": "swift-password", "authurl": "https://k", "container": "c"},
    "oss": {"accesskeyid": "id", "accesskeysecret": "oss-secret", "region": "oss-cn-beijing", "bucket": "b"},
}


def storage_config(driver: str, delete: Any = True) -> dict[str, Any]:
    """config.yml with `driver` (an OBJECT_STORAGE id, or filesystem) as the program renders it."""
    name = driver.split("-")[0]
    parameters = (
        {"rootdirectory": registry_config.STORAGE_ROOT} if name == "filesystem" else OBJECT_STORAGE[driver]
    )
    storage: dict[str, Any] = {"redirect": {"disable": True}, name: parameters}
    if delete is not DELETE:
        storage["delete"] = {"enabled": delete}
    return config_yml(storage=storage)


@pytest.mark.parametrize("driver", ["filesystem", *OBJECT_STORAGE])
def test_blob_ttl_accepts_deletes_enabled_with_any_storage_driver(driver: str) -> None:
    assert check(mp.check_blob_ttl, mp.SWARM_SECRET, config_props(storage_config(driver))) == []


@pytest.mark.parametrize(
    ("delete", "fragment"),
    [(False, "enabled is False"), ("true", "enabled is 'true'"), (DELETE, "enabled is not set")],
    ids=["false", "a-string", "unset"],
)
@pytest.mark.parametrize("driver", ["filesystem", "s3"])
def test_blob_ttl_refuses_deletes_disabled_with_any_storage_driver(
    driver: str, delete: Any, fragment: str
) -> None:
    messages = check(mp.check_blob_ttl, mp.SWARM_SECRET, config_props(storage_config(driver, delete)))
    assert_rejected(messages, mp.SWARM_SECRET, f"storage.delete.{fragment}")


# --- 6. replicas > 1 only with shared storage (a stack policy) ---------------------

SERVICE_URN = "urn:pulumi:dev::msr-cache::docker:index/service:Service::res"
CONFIG_URN = "urn:pulumi:dev::msr-cache::docker:index/secret:Secret::cfg"


def replicated(replicas: float, mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    props = changed(GOOD_SERVICE, "mode.replicated.replicas", replicas)
    return changed(props, "taskSpec.containerSpec.mounts", mounts) if mounts is not None else props


def stack_of(
    service: dict[str, Any], config: dict[str, Any] | None, *, depends: bool = True
) -> list[mp.StackResource]:
    """`service` (GOOD_SERVICE mounts secret 'cfg' at /config.yml) and, unless None, the
    Swarm secret named 'cfg' holding `config` (props), as a stack policy gets them."""
    resources = [
        mp.StackResource(mp.SERVICE, "res", SERVICE_URN, mp.plain(service), (CONFIG_URN,) if depends else ())
    ]
    if config is not None:
        resources.append(
            mp.StackResource(mp.SWARM_SECRET, "cfg", CONFIG_URN, mp.plain({"name": "cfg", **config}))
        )
    return resources


def storage_check(resources: list[mp.StackResource]) -> list[str]:
    """The policy's messages, each reported on the service."""
    violations = mp.check_replicas_shared_storage(resources)
    assert {v.urn for v in violations} <= {SERVICE_URN}, violations
    return [v.message for v in violations]


FILESYSTEM = config_props(config_yml())  # the program's own config.yml: filesystem storage


@pytest.mark.parametrize("driver", sorted(OBJECT_STORAGE))
def test_replicas_on_object_storage_are_accepted(driver: str) -> None:
    """No mount at /var/lib/registry: every task reads and writes the bucket."""
    resources = stack_of(replicated(2.0), config_props(storage_config(driver)))
    assert storage_check(resources) == []


def test_global_mode_on_object_storage_is_accepted() -> None:
    service = changed(GOOD_SERVICE, "mode", {"global": True})
    assert storage_check(stack_of(service, config_props(storage_config("s3")))) == []


def test_filesystem_storage_with_two_replicas_is_refused() -> None:
    messages = storage_check(stack_of(replicated(2.0), FILESYSTEM))
    assert_rejected(messages, mp.SERVICE, "runs 2 replicas but has no mount at /var/lib/registry")
    assert "config.yml storage filesystem, not object storage" in messages[0]


def test_the_refusal_offers_object_storage() -> None:
    (message,) = storage_check(stack_of(replicated(2.0), FILESYSTEM))
    assert (
        "expected object storage every task shares (config.yml storage: s3, azure, gcs, swift or oss"
        in message
    )
    assert "msr-cache:storage.mode s3, azure, gcs or swift" in message


@pytest.mark.parametrize(
    "props",
    [
        replicated(1.0),
        replicated(1.0, [{**VOLUME_MOUNT, "volumeOptions": {"driverName": "local"}}]),
        replicated(3.0, [{**VOLUME_MOUNT, "volumeOptions": {"driverName": "rexray/efs"}}]),
        replicated(
            2.0,
            [{**VOLUME_MOUNT, "volumeOptions": {"driverName": "local", "driverOptions": {"type": "nfs"}}}],
        ),
        replicated(
            2.0, [{**VOLUME_MOUNT, "target": "/var/lib/registry/", "volumeOptions": {"driverName": "nfs"}}]
        ),
        changed(
            changed(GOOD_SERVICE, "mode", {"global": True}),
            "taskSpec.containerSpec.mounts",
            [{**VOLUME_MOUNT, "volumeOptions": {"driverName": "cephfs"}}],
        ),
    ],
    ids=["one", "one-local", "three-shared-driver", "local-nfs", "trailing-slash", "global-shared"],
)
def test_filesystem_storage_on_a_shared_volume_is_accepted(props: dict[str, Any]) -> None:
    assert storage_check(stack_of(props, FILESYSTEM)) == []


@pytest.mark.parametrize(
    ("props", "fragment"),
    [
        (replicated(3.0), "runs 3 replicas but has no mount at /var/lib/registry"),
        (replicated(2.0, [{**VOLUME_MOUNT, "volumeOptions": {"driverName": "local"}}]), "not shared"),
        (replicated(2.0, [VOLUME_MOUNT]), "not shared"),  # no driver: local
        (replicated(2.0, [{**VOLUME_MOUNT, "type": "bind", "source": "/srv/registry"}]), "not shared"),
        (replicated(2.0, [{**VOLUME_MOUNT, "target": "/data"}]), "no mount at /var/lib/registry"),
        (changed(GOOD_SERVICE, "mode", {"global": True}), "runs in global mode"),
    ],
    ids=["no-mount", "local", "default-driver", "bind", "elsewhere", "global"],
)
def test_filesystem_storage_without_a_shared_volume_is_refused(props: dict[str, Any], fragment: str) -> None:
    assert_rejected(storage_check(stack_of(props, FILESYSTEM)), mp.SERVICE, fragment)


@pytest.mark.parametrize(
    ("storage", "fragment"),
    [
        ({"delete": {"enabled": True}, "inmemory": None}, "config.yml storage inmemory, not object storage"),
        (
            {"filesystem": {"rootdirectory": "/x"}, "s3": OBJECT_STORAGE["s3"]},
            "config.yml storage filesystem, s3, not object storage",  # Distribution wants one driver
        ),
        ({"delete": {"enabled": True}}, "config.yml storage no storage driver"),
    ],
    ids=["inmemory", "two-drivers", "no-driver"],
)
def test_storage_that_is_not_one_object_store_is_refused(storage: dict[str, Any], fragment: str) -> None:
    messages = storage_check(stack_of(replicated(2.0), config_props(config_yml(storage=storage))))
    assert_rejected(messages, mp.SERVICE, fragment)


def test_the_refusal_names_storage_drivers_but_never_their_credentials() -> None:
    storage = {"filesystem": {"rootdirectory": "/x"}, "swift": OBJECT_STORAGE["swift"]}
    (message,) = storage_check(stack_of(replicated(2.0), config_props(config_yml(storage=storage))))
    assert "filesystem, swift" in message
    assert "swift-password" not in message and "https://k" not in message


def test_a_service_without_its_config_yml_in_the_stack_is_refused() -> None:
    messages = storage_check(stack_of(replicated(2.0), None))
    assert_rejected(messages, mp.SERVICE, "no config.yml of its own in this stack")


def test_a_service_finds_its_config_yml_by_the_name_it_mounts_without_a_dependency() -> None:
    s3 = config_props(storage_config("s3"))
    assert storage_check(stack_of(replicated(2.0), s3, depends=False)) == []
    assert storage_check(stack_of(replicated(2.0), FILESYSTEM, depends=False))


def test_pem_secrets_the_service_depends_on_are_not_its_config_yml() -> None:
    pem = mp.StackResource(
        mp.SWARM_SECRET,
        "cert",
        "urn:cert",
        mp.plain({"name": "c", **config_props(pki.make_ca("X").cert_pem)}),
    )
    service, config = stack_of(replicated(2.0), config_props(storage_config("s3")))
    service = mp.StackResource(
        service.resource_type, service.name, service.urn, service.props, ("urn:cert", CONFIG_URN)
    )
    assert storage_check([service, pem, config]) == []


def test_each_service_is_judged_by_its_own_config_yml() -> None:
    """Two caches in one stack: asia on s3, europe on filesystem, europe depending on both
    config.yml secrets (as a chained child may depend on its parent's resources)."""

    def cache(site: str, config: dict[str, Any], depends: tuple[str, ...]) -> list[mp.StackResource]:
        service = changed(replicated(2.0), "taskSpec.containerSpec.secrets.2.secretName", f"cfg-{site}")
        return [
            mp.StackResource(mp.SERVICE, site, f"urn:svc-{site}", mp.plain(service), depends),
            mp.StackResource(
                mp.SWARM_SECRET, f"cfg-{site}", f"urn:cfg-{site}", mp.plain({"name": f"cfg-{site}", **config})
            ),
        ]

    resources = [
        *cache("asia", config_props(storage_config("s3")), ("urn:cfg-asia",)),
        *cache("europe", FILESYSTEM, ("urn:cfg-europe", "urn:cfg-asia")),
    ]
    violations = mp.check_replicas_shared_storage(resources)
    assert [v.urn for v in violations] == ["urn:svc-europe"]
    assert violations[0].message.startswith(f"{mp.SERVICE} 'europe': runs 2 replicas")


@pytest.mark.parametrize(
    ("service", "config"),
    [
        (replicated(2.0), {"data": secret(UNKNOWN_STRING_VALUE)}),
        (changed(GOOD_SERVICE, "mode.replicated.replicas", UNKNOWN_NUMBER_VALUE), FILESYSTEM),
        (
            replicated(3.0, [{**VOLUME_MOUNT, "volumeOptions": {"driverName": UNKNOWN_STRING_VALUE}}]),
            FILESYSTEM,
        ),
        (changed(replicated(3.0), "taskSpec.containerSpec.mounts", UNKNOWN_ARRAY_VALUE), FILESYSTEM),
    ],
    ids=["config-yml", "replicas", "volume-driver", "mounts"],
)
def test_unknown_values_in_preview_are_not_refused_by_the_storage_policy(
    service: dict[str, Any], config: dict[str, Any]
) -> None:
    assert storage_check(stack_of(service, config)) == []


# --- unknown values (preview) --------------------------------------------------------


@pytest.mark.parametrize(
    ("check_fn", "typ", "props"),
    [
        (
            mp.check_image_pinned,
            mp.SERVICE,
            changed(GOOD_SERVICE, "taskSpec.containerSpec.image", UNKNOWN_STRING_VALUE),
        ),
        (mp.check_image_pinned, mp.SERVICE, changed(GOOD_SERVICE, "taskSpec", UNKNOWN_STRING_VALUE)),
        (
            mp.check_tls_configured,
            mp.SERVICE,
            changed(
                changed(GOOD_SERVICE, "taskSpec.containerSpec.secrets", UNKNOWN_ARRAY_VALUE),
                "taskSpec.containerSpec.configs",
                UNKNOWN_ARRAY_VALUE,
            ),
        ),
        (
            mp.check_tls_configured,
            mp.SERVICE,
            changed(
                changed(GOOD_SERVICE, "taskSpec.containerSpec.secrets", [{"fileName": UNKNOWN_STRING_VALUE}]),
                "taskSpec.containerSpec.commands",
                UNKNOWN_ARRAY_VALUE,
            ),
        ),
        (mp.check_tls_configured, mp.SERVICE_CONFIG, {"data": secret(UNKNOWN_STRING_VALUE)}),
        (mp.check_tls_configured, mp.SWARM_SECRET, {"data": secret(UNKNOWN_STRING_VALUE)}),
        (mp.check_blob_ttl, mp.SERVICE_CONFIG, {"data": UNKNOWN_STRING_VALUE}),
        (mp.check_blob_ttl, mp.SWARM_SECRET, {"data": UNKNOWN_STRING_VALUE}),
        (
            mp.check_placement_and_restart,
            mp.SERVICE,
            changed(
                changed(GOOD_SERVICE, "taskSpec.placement.constraints", [UNKNOWN_STRING_VALUE]),
                "taskSpec.restartPolicy.condition",
                UNKNOWN_STRING_VALUE,
            ),
        ),
        (
            mp.check_placement_and_restart,
            mp.SERVICE,
            changed(replicated(3.0), "taskSpec.placement.maxReplicas", UNKNOWN_NUMBER_VALUE),
        ),
    ],
)
def test_nothing_is_reported_about_unknown_values(
    check_fn: mp.Check, typ: str, props: dict[str, Any]
) -> None:
    assert check(check_fn, typ, props) == []


def test_plain_reads_through_pulumi_policys_unknown_checking_proxy() -> None:
    from pulumi_policy.deserialize import deserialize_properties
    from pulumi_policy.proxy import unknown_checking_proxy

    raw = {"a": {"b": [UNKNOWN_STRING_VALUE, "x"], "c": UNKNOWN_NUMBER_VALUE}, "d": secret("s")}
    expected = {"a": {"b": [mp.UNKNOWN, "x"], "c": mp.UNKNOWN}, "d": "s"}
    assert mp.plain(unknown_checking_proxy(deserialize_properties(raw))) == expected  # as Analyze does
    assert mp.plain(unknown_checking_proxy(raw)) == expected
    assert mp.plain(raw) == expected


# --- the engine's path: pulumi-policy's analyzer servicer --------------------------


@dataclass
class Diagnostic:
    policy: str
    message: str
    mandatory: bool
    urn: str = ""


def analyze(typ: str, name: str, wire_props: dict[str, Any], secret_outputs: list[str]) -> list[Diagnostic]:
    """What `pulumi preview --policy-pack policy` reports for one resource: the AnalyzeRequest
    the engine sends (inputs with secret wrappers, resource options) through the servicer
    PolicyPack serves."""
    servicer = policy_sdk._PolicyAnalyzerServicer(
        "msr-cache", "0.1.0", list(mp.POLICIES), pulumi_policy.EnforcementLevel.MANDATORY
    )
    properties = struct_pb2.Struct()
    properties.update(wire_props)
    request = proto.AnalyzeRequest(
        type=typ,
        name=name,
        urn=f"urn:pulumi:dev::msr-cache::{typ}::{name}",
        properties=properties,
        options=proto.AnalyzerResourceOptions(additionalSecretOutputs=secret_outputs),
    )
    response = servicer.Analyze(request, None)
    return [
        Diagnostic(d.policyName, d.message, d.enforcementLevel == proto.MANDATORY)
        for d in response.diagnostics
    ]


@dataclass
class StackEntry:
    """One resource of an AnalyzeStackRequest: its outputs, wire form, and dependencies."""

    typ: str
    name: str
    urn: str
    outputs: dict[str, Any]
    dependencies: list[str]


def analyze_stack(resources: list[StackEntry]) -> list[Diagnostic]:
    """What the stack policies report at the end of `pulumi preview --policy-pack policy`:
    the AnalyzeStackRequest the engine sends, through the servicer PolicyPack serves."""
    servicer = policy_sdk._PolicyAnalyzerServicer(
        "msr-cache", "0.1.0", list(mp.POLICIES), pulumi_policy.EnforcementLevel.MANDATORY
    )
    entries = []
    for r in resources:
        properties = struct_pb2.Struct()
        properties.update(r.outputs)
        entries.append(
            proto.AnalyzerResource(
                type=r.typ, name=r.name, urn=r.urn, properties=properties, dependencies=r.dependencies
            )
        )
    response = servicer.AnalyzeStack(proto.AnalyzeStackRequest(resources=entries), None)
    return [
        Diagnostic(d.policyName, d.message, d.enforcementLevel == proto.MANDATORY, d.urn)
        for d in response.diagnostics
    ]


def test_secret_values_reach_resource_policies_decrypted_and_unmarked() -> None:
    """Why the secret policy checks additionalSecretOutputs: the marker is gone by the time
    a validation runs, while the value is readable (which the config.yml policies use)."""
    seen: dict[str, Any] = {}

    def spy(args: pulumi_policy.ResourceValidationArgs, report: pulumi_policy.ReportViolation) -> None:
        seen["data"] = args.props["data"]
        seen["secret_outputs"] = list(args.opts.additional_secret_outputs)

    servicer = policy_sdk._PolicyAnalyzerServicer(
        "spy",
        "0.0.1",
        [pulumi_policy.ResourceValidationPolicy("spy", "spy", spy)],
        pulumi_policy.EnforcementLevel.MANDATORY,
    )
    properties = struct_pb2.Struct()
    properties.update({"data": secret("c2VjcmV0")})
    servicer.Analyze(
        proto.AnalyzeRequest(
            type=mp.SERVICE_CONFIG,
            name="cfg",
            urn="urn:x",
            properties=properties,
            options=proto.AnalyzerResourceOptions(additionalSecretOutputs=["data"]),
        ),
        None,
    )
    assert seen == {"data": "c2VjcmV0", "secret_outputs": ["data"]}


# --- the real program ---------------------------------------------------------------


@dataclass
class Deployed:
    run: Run
    secret_outputs: dict[str, list[str]]

    def resources(self) -> Iterator[tuple[str, str, dict[str, Any], list[str]]]:
        """(type, name, wire inputs, additionalSecretOutputs) of every custom resource."""
        for r in self.run.resources:
            if not r.typ.startswith("msrcache:"):  # component resources are not analyzed
                yield r.typ, r.name, r.inputs, self.secret_outputs.get(r.name, [])

    def one(self, typ: str) -> tuple[str, dict[str, Any], list[str]]:
        (found,) = [(n, p, s) for t, n, p, s in self.resources() if t == typ]
        return found

    def config_yml(self) -> tuple[str, dict[str, Any], list[str]]:
        """The Swarm secret that holds config.yml."""
        (found,) = [(n, p, s) for t, n, p, s in self.resources() if n == CONFIG_YML_SECRET]
        return found

    def stack(self, **outputs: dict[str, Any]) -> list[StackEntry]:
        """Every custom resource as AnalyzeStack gets it; `outputs` replaces some, by name."""
        return [
            StackEntry(
                r.typ,
                r.name,
                self.run.urn_of(r.name),
                outputs.get(r.name, r.state),
                self.run.dependencies_of(r.name),
            )
            for r in self.run.resources
            if not r.typ.startswith("msrcache:")
        ]

    def service_outputs(self, path: str, value: Any) -> dict[str, dict[str, Any]]:
        """The service's outputs with `path` changed, for stack(**...)."""
        service = self.run.one(mp.SERVICE)
        return {service.name: changed(service.state, path, value)}


def deploy(config: dict[str, Any] | None = None, secret_keys: tuple[str, ...] = ()) -> Deployed:
    """run_program, also recording each registration's additionalSecretOutputs (the
    option the engine passes to analyzers; MockResourceArgs does not carry it)."""
    seen: dict[str, list[str]] = {}
    original = MockMonitor.RegisterResource

    def spy(self: MockMonitor, request: Any) -> Any:
        seen[request.name] = list(request.additionalSecretOutputs)
        return original(self, request)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MockMonitor, "RegisterResource", spy)
        run = run_program(config, secret_keys=secret_keys)
    return Deployed(run, seen)


def _ca_signed() -> tuple[dict[str, Any], tuple[str, ...]]:
    ca = pki.make_ca("Corp Issuing CA")
    return {"tls": {"mode": "caSigned", "caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}}, ("tls",)


def _provided() -> tuple[dict[str, Any], tuple[str, ...]]:
    root = pki.make_ca("Root")
    inter = pki.make_ca("Intermediate", issuer=root)
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"], issuer=inter)
    tls = {"mode": "provided", "certPem": leaf.cert_pem, "keyPem": leaf.key_pem, "chainPem": inter.cert_pem}
    return {"tls": tls, "msrCaCert": root.cert_pem}, ("tls",)


CONFIGURATIONS = {
    "default": lambda: ({}, ()),
    "ecdsa-host": lambda: ({"tls": {"keyAlgorithm": "ECDSA"}, "publishMode": "host"}, ()),
    "ca-signed": _ca_signed,
    "provided-with-msr-ca": _provided,
    "volume": lambda: ({"storage": {"mode": "volume"}}, ()),
    "nfs-volume": lambda: (
        {"storage": {"mode": "volume", "driverOpts": {"type": "nfs", "o": "addr=10.0.0.5", "device": ":/x"}}},
        (),
    ),
    "registered": lambda: (
        {"register": True, "msrUser": "admin", "msrToken": "an-access-token"},
        ("msrToken",),
    ),
}


@pytest.fixture(scope="module", params=sorted(CONFIGURATIONS))
def deployed(request: pytest.FixtureRequest) -> Deployed:
    config, secret_keys = CONFIGURATIONS[request.param]()
    return deploy(config, secret_keys)


def test_every_policy_accepts_every_resource_of_the_real_program(deployed: Deployed) -> None:
    for typ, name, inputs, secret_outputs in deployed.resources():
        assert mp.check_all(typ, name, mp.plain(inputs), frozenset(secret_outputs)) == {}, name


def test_every_stack_policy_accepts_the_real_program(deployed: Deployed) -> None:
    resources = [
        mp.StackResource(r.typ, r.name, r.urn, mp.plain(r.outputs), tuple(r.dependencies))
        for r in deployed.stack()
    ]
    assert mp.check_stack(resources) == {}


def test_the_engine_path_reports_nothing_for_the_real_program(deployed: Deployed) -> None:
    for typ, name, inputs, secret_outputs in deployed.resources():
        assert analyze(typ, name, inputs, secret_outputs) == [], name


def test_the_engine_stack_path_reports_nothing_for_the_real_program(deployed: Deployed) -> None:
    assert analyze_stack(deployed.stack()) == []


def test_the_registration_marks_its_token_secret() -> None:
    config, secret_keys = CONFIGURATIONS["registered"]()
    _, _, secret_outputs = deploy(config, secret_keys).one(mp.REGISTRATION)
    assert "token" in secret_outputs


def test_the_policies_have_something_to_check_in_the_real_program(deployed: Deployed) -> None:
    types = {typ for typ, *_ in deployed.resources()}
    assert {mp.SERVICE, mp.SWARM_SECRET, mp.RANDOM_PASSWORD} <= types
    # config.yml is a Swarm secret now, never a config (`docker config inspect` shows those).
    assert mp.SERVICE_CONFIG not in types
    # Its data is secret in the inputs, and still readable by the policies: a config.yml
    # without TLS in that secret is refused (test_config_yml_without_tls_is_refused).
    _, inputs, secret_outputs = deployed.config_yml()
    assert inputs["data"]["value"] and "data" in secret_outputs


def test_ca_signed_certificate_marks_the_ca_key_secret() -> None:
    config, secret_keys = _ca_signed()
    name, inputs, secret_outputs = deploy(config, secret_keys).one(mp.LOCALLY_SIGNED_CERT)
    assert "caPrivateKeyPem" in inputs and "caPrivateKeyPem" in secret_outputs
    assert analyze(
        mp.LOCALLY_SIGNED_CERT, name, inputs, [s for s in secret_outputs if s != "caPrivateKeyPem"]
    )


# --- one prop wrong: the policy that owns it says so --------------------------------


@pytest.fixture(scope="module")
def default() -> Deployed:
    return deploy()


def only(diagnostics: list[Diagnostic], policy: str, fragment: str) -> None:
    assert [d.policy for d in diagnostics] == [policy], diagnostics
    assert fragment in diagnostics[0].message and diagnostics[0].mandatory, diagnostics


def test_config_yml_without_tls_is_refused(default: Deployed) -> None:
    name, inputs, outs = default.config_yml()
    document = yaml.safe_load(base64.b64decode(inputs["data"]["value"]))
    del document["http"]["tls"]
    wire = {**inputs, "data": secret(base64.b64encode(yaml.safe_dump(document).encode()).decode())}
    only(analyze(mp.SWARM_SECRET, name, wire, outs), "tls-configured", "would serve plain HTTP")


def test_config_yml_with_a_short_blob_ttl_is_refused(default: Deployed) -> None:
    name, inputs, outs = default.config_yml()
    document = yaml.safe_load(base64.b64decode(inputs["data"]["value"]))
    document["middleware"]["registry"][0]["options"]["blobttl"] = "30m"
    wire = {**inputs, "data": secret(base64.b64encode(yaml.safe_dump(document).encode()).decode())}
    only(analyze(mp.SWARM_SECRET, name, wire, outs), "blob-ttl-in-bounds", "'30m' is shorter than 1h")


def test_the_config_yml_secret_not_marked_secret_is_refused(default: Deployed) -> None:
    name, inputs, outs = default.config_yml()
    only(
        analyze(mp.SWARM_SECRET, name, inputs, []),
        "secret-inputs-marked-secret",
        "data holds secret material",
    )
    assert outs == ["data"]


def test_a_service_that_mounts_config_yml_from_a_config_is_refused(default: Deployed) -> None:
    """As the program did before config.yml moved to a secret."""
    name, inputs, outs = default.one(mp.SERVICE)
    container = inputs["taskSpec"]["containerSpec"]
    moved = [s for s in container["secrets"] if s["fileName"] == "/config.yml"]
    kept = [s for s in container["secrets"] if s["fileName"] != "/config.yml"]
    assert moved, "the program mounts no secret at /config.yml"
    config = [{"configId": "cfg-id", "configName": "cfg", "fileName": "/config.yml"}]
    wire = changed(
        changed(inputs, "taskSpec.containerSpec.secrets", kept), "taskSpec.containerSpec.configs", config
    )
    only(analyze(mp.SERVICE, name, wire, outs), "tls-configured", "whose data any API client can read")


@pytest.mark.parametrize(
    ("path", "value", "policy", "fragment"),
    [
        ("taskSpec.restartPolicy.condition", "any", "placement-and-restart", "condition is 'any'"),
        ("taskSpec.placement.constraints", [], "placement-and-restart", "select no labelled node"),
        (
            "taskSpec.containerSpec.secrets.0.fileName",
            "other.pem",
            "tls-configured",
            "secret(s) cache.cert.pem",
        ),
    ],
)
def test_a_service_with_one_prop_wrong_is_refused(
    default: Deployed, path: str, value: Any, policy: str, fragment: str
) -> None:
    name, inputs, outs = default.one(mp.SERVICE)
    only(analyze(mp.SERVICE, name, changed(inputs, path, value), outs), policy, fragment)


def config_yml_outputs(
    deployed: Deployed, edit: Callable[[dict[str, Any]], None]
) -> dict[str, dict[str, Any]]:
    """The config.yml secret's outputs with its document edited, for stack(**...)."""
    secret_res = deployed.run.named(CONFIG_YML_SECRET)
    document = yaml.safe_load(base64.b64decode(secret_res.state["data"]["value"]))
    edit(document)
    data = secret(base64.b64encode(yaml.safe_dump(document).encode()).decode())
    return {CONFIG_YML_SECRET: {**secret_res.state, "data": data}}


def use_s3(document: dict[str, Any]) -> None:
    """config.yml's storage as the program renders object storage (issue 13)."""
    document["storage"] = {
        "delete": {"enabled": True},
        "redirect": {"disable": True},
        "s3": OBJECT_STORAGE["s3"],
    }


def test_the_deployed_service_with_three_replicas_on_filesystem_is_refused(default: Deployed) -> None:
    service = default.run.one(mp.SERVICE)
    diagnostics = analyze_stack(default.stack(**default.service_outputs("mode.replicated.replicas", 3)))
    only(diagnostics, "replicas-need-shared-storage", "runs 3 replicas")
    assert "config.yml storage filesystem, not object storage" in diagnostics[0].message
    assert diagnostics[0].urn == default.run.urn_of(service.name)  # reported on the service


def test_the_deployed_service_with_two_replicas_on_s3_is_accepted(default: Deployed) -> None:
    """The service as the program makes it with object storage: no mount, s3 in config.yml."""
    outputs = {
        **default.service_outputs("mode.replicated.replicas", 2),
        **config_yml_outputs(default, use_s3),
    }
    assert analyze_stack(default.stack(**outputs)) == []


def test_the_deployed_config_yml_on_s3_is_accepted_by_every_resource_policy(default: Deployed) -> None:
    name, inputs, outs = default.config_yml()
    wire = config_yml_outputs(default, use_s3)[CONFIG_YML_SECRET]
    assert analyze(mp.SWARM_SECRET, name, {**inputs, "data": wire["data"]}, outs) == []


def test_the_deployed_config_yml_without_deletes_is_refused(default: Deployed) -> None:
    name, inputs, outs = default.config_yml()

    def no_delete(document: dict[str, Any]) -> None:
        document["storage"]["delete"]["enabled"] = False

    wire = config_yml_outputs(default, no_delete)[CONFIG_YML_SECRET]
    only(
        analyze(mp.SWARM_SECRET, name, {**inputs, "data": wire["data"]}, outs),
        "blob-ttl-in-bounds",
        "storage.delete.enabled is False",
    )


def test_replicas_on_a_local_volume_are_refused() -> None:
    deployed = deploy({"storage": {"mode": "volume"}})
    diagnostics = analyze_stack(deployed.stack(**deployed.service_outputs("mode.replicated.replicas", 2)))
    only(diagnostics, "replicas-need-shared-storage", "not shared")


def test_replicas_on_an_nfs_volume_are_accepted() -> None:
    deployed = deploy(CONFIGURATIONS["nfs-volume"]()[0])
    assert analyze_stack(deployed.stack(**deployed.service_outputs("mode.replicated.replicas", 2))) == []


def test_replicas_with_config_yml_unknown_in_preview_are_not_refused(default: Deployed) -> None:
    outputs = {
        **default.service_outputs("mode.replicated.replicas", 2),
        CONFIG_YML_SECRET: {
            **default.run.named(CONFIG_YML_SECRET).state,
            "data": secret(UNKNOWN_STRING_VALUE),
        },
    }
    assert analyze_stack(default.stack(**outputs)) == []


def test_unknown_values_in_preview_are_not_reported_by_the_engine_path(default: Deployed) -> None:
    name, inputs, outs = default.one(mp.SERVICE)
    for path in (
        "taskSpec.containerSpec.image",
        "taskSpec.restartPolicy.condition",
        "taskSpec.containerSpec.secrets.0.fileName",
    ):
        inputs = changed(inputs, path, UNKNOWN_STRING_VALUE)
    inputs = changed(inputs, "taskSpec.placement.constraints", UNKNOWN_ARRAY_VALUE)
    assert analyze(mp.SERVICE, name, inputs, outs) == []
    name, inputs, outs = default.config_yml()
    assert analyze(mp.SWARM_SECRET, name, {**inputs, "data": secret(UNKNOWN_STRING_VALUE)}, outs) == []


# --- the pack as the CLI starts it ------------------------------------------------


def test_the_pack_builds_a_mandatory_policy_pack_with_every_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs policy/__main__.py the way the CLI does (runpy on the directory). PolicyPack's
    constructor validates its arguments, then starts a gRPC server and sleeps forever:
    the server is replaced and the sleep interrupted, as Ctrl-C would."""
    captured: dict[str, Any] = {}

    class FakeServer:
        def add_insecure_port(self, address: str) -> int:
            return 50051

        def start(self) -> None:
            captured["started"] = True

        def stop(self, grace: float | None) -> None:
            captured["stopped"] = True

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    def register(servicer: Any, server: Any) -> None:
        captured["servicer"] = servicer

    monkeypatch.setattr(policy_sdk, "grpc", SimpleNamespace(server=lambda *a, **k: FakeServer()))
    monkeypatch.setattr(policy_sdk, "time", SimpleNamespace(sleep=interrupt))
    monkeypatch.setattr(
        policy_sdk, "analyzer_pb2_grpc", SimpleNamespace(add_AnalyzerServicer_to_server=register)
    )
    sys.modules.pop("msrcache_policies", None)
    try:
        runpy.run_path(str(POLICY_DIR), run_name="__main__")
    finally:
        sys.modules.pop("msrcache_policies", None)

    assert captured.get("started") and captured.get("stopped")
    info = captured["servicer"].GetAnalyzerInfo(None, None)
    assert info.name == "msr-cache"
    assert [p.name for p in info.policies] == POLICY_NAMES
    assert {p.enforcementLevel for p in info.policies} == {proto.MANDATORY}
    assert all(p.description for p in info.policies)


def test_pack_files_declare_a_python_pack_with_bounded_requirements() -> None:
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python" and project["description"]
    requirements = (POLICY_DIR / "requirements.txt").read_text().splitlines()
    assert "pulumi-policy>=1.21,<2" in requirements
    # The program's own ranges, so the pack runs the same SDK and imports the rules.
    assert "-r ../requirements.txt" in requirements
