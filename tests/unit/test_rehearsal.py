"""The rehearsal's own machinery, without Docker: its tables cover every input
the program sends in every mode, it refuses what they do not cover, its
certificates honour the tls inputs, and its saved state holds no secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from components import certs
from rehearsal import pki, resources
from rehearsal.applier import Applied, State
from rehearsal.engine import run_program
from rehearsal.mapping import Field, UnmappedInput, nanoseconds, translate
from rehearsal.resources import Context, Created
from rehearsal.stack import for_local_swarm
from rehearsal.upstream import Upstream

CA = pki.make_ca("Corp CA")
INTER = pki.make_ca("Intermediate", issuer=pki.make_ca("Root"))
LEAF = pki.make_leaf("cache.example.com", dns=["cache.example.com"], issuer=INTER)

MODES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "selfSigned-container-ingress": ({}, ()),
    "selfSigned-ECDSA-host": ({"tls": {"keyAlgorithm": "ECDSA"}, "publishMode": "host"}, ()),
    "caSigned-volume": (
        {
            "tls": {"mode": "caSigned", "caCertPem": CA.cert_pem, "caKeyPem": CA.key_pem},
            "storage": {"mode": "volume", "driverOpts": {"type": "tmpfs", "device": "tmpfs"}},
        },
        ("tls",),
    ),
    "provided-msrCa": (
        {
            "tls": {
                "mode": "provided",
                "certPem": LEAF.cert_pem,
                "keyPem": LEAF.key_pem,
                "chainPem": INTER.cert_pem,
            },
            "msrCaCert": CA.cert_pem,
        },
        ("tls",),
    ),
}


def shape_of(typ: str) -> dict[str, Field] | None:
    handler = resources.handler_for(typ)
    if typ == "docker:index/service:Service":
        return resources.SERVICE
    return getattr(handler, "SHAPE", None)


@pytest.mark.parametrize("mode", MODES)
def test_every_resource_and_input_the_program_sends_is_mapped(mode: str) -> None:
    config, secret_keys = MODES[mode]
    run = run_program(config, secret_keys=secret_keys)
    custom = [r for r in run.resources if not r.typ.startswith("msrcache:index:")]
    assert custom
    for r in custom:
        shape = shape_of(r.typ)
        if shape is None:  # the dynamic provider takes its own inputs
            assert r.typ.startswith(resources.DYNAMIC_PREFIX)
            continue
        translate(r.plain, shape, r.name)  # raises on anything unmapped


def test_an_unmapped_input_is_refused_naming_it() -> None:
    run = run_program()
    service = run.one("docker:index/service:Service").plain
    service["taskSpec"]["containerSpec"]["hostname"] = "surprise"
    with pytest.raises(UnmappedInput, match=r"taskSpec\.containerSpec\.hostname is not mapped"):
        resources.Service().spec("svc", service)


def test_an_unmapped_resource_type_is_refused() -> None:
    with pytest.raises(UnmappedInput, match="docker:index/network:Network is not mapped"):
        resources.handler_for("docker:index/network:Network")


def test_an_unexpected_value_is_refused() -> None:
    with pytest.raises(UnmappedInput, match="'overlay' is not one of"):
        translate({"publishMode": "overlay"}, resources.PORT, "port")


@pytest.mark.parametrize(
    ("text", "ns"), [("0s", 0), ("5s", 5_000_000_000), ("5m", 300_000_000_000), ("1m30s", 90e9)]
)
def test_durations(text: str, ns: float) -> None:
    assert nanoseconds(text) == ns


@pytest.mark.parametrize("text", ["5", "s", "5x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UnmappedInput):
        nanoseconds(text)


def test_service_spec_is_the_docker_api_form() -> None:
    run = run_program({"publishMode": "host", "storage": {"mode": "volume"}})
    spec = resources.Service().spec("svc", run.service)
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Command"] == ["/start.sh", "/config.yml"]
    assert {s["File"]["Name"]: s["File"] for s in container["Secrets"]} == {
        name: {"Name": name, "UID": "0", "GID": "0", "Mode": 0o444}
        for name in ("cache.cert.pem", "cache.key.pem", "/config.yml")
    }
    assert "Configs" not in container
    assert container["Mounts"][0]["VolumeOptions"] == {"DriverConfig": {"Name": "local"}}
    assert spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure", "Delay": 5e9, "Window": 0}
    assert spec["EndpointSpec"]["Ports"] == [
        {"TargetPort": 443, "PublishedPort": 443, "Protocol": "tcp", "PublishMode": "host"}
    ]
    assert spec["UpdateConfig"] == {
        "Order": "stop-first",
        "Parallelism": 1,
        "FailureAction": "rollback",
        "Monitor": 10e9,
    }
    assert spec["RollbackConfig"] == {
        "Order": "stop-first",
        "Parallelism": 1,
        "FailureAction": "pause",
        "Monitor": 10e9,
    }
    assert "convergeConfig" not in spec and "ConvergeConfig" not in spec


CTX = Context(client=None, log=lambda _m: None)


@pytest.mark.parametrize(
    ("inputs", "kind", "size"),
    [
        ({"algorithm": "RSA", "rsaBits": 3072}, rsa.RSAPrivateKey, 3072),
        ({"algorithm": "ECDSA", "ecdsaCurve": "P256"}, ec.EllipticCurvePrivateKey, 256),
    ],
)
def test_private_key_honours_algorithm_and_size(inputs: dict, kind: type, size: int) -> None:
    made = resources.PrivateKey().create(CTX, "k", inputs)
    key = pki.load_key(made.outputs["privateKeyPem"])
    assert isinstance(key, kind)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    assert key.key_size == size
    assert made.secret_outputs == {"privateKeyPem"}


def test_self_signed_cert_honours_sans_validity_and_uses() -> None:
    key = resources.PrivateKey().create(CTX, "k", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    made = resources.SelfSignedCert().create(
        CTX,
        "c",
        {
            "privateKeyPem": key.outputs["privateKeyPem"],
            "subject": {"commonName": "cache.example.com", "organization": "MSR content cache"},
            "dnsNames": ["cache.example.com"],
            "ipAddresses": ["127.0.0.1"],
            "validityPeriodHours": 48,
            "allowedUses": ["key_encipherment", "digital_signature", "server_auth"],
        },
    )
    cert = x509.load_pem_x509_certificate(made.outputs["certPem"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cache.example.com"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 48 * 3600
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]


def test_locally_signed_cert_takes_names_from_the_request_and_chains_to_the_ca() -> None:
    key = resources.PrivateKey().create(CTX, "k", {"algorithm": "RSA", "rsaBits": 2048})
    csr = resources.CertRequest().create(
        CTX,
        "r",
        {
            "privateKeyPem": key.outputs["privateKeyPem"],
            "subject": {"commonName": "cache.example.com"},
            "dnsNames": ["cache.example.com", "node1.example.com"],
        },
    )
    made = resources.LocallySignedCert().create(
        CTX,
        "c",
        {
            "certRequestPem": csr.outputs["certRequestPem"],
            "caCertPem": CA.cert_pem,
            "caPrivateKeyPem": CA.key_pem,
            "validityPeriodHours": 24,
            "allowedUses": ["server_auth"],
        },
    )
    cert = x509.load_pem_x509_certificate(made.outputs["certPem"].encode())
    cert.verify_directly_issued_by(CA.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cache.example.com", "node1.example.com"]


def test_random_password_honours_length_and_special() -> None:
    made = resources.RandomPassword().create(CTX, "p", {"length": 48, "special": False})
    value = made.outputs["result"]
    assert len(value) == 48 and value.isalnum()
    assert made.secret_outputs == {"result"}


def test_saved_state_leaves_secret_outputs_out() -> None:
    state = State(
        [
            Applied(
                "tls:index/privateKey:PrivateKey",
                "k",
                {},
                Created("k", {"privateKeyPem": "SECRET"}, {"privateKeyPem"}),
            ),
            Applied("docker:index/secret:Secret", "s", {}, Created("id1", {"name": "s-1"}, {"data"})),
        ]
    )
    saved = state.to_json()
    assert "SECRET" not in str(saved)
    assert State.from_json(saved).resources[1].created.outputs == {"name": "s-1"}


UPSTREAM = Upstream(
    "cid", "10.77.0.13", 5900, CA.cert_pem, Path("ca.pem"), client=None, admin_token="stand-in-admin-token"
)
STAND_IN = "10.77.0.13:5999/msrc-test/dtr-content-cache-stand-in:2.8.2"


def test_stack_is_pointed_at_the_local_swarm() -> None:
    stack = {
        "msrHost": "msr.example.com",
        "cacheHost": "cache.example.com",
        "cacheNode": "n1",
        "logLevel": "debug",
    }
    rc = for_local_swarm(stack, UPSTREAM, "vm", image=STAND_IN)
    assert rc.config | {"msrCaCert": "x"} == {
        "msrHost": "10.77.0.13",
        "msrPort": 5900,
        "msrCaCert": "x",
        "fetchMsrCa": False,
        "cacheHost": "cache.example.com",
        "cacheNode": "vm",
        "publishMode": "host",
        "image": STAND_IN,
        "logLevel": "debug",
        "tls": {},
        "register": True,
        "msrUser": "admin",
        "msrToken": "stand-in-admin-token",
    }
    assert rc.config["msrCaCert"] == CA.cert_pem
    assert rc.client_ca_pem is None and rc.secret_keys == ("msrToken",)
    assert any(
        n.startswith("register -> true; msrUser/msrToken -> the MSR stand-in's admin") for n in rc.notes
    )


def test_encrypted_values_are_replaced_and_said() -> None:
    stack = {
        "msrHost": "msr.example.com",
        "cacheHost": "cache.example.com",
        "cacheNode": "n1",
        "msrCaCert": {"secure": "v1:abc"},
        "tls": {"mode": "caSigned", "caKeyPem": {"secure": "v1:def"}},
    }
    rc = for_local_swarm(stack, UPSTREAM, "vm", image=STAND_IN)
    assert rc.config["tls"]["caKeyPem"].startswith("-----BEGIN")
    assert rc.client_ca_pem == rc.config["tls"]["caCertPem"]
    assert rc.secret_keys == ("msrToken", "tls")
    assert any("msrCaCert -> the MSR stand-in" in n for n in rc.notes)
    assert any("test CA (caKeyPem encrypted in the stack file" in n for n in rc.notes)
    run = run_program(rc.config, secret_keys=rc.secret_keys, base={})
    assert run.exports["upstream"] == "https://10.77.0.13:5900"


def test_provided_mode_gets_a_test_chain_for_the_cache_host() -> None:
    stack = {
        "msrHost": "m.example.com",
        "cacheHost": "cache.example.com",
        "cacheNode": "n1",
        "tls": {"mode": "provided"},
    }
    rc = for_local_swarm(stack, UPSTREAM, "vm", image=STAND_IN)
    run = run_program(rc.config, secret_keys=rc.secret_keys, base={})
    leaf, inter = certs.load_certificates(run.exports["certificatePem"])
    root = x509.load_pem_x509_certificate((rc.client_ca_pem or "").encode())
    leaf.verify_directly_issued_by(inter)
    inter.verify_directly_issued_by(root)
    assert "cache.example.com" in str(leaf.subject)


def test_an_encrypted_cache_host_and_driver_options_get_stand_ins_and_are_said() -> None:
    stack = {
        "msrHost": "m.example.com",
        "cacheHost": {"secure": "v1:abc"},
        "cacheNode": "n1",
        "storage": {
            "mode": "volume",
            "driver": "local",
            "driverOpts": {"type": "cifs", "o": {"secure": "v1:x"}},
        },
    }
    rc = for_local_swarm(stack, UPSTREAM, "vm", image=STAND_IN)
    assert rc.config["cacheHost"] == "rehearsal-cache.example.com"
    assert rc.config["storage"] == {"mode": "volume"}
    assert any(n.startswith("cacheHost -> rehearsal-cache.example.com") for n in rc.notes)
    assert any("a local volume (encrypted in the stack file)" in n for n in rc.notes)
    run_program(rc.config, secret_keys=rc.secret_keys, base={})
