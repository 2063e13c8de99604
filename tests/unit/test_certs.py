"""components.certs: host coverage, key matching, CA detection, summaries, PEM errors."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from components import certs
from rehearsal import pki
from tests.support import leakscan

ROOT = pki.make_ca("Certs Test Root CA")
INTER = pki.make_ca("Certs Test Intermediate CA", issuer=ROOT)


def _leaf(
    cn: str = "cache.example.com", dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
) -> x509.Certificate:
    return pki.make_leaf(cn, dns=list(dns), ips=list(ips), issuer=ROOT).cert


# ---------------------------------------------------------------------------
# covers_host
# ---------------------------------------------------------------------------


def test_covers_host_exact_dns_name() -> None:
    assert certs.covers_host(_leaf(dns=("cache.example.com",)), "cache.example.com")


def test_covers_host_is_false_for_another_dns_name() -> None:
    assert not certs.covers_host(_leaf(dns=("cache.example.com",)), "other.example.com")


def test_covers_host_ignores_case() -> None:
    assert certs.covers_host(_leaf(dns=("Cache.Example.COM",)), "cache.EXAMPLE.com")


def test_covers_host_ignores_a_trailing_dot() -> None:
    assert certs.covers_host(_leaf(dns=("cache.example.com",)), "cache.example.com.")


def test_wildcard_covers_one_left_most_label() -> None:
    assert certs.covers_host(_leaf(dns=("*.example.com",)), "cache.example.com")


def test_wildcard_does_not_cover_two_labels() -> None:
    assert not certs.covers_host(_leaf(dns=("*.example.com",)), "a.cache.example.com")


def test_wildcard_does_not_cover_the_bare_domain() -> None:
    assert not certs.covers_host(_leaf(dns=("*.example.com",)), "example.com")


def test_covers_host_ip_address_san() -> None:
    assert certs.covers_host(_leaf(ips=("10.0.0.5",)), "10.0.0.5")


def test_covers_host_is_false_for_another_ip_address() -> None:
    assert not certs.covers_host(_leaf(ips=("10.0.0.5",)), "10.0.0.6")


def test_covers_host_compares_ipv6_addresses_not_spellings() -> None:
    assert certs.covers_host(_leaf(ips=("::1",)), "0:0:0:0:0:0:0:1")


def test_ip_host_is_not_covered_by_a_dns_san_spelling_the_ip() -> None:
    assert not certs.covers_host(_leaf(dns=("10.0.0.5",)), "10.0.0.5")


def test_dns_host_is_not_covered_by_an_ip_san() -> None:
    assert not certs.covers_host(_leaf(ips=("10.0.0.5",)), "cache.example.com")


def test_covers_host_without_san_is_false_even_when_the_cn_matches() -> None:
    assert not certs.covers_host(_leaf(cn="cache.example.com"), "cache.example.com")


# ---------------------------------------------------------------------------
# key_matches_certificate
# ---------------------------------------------------------------------------


def test_ec_key_matches_its_certificate() -> None:
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"], issuer=ROOT)
    assert certs.key_matches_certificate(leaf.key, leaf.cert)


def test_rsa_key_matches_its_certificate() -> None:
    leaf = pki.make_leaf("cache.example.com", issuer=ROOT, key=pki.rsa_key(2048))
    assert certs.key_matches_certificate(leaf.key, leaf.cert)


def test_other_key_does_not_match_certificate() -> None:
    leaf = pki.make_leaf("cache.example.com", issuer=ROOT)
    assert not certs.key_matches_certificate(pki.ec_key(), leaf.cert)


def test_issuer_key_does_not_match_the_certificate_it_signed() -> None:
    leaf = pki.make_leaf("cache.example.com", issuer=ROOT)
    assert not certs.key_matches_certificate(ROOT.key, leaf.cert)


# ---------------------------------------------------------------------------
# is_ca
# ---------------------------------------------------------------------------


def test_root_ca_is_a_ca() -> None:
    assert certs.is_ca(ROOT.cert)


def test_intermediate_ca_is_a_ca() -> None:
    assert certs.is_ca(INTER.cert)


def test_leaf_is_not_a_ca() -> None:
    assert not certs.is_ca(_leaf(dns=("cache.example.com",)))


def test_certificate_without_basic_constraints_is_not_a_ca() -> None:
    key = pki.ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "No Constraints")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert not certs.is_ca(cert)


# ---------------------------------------------------------------------------
# summarize
# ---------------------------------------------------------------------------

SERVED = pki.make_leaf("cache.example.com", dns=["cache.example.com"], ips=["10.0.0.5"], issuer=INTER)
BUNDLE = SERVED.cert_pem + INTER.cert_pem


def test_summary_sha256_is_cryptographys_fingerprint_in_colon_hex() -> None:
    expected = SERVED.cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert certs.summarize(BUNDLE).sha256 == expected


def test_summary_sha256_is_32_upper_case_colon_separated_bytes() -> None:
    assert re.fullmatch(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}", certs.summarize(BUNDLE).sha256)


def test_summary_not_after_is_rfc3339_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", certs.summarize(BUNDLE).not_after)


def test_summary_not_after_is_the_leaf_expiry() -> None:
    parsed = dt.datetime.strptime(certs.summarize(BUNDLE).not_after, "%Y-%m-%dT%H:%M:%SZ")
    assert parsed.replace(tzinfo=dt.UTC) == SERVED.cert.not_valid_after_utc


def test_summary_lists_dns_sans() -> None:
    assert certs.summarize(BUNDLE).dns_names == ["cache.example.com"]


def test_summary_lists_ip_sans() -> None:
    assert certs.summarize(BUNDLE).ip_addresses == ["10.0.0.5"]


# ---------------------------------------------------------------------------
# PEM errors never contain the PEM
# ---------------------------------------------------------------------------


ENCRYPTED_KEY_PEM = pki.encrypted_key_pem()


def test_encrypted_key_is_a_pem_error_saying_encrypted() -> None:
    with pytest.raises(certs.PemError, match="encrypted"):
        certs.load_private_key(ENCRYPTED_KEY_PEM)


def test_encrypted_key_error_does_not_contain_the_pem() -> None:
    with pytest.raises(certs.PemError) as info:
        certs.load_private_key(ENCRYPTED_KEY_PEM)
    assert leakscan.leaks_in(str(info.value), {"the key": ENCRYPTED_KEY_PEM}) == []


def test_encrypted_key_error_chains_no_exception_showing_the_pem() -> None:
    with pytest.raises(certs.PemError) as info:
        certs.load_private_key(ENCRYPTED_KEY_PEM)
    assert leakscan.leaks_in(repr(info.value.__cause__), {"the key": ENCRYPTED_KEY_PEM}) == []


def test_corrupt_key_error_does_not_contain_the_pem() -> None:
    good = pki.key_pem(pki.ec_key())
    lines = good.splitlines()
    corrupt = "\n".join([lines[0], lines[1][::-1], *lines[2:]]) + "\n"
    with pytest.raises(certs.PemError) as info:
        certs.load_private_key(corrupt)
    assert leakscan.leaks_in(str(info.value), {"the key": corrupt}) == []


def test_private_key_where_a_certificate_is_expected_is_a_pem_error() -> None:
    with pytest.raises(certs.PemError, match="not a PEM certificate"):
        certs.load_certificates(pki.key_pem(pki.ec_key()))


def test_load_certificates_returns_the_bundle_in_order() -> None:
    assert certs.load_certificates(BUNDLE) == [SERVED.cert, INTER.cert]


def test_certificate_expired_at_now_is_expired() -> None:
    assert certs.is_expired(SERVED.cert, SERVED.cert.not_valid_after_utc)


def test_certificate_is_not_expired_a_second_before_not_after() -> None:
    now = SERVED.cert.not_valid_after_utc - dt.timedelta(seconds=1)
    assert not certs.is_expired(SERVED.cert, now)
