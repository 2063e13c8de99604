"""The real __main__.py under mocks: what it asks Pulumi to create.

The documented docker-stack.yml and config.yml (shared/docs/msr-cache-reference.md)
are the specification; each test checks one fact of them, or one way a setting
changes them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
import yaml
from cryptography import x509

from components import certs
from rehearsal import pki
from rehearsal.engine import Run, plain_strings, run_program, unwrap

SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
VOLUME = "docker:index/volume:Volume"
LABEL = "pulumi-python:dynamic/msrcache:NodeLabel"
KEY = "tls:index/privateKey:PrivateKey"
SELF_SIGNED = "tls:index/selfSignedCert:SelfSignedCert"
CSR = "tls:index/certRequest:CertRequest"
LOCALLY_SIGNED = "tls:index/locallySignedCert:LocallySignedCert"
PASSWORD = "random:index/randomPassword:RandomPassword"
CFG, SVC, LBL = "msr-cache-files-config-yml", "msr-cache-service-service", "msr-cache-node-label"


@pytest.fixture(scope="module")
def default_run() -> Run:
    return run_program()


def container(run: Run) -> dict:
    return run.service["taskSpec"]["containerSpec"]


def served_cert(run: Run) -> x509.Certificate:
    return certs.load_certificates(run.secret_data("cache-cert"))[0]


# --- docker-stack.yml, point by point ------------------------------------


def test_image_is_the_documented_content_cache(default_run: Run) -> None:
    assert container(default_run)["image"] == "mirantis/dtr-content-cache:2.8.2"


def test_entrypoint_is_start_sh_with_the_mounted_config(default_run: Run) -> None:
    assert container(default_run)["commands"] == ["/start.sh", "/config.yml"]


def test_config_is_mounted_at_config_yml(default_run: Run) -> None:
    # As a Swarm secret, not a config: it holds http.secret (README, "config.yml").
    cfg = default_run.named(CFG)
    (mount,) = [m for m in container(default_run)["secrets"] if m["fileName"] == "/config.yml"]
    assert mount["secretName"] == cfg.state["name"]
    assert "configs" not in container(default_run) and default_run.of_type(CONFIG) == []


def test_three_documented_secrets_are_mounted_under_run_secrets_read_only(default_run: Run) -> None:
    run = run_program(config={"msrCaCert": pki.make_ca().cert_pem})
    mounts = {m["fileName"]: m for m in container(run)["secrets"]}
    assert set(mounts) == {"cache.cert.pem", "cache.key.pem", "dtr.cert.pem", "/config.yml"}
    # secretFiles' defaults: Swarm's own, as the documented stack file gets.
    assert {(m["fileMode"], m["fileUid"], m["fileGid"]) for m in mounts.values()} == {(0o444, "0", "0")}


def test_secret_mounts_reference_the_created_secrets(default_run: Run) -> None:
    by_name = {r.state["name"]: r for r in default_run.of_type(SECRET)}
    for mount in container(default_run)["secrets"]:
        assert mount["secretName"] in by_name
        assert mount["secretId"] == f"{by_name[mount['secretName']].name}-id"


def test_port_443_is_published_to_container_port_443(default_run: Run) -> None:
    (port,) = default_run.service["endpointSpec"]["ports"]
    assert (port["publishedPort"], port["targetPort"], port["protocol"]) == (443, 443, "tcp")


def test_port_is_published_through_ingress_by_default(default_run: Run) -> None:
    (port,) = default_run.service["endpointSpec"]["ports"]
    assert port["publishMode"] == "ingress"


def test_one_replica(default_run: Run) -> None:
    assert default_run.service["mode"] == {"replicated": {"replicas": 1}}


def test_placed_on_the_node_carrying_the_label(default_run: Run) -> None:
    constraints = default_run.service["taskSpec"]["placement"]["constraints"]
    assert constraints == ["node.labels.dtr.cache == true"]


def test_restarts_on_failure_with_explicit_delay_and_window(default_run: Run) -> None:
    policy = default_run.service["taskSpec"]["restartPolicy"]
    assert policy == {"condition": "on-failure", "delay": "5s", "window": "0s"}


def test_up_waits_for_the_task_to_run(default_run: Run) -> None:
    assert default_run.service["convergeConfig"] == {"delay": "5s", "timeout": "5m"}


def test_update_stops_the_old_task_before_starting_the_new(default_run: Run) -> None:
    assert default_run.service["updateConfig"]["order"] == "stop-first"


def test_no_storage_mount_in_container_mode(default_run: Run) -> None:
    assert "mounts" not in container(default_run)
    assert default_run.of_type(VOLUME) == []


def test_service_is_named_after_the_stack(default_run: Run) -> None:
    assert default_run.service["name"] == "msr-cache-dev"
    assert run_program(stack="prod").service["name"] == "msr-cache-prod"


# --- config.yml, every key -----------------------------------------------


def test_config_yml_is_the_documented_file(default_run: Run) -> None:
    doc = yaml.safe_load(default_run.config_yml)
    secret = doc["http"].pop("secret")
    assert doc == {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"delete": {"enabled": True}, "filesystem": {"rootdirectory": "/var/lib/registry"}},
        "http": {
            "addr": "0.0.0.0:443",
            "host": "https://cache.example.com",
            "tls": {
                "certificate": "/run/secrets/cache.cert.pem",
                "key": "/run/secrets/cache.key.pem",
            },
        },
        "middleware": {
            "registry": [
                {
                    "name": "downstream",
                    "options": {"blobttl": "24h", "upstreams": ["https://msr.example.com:443"]},
                }
            ]
        },
    }
    assert len(secret) == 48


def test_http_secret_is_the_generated_random_value(default_run: Run) -> None:
    doc = yaml.safe_load(default_run.config_yml)
    password = unwrap(default_run.one(PASSWORD).state["result"])
    assert doc["http"]["secret"] == password
    assert default_run.one(PASSWORD).plain["special"] is False


def test_cas_trusts_dtr_cert_pem_when_msr_ca_is_given() -> None:
    run = run_program(config={"msrCaCert": pki.make_ca().cert_pem})
    options = yaml.safe_load(run.config_yml)["middleware"]["registry"][0]["options"]
    assert options["cas"] == ["/run/secrets/dtr.cert.pem"]


def test_no_cas_and_no_msr_ca_secret_when_msr_is_publicly_trusted(default_run: Run) -> None:
    options = yaml.safe_load(default_run.config_yml)["middleware"]["registry"][0]["options"]
    assert "cas" not in options
    assert {r.name for r in default_run.of_type(SECRET)} == {
        "msr-cache-files-cache-key",
        "msr-cache-files-cache-cert",
        CFG,
    }


def test_every_path_config_yml_names_is_mounted() -> None:
    from components.registry_config import files_named

    run = run_program(config={"msrCaCert": pki.make_ca().cert_pem})
    mounted = {f"/run/secrets/{m['fileName']}" for m in container(run)["secrets"]}
    assert set(files_named(run.config_yml)) <= mounted


# --- each key flows to the inputs it should change ---------------------------


def _diff(a: object, b: object, path: str = "") -> set[str]:
    """Paths where two plain values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {p for k in set(a) | set(b) for p in _diff(a.get(k), b.get(k), f"{path}.{k}")}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return {p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in _diff(x, y, f"{path}[{i}]")}
    return set() if a == b else {path}


