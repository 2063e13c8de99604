"""Several caches in one stack (`msr-cache:caches`), chained caches and caches with
several replicas: the real __main__.py under mocks."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from rehearsal import pki
from rehearsal.engine import Run, plain_strings, run_program

SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"
LABEL = "pulumi-python:dynamic/msrcache:NodeLabel"
CACHE = "msrcache:index:MsrCache"

TWO_SITES: dict[str, Any] = {
    "msrHost": "msr.example.com",
    "register": False,
    "publishMode": "host",
    "caches": [
        {"name": "asia", "cacheHost": "asia.example.com", "cacheNode": "node-asia"},
        {"name": "europe", "cacheHost": "europe.example.com", "cacheNode": "node-europe"},
    ],
}
CHAINED: dict[str, Any] = {
    **TWO_SITES,
    "caches": [
        {"name": "hub", "cacheHost": "hub.example.com", "cacheNode": "node-hub"},
        {"name": "site", "cacheHost": "site.example.com", "cacheNode": "node-site", "upstream": "hub"},
    ],
}
S3 = {
    "bucket": "layers",
    "region": "eu-west-1",
    "accessKey": "AKIAEXAMPLE",
    "secretKey": "s3-secret-value-42",
}
HA: dict[str, Any] = {
    **TWO_SITES,
    "caches": [
        {
            "name": "ha",
            "cacheHost": "cache.example.com",
            "nodes": ["node-a", "node-b"],
            "replicas": 2,
            "storage": {"mode": "s3", "s3": S3},
        }
    ],
}


def run(config: dict[str, Any], secret_keys: tuple[str, ...] = ()) -> Run:
    return run_program(config, secret_keys=secret_keys, base={})


def services(r: Run) -> dict[str, dict[str, Any]]:
    return {s.plain["name"]: s.plain for s in r.of_type(SERVICE)}


def secret_text(r: Run, name: str) -> str:
    return base64.b64decode(r.named(name).plain["data"]).decode()


def config_of(r: Run, cache: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(secret_text(r, f"msr-cache-{cache}-files-config-yml"))
    return loaded


@pytest.fixture(scope="module")
def two_sites() -> Run:
    return run(TWO_SITES)


@pytest.fixture(scope="module")
def chained() -> Run:
    return run(CHAINED)


@pytest.fixture(scope="module")
def ha() -> Run:
    return run(HA, secret_keys=("caches",))


# --- several caches ------------------------------------------------------


def test_each_cache_is_its_own_component_named_after_it(two_sites: Run) -> None:
    assert sorted(r.name for r in two_sites.of_type(CACHE)) == ["msr-cache-asia", "msr-cache-europe"]


def test_each_cache_has_its_own_service_named_after_stack_and_cache(two_sites: Run) -> None:
    assert sorted(services(two_sites)) == ["msr-cache-dev-asia", "msr-cache-dev-europe"]


def test_each_cache_is_placed_by_its_own_label_on_its_own_node(two_sites: Run) -> None:
    labels = {r.plain["node"]: r.plain["label"] for r in two_sites.of_type(LABEL)}
    assert labels == {"node-asia": "dtr.cache.asia", "node-europe": "dtr.cache.europe"}
    constraints = {n: s["taskSpec"]["placement"]["constraints"] for n, s in services(two_sites).items()}
    assert constraints == {
        "msr-cache-dev-asia": ["node.labels.dtr.cache.asia == true"],
        "msr-cache-dev-europe": ["node.labels.dtr.cache.europe == true"],
    }


def test_each_cache_serves_its_own_host_in_config_and_certificate(two_sites: Run) -> None:
    assert config_of(two_sites, "asia")["http"]["host"] == "https://asia.example.com"
    assert config_of(two_sites, "europe")["http"]["host"] == "https://europe.example.com"
    sans = {r.name: r.plain["dnsNames"] for r in two_sites.of_type("tls:index/selfSignedCert:SelfSignedCert")}
    assert sans == {
        "msr-cache-asia-tls-cert": ["asia.example.com"],
        "msr-cache-europe-tls-cert": ["europe.example.com"],
    }


def test_top_level_keys_are_every_caches_default_and_an_entry_overrides_them() -> None:
    config = {**TWO_SITES, "blobTtl": "48h", "caches": [*TWO_SITES["caches"]]}
    config["caches"][1] = {**config["caches"][1], "blobTtl": "12h"}
    r = run(config)
    ttl = {c: config_of(r, c)["middleware"]["registry"][0]["options"]["blobttl"] for c in ("asia", "europe")}
    assert ttl == {"asia": "48h", "europe": "12h"}


def test_every_swarm_object_carries_its_cache_name(two_sites: Run) -> None:
    for secret in two_sites.of_type(SECRET):
        labels = {lab["label"]: lab["value"] for lab in secret.plain["labels"]}
        assert labels["com.mirantis.msr-cache.cache"] == secret.name.split("-")[2]


def test_exports_are_a_map_keyed_by_cache_name_without_single_cache_outputs(two_sites: Run) -> None:
    assert sorted(two_sites.exports["caches"]) == ["asia", "europe"]
    assert two_sites.exports["caches"]["asia"]["cacheUrl"] == "https://asia.example.com"
    assert two_sites.exports["caches"]["europe"]["serviceName"] == "msr-cache-dev-europe"
    assert "cacheUrl" not in two_sites.exports and "serviceName" not in two_sites.exports


def test_one_cache_also_exports_the_single_cache_outputs() -> None:
    r = run({**TWO_SITES, "caches": TWO_SITES["caches"][:1]})
    assert r.exports["cacheUrl"] == "https://asia.example.com"
    assert r.exports["caches"]["asia"]["cacheUrl"] == r.exports["cacheUrl"]


def test_without_caches_the_map_holds_the_one_cache_under_its_msr_name() -> None:
    r = run_program()
    assert list(r.exports["caches"]) == ["dev"] and r.exports["cacheUrl"] == "https://cache.example.com"


def test_each_registered_cache_registers_under_stack_and_cache_name() -> None:
    config = {**TWO_SITES, "register": True, "msrUser": "admin", "msrToken": "token-token-token"}
    r = run(config, secret_keys=("msrToken",))
    names = sorted(x.plain["name"] for x in r.of_type("pulumi-python:dynamic/msrcache:Registration"))
    assert names == ["dev-asia", "dev-europe"]


# --- chaining --------------------------------------------------------------


def test_a_chained_cache_fetches_from_its_parents_url(chained: Run) -> None:
    options = config_of(chained, "site")["middleware"]["registry"][0]["options"]
    assert options["upstreams"] == ["https://hub.example.com"]
    assert chained.exports["caches"]["site"]["upstream"] == "https://hub.example.com"


def test_a_chained_cache_trusts_its_parents_certificate_and_only_that(chained: Run) -> None:
    options = config_of(chained, "site")["middleware"]["registry"][0]["options"]
    assert options["cas"] == ["/run/secrets/upstream.cert.pem"]
    hub_cert = secret_text(chained, "msr-cache-hub-files-cache-cert")
    assert secret_text(chained, "msr-cache-site-files-upstream-ca") == hub_cert
    mounts = {
        m["fileName"] for m in services(chained)["msr-cache-dev-site"]["taskSpec"]["containerSpec"]["secrets"]
    }
    assert "upstream.cert.pem" in mounts and "dtr.cert.pem" not in mounts


def test_a_chained_cache_is_created_only_once_its_parent_serves(chained: Run) -> None:
    """The child's registry reaches its parent as it starts and exits if it
    cannot: its service waits for the parent's (created once its tasks run);
    the parent's waits for no other cache's."""
    hub, site = "msr-cache-hub-service-service", "msr-cache-site-service-service"
    assert chained.urn_of(hub) in chained.dependencies_of(site)
    assert chained.urn_of(site) not in chained.dependencies_of(hub)
    assert not any("site" in urn for urn in chained.dependencies_of(hub))


def test_the_parent_still_fetches_from_msr(chained: Run) -> None:
    options = config_of(chained, "hub")["middleware"]["registry"][0]["options"]
    assert options["upstreams"] == ["https://msr.example.com:443"]


def test_a_parents_new_certificate_is_the_childs_new_trust() -> None:
    """Rotation of the parent (here: a new key algorithm, so a new key and
    certificate) changes the child's upstream CA secret with it."""
    caches = [dict(c) for c in CHAINED["caches"]]
    caches[0]["tls"] = {"keyAlgorithm": "ECDSA"}
    r = run({**CHAINED, "caches": caches})
    hub_cert = secret_text(r, "msr-cache-hub-files-cache-cert")
    assert secret_text(r, "msr-cache-site-files-upstream-ca") == hub_cert
    assert "BEGIN CERTIFICATE" in hub_cert and hub_cert != secret_text(
        run(CHAINED), "msr-cache-hub-files-cache-cert"
    )


