"""Stack settings: the defaults, and every invalid configuration the program refuses.

Invalid configurations are run through the real __main__.py (rehearsal.engine)
so that the checks cover what an operator sees: one pulumi.RunError naming each
bad key with its expected form, no resource registered, and no secret echoed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from components.settings import Settings, SettingsError, parse_settings
from rehearsal import engine as program
from rehearsal import pki
from tests.support import leakscan

PULUMI_YAML = Path(__file__).resolve().parents[2] / "Pulumi.yaml"
REQUIRED: dict[str, Any] = {
    "msrHost": "msr.example.com",
    "cacheHost": "cache.example.com",
    "cacheNode": "node1",
    "register": False,
}
CACHE_HOST = REQUIRED["cacheHost"]


def _declared_defaults() -> dict[str, Any]:
    declared = yaml.safe_load(PULUMI_YAML.read_text(encoding="utf-8"))["config"]
    return {key: spec["default"] for key, spec in declared.items() if "default" in spec}


def _dumped(settings: Settings) -> dict[str, Any]:
    """Settings keyed as in stack config (camelCase, nested for tls and storage)."""
    return settings.model_dump(by_alias=True)


def _at(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


# ---------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------

DECLARED_DEFAULTS = _declared_defaults()

DOCUMENTED_DEFAULTS = {
    "msrPort": 443,
    "cachePort": 443,
    "nodeLabel": "dtr.cache",
    "image": "mirantis/dtr-content-cache:2.8.2",
    "blobTtl": "24h",
    "logLevel": "info",
    "publishMode": "ingress",
    "tls.mode": "selfSigned",
    "tls.keyAlgorithm": "RSA",
    "tls.rsaBits": 4096,
    "storage.mode": "container",
}


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    return _dumped(parse_settings(REQUIRED))


def test_pulumi_yaml_declares_a_default_for_every_optional_scalar_key() -> None:
    assert set(DECLARED_DEFAULTS) == {
        "msrPort", "msrCaCert", "fetchMsrCa", "cachePort", "nodeLabel", "image",
        "blobTtl", "logLevel", "publishMode", "serviceName", "register", "cacheName", "msrUser", "msrToken",
        "replicas", "upstream", "upstreamCaPem",
    }  # fmt: skip


@pytest.mark.parametrize("key", sorted(set(DECLARED_DEFAULTS) - {"register", "msrToken"}))
def test_default_is_the_one_declared_in_pulumi_yaml(defaults: dict[str, Any], key: str) -> None:
    assert defaults[key] == DECLARED_DEFAULTS[key]


def test_registration_is_on_by_default_and_needs_credentials() -> None:
    """REQUIRED turns it off; without that the declared default (true) asks for both."""
    assert DECLARED_DEFAULTS["register"] is True and DECLARED_DEFAULTS["msrToken"] == ""
    without = {k: v for k, v in REQUIRED.items() if k != "register"}
    with pytest.raises(SettingsError) as err:
        parse_settings(without)
    assert [p.key for p in err.value.problems] == ["msrUser", "msrToken"]
    s = parse_settings(without | {"msrUser": "admin", "msrToken": "t0ken-value"}, frozenset({"msrToken"}))
    assert s.register_cache and s.msr_token.get_secret_value() == "t0ken-value"
    assert s.effective_cache_name("staging") == "staging"


def test_a_plain_text_token_is_refused_and_not_quoted() -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(REQUIRED | {"register": True, "msrUser": "admin", "msrToken": "t0ken-value"})
    assert [p.key for p in err.value.problems] == ["msrToken"]
    assert "plain text" in str(err.value) and "t0ken-value" not in str(err.value)


@pytest.mark.parametrize("name", ["region asia", "-asia", "a" * 64, "asia/eu"])
def test_a_cache_name_msr_could_not_show_is_refused(name: str) -> None:
    with pytest.raises(SettingsError, match="msr-cache:cacheName: is not valid; expected a name"):
        parse_settings(REQUIRED | {"cacheName": name})


@pytest.mark.parametrize(
    ("key", "value"), sorted(DOCUMENTED_DEFAULTS.items()), ids=sorted(DOCUMENTED_DEFAULTS)
)
def test_default_is_the_documented_value(defaults: dict[str, Any], key: str, value: Any) -> None:
    assert _at(defaults, key) == value


# ---------------------------------------------------------------------------
# Test PKI for the TLS cases (EC keys: fast)
# ---------------------------------------------------------------------------

NOW = dt.datetime.now(dt.UTC)
ROOT = pki.make_ca("Settings Test Root CA")
INTER = pki.make_ca("Settings Test Intermediate CA", issuer=ROOT)
LEAF = pki.make_leaf(CACHE_HOST, dns=[CACHE_HOST], issuer=INTER)
OTHER_LEAF = pki.make_leaf("other.example.com", dns=["other.example.com"], issuer=INTER)
EXPIRED_LEAF = pki.make_leaf(
    CACHE_HOST,
    dns=[CACHE_HOST],
    issuer=INTER,
    not_before=NOW - dt.timedelta(days=10),
    not_after=NOW - dt.timedelta(days=1),
)
LOOSE_KEY_PEM = pki.key_pem(pki.ec_key())  # matches no certificate


def _expired_ca() -> pki.Issued:
    key = pki.ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Expired Test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW - dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return pki.Issued(cert, key)


EXPIRED_CA = _expired_ca()
ENCRYPTED_KEY_PEM = pki.encrypted_key_pem()


def _provided(**fields: Any) -> dict[str, Any]:
    return {"tls": {"mode": "provided", "certPem": LEAF.cert_pem, "keyPem": LEAF.key_pem, **fields}}


def _ca_signed(**fields: Any) -> dict[str, Any]:
    return {"tls": {"mode": "caSigned", "caCertPem": ROOT.cert_pem, "caKeyPem": ROOT.key_pem, **fields}}


# ---------------------------------------------------------------------------
# The table of invalid configurations
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    config: dict[str, Any]
    key: str  # the key (below msr-cache:) the error must name
    secret_keys: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()  # required keys left out of the base config
    secrets: tuple[str, ...] = ()  # secret values that must not appear in the error

    def run(self) -> None:
        base = {k: v for k, v in REQUIRED.items() if k not in self.drop}
        program.run_program(config=self.config, secret_keys=self.secret_keys, base=base)


CASES = [
    # --- required keys
    Case("msrHost-missing", {}, "msrHost", drop=("msrHost",)),
    Case("cacheHost-missing", {}, "cacheHost", drop=("cacheHost",)),
    Case("cacheNode-missing", {}, "cacheNode", drop=("cacheNode",)),
    Case("msrHost-empty", {"msrHost": ""}, "msrHost"),
    # --- hosts
    Case("msrHost-with-scheme", {"msrHost": "https://msr.example.com"}, "msrHost"),
    Case("msrHost-with-port", {"msrHost": "msr.example.com:443"}, "msrHost"),
    Case("msrHost-with-path", {"msrHost": "msr.example.com/ca"}, "msrHost"),
    Case("cacheHost-with-scheme", {"cacheHost": "https://cache.example.com"}, "cacheHost"),
    # --- ports
    Case("msrPort-0", {"msrPort": 0}, "msrPort"),
    Case("msrPort-70000", {"msrPort": 70000}, "msrPort"),
    Case("msrPort-abc", {"msrPort": "abc"}, "msrPort"),
    Case("cachePort-0", {"cachePort": 0}, "cachePort"),
    Case("cachePort-65536", {"cachePort": 65536}, "cachePort"),
    # --- node label, image, durations, choices
    Case("nodeLabel-uppercase", {"nodeLabel": "Dtr.Cache"}, "nodeLabel"),
    Case("nodeLabel-with-space", {"nodeLabel": "dtr cache"}, "nodeLabel"),
    Case("image-without-tag", {"image": "mirantis/dtr-content-cache"}, "image"),
    Case("image-with-space", {"image": "mirantis/dtr content-cache:2.8.2"}, "image"),
    Case("blobTtl-days", {"blobTtl": "5d"}, "blobTtl"),
    Case("blobTtl-zero", {"blobTtl": "0h"}, "blobTtl"),
    Case("blobTtl-negative", {"blobTtl": "-1h"}, "blobTtl"),
    Case("blobTtl-no-unit", {"blobTtl": "24"}, "blobTtl"),
    Case("logLevel-loud", {"logLevel": "loud"}, "logLevel"),
    Case("publishMode-mesh", {"publishMode": "mesh"}, "publishMode"),
    Case("serviceName-bad-characters", {"serviceName": "my cache!"}, "serviceName"),
    # --- MSR's CA
    Case("fetchMsrCa-maybe", {"fetchMsrCa": "maybe"}, "fetchMsrCa"),
    Case(
        "fetchMsrCa-and-msrCaCert",
        {"fetchMsrCa": True, "msrCaCert": ROOT.cert_pem},
        "fetchMsrCa",
    ),
    Case("msrCaCert-not-pem", {"msrCaCert": "not a certificate"}, "msrCaCert"),
    Case("msrCaCert-expired", {"msrCaCert": EXPIRED_CA.cert_pem}, "msrCaCert"),
    Case(
        "msrCaCert-holds-a-private-key",
        {"msrCaCert": LOOSE_KEY_PEM},
        "msrCaCert",
        secrets=(LOOSE_KEY_PEM,),
    ),
    # --- unknown keys
    Case(
        "unknown-key-msrhost-typo",
        {"msrhost": "msr.example.com"},
        "msrhost",
        drop=("msrHost",),
    ),
    Case(
        "unknown-key-holding-a-private-key",
        {"cacheKeyPem": LOOSE_KEY_PEM},
        "cacheKeyPem",
        secrets=(LOOSE_KEY_PEM,),
    ),
    # --- tls scalars
    Case("tls-not-an-object", {"tls": "selfSigned"}, "tls"),
    Case("tls.mode-bogus", {"tls": {"mode": "bogus"}}, "tls.mode"),
    Case("tls.keyAlgorithm-DSA", {"tls": {"keyAlgorithm": "DSA"}}, "tls.keyAlgorithm"),
    Case("tls.rsaBits-1024", {"tls": {"rsaBits": 1024}}, "tls.rsaBits"),
    Case("tls.validityHours-1", {"tls": {"validityHours": 1}}, "tls.validityHours"),
    Case("tls.dnsNames-invalid-name", {"tls": {"dnsNames": ["bad name.example.com"]}}, "tls.dnsNames"),
    Case("tls.ipAddresses-999.1.1.1", {"tls": {"ipAddresses": ["999.1.1.1"]}}, "tls.ipAddresses"),
    Case("tls-unknown-field", {"tls": {"dnsName": ["cache2.example.com"]}}, "tls.dnsName"),
    Case(
        "tls.certPem-with-selfSigned",
        {"tls": {"mode": "selfSigned", "certPem": LEAF.cert_pem}},
        "tls.certPem",
    ),
    # --- caSigned
    Case(
        "caSigned-without-caKeyPem",
        {"tls": {"mode": "caSigned", "caCertPem": ROOT.cert_pem}},
        "tls.caKeyPem",
        secret_keys=("tls",),
    ),
    Case(
        "caSigned-caCertPem-is-a-leaf",
        _ca_signed(caCertPem=LEAF.cert_pem, caKeyPem=LEAF.key_pem),
        "tls.caCertPem",
        secret_keys=("tls",),
        secrets=(LEAF.key_pem,),
    ),
    Case(
        "caSigned-caKeyPem-does-not-match",
        _ca_signed(caKeyPem=INTER.key_pem),
        "tls.caKeyPem",
        secret_keys=("tls",),
        secrets=(INTER.key_pem,),
    ),
    Case(
        "caSigned-caCertPem-expired",
        _ca_signed(caCertPem=EXPIRED_CA.cert_pem, caKeyPem=EXPIRED_CA.key_pem),
        "tls.caCertPem",
        secret_keys=("tls",),
        secrets=(EXPIRED_CA.key_pem,),
    ),
    Case(
        "caSigned-caKeyPem-in-plain-text",
        _ca_signed(),
        "tls.caKeyPem",
        secrets=(ROOT.key_pem,),
    ),
    # --- provided
    Case(
        "provided-without-keyPem",
        {"tls": {"mode": "provided", "certPem": LEAF.cert_pem}},
        "tls.keyPem",
        secret_keys=("tls",),
    ),
    Case(
        "provided-keyPem-does-not-match",
        _provided(keyPem=OTHER_LEAF.key_pem),
        "tls.keyPem",
        secret_keys=("tls",),
        secrets=(OTHER_LEAF.key_pem,),
    ),
    Case(
        "provided-keyPem-encrypted",
        _provided(keyPem=ENCRYPTED_KEY_PEM),
        "tls.keyPem",
        secret_keys=("tls",),
        secrets=(ENCRYPTED_KEY_PEM,),
    ),
    Case(
        "provided-certPem-does-not-cover-cacheHost",
        _provided(certPem=OTHER_LEAF.cert_pem, keyPem=OTHER_LEAF.key_pem),
        "tls.certPem",
        secret_keys=("tls",),
        secrets=(OTHER_LEAF.key_pem,),
    ),
    Case(
        "provided-certPem-expired",
        _provided(certPem=EXPIRED_LEAF.cert_pem, keyPem=EXPIRED_LEAF.key_pem),
        "tls.certPem",
        secret_keys=("tls",),
        secrets=(EXPIRED_LEAF.key_pem,),
    ),
    Case(
        "provided-chainPem-not-the-issuer",
        _provided(chainPem=ROOT.cert_pem),
        "tls.chainPem",
        secret_keys=("tls",),
        secrets=(LEAF.key_pem,),
    ),
    Case(
        "provided-keyPem-in-plain-text",
        _provided(chainPem=INTER.cert_pem),
        "tls.keyPem",
        secrets=(LEAF.key_pem,),
    ),
    # --- storage
    Case("storage.mode-nfs", {"storage": {"mode": "nfs"}}, "storage.mode"),
    Case(
        "storage.driverOpts-password-in-plain-text",
        {
            "storage": {
                "mode": "volume",
                "driverOpts": {"type": "cifs", "o": "username=svc,password=Hunter2-Secret-Value"},
            }
        },
        "storage.driverOpts.o",
        secrets=("Hunter2-Secret-Value",),
    ),
    Case(
        "storage.volumeName-with-container",
        {"storage": {"mode": "container", "volumeName": "cache-data"}},
        "storage.mode",
    ),
]


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=case.id) for case in cases]


def _error_of(run: Callable[[], Any]) -> str:
    with pytest.raises(pulumi.RunError) as info:
        run()
    return str(info.value)


def _lines_naming(message: str, key: str) -> list[str]:
    """Problem lines about `key` (tls.dnsNames also matches tls.dnsNames.0)."""
    pattern = re.compile(rf"msr-cache:{re.escape(key)}(?:\.\d+)?: ")
    return [line for line in message.splitlines() if pattern.search(line)]


@pytest.mark.parametrize("case", _params(CASES))
def test_invalid_config_is_refused_on_its_key_with_the_expected_form_and_nothing_registered(
    case: Case, registered: list[str]
) -> None:
    """What the operator reads: one run, refused before any resource is registered,
    with a line on the bad key that states the expected form."""
    lines = _lines_naming(_error_of(case.run), case.key)
    assert lines
    assert all("expected" in line for line in lines), lines
    assert registered == []


@pytest.mark.parametrize("case", _params([c for c in CASES if c.secrets]))
def test_invalid_config_does_not_echo_secret_values(case: Case) -> None:
    secrets = {f"secret #{i} of the case": value for i, value in enumerate(case.secrets)}
    assert leakscan.leaks_in(_error_of(case.run), secrets) == []


def test_spy_sees_resources_of_a_valid_config(registered: list[str]) -> None:
    """The no-resource check above can fail: a valid run is seen registering resources."""
    program.run_program(config={"tls": {"keyAlgorithm": "ECDSA"}})
    assert any(name.startswith("docker:index/service:Service::") for name in registered)


def test_valid_provided_config_with_secret_tls_runs_the_program(registered: list[str]) -> None:
    """The plain-text refusal is not applied to a tls value stored as a secret."""
    program.run_program(config=_provided(chainPem=INTER.cert_pem), secret_keys=("tls",))
    assert registered


def test_unknown_key_suggests_the_close_match() -> None:
    message = _error_of(lambda: program.run_program(config={"msrhost": "msr.example.com"}, base={**REQUIRED}))
    (line,) = _lines_naming(message, "msrhost")
    assert "msrHost" in line


def test_plain_text_key_refusal_tells_how_to_store_it_as_a_secret() -> None:
    message = _error_of(lambda: program.run_program(config=_provided()))
    (line,) = _lines_naming(message, "tls.keyPem")
    assert "pulumi config set --secret --path tls.keyPem" in line


# ---------------------------------------------------------------------------
# All problems at once
# ---------------------------------------------------------------------------


def test_independent_problems_are_all_reported_in_one_error() -> None:
    config = {"msrPort": 0, "logLevel": "loud", "image": "no-tag", "blobTtl": "5d", "msrhost": "x"}
    message = _error_of(lambda: program.run_program(config=config))
    assert "(5 problems)" in message
    for key in ("msrPort", "logLevel", "image", "blobTtl", "msrhost"):
        assert _lines_naming(message, key), key


def test_tls_problems_are_reported_together_with_field_problems() -> None:
    config = {"msrPort": 0, **_provided(certPem=OTHER_LEAF.cert_pem)}
    message = _error_of(lambda: program.run_program(config=config, secret_keys=("tls",)))
    assert _lines_naming(message, "msrPort")
    assert _lines_naming(message, "tls.certPem")


# ---------------------------------------------------------------------------
# Valid TLS material
# ---------------------------------------------------------------------------


def test_valid_ca_signed_config_is_accepted() -> None:
    settings = parse_settings({**REQUIRED, **_ca_signed()}, frozenset({"tls"}))
    assert settings.tls.mode == "caSigned"


def test_valid_ca_signed_config_with_an_intermediate_ca_is_accepted() -> None:
    config = _ca_signed(caCertPem=INTER.cert_pem, caKeyPem=INTER.key_pem)
    settings = parse_settings({**REQUIRED, **config}, frozenset({"tls"}))
    assert settings.tls.ca_cert_pem == INTER.cert_pem


def test_valid_provided_config_with_intermediate_chain_is_accepted() -> None:
    settings = parse_settings({**REQUIRED, **_provided(chainPem=INTER.cert_pem)}, frozenset({"tls"}))
    assert settings.tls.chain_pem == INTER.cert_pem


def test_provided_key_is_held_as_a_secret() -> None:
    settings = parse_settings({**REQUIRED, **_provided(chainPem=INTER.cert_pem)}, frozenset({"tls"}))
    assert LEAF.key_pem not in repr(settings)


def test_msr_ca_cert_expiry_is_judged_at_the_given_now() -> None:
    later = ROOT.cert.not_valid_after_utc + dt.timedelta(days=1)
    with pytest.raises(SettingsError, match="msr-cache:msrCaCert"):
        parse_settings({**REQUIRED, "msrCaCert": ROOT.cert_pem}, now=later)


def test_a_driver_option_credential_stored_as_a_secret_runs(registered: list[str]) -> None:
    """The plain-text refusal is not applied to storage stored as a secret."""
    opts = {"type": "cifs", "o": "username=svc,password=Hunter2-Secret-Value"}
    program.run_program(config={"storage": {"mode": "volume", "driverOpts": opts}}, secret_keys=("storage",))
    assert registered
