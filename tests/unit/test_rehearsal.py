"""The rehearsal's own machinery, without Docker: its tables cover every input
the program sends in every mode, it refuses what they do not cover, its
certificates honour the tls inputs, and its saved state holds no secret."""

from __future__ import annotations

import base64
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


# --- stacks with several caches (msr-cache:caches) --------------------------------

SECURE = {"secure": "v1:bm90IHJlYWxseSBlbmNyeXB0ZWQ="}
LOCAL = ["msrc-cache", "msrc-node4", "msrc-manager"]


def prod_as_completed() -> dict[str, Any]:
    """stacks/Pulumi.prod.yaml as the operator completes it (its header): each
    site's certificate in plain text and its key encrypted, the intermediate at
    the top level, the MSR admin's token encrypted."""
    from rehearsal.engine import ROOT
    from tools.stack_file import read_stack

    stack = read_stack(ROOT / "stacks/Pulumi.prod.yaml")
    for entry in stack["caches"]:
        leaf = pki.make_leaf(entry["cacheHost"], dns=[entry["cacheHost"]], issuer=INTER)
        entry["tls"] = {"certPem": leaf.cert_pem, "keyPem": SECURE}
    stack["tls"] |= {"chainPem": INTER.cert_pem}
    return stack | {"msrUser": "admin", "msrToken": SECURE}


def test_prod_gets_a_node_and_a_test_leaf_per_site_and_says_so() -> None:
    from tools.stack_file import encrypted_paths, problems

    stack = prod_as_completed()
    assert problems(stack) == []
    rc = for_local_swarm(stack, UPSTREAM, "msrc-cache", image=STAND_IN, nodes=LOCAL)
    # Both publish 443 in host mode: a node each, workers first.
    assert [(c.name, c.nodes, c.cache_port) for c in rc.caches] == [
        ("asia", ("msrc-cache",), 443),
        ("europe", ("msrc-node4",), 443),
    ]
    assert encrypted_paths(rc.config) == frozenset()
    assert "caches" in rc.secret_keys
    for i, site in enumerate(("asia", "europe")):
        assert (
            f"caches[{i}] ({site}): cacheNode -> {rc.caches[i].nodes[0]} (was cache-{site}-01.example.com)"
            in (rc.notes)
        )
        assert any(
            n.startswith(f"caches[{i}] ({site}): tls.certPem/keyPem/chainPem -> a test leaf for cache-{site}")
            for n in rc.notes
        )
    run = run_program(rc.config, secret_keys=rc.secret_keys, stack="prod", base={})
    root = x509.load_pem_x509_certificate((rc.caches[0].client_ca_pem or "").encode())
    for i, site in enumerate(("asia", "europe")):
        assert rc.caches[i].client_ca_pem == rc.caches[0].client_ca_pem  # one test root
        served = base64.b64decode(run.named(f"msr-cache-{site}-files-cache-cert").plain["data"]).decode()
        leaf, inter = certs.load_certificates(served)
        leaf.verify_directly_issued_by(inter)
        inter.verify_directly_issued_by(root)
        assert f"cache-{site}.example.com" in str(leaf.subject)
    exported = run.exports["caches"]
    assert [exported[s]["nodes"] for s in ("asia", "europe")] == [["msrc-cache"], ["msrc-node4"]]
    assert {exported[s]["upstream"] for s in exported} == {"https://10.77.0.13:5900"}
    # The entries' own image and publish mode would win over the stack's stand-ins.
    assert all("image" not in e and "publishMode" not in e for e in rc.config["caches"])


def test_caches_on_different_ports_share_a_node_and_replicas_take_one_each() -> None:
    from rehearsal.stack import nodes_needed, place_caches

    stack = {
        "caches": [
            {"name": "a", "cacheNode": "x"},
            {"name": "b", "cacheNode": "y", "cachePort": 8443},
            {"name": "c", "nodes": ["p", "q", "r"], "replicas": 2, "cachePort": 9443},
        ]
    }
    assert place_caches(stack, LOCAL) == [("msrc-cache",), ("msrc-cache",), ("msrc-cache", "msrc-node4")]
    assert nodes_needed(stack) == 2
    assert nodes_needed({"cacheNode": "x"}) == 1


def test_more_caches_on_one_port_than_nodes_is_said_with_the_count() -> None:
    from rehearsal.stack import NotEnoughNodes, nodes_needed, place_caches

    stack = {"caches": [{"name": n, "cacheNode": n} for n in ("a", "b", "c")]}
    assert nodes_needed(stack) == 3
    with pytest.raises(
        NotEnoughNodes, match=r"need 3 nodes .* it has 2 for them \(msrc-cache, msrc-manager"
    ) as e:
        place_caches(stack, ["msrc-cache", "msrc-manager"])
    assert e.value.needed == 3