REMINTED = {"msr-cache-files-cache-cert", "msr-cache-tls-cert"}


def _changes(run: Run, other: Run) -> dict[str, set[str]]:
    """resource name -> changed input paths (config.yml compared as YAML)."""

    def inputs(r: Run) -> dict[str, dict]:
        out = {}
        for res in r.resources:
            plain = res.plain
            plain.pop("__provider", None)
            if res.name == CFG:
                plain["data"] = yaml.safe_load(base64.b64decode(plain["data"]))
            if res.name in REMINTED:
                plain.pop("data", None)  # the mocks mint a new certificate per run
            out[res.name] = plain
        return out

    a, b = inputs(run), inputs(other)
    changed = {}
    for name in set(a) | set(b):
        d = _diff(a.get(name), b.get(name))
        if d:
            changed[name] = d
    return changed


UPSTREAM = ".data.middleware.registry[0].options.upstreams[0]"
ALL_LABELLED = (CFG, SVC, "msr-cache-files-cache-cert", "msr-cache-files-cache-key")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("msrHost", "msr2.example.com", {CFG: {UPSTREAM}}),
        ("msrPort", 4443, {CFG: {UPSTREAM}}),
        ("cachePort", 8443, {CFG: {".data.http.host"}, SVC: {".endpointSpec.ports[0].publishedPort"}}),
        ("nodeLabel", "msr.cache", {LBL: {".label"}, SVC: {".taskSpec.placement.constraints[0]"}}),
        ("cacheNode", "node2", {LBL: {".node"}}),
        ("image", "mirantis/dtr-content-cache:2.9.0", {SVC: {".taskSpec.containerSpec.image"}}),
        ("blobTtl", "12h", {CFG: {".data.middleware.registry[0].options.blobttl"}}),
        ("logLevel", "debug", {CFG: {".data.log.level"}}),
        ("publishMode", "host", {SVC: {".endpointSpec.ports[0].publishMode"}}),
        (
            "serviceName",
            "dtr-cache",
            {name: {".labels[0].value"} for name in ALL_LABELLED}
            | {SVC: {".name", ".labels[0].value"}, LBL: {".service"}},
        ),
    ],
)
def test_each_key_changes_only_its_inputs(default_run: Run, key: str, value: object, expected: dict) -> None:
    assert _changes(default_run, run_program(config={key: value})) == expected


