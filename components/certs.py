"""Pure helpers that read PEM certificates and keys with `cryptography`.

Used twice: to check operator-provided TLS material before any resource is
registered, and to derive the fingerprint and expiry the stack exports. Error
messages describe the problem and never include the PEM text.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

_BEGIN_CERT = "-----BEGIN CERTIFICATE-----"


class PemError(ValueError):
    """A PEM value could not be used; the message never contains the value."""


def load_certificates(pem: str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order; at least one."""
    if _BEGIN_CERT not in pem:
        raise PemError("is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block)")
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise PemError("holds a PEM certificate block that does not parse") from exc
    return certs


def load_private_key(pem: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """An unencrypted RSA or EC private key."""
    if "PRIVATE KEY-----" not in pem:
        raise PemError("is not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----' block)")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError as exc:
        raise PemError("is an encrypted private key; the cache needs it unencrypted") from exc
    except ValueError as exc:
        raise PemError("holds a private key block that does not parse") from exc
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise PemError("is neither an RSA nor an EC private key")
    return key


def key_matches_certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> bool:
    """True when the certificate carries the public half of this key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki))


def subject_alt_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of the subjectAltName extension; empty when absent."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return [], []
    assert isinstance(san, x509.SubjectAlternativeName)
    dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


def covers_host(cert: x509.Certificate, host: str) -> bool:
    """True when a TLS client connecting to `host` would accept this certificate's names.

    Clients ignore the subject CN when a SAN is present (RFC 6125), and Go, which
    Docker is written in, ignores the CN always; so only SANs count here.
    """
    dns, ips = subject_alt_names(cert)
    try:
        wanted_ip = ipaddress.ip_address(host)
    except ValueError:
        return any(_dns_matches(pattern, host) for pattern in dns)
    return any(ipaddress.ip_address(ip) == wanted_ip for ip in ips)


def _dns_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        # A wildcard stands for exactly one left-most label.
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except x509.ExtensionNotFound:
        return False
    assert isinstance(bc, x509.BasicConstraints)
    return bc.ca


def not_after(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def is_expired(cert: x509.Certificate, now: dt.datetime | None = None) -> bool:
    now = now or dt.datetime.now(dt.UTC)
    return cert.not_valid_after_utc <= now


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """Colon-separated upper-case hex, as `openssl x509 -fingerprint -sha256` prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


@dataclass(frozen=True)
class CertificateSummary:
    """What an operator wants to know about the certificate the cache serves."""

    sha256: str
    not_after: str  # RFC 3339, UTC
    dns_names: list[str]
    ip_addresses: list[str]


def summarize(pem: str) -> CertificateSummary:
    """Summary of the first (leaf) certificate of a PEM bundle."""
    leaf = load_certificates(pem)[0]
    dns, ips = subject_alt_names(leaf)
    return CertificateSummary(
        sha256=sha256_fingerprint(leaf),
        not_after=not_after(leaf).strftime("%Y-%m-%dT%H:%M:%SZ"),
        dns_names=dns,
        ip_addresses=ips,
    )
