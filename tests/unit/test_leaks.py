"""No private key, http secret or credential in plain sight.

1. The program, in every TLS mode: no string outside a secret wrapper in any resource's
   inputs, and no stack output that is not secret, holds a PEM private key or any of
   the run's secrets (the key the mocks mint, the RandomPassword result, the caKeyPem
   or keyPem given), as a whole, as a line of a PEM, or base64-encoded.
2. The leak-scan plugin (tests/support/leakscan.py) itself, on throwaway test files
   run by pytester in a subprocess: a printed private key or remembered secret fails
   the test, names the kind of leak and where, and never shows the secret.

Assertions here list where a secret was found, never the secret: a failure report
must not leak what it is about.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from rehearsal import pki
from rehearsal.engine import Run, plain_strings, run_program, unwrap
from tests.support import leakscan

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
KEY = "tls:index/privateKey:PrivateKey"
PASSWORD = "random:index/randomPassword:RandomPassword"

CA = pki.make_ca("Leak Test CA")
INTER = pki.make_ca("Leak Test Intermediate", issuer=pki.make_ca("Leak Test Root"))
LEAF = pki.make_leaf("cache.example.com", dns=["cache.example.com"], issuer=INTER)
MSR_CA = pki.make_ca("Leak Test MSR CA")


@dataclass(frozen=True)
class Config:
    id: str
    config: dict[str, Any]
    secret_keys: tuple[str, ...] = ()
    given_secrets: tuple[str, ...] = ()  # secret material in the config itself
    fetch: bool = False  # MSR answers /ca (fetchMsrCa)
    minted: tuple[str, ...] = field(default=(KEY, PASSWORD))  # resource types that mint secrets


CONFIGS = [
    Config("selfSigned-RSA", {"tls": {"mode": "selfSigned", "keyAlgorithm": "RSA"}}),
    Config("selfSigned-ECDSA", {"tls": {"keyAlgorithm": "ECDSA"}}),
    Config(
        "caSigned",
        {
            "tls": {
                "mode": "caSigned",
                "caCertPem": CA.cert_pem,
                "caKeyPem": CA.key_pem,
                "keyAlgorithm": "ECDSA",
            }
        },
        secret_keys=("tls",),
        given_secrets=(CA.key_pem,),
    ),
    Config(
        "provided",
        {
            "tls": {
                "mode": "provided",
                "certPem": LEAF.cert_pem,
                "keyPem": LEAF.key_pem,
                "chainPem": INTER.cert_pem,
            }
        },
        secret_keys=("tls",),
        given_secrets=(LEAF.key_pem,),
        minted=(PASSWORD,),
    ),
    Config("msrCaCert", {"msrCaCert": MSR_CA.cert_pem, "tls": {"keyAlgorithm": "ECDSA"}}),
    Config("fetchMsrCa", {"fetchMsrCa": True, "tls": {"keyAlgorithm": "ECDSA"}}, fetch=True),
    Config(
        "volume-rotating",
        {
            "tls": {"keyAlgorithm": "ECDSA", "rotateEvery": "90d"},
            "storage": {"mode": "volume", "driverOpts": {"type": "nfs", "o": "addr=10.0.0.9,rw"}},
        },
    ),
]


class _Answer:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def read(self, size: int = -1) -> bytes:
        return self.body

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@contextlib.contextmanager
def _msr_serving_its_ca() -> Iterator[None]:
    with mock.patch.object(urllib.request, "urlopen", lambda *a, **k: _Answer(MSR_CA.cert_pem.encode())):
        yield


@dataclass
class Ran:
    config: Config
    run: Run
    secrets: dict[str, str] = field(repr=False)  # what it is -> the secret


def _run(config: Config) -> Ran:
    with _msr_serving_its_ca() if config.fetch else contextlib.nullcontext():
        run = run_program(config=config.config, secret_keys=config.secret_keys)
    found: dict[str, str] = {}
    for res in run.of_type(KEY):
        found[f"the private key minted for {res.name}"] = unwrap(res.state["privateKeyPem"])
    for res in run.of_type(PASSWORD):
        found[f"the http secret ({res.name})"] = unwrap(res.state["result"])
    for i, given in enumerate(config.given_secrets):
        found[f"the secret key given in the config (#{i})"] = given
    return Ran(config, run, found)


@pytest.fixture(scope="module", params=CONFIGS, ids=[c.id for c in CONFIGS])
def ran(request: pytest.FixtureRequest) -> Ran:
    return _run(request.param)


def test_the_run_has_the_secrets_it_is_checked_for(ran: Ran) -> None:
    """The checks below look for something: each config mints (or is given) its secrets."""
    kinds = {res.typ for res in ran.run.resources}
    assert set(ran.config.minted) <= kinds
    assert len(ran.secrets) == len(ran.run.of_type(KEY)) + len(ran.run.of_type(PASSWORD)) + len(
        ran.config.given_secrets
    )
    assert all(len(s) >= leakscan.MIN_LENGTH for s in ran.secrets.values())


def test_no_plain_resource_input_holds_a_private_key_or_secret(ran: Ran) -> None:
    leaks = []
    for res in ran.run.resources:
        for i, text in enumerate(plain_strings(res.inputs)):
            leaks += leakscan.leaks_in(text, ran.secrets, f"{res.typ} {res.name}, plain input string #{i}")
    assert leaks == []


def test_no_stack_output_holds_a_private_key_or_secret(ran: Ran) -> None:
    leaks = []
    for name, value in ran.run.exports.items():
        if name not in ran.run.secret_exports:
            for i, text in enumerate(plain_strings(value) if not isinstance(value, str) else [value]):
                leaks += leakscan.leaks_in(text, ran.secrets, f"output {name} (#{i})")
    assert leaks == []
    assert "certificatePem" in ran.run.exports  # the outputs were looked at


def test_the_secrets_are_secret_where_they_are_inputs(ran: Ran) -> None:
    """The converse: each secret does reach the resources, inside secret wrappers."""
    everywhere = [s for res in ran.run.resources for s in plain_strings(unwrap(res.inputs))]
    missing = [
        what
        for what, secret in ran.secrets.items()
        if not any(secret in s or secret in (leakscan.base64_text(s) or "") for s in everywhere)
    ]
    assert missing == []


def test_the_leak_scan_remembers_this_runs_secrets(ran: Ran, request: pytest.FixtureRequest) -> None:
    """The plugin is active and learnt the minted and the given secrets on its own
    (through pulumi.runtime.set_mocks and set_all_config), so printing one fails a test."""
    assert request.config.pluginmanager.has_plugin("tests.support.leakscan")
    forgotten = [what for what, secret in ran.secrets.items() if not leakscan.is_remembered(secret)]
    assert forgotten == []


def test_a_credential_in_secret_storage_options_stays_secret() -> None:
    credential = "cifs-" + secrets.token_hex(12)
    config = Config(
        "cifs",
        {
            "tls": {"keyAlgorithm": "ECDSA"},
            "storage": {
                "mode": "volume",
                "driverOpts": {"type": "cifs", "o": f"addr=10.0.0.9,username=u,password={credential}"},
            },
        },
        secret_keys=("storage",),
    )
    got = _run(config)
    assert leakscan.is_remembered(credential)  # the plugin took it from the secret config
    leaks = [
        f"{res.typ} {res.name}"
        for res in got.run.resources
        if any(credential in text for text in plain_strings(res.inputs))
    ]
    assert leaks == []


# ---------------------------------------------------------------------------
# What the plugin looks for: secrets, not the public parts next to them
# ---------------------------------------------------------------------------


def _public_texts(issued: pki.Issued) -> list[str]:
    """The certificate and public key of `issued`, as PEM and as base64 at each alignment."""
    from cryptography.hazmat.primitives import serialization

    public = issued.key.public_key()
    ders = [
        issued.cert.public_bytes(serialization.Encoding.DER),
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    ]
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = [base64.b64encode(b"\0" * shift + der).decode() for der in ders for shift in range(3)]
    return [issued.cert_pem, pem.decode(), *encoded]


@pytest.mark.parametrize("algorithm", ["ECDSA", "RSA"])
def test_a_certificate_or_public_key_is_no_leak_of_its_private_key(algorithm: str) -> None:
    """A key's PEM holds its public key (EC point, RSA modulus), as does its certificate:
    printing the certificate must not count as printing the key."""
    for _ in range(4):
        key = pki.ec_key() if algorithm == "ECDSA" else pki.rsa_key(2048, slot=secrets.randbits(64))
        issued = pki.make_leaf("cache.example.com", dns=["cache.example.com"], key=key)
        needles = [needle for needle, _ in leakscan.Secret(issued.key_pem, "key").needles]
        assert len(needles) > 1  # the lines of the private part are looked for
        shown = [i for i, text in enumerate(_public_texts(issued)) if any(n in text for n in needles)]
        assert shown == []


def test_a_secret_config_object_counts_its_keys_and_credentials_not_its_certificates() -> None:
    ca = pki.make_ca("Object CA")
    password = "pw-" + secrets.token_hex(8)
    leakscan.remember_config(
        "msr-cache:tls",
        json.dumps(
            {
                "mode": "caSigned",
                "caCertPem": ca.cert_pem,
                "caKeyPem": ca.key_pem,
                "dnsNames": ["a.b.c.example"],
            }
        ),
    )
    leakscan.remember_config(
        "msr-cache:storage", json.dumps({"driverOpts": {"o": f"user=u,password={password}"}})
    )
    assert leakscan.is_remembered(ca.key_pem)
    assert leakscan.is_remembered(password)
    assert not leakscan.is_remembered(ca.cert_pem)
    assert not leakscan.is_remembered("a.b.c.example")
    findings, _ = leakscan.scan(f"the CA: {ca.cert_pem}")
    assert findings == []


# ---------------------------------------------------------------------------
# The plugin itself, on throwaway test files
# ---------------------------------------------------------------------------


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose subprocess imports this project (the plugin and tests.support)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return pytester


def _run_inner(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_subprocess(
        "-p", "tests.support.leakscan", "-p", "no:cacheprovider", "-rA", *args, timeout=120
    )


def _output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


def test_plugin_fails_a_test_that_prints_a_private_key_and_redacts_it(inner: pytest.Pytester) -> None:
    pem = pki.key_pem(pki.ec_key())
    leakscan.remember(pem)  # should this test fail, its own report is redacted too
    source = f"""