def store() -> Any:
    from rehearsal.object_store import ObjectStore

    return ObjectStore(
        "10.77.0.13", 5980, "us-east-1", "msr-cache-layers", "AKIDREHEARSAL", "s3-secret", Path("/tmp")
    )


def chained_on_object_storage() -> dict[str, Any]:
    corp = pki.make_ca("corp CA")
    return {
        "msrHost": "msr.example.com",
        "msrUser": "admin",
        "msrToken": SECURE,
        "publishMode": "ingress",
        "image": "mirantis/dtr-content-cache:2.8.2",
        "tls": {"mode": "caSigned", "caCertPem": corp.cert_pem, "caKeyPem": SECURE},
        "caches": [
            {
                "name": "hub",
                "cacheHost": "hub.example.com",
                "nodes": ["hub-1.example.com", "hub-2.example.com"],
                "replicas": 2,
                "storage": {
                    "mode": "s3",
                    "s3": {
                        "bucket": "layers",
                        "region": "eu-west-1",
                        "accessKey": SECURE,
                        "secretKey": SECURE,
                        "rootDirectory": "/hub",
                        "encrypt": True,
                    },
                },
            },
            {
                "name": "site",
                "cacheHost": "site.example.com",
                "cachePort": 8443,
                "cacheNode": "branch-1.example.com",
                "upstream": "hub",
                "image": "mirantis/dtr-content-cache:2.8.1",
                "storage": {
                    "mode": "azure",
                    "azure": {"accountName": "a", "accountKey": SECURE, "container": "c"},
                },
            },
        ],
    }


def test_object_storage_goes_to_the_s3_stand_in_and_a_chain_stays_a_chain() -> None:
    from rehearsal.stack import Unrehearsable, needs_object_store
    from tools.stack_file import encrypted_paths, problems

    stack = chained_on_object_storage()
    assert problems(stack) == []
    assert needs_object_store(stack)
    with pytest.raises(Unrehearsable, match="S3 stand-in"):
        for_local_swarm(stack, UPSTREAM, "msrc-cache", image=STAND_IN, nodes=LOCAL)
    rc = for_local_swarm(stack, UPSTREAM, "msrc-cache", image=STAND_IN, nodes=LOCAL, store=store())
    assert encrypted_paths(rc.config) == frozenset()
    hub, site = rc.caches
    assert (hub.nodes, site.nodes, site.parent) == (("msrc-cache", "msrc-node4"), ("msrc-cache",), "hub")
    assert any(
        "(hub): storage.mode s3 -> s3 on the S3 stand-in http://10.77.0.13:5980" in n for n in rc.notes
    )
    assert any("encrypt -> false" in n for n in rc.notes)
    assert any("(site): storage.mode azure -> s3 on the S3 stand-in" in n for n in rc.notes)
    assert not any("s3-secret" in n for n in rc.notes)
    run = run_program(rc.config, secret_keys=rc.secret_keys, stack="chain", base={})
    assert run.exports["caches"]["site"]["upstream"] == "https://hub.example.com"
    hub_yml = base64.b64decode(run.named("msr-cache-hub-files-config-yml").plain["data"]).decode()
    assert "regionendpoint: http://10.77.0.13:5980" in hub_yml
    assert "rootdirectory: /layers/hub" in hub_yml
    assert "encrypt: false" in hub_yml
    # Every service runs the stand-in, whatever an entry said.
    images = {
        r.plain["taskSpec"]["containerSpec"]["image"] for r in run.of_type("docker:index/service:Service")
    }
    assert images == {STAND_IN}


def test_a_parent_cache_host_resolves_to_its_node_in_the_containers() -> None:
    from rehearsal.deploy import parent_hosts
    from rehearsal.localswarm import LocalSwarm

    swarm = LocalSwarm.parse(
        {
            "hostAddress": "10.77.0.1",
            "registry": "10.77.0.13:5999",
            "nodes": [
                {"hostname": h, "address": f"10.77.0.{n}", "dockerHost": "unix:///x"}
                for h, n in (("msrc-manager", 11), ("msrc-cache", 12), ("msrc-msr", 13), ("msrc-node4", 14))
            ],
        }
    )
    rc = for_local_swarm(
        chained_on_object_storage(), UPSTREAM, "msrc-cache", image=STAND_IN, nodes=LOCAL, store=store()
    )
    assert parent_hosts(rc, swarm) == ["10.77.0.12 hub.example.com"]
    # A stack without chains, or a parent named by its address, needs none.
    assert (
        parent_hosts(
            for_local_swarm(prod_as_completed(), UPSTREAM, "msrc-cache", image=STAND_IN, nodes=LOCAL), swarm
        )
        == []
    )


