"""tools/redact.py: the one redaction every message of the operator tools passes through."""

from __future__ import annotations

import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.docker_errors import MOUNT_ERROR
from tools.redact import REDACT, Redactor, install_excepthook, redact

WRAPPED = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": "wrapped-value-1"}


def private_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_a_known_value_is_replaced() -> None:
    r = Redactor()
    r.add("s3cret-passphrase")
    assert r("decrypt failed with 's3cret-passphrase'") == "decrypt failed with '[secret]'"


def test_values_nested_in_dicts_lists_tuples_and_pulumi_wrappers_are_known() -> None:
    r = Redactor()
    r.add({"tls": {"keyPem": "nested-value-1", "more": ["listed-value-1", ("tupled-value-1",)]}}, [WRAPPED])
    out = r("nested-value-1 listed-value-1 tupled-value-1 wrapped-value-1")
    assert out == "[secret] [secret] [secret] [secret]"


def test_a_value_containing_another_is_replaced_whole() -> None:
    r = Redactor()
    r.add("hunter22", "hunter22-and-more")
    assert r("got hunter22-and-more") == "got [secret]"


def test_a_value_quoted_without_its_trailing_newline_is_replaced() -> None:
    r = Redactor()
    r.add("from-a-file-passphrase\n")
    assert r("passphrase 'from-a-file-passphrase' is wrong") == "passphrase '[secret]' is wrong"


def test_one_line_of_a_known_pem_key_quoted_in_a_message_is_replaced() -> None:
    pem = private_key_pem()
    line = pem.splitlines()[1]
    r = Redactor()
    r.add(pem)
    out = r(f"invalid secret data: illegal base64 data at input byte 12 in {line!r}")
    assert line not in out and "[secret]" in out


def test_the_armour_of_a_known_key_is_not_a_secret() -> None:
    pem = private_key_pem()
    r = Redactor()
    r.add(pem)
    out = r(f"-----END PRIVATE KEY----- expected after {pem.splitlines()[-2]}")
    assert out == "-----END PRIVATE KEY----- expected after [secret]"


def test_a_private_key_block_is_replaced_even_if_unknown() -> None:
    pem = (
        private_key_pem()
        .replace("BEGIN PRIVATE", "BEGIN EC PRIVATE")
        .replace("END PRIVATE", "END EC PRIVATE")
    )
    out = Redactor()(f"cannot parse {pem} for service cache")
    assert out == "cannot parse [private key]\n for service cache"


def test_a_truncated_private_key_block_is_replaced_to_the_end() -> None:
    cut = private_key_pem()[:90]
    out = Redactor()(f"error: invalid value {cut}")
    assert out == "error: invalid value [private key]"


def test_a_certificate_next_to_a_private_key_is_left_alone() -> None:
    cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
    assert Redactor()(cert + private_key_pem()) == cert + "[private key]\n"


def test_a_docker_mount_error_does_not_show_the_password() -> None:
    out = Redactor()(MOUNT_ERROR)
    assert "hunter22" not in out and "username=svc,password=[secret]" in out


def test_values_shorter_than_six_characters_and_non_strings_are_ignored() -> None:
    r = Redactor()
    r.add("admin", "", 123456789, None, ["short", "sixsix"])
    assert r("admin short 123456789 sixsix") == "admin short 123456789 [secret]"


def test_clear_forgets_the_known_values() -> None:
    r = Redactor()
    r.add("first-passphrase")
    r.clear()
    r.add("second-passphrase")
    assert r("first-passphrase second-passphrase") == "first-passphrase [secret]"


def test_redact_uses_the_process_wide_redactor_on_any_object() -> None:
    REDACT.add("s3cret-passphrase")
    assert redact(OSError("bad s3cret-passphrase")) == "bad [secret]"


def test_an_uncaught_exception_prints_a_redacted_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    REDACT.add("s3cret-passphrase")
    install_excepthook()
    try:
        raise RuntimeError(f"passphrase s3cret-passphrase; {MOUNT_ERROR}")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "RuntimeError: passphrase [secret]" in err
    assert "s3cret-passphrase" not in err and "hunter22" not in err
