"""Stack files checked as written (tools.stack_file), as `pulumi up` checks them,
before an operator tool starts or substitutes anything: every value the
rehearsal later swaps for a stand-in is checked first, encrypted values count as
present, and what can be checked without them is (issue 11)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from rehearsal import pki
from tools.stack_file import encrypted_paths, problems, read_stack

SECURE = {"secure": "v1:c2VjcmV0LWNpcGhlcnRleHQ="}
BASE = {
    "msrHost": "msr.example.com",
    "msrPort": 443,
    "cacheHost": "cache-asia.example.com",
    "cacheNode": "node-1",
    "msrUser": "admin",
    "msrToken": {"secure": "v1:dG9rZW4="},
}


def keys(values: dict[str, Any]) -> list[str]:
    return [p.key for p in problems(values)]


def test_a_good_stack_has_no_problem() -> None:
    assert problems(BASE) == []


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"msrHost": "https://msr.example.com"}, "msrHost"),
        ({"msrPort": "443/tcp"}, "msrPort"),
        ({"cachePort": "443/tcp"}, "cachePort"),
        ({"image": "mirantis/dtr-content-cache"}, "image"),
        ({"cacheNode": "node 1"}, "cacheNode"),
        ({"publishMode": "Host"}, "publishMode"),
        ({"msrCaCert": "not a pem", "fetchMsrCa": True}, "msrCaCert"),
        ({"msrCaCert": "not a pem", "fetchMsrCa": True}, "fetchMsrCa"),
    ],
)
def test_values_the_rehearsal_replaces_are_checked_first(change: dict[str, Any], key: str) -> None:
    assert key in keys(BASE | change)


def test_a_plain_text_ca_key_is_refused_and_not_quoted() -> None:
    ca = pki.make_ca("corp CA")
    stack = BASE | {"tls": {"mode": "caSigned", "caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}}
    found = problems(stack)
    assert [p.key for p in found] == ["tls.caKeyPem"]
    assert "plain text" in found[0].message
    assert ca.key_pem.splitlines()[1] not in str(found)


def test_every_problem_is_listed_at_once_including_replaced_keys() -> None:
    stack = BASE | {
        "msrHost": "https://msr",
        "msrPort": 0,
        "image": "x",
        "cachePort": "443/tcp",
        "logLevel": "loud",
    }
    assert set(keys(stack)) >= {"msrHost", "msrPort", "image", "cachePort", "logLevel"}


def test_encrypted_values_count_as_present() -> None:
    stack = {**BASE, "msrHost": SECURE, "cacheHost": SECURE, "msrCaCert": SECURE}
    stack["tls"] = {"mode": "caSigned", "caCertPem": SECURE, "caKeyPem": SECURE}
    assert problems(stack) == []


def test_an_encrypted_ca_cert_with_fetch_msr_ca_is_still_two_sources() -> None:
    assert keys(BASE | {"msrCaCert": SECURE, "fetchMsrCa": True}) == ["fetchMsrCa"]


def test_encrypted_material_of_another_mode_is_still_refused() -> None:
    stack = BASE | {"tls": {"mode": "selfSigned", "keyPem": SECURE}}
    assert keys(stack) == ["tls.keyPem"]


def test_a_misspelt_encrypted_field_is_still_unknown() -> None:
    stack = BASE | {"tls": {"mode": "provided", "keyPEM": SECURE}}
    found = keys(stack)
    assert "tls.keyPEM" in found and "tls.keyPem" in found  # unknown, and the real one missing


def _provided(leaf: pki.Issued, chain: str, **tls: Any) -> dict[str, Any]:
    return BASE | {
        "tls": {"mode": "provided", "certPem": leaf.cert_pem, "keyPem": SECURE, "chainPem": chain} | tls
    }


class TestProvidedCertificateWithAnEncryptedKey:
    """The README's prod layout: only the key is encrypted; all else is checked."""

    root = pki.make_ca("root")
    inter = pki.make_ca("intermediate", issuer=root)

    def test_a_good_certificate_passes(self) -> None:
        leaf = pki.make_leaf("cache-asia.example.com", dns=["cache-asia.example.com"], issuer=self.inter)
        assert problems(_provided(leaf, self.inter.cert_pem)) == []

    def test_sans_that_miss_cache_host_are_refused(self) -> None:
        leaf = pki.make_leaf("other.example.com", dns=["other.example.com"], issuer=self.inter)
        found = problems(_provided(leaf, self.inter.cert_pem))
        assert [p.key for p in found] == ["tls.certPem"]
        assert "does not cover cacheHost cache-asia.example.com" in found[0].message

    def test_an_expired_certificate_is_refused(self) -> None:
        leaf = pki.make_leaf(
            "cache-asia.example.com", dns=["cache-asia.example.com"], issuer=self.inter,
            not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
            not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        )  # fmt: skip
        found = problems(_provided(leaf, self.inter.cert_pem))
        assert any(p.key == "tls.certPem" and "expired" in p.message for p in found)

    def test_a_chain_in_the_wrong_order_is_refused(self) -> None:
        leaf = pki.make_leaf("cache-asia.example.com", dns=["cache-asia.example.com"], issuer=self.inter)
        found = problems(_provided(leaf, self.root.cert_pem))
        assert [p.key for p in found] == ["tls.chainPem"]

    def test_a_certificate_that_is_not_pem_is_refused(self) -> None:
        stack = BASE | {"tls": {"mode": "provided", "certPem": "not a pem", "keyPem": SECURE}}
        assert keys(stack) == ["tls.certPem"]

    def test_a_missing_certificate_is_refused(self) -> None:
        assert keys(BASE | {"tls": {"mode": "provided", "keyPem": SECURE}}) == ["tls.certPem"]


def test_encrypted_driver_options_are_not_credentials_in_plain_text() -> None:
    stack = BASE | {
        "storage": {"mode": "volume", "driver": "local", "driverOpts": {"type": "cifs", "o": SECURE}}
    }
    assert problems(stack) == []


def test_plain_driver_credentials_are_refused_and_not_quoted() -> None:
    opts = {"type": "cifs", "o": "username=svc,password=hunter22"}
    found = problems(BASE | {"storage": {"mode": "volume", "driverOpts": opts}})
    assert [p.key for p in found] == ["storage.driverOpts.o"]
    assert "hunter22" not in str(found)


def test_encrypted_paths_walk_objects_and_lists() -> None:
    values = {"msrHost": SECURE, "tls": {"keyPem": SECURE, "dnsNames": ["a.example.com", SECURE]}}
    assert encrypted_paths(values) == {"msrHost", "tls.keyPem", "tls.dnsNames.1"}


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_example_stacks_are_checked_quickly(stack: str) -> None:
    """Validation alone, after the imports, is far below the one-second budget."""
    values = read_stack(Path(__file__).resolve().parents[2] / "stacks" / f"Pulumi.{stack}.yaml")
    started = time.monotonic()
    problems(values)
    assert time.monotonic() - started < 0.3