PEM = {pem!r}

def test_prints_a_key():
    print("the key:", PEM)

def test_prints_it_as_repr():
    print(repr({{"key": PEM}}))

def test_prints_a_truncated_key():
    print(PEM[:120])

def test_quiet():
    print("nothing to see")
"""
    result = _run_inner(inner, source)
    result.assert_outcomes(passed=1, failed=3)
    out = _output(result)
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert body[48:80] not in out  # past the fixed PKCS#8 header: the key's own bytes
    assert "-----BEGIN PRIVATE KEY-----" not in out
    assert "PASSED test_inner.py::test_quiet" in out
    assert "PEM private key block (PRIVATE KEY) in captured stdout call" in out
    # Counted in the FAILURES section: with CI set, pytest repeats each message in the summary.
    failures = out.split("short test summary info")[0]
    assert failures.count("leakscan: secret material in the call output of this test") == 3


def test_plugin_fails_a_test_that_prints_a_remembered_secret_without_showing_it(
    inner: pytest.Pytester,
) -> None:
    secret = "tok-" + secrets.token_urlsafe(24)
    leakscan.remember(secret)
    source = f"""
import base64
import logging
import sys

import pytest

from tests.support import leakscan

SECRET = {secret!r}
leakscan.remember(SECRET)


@pytest.fixture
def noisy():
    print(SECRET, file=sys.stderr)