def test_a_child_of_a_ca_signed_parent_trusts_the_ca() -> None:
    ca = pki.make_ca("Internal CA")
    caches = [dict(c) for c in CHAINED["caches"]]
    caches[0]["tls"] = {"mode": "caSigned", "caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}
    r = run({**CHAINED, "caches": caches}, secret_keys=("caches",))
    assert secret_text(r, "msr-cache-site-files-upstream-ca").strip() == ca.cert_pem.strip()


def test_a_parent_outside_the_stack_is_a_url_and_its_ca() -> None:
    ca = pki.make_ca("Parent CA")
    config = {
        **TWO_SITES,
        "caches": [
            {
                "name": "site",
                "cacheHost": "site.example.com",
                "cacheNode": "n1",
                "upstream": "https://parent.example.com:8443",
                "upstreamCaPem": ca.cert_pem,
            }
        ],
    }
    r = run(config)
    options = config_of(r, "site")["middleware"]["registry"][0]["options"]
    assert options["upstreams"] == ["https://parent.example.com:8443"]
    assert options["cas"] == ["/run/secrets/upstream.cert.pem"]
    assert secret_text(r, "msr-cache-site-files-upstream-ca") == ca.cert_pem


# --- high availability ----------------------------------------------------------


def test_replicas_run_at_most_one_task_per_labelled_node(ha: Run) -> None:
    svc = services(ha)["msr-cache-dev-ha"]
    assert svc["mode"]["replicated"]["replicas"] == 2
    assert svc["taskSpec"]["placement"]["maxReplicas"] == 1
    assert sorted(r.plain["node"] for r in ha.of_type(LABEL)) == ["node-a", "node-b"]
    assert {r.plain["label"] for r in ha.of_type(LABEL)} == {"dtr.cache.ha"}


def test_each_node_gets_a_label_resource_the_first_keeping_the_old_name(ha: Run) -> None:
    assert sorted(r.name for r in ha.of_type(LABEL)) == [
        "msr-cache-ha-node-label",
        "msr-cache-ha-node-label-node-b",
    ]


def test_one_replica_leaves_max_replicas_unset_as_deployed_stacks_have_it(two_sites: Run) -> None:
    for svc in services(two_sites).values():
        assert svc["taskSpec"]["placement"].get("maxReplicas") is None


def test_s3_storage_is_rendered_with_distributions_keys(ha: Run) -> None:
    storage = config_of(ha, "ha")["storage"]
    assert storage == {
        "delete": {"enabled": True},
        "redirect": {"disable": True},
        "s3": {
            "bucket": "layers", "region": "eu-west-1", "accesskey": "AKIAEXAMPLE",
            "secretkey": "s3-secret-value-42", "encrypt": False, "secure": True, "v4auth": True,
        },
    }  # fmt: skip


def test_object_storage_needs_no_mount(ha: Run) -> None:
    assert services(ha)["msr-cache-dev-ha"]["taskSpec"]["containerSpec"].get("mounts") is None


def test_storage_credentials_are_never_plain_in_any_input(ha: Run) -> None:
    for r in ha.resources:
        assert not any("s3-secret-value-42" in s for s in plain_strings(r.inputs)), r.name


def test_storage_credentials_are_in_no_export(ha: Run) -> None:
    assert "s3-secret-value-42" not in repr(ha.exports)


def test_iam_role_s3_renders_no_keys() -> None:
    cache = {**HA["caches"][0], "storage": {"mode": "s3", "s3": {"bucket": "b", "region": "us-east-1"}}}
    r = run({**HA, "caches": [cache]})
    s3 = config_of(r, "ha")["storage"]["s3"]
    assert "accesskey" not in s3 and "secretkey" not in s3


def test_gcs_keyfile_is_mounted_as_a_secret_that_config_names() -> None:
    gcs = {"bucket": "layers", "keyfile": '{"type": "service_account"}', "rootDirectory": "/cache"}
    cache = {**HA["caches"][0], "storage": {"mode": "gcs", "gcs": gcs}}
    r = run({**HA, "caches": [cache]}, secret_keys=("caches",))
    assert config_of(r, "ha")["storage"]["gcs"] == {
        "bucket": "layers",
        "keyfile": "/run/secrets/gcs.key.json",
        "rootdirectory": "/cache",
    }
    assert secret_text(r, "msr-cache-ha-files-gcs-keyfile") == '{"type": "service_account"}'


def test_a_single_cache_can_have_replicas_on_a_shared_volume() -> None:
    r = run_program(
        {
            "cacheNode": None,
            "nodes": ["n1", "n2", "n3"],
            "replicas": 3,
            "storage": {
                "mode": "volume",
                "driverOpts": {"type": "nfs", "o": "addr=10.0.0.9", "device": ":/c"},
            },
        }
    )
    assert r.service["mode"]["replicated"]["replicas"] == 3
    assert r.service["taskSpec"]["placement"]["maxReplicas"] == 1
    assert r.service["taskSpec"]["placement"]["constraints"] == ["node.labels.dtr.cache == true"]


def test_reordering_the_caches_changes_no_resource() -> None:
    """Entries are found by name: the same URNs and inputs in any order."""

    def inputs(config: dict[str, Any]) -> dict[str, Any]:
        r = run(config)
        return {r.urn_of(x.name): x.plain for x in r.resources if x.typ != LABEL}

    swapped = {**TWO_SITES, "caches": list(reversed(TWO_SITES["caches"]))}
    first, second = inputs(TWO_SITES), inputs(swapped)
    assert sorted(first) == sorted(second)
    generated = ("data", "privateKeyPem")
    for urn, props in first.items():
        assert {k: v for k, v in props.items() if k not in generated} == {
            k: v for k, v in second[urn].items() if k not in generated
        }, urn