def test_cache_host_changes_certificate_names_and_http_host() -> None:
    run = run_program(config={"cacheHost": "cache-asia.example.com"})
    assert certs.covers_host(served_cert(run), "cache-asia.example.com")
    assert yaml.safe_load(run.config_yml)["http"]["host"] == "https://cache-asia.example.com"
    assert run.exports["cacheUrl"] == "https://cache-asia.example.com"


def test_cache_port_other_than_443_appears_in_the_cache_url() -> None:
    run = run_program(config={"cachePort": 8443})
    assert yaml.safe_load(run.config_yml)["http"]["host"] == "https://cache.example.com:8443"
    assert run.exports["cacheUrl"] == "https://cache.example.com:8443"


def test_msr_host_and_port_form_the_single_upstream() -> None:
    run = run_program(config={"msrHost": "10.0.0.5", "msrPort": 4443})
    options = yaml.safe_load(run.config_yml)["middleware"]["registry"][0]["options"]
    assert options["upstreams"] == ["https://10.0.0.5:4443"]


# --- the labelled node ----------------------------------------------------------


def test_node_label_is_dtr_cache_true_on_the_cache_node(default_run: Run) -> None:
    label = default_run.one(LABEL).plain
    assert (label["node"], label["label"], label["value"]) == ("node1", "dtr.cache", "true")


def test_service_waits_for_the_node_label(default_run: Run) -> None:
    # Without the label the task has nowhere to run, and converge would time out.
    label_urn = default_run.urn_of("msr-cache-node-label")
    assert label_urn in default_run.dependencies_of("msr-cache-service-service")


def test_label_names_the_stacks_own_service(default_run: Run) -> None:
    # Its own constraint must not keep the label in place when the label is deleted.
    assert default_run.one(LABEL).plain["service"] == default_run.exports["serviceName"]