def test_prints_it():
    print("token is", SECRET)

def test_logs_it():
    logging.getLogger("x").warning("token %s", SECRET)

def test_prints_it_base64():
    print(base64.b64encode(("Authorization: " + SECRET).encode()).decode())

def test_prints_it_in_setup(noisy):
    pass

def test_fails_with_it_in_the_message():
    assert SECRET == "something else"

@pytest.mark.xfail(reason="expected", strict=False)
def test_expected_to_fail_but_prints_it():
    print(SECRET)
    raise RuntimeError("expected")

def test_prints_a_short_prefix_only():
    print(SECRET[:8])
"""
    result = _run_inner(inner, source)
    out = _output(result)
    assert secret not in out
    assert secret[:12] not in out and secret[-12:] not in out  # nor pytest's 'head...tail' repr
    assert base64.b64encode(secret.encode()).decode()[:20] not in out
    result.assert_outcomes(passed=1, failed=5, errors=1)
    assert "PASSED test_inner.py::test_prints_a_short_prefix_only" in out
    assert "ERROR test_inner.py::test_prints_it_in_setup" in out
    assert "in captured stdout call" in out
    assert "in captured log call" in out
    assert "in captured stderr setup" in out
    assert "base64-encoded, in captured stdout call" in out
    assert "in the failure report" in out
    assert "truncated, in the failure report" in out
    assert "secret (given to leakscan.remember)" in out
    assert leakscan.fingerprint(secret) in out  # named by its sha256 prefix and length


def test_plugin_learns_the_secrets_the_program_mints(inner: pytest.Pytester) -> None:
    """In a fresh session: the http secret the mocks mint counts as secret, unasked."""
    source = """