def test_the_hosts_go_into_every_service_create_and_update_only() -> None:
    from rehearsal.deploy import _WithHosts

    calls: list[tuple[str, Any]] = []

    class Api:
        def create_service(self, **kwargs: Any) -> None:
            calls.append(("create", kwargs))

        def update_service(self, sid: str, version: int, **kwargs: Any) -> None:
            calls.append(("update", kwargs))

        def inspect_service(self, sid: str) -> str:
            return "inspected"

    class Client:
        api = Api()
        services = "services"

    template = {"ContainerSpec": {"Image": "x"}, "Placement": {}}
    wrapped = _WithHosts(Client(), ["10.77.0.12 hub.example.com"])
    wrapped.api.create_service(name="s", task_template=template)
    wrapped.api.update_service("id", 3, name="s", task_template=template)
    assert wrapped.api.inspect_service("id") == "inspected" and wrapped.services == "services"
    for _verb, kwargs in calls:
        assert kwargs["task_template"]["ContainerSpec"] == {
            "Image": "x",
            "Hosts": ["10.77.0.12 hub.example.com"],
        }
    assert template == {"ContainerSpec": {"Image": "x"}, "Placement": {}}, "the program's spec is not changed"


def test_one_cache_on_several_nodes_gets_local_nodes_and_the_store() -> None:
    stack = {
        "msrHost": "m.example.com",
        "cacheHost": "cache.example.com",
        "nodes": ["a.example.com", "b.example.com"],
        "replicas": 2,
        "storage": {"mode": "gcs", "gcs": {"bucket": "layers", "keyfile": SECURE}},
    }
    rc = for_local_swarm(stack, UPSTREAM, "msrc-cache", image=STAND_IN, nodes=LOCAL, store=store())
    assert rc.config["nodes"] == ["msrc-cache", "msrc-node4"] and "cacheNode" not in rc.config
    assert rc.config["storage"]["mode"] == "s3" and "storage" in rc.secret_keys
    run = run_program(rc.config, secret_keys=rc.secret_keys, base={})
    assert run.exports["caches"]["dev"]["replicas"] == 2


def test_a_parent_outside_the_stack_becomes_the_msr_stand_in() -> None:
    stack = {
        "msrHost": "m.example.com",
        "cacheHost": "cache.example.com",
        "cacheNode": "n1",
        "upstream": "https://parent.example.com",
        "upstreamCaPem": CA.cert_pem,
    }
    rc = for_local_swarm(stack, UPSTREAM, "vm", image=STAND_IN)
    assert any("upstream -> the MSR stand-in (was https://parent.example.com" in n for n in rc.notes)
    run = run_program(rc.config, secret_keys=rc.secret_keys, base={})
    assert run.exports["upstream"] == "https://10.77.0.13:5900"


def test_caches_encrypted_whole_cannot_be_rehearsed() -> None:
    from rehearsal.stack import Unrehearsable

    with pytest.raises(Unrehearsable, match="encrypted whole"):
        for_local_swarm({"caches": SECURE}, UPSTREAM, "vm", image=STAND_IN)


# --- interrupted ------------------------------------------------------------------


class _InterruptingHandler:
    """Makes each resource from its inputs; interrupts the rehearsal while the
    first one is being made, as Ctrl-C lands in the middle of an apply."""

    def __init__(self, rehearsal: Any) -> None:
        self.rehearsal = rehearsal
        self.made: list[str] = []
        self.raise_at_once: list[bool] = []

    def create(self, _ctx: Context, name: str, inputs: dict[str, Any]) -> Created:
        if not self.made:
            self.raise_at_once.append(self.rehearsal.interrupt())
        self.made.append(name)
        return Created(f"{name}-id", dict(inputs))


def test_an_interrupt_during_an_apply_starts_nothing_more_and_ends_it_in_keyboard_interrupt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raised inside the program's run, KeyboardInterrupt would leave Pulumi's
    runtime waiting for its RPCs for ever (seen: a Ctrl-C'd rehearsal hung).
    Instead the resource in progress is finished, nothing after it starts, and
    apply raises KeyboardInterrupt with that resource in the state."""
    from rehearsal import applier
    from rehearsal.engine import BASE_CONFIG

    rehearsal = applier.Rehearsal(None, "dev", log=lambda _m: None)
    handler = _InterruptingHandler(rehearsal)
    monkeypatch.setattr(applier, "handler_for", lambda _typ: handler)

    with pytest.raises(KeyboardInterrupt):
        rehearsal.apply(dict(BASE_CONFIG))

    assert handler.raise_at_once == [False], "during an apply the caller must not raise"
    assert len(handler.made) == 1
    assert [r.name for r in rehearsal.state.resources] == handler.made
    assert not rehearsal.applying and rehearsal.interrupt(), "after it, the caller raises at once"