def test_no_label_input_holds_the_docker_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Destroy and refresh must use the connection of their own run, not one
    frozen at create; and no machine path belongs in the state."""
    import pulumi

    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/ci-run-1/docker.sock")
    monkeypatch.setenv("DOCKER_CERT_PATH", "/tmp/ci-run-1/bundle")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    real = pulumi.runtime.set_all_config

    def with_docker_config(config: dict, secret_keys: list | None = None) -> None:
        real(
            {**config, "docker:host": "ssh://admin@manager.example.com", "docker:certPath": "/b"}, secret_keys
        )

    monkeypatch.setattr(pulumi.runtime, "set_all_config", with_docker_config)
    label = run_program().one(LABEL)
    assert set(label.plain) == {"node", "label", "value", "service", "__provider"}
    shown = repr({k: v for k, v in label.plain.items() if k != "__provider"})
    assert "/" not in shown and "manager.example.com" not in shown
    # Nor in the provider's code and data that the state carries.
    pickled = base64.b64decode(label.plain["__provider"])
    assert b"ci-run-1" not in pickled and b"manager.example.com" not in pickled


# --- TLS modes -------------------------------------------------------------------


def test_self_signed_by_default_with_rsa_4096(default_run: Run) -> None:
    key = default_run.one(KEY).plain
    assert (key["algorithm"], key["rsaBits"]) == ("RSA", 4096)
    assert default_run.of_type(SELF_SIGNED) and not default_run.of_type(LOCALLY_SIGNED)


def test_self_signed_certificate_is_a_server_certificate_for_cache_host(default_run: Run) -> None:
    cert = default_run.one(SELF_SIGNED).plain
    assert cert["allowedUses"] == ["key_encipherment", "digital_signature", "server_auth"]
    assert cert["dnsNames"] == ["cache.example.com"]
    assert cert["validityPeriodHours"] == 8760


def test_ecdsa_keys_use_p256() -> None:
    key = run_program(config={"tls": {"keyAlgorithm": "ECDSA"}}).one(KEY).plain
    assert (key["algorithm"], key["ecdsaCurve"]) == ("ECDSA", "P256")
    assert "rsaBits" not in key


def test_node_fqdn_and_extra_names_become_sans() -> None:
    run = run_program(
        config={
            "cacheNode": "worker-3.dc1.example.com",
            "tls": {"dnsNames": ["cache.local"], "ipAddresses": ["192.0.2.10"]},
        }
    )
    cert = run.one(SELF_SIGNED).plain
    assert cert["dnsNames"] == ["cache.example.com", "cache.local", "worker-3.dc1.example.com"]
    assert cert["ipAddresses"] == ["192.0.2.10"]


def test_short_node_name_is_not_a_san(default_run: Run) -> None:
    assert "node1" not in default_run.one(SELF_SIGNED).plain["dnsNames"]


def test_ip_cache_host_becomes_an_ip_san() -> None:
    cert = run_program(config={"cacheHost": "192.0.2.7"}).one(SELF_SIGNED).plain
    assert cert["ipAddresses"] == ["192.0.2.7"]
    assert cert.get("dnsNames", []) == []


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca("Corp Issuing CA")


def test_ca_signed_certificate_chains_to_the_given_ca(ca: pki.Issued) -> None:
    run = run_program(
        config={"tls": {"mode": "caSigned", "caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}},
        secret_keys=("tls",),
    )
    assert not run.of_type(SELF_SIGNED)
    assert run.one(CSR).plain["dnsNames"] == ["cache.example.com"]
    served = served_cert(run)
    assert served.issuer == ca.cert.subject
    served.verify_directly_issued_by(ca.cert)


def test_ca_signed_by_an_intermediate_appends_the_intermediate() -> None:
    root = pki.make_ca("Root")
    inter = pki.make_ca("Intermediate", issuer=root)
    run = run_program(
        config={"tls": {"mode": "caSigned", "caCertPem": inter.cert_pem, "caKeyPem": inter.key_pem}},
        secret_keys=("tls",),
    )
    chain = certs.load_certificates(run.secret_data("cache-cert"))
    assert [c.subject for c in chain[1:]] == [inter.cert.subject]


def test_ca_private_key_is_only_ever_a_secret_input(ca: pki.Issued) -> None:
    run = run_program(
        config={"tls": {"mode": "caSigned", "caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}},
        secret_keys=("tls",),
    )
    _assert_never_plain(run, ca.key_pem)
    assert "caPrivateKeyPem" in run.one(LOCALLY_SIGNED).inputs


def test_provided_material_is_passed_through_with_its_chain() -> None:
    root = pki.make_ca("Root")
    inter = pki.make_ca("Intermediate", issuer=root)
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"], issuer=inter)
    run = run_program(
        config={
            "tls": {
                "mode": "provided",
                "certPem": leaf.cert_pem,
                "keyPem": leaf.key_pem,
                "chainPem": inter.cert_pem,
            }
        },
        secret_keys=("tls",),
    )
    assert not run.of_type(KEY) and not run.of_type(SELF_SIGNED)
    assert run.secret_data("cache-cert") == leaf.cert_pem + inter.cert_pem
    assert run.secret_data("cache-key") == leaf.key_pem
    _assert_never_plain(run, leaf.key_pem)


# --- storage and publish modes ------------------------------------------------------


def test_volume_storage_mounts_a_named_volume_at_the_registry_root() -> None:
    run = run_program(config={"storage": {"mode": "volume"}})
    volume = run.one(VOLUME).plain
    assert volume["name"] == "msr-cache-dev-data"
    (mount,) = container(run)["mounts"]
    assert (mount["type"], mount["source"], mount["target"]) == (
        "volume",
        "msr-cache-dev-data",
        "/var/lib/registry",
    )


def test_volume_driver_and_options_reach_volume_and_mount() -> None:
    opts = {"type": "nfs", "o": "addr=nfs.example.com,rw", "device": ":/exports/cache"}
    run = run_program(config={"storage": {"mode": "volume", "volumeName": "layers", "driverOpts": opts}})
    volume = run.one(VOLUME).plain
    assert (volume["name"], volume["driver"], volume["driverOpts"]) == ("layers", "local", opts)
    options = container(run)["mounts"][0]["volumeOptions"]
    assert (options["driverName"], options["driverOptions"]) == ("local", opts)


def test_host_publish_mode_publishes_on_the_node_only() -> None:
    (port,) = run_program(config={"publishMode": "host"}).service["endpointSpec"]["ports"]
    assert port["publishMode"] == "host"


# --- secrets are secret ---------------------------------------------------------------


def _assert_never_plain(run: Run, secret_text: str) -> None:
    """`secret_text` (or a long slice of it) appears in no input outside a secret wrapper."""
    body = "".join(line for line in secret_text.splitlines() if "-----" not in line)
    needle = body[10:70]
    for res in run.resources:
        for text in plain_strings(res.inputs):
            assert needle not in text, f"{res.name} carries the secret in plain text"
            if text.isascii() and len(text) % 4 == 0:
                try:
                    decoded = base64.b64decode(text, validate=True).decode()
                except ValueError:  # not base64: nothing hidden in it
                    continue
                assert needle not in decoded, f"{res.name} carries the secret in plain base64"
    for name, value in run.exports.items():
        if name not in run.secret_exports:
            assert needle not in str(value), f"export {name} carries the secret"


def test_private_key_never_plain(default_run: Run) -> None:
    key_pem = unwrap(default_run.one(KEY).state["privateKeyPem"])
    _assert_never_plain(default_run, key_pem)


def test_key_secret_data_is_a_secret_input(default_run: Run) -> None:
    from rehearsal.engine import is_secret_wrapper

    for res in default_run.of_type(SECRET):
        assert is_secret_wrapper(res.inputs["data"]), res.name


def test_config_yml_data_is_a_secret_input(default_run: Run) -> None:
    from rehearsal.engine import is_secret_wrapper

    assert is_secret_wrapper(default_run.named(CFG).inputs["data"])


def test_http_secret_never_plain(default_run: Run) -> None:
    password = unwrap(default_run.one(PASSWORD).state["result"])
    for res in default_run.resources:
        for text in plain_strings(res.inputs):
            assert password not in text
            with contextlib.suppress(ValueError):
                assert password not in base64.b64decode(text).decode(errors="ignore")


# --- exports --------------------------------------------------------------------


def test_exports_what_an_operator_needs(default_run: Run) -> None:
    e = default_run.exports
    cert = served_cert(default_run)
    assert e["cacheUrl"] == "https://cache.example.com"
    assert e["upstream"] == "https://msr.example.com:443"
    assert e["serviceName"] == "msr-cache-dev"
    assert (e["node"], e["label"]) == ("node1", "dtr.cache")
    assert e["certificatePem"] == default_run.secret_data("cache-cert")
    # Computed apart from the program: sha256 of the DER, as `openssl x509 -fingerprint -sha256`.
    assert e["certificateSha256"] == openssl_style_sha256(e["certificatePem"])
    assert e["certificateNotAfter"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_no_export_is_secret_or_carries_key_material(default_run: Run) -> None:
    assert default_run.secret_exports == set()
    assert not any("PRIVATE KEY" in str(v) for v in default_run.exports.values())


def test_component_types_use_the_project_prefix(default_run: Run) -> None:
    components = {r.typ for r in default_run.resources if r.typ.startswith("msrcache:")}
    assert components == {
        "msrcache:index:MsrCache",
        "msrcache:index:LabelledNode",
        "msrcache:index:CacheTls",
        "msrcache:index:CacheFiles",
        "msrcache:index:CacheService",
    }


def test_every_resource_name_starts_with_its_component_name(default_run: Run) -> None:
    assert all(r.name.startswith("msr-cache") for r in default_run.resources)


def openssl_style_sha256(pem: str) -> str:
    """The fingerprint of the first certificate in `pem`, from its base64 body alone."""
    body = pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return ":".join(f"{b:02X}" for b in hashlib.sha256(base64.b64decode(body)).digest())
