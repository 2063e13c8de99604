"""What the operator reads about a field of tls, storage or secretFiles: the
field it most likely meant, the choice it most likely meant, and the value it
gave where that value cannot be a secret (issue 11)."""

from __future__ import annotations

from typing import Any

import pytest

from components.settings import SettingsError, parse_settings

BASE: dict[str, Any] = {
    "msrHost": "msr.example.com",
    "cacheHost": "cache.example.com",
    "cacheNode": "node1",
    "register": False,
}
# A private key's shape; the body is what must never be quoted.
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
PEM = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n"


def _refusal(raw: dict[str, Any], secret_keys: tuple[str, ...] = ()) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        parse_settings({**BASE, **raw}, frozenset(secret_keys))
    return info.value


def _line(exc: SettingsError, key: str) -> str:
    """The one problem line about `key`."""
    lines = [str(p) for p in exc.problems if p.key == key]
    assert len(lines) == 1, [str(p) for p in exc.problems]
    return lines[0]


@pytest.mark.parametrize(
    ("raw", "key", "meant"),
    [
        ({"tls": {"validtyHours": 48}}, "tls.validtyHours", "validityHours"),
        ({"tls": {"mode": "caSigned", "caCertPEM": "x"}}, "tls.caCertPEM", "caCertPem"),
        ({"storage": {"mode": "volume", "volumName": "layers"}}, "storage.volumName", "volumeName"),
        ({"secretFiles": {"UID": 0}}, "secretFiles.UID", "uid"),
    ],
)
def test_an_unknown_object_field_names_the_field_it_likely_meant(
    raw: dict[str, Any], key: str, meant: str
) -> None:
    line = _line(_refusal(raw), key)
    assert f": is not a known field (did you mean {meant}?); expected one of the fields of " in line


def test_an_unknown_tls_field_lists_every_tls_field() -> None:
    line = _line(_refusal({"tls": {"validtyHours": 48}}), "tls.validtyHours")
    assert line.endswith(
        "expected one of the fields of tls: mode, keyAlgorithm, rsaBits, validityHours, rotateEvery, "
        "renewBeforeHours, dnsNames, ipAddresses, caCertPem, caKeyPem, certPem, keyPem, chainPem"
    )


@pytest.mark.parametrize(
    ("raw", "key", "shown"),
    [
        ({"tls": {"mode": "selfsigned"}}, "tls.mode", "(got 'selfsigned'; did you mean selfSigned?)"),
        ({"tls": {"keyAlgorithm": "ecdsa"}}, "tls.keyAlgorithm", "(got 'ecdsa'; did you mean ECDSA?)"),
        ({"tls": {"mode": "selfSinged"}}, "tls.mode", "(got 'selfSinged'; did you mean selfSigned?)"),
        ({"storage": {"mode": "Volume"}}, "storage.mode", "(got 'Volume'; did you mean volume?)"),
        ({"publishMode": "Host"}, "publishMode", "(got 'Host'; did you mean host?)"),
        ({"logLevel": "WARN"}, "logLevel", "(got 'WARN'; did you mean warn?)"),
    ],
)
def test_a_near_miss_choice_names_the_choice_it_likely_meant(
    raw: dict[str, Any], key: str, shown: str
) -> None:
    line = _line(_refusal(raw), key)
    assert line.endswith(shown)
    assert "; expected one of " in line


@pytest.mark.parametrize(
    ("raw", "key", "shown"),
    [
        ({"tls": {"mode": "selfsigned"}}, "tls.mode", "(got 'selfsigned'; did you mean selfSigned?)"),
        ({"tls": {"validityHours": 10}}, "tls.validityHours", "(got '10')"),
        ({"tls": {"rotateEvery": "90 days"}}, "tls.rotateEvery", "(got '90 days')"),
        ({"storage": {"mode": "Volume"}}, "storage.mode", "(got 'Volume'; did you mean volume?)"),
        ({"secretFiles": {"uid": -1}}, "secretFiles.uid", "(got '-1')"),
    ],
)
def test_a_field_below_a_secret_object_key_is_shown(raw: dict[str, Any], key: str, shown: str) -> None:
    """tls is a secret key whenever tls.keyPem is encrypted, the normal layout."""
    (top,) = raw
    assert _line(_refusal(raw, secret_keys=(top,)), key).endswith(shown)


def test_a_value_of_no_harmless_shape_below_a_secret_object_key_is_not_shown() -> None:
    """The whole object may have been stored with --secret: a value like nothing
    a field expects could be anything pasted there."""
    exc = _refusal(
        {
            "tls": {"mode": "Selfsigned", "rotateEvery": "hunter2-hunter2"},
            "storage": {"mode": "volume", "volumeName": "my vault!"},
        },
        secret_keys=("tls", "storage"),
    )
    assert _line(exc, "tls.mode").endswith("(got 'Selfsigned'; did you mean selfSigned?)")
    assert "hunter2" not in str(exc)
    assert "vault" not in str(exc)


def test_a_secret_top_level_key_is_not_shown_while_object_fields_are() -> None:
    exc = _refusal(
        {"msrHost": "https://vault-host.example.com", "logLevel": "WARN", "tls": {"mode": "selfsigned"}},
        secret_keys=("msrHost", "logLevel", "tls"),
    )
    assert _line(exc, "tls.mode").endswith("(got 'selfsigned'; did you mean selfSigned?)")
    assert "vault-host" not in str(exc)
    assert "WARN" not in str(exc)
    assert "did you mean" not in _line(exc, "logLevel")


@pytest.mark.parametrize("secret_keys", [(), ("tls",)])
def test_a_pem_pasted_into_tls_mode_is_not_shown(secret_keys: tuple[str, ...]) -> None:
    exc = _refusal({"tls": {"mode": PEM, "keyAlgorithm": "ecdsa"}}, secret_keys)
    assert _line(exc, "tls.keyAlgorithm").endswith("(got 'ecdsa'; did you mean ECDSA?)")
    assert "did you mean" not in _line(exc, "tls.mode")
    assert PEM_BODY[:16] not in str(exc)
    assert "BEGIN" not in str(exc)