from rehearsal.engine import run_program, unwrap

def test_prints_the_http_secret():
    run = run_program(config={"tls": {"keyAlgorithm": "ECDSA"}})
    (password,) = run.of_type("random:index/randomPassword:RandomPassword")
    print("http secret:", unwrap(password.state["result"]))

def test_prints_the_secret_config_key():
    from rehearsal import pki
    ca = pki.make_ca()
    tls = {"mode": "caSigned", "caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}
    run_program(config={"tls": tls}, secret_keys=("tls",))
    print(ca.key_pem.splitlines()[2])  # one line of the CA key's body

def test_prints_the_certificate():
    run = run_program(config={"tls": {"keyAlgorithm": "ECDSA"}})
    print(run.exports["certificatePem"])  # public: no leak
"""
    result = _run_inner(inner, source)
    out = _output(result)
    result.assert_outcomes(passed=1, failed=2)
    assert "secret (secret output result of random:index/randomPassword:RandomPassword" in out
    assert (
        "secret (secret config msr-cache:tls, field caKeyPem), a line of it, in captured stdout call" in out
    )
    assert "PASSED test_inner.py::test_prints_the_certificate" in out


def test_remember_refuses_a_value_too_short_to_scan_for() -> None:
    with pytest.raises(ValueError, match="at least"):
        leakscan.remember("short")


def test_the_one_leak_check_finds_a_secret_in_every_form_it_knows() -> None:
    key = pki.key_pem(pki.ec_key())
    password = "s3cret-http-password-value"
    secrets_ = {"the key": key, "the password": password}
    body = "".join(line for line in key.splitlines() if not line.startswith("-----"))
    reflowed = "error near " + "\n   ".join(body[i : i + 20] for i in range(0, len(body), 20))
    assert leakscan.leaks_in("all is well", secrets_) == []
    assert leakscan.leaks_in(f"x {password} y", secrets_) == ["text: the password"]
    assert leakscan.leaks_in(base64.b64encode(password.encode()).decode(), secrets_)
    assert any("the key" in f for f in leakscan.leaks_in(reflowed, secrets_))
    assert [f for f in leakscan.leaks_in(key, {}) if "PRIVATE KEY block" in f]
