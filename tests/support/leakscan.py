"""Leak scan: no private key or secret value in any test's captured output.

A pytest plugin, registered for every test by tests/conftest.py. After each phase
(setup, call, teardown) of every test it scans what pytest captured -- stdout, stderr
and log records -- and the failure or skip text, for

- PEM private-key blocks of any kind (`-----BEGIN ... PRIVATE KEY-----`: PKCS#8, RSA,
  EC, ENCRYPTED, OPENSSH, ...), whole or truncated;
- every value remembered as secret during the session: given to `remember(value)`,
  or remembered automatically while the program runs under Pulumi's mocks:
  * every value a mock mints as a secret output (a PrivateKey's privateKeyPem, a
    RandomPassword's result), seen through `pulumi.runtime.set_mocks`, so any Mocks
    class (RecordingMocks, StatefulMocks, the rehearsal's ApplyMocks, spies) counts;
  * every config value passed as secret to `pulumi.runtime.set_all_config` (what
    run_program calls): a scalar as a whole; in an object (tls, storage) the private
    keys and credential-like fields (see `_object_secrets`), not its mode, names or
    certificates, which share the object's one secret flag but are public.
  A secret is also found as a single long line of it (a partly printed PEM; not the
  lines of certificates or public keys next to it), base64-encoded (Swarm secret and
  config data), and shortened to 'head...tail' as pytest's assertion reprs do.

A leak turns the phase's report into a failure that says what kind of secret leaked
and where (captured stdout of the call, the failure text, ...), with the secret's
sha256 prefix and length, never the secret itself; the secret is also redacted from
the report (its captured sections and failure text), so pytest, -rA and JUnit XML do
not print it either.

What it cannot see: output of a test run with capturing off (`-s`), live logging
(`log_cli`), and what a subprocess writes to a file rather than to the captured streams.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

# Shorter values are not scanned for: they would match ordinary text ("info", "443").
MIN_LENGTH = 12
# A line of a multi-line secret (a PEM body line is 64) counts from this length.
MIN_LINE_LENGTH = 32
# Both ends of a secret shortened by a repr ('head...tail') count from this many characters.
TRUNCATED_END = 6

# A whole PEM private-key block, any kind, also in repr() text where newlines are "\n".
_KEY_BLOCK = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----(?:(?!-----BEGIN ).){0,20000}?-----END \1PRIVATE KEY-----",
    re.DOTALL,
)
# A block without its END line (truncated): the header and the base64 after it.
_KEY_HEADER = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----(?:[A-Za-z0-9+/=\s]|\\[nr])*")
_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)
# Credential-like field names in a secret config object, and `password=...` options
# (a CIFS volume's `o: username=u,password=p`).
_SECRET_FIELD = re.compile(r"pass|secret|token|credential|keypem|privatekey|apikey", re.IGNORECASE)
_SECRET_OPTION = re.compile(r"(?:password|passwd|pass|secret|token)=([^,\s]+)", re.IGNORECASE)


def fingerprint(value: str) -> str:
    """What a report shows instead of a secret: a sha256 prefix and the length."""
    return f"sha256 {hashlib.sha256(value.encode()).hexdigest()[:12]}, {len(value)} chars"


@dataclass(frozen=True)
class Secret:
    value: str
    label: str  # where it came from; never the value

    @property
    def needles(self) -> list[tuple[str, str]]:
        """(text to look for, how it shows the secret), the whole value first."""
        found = [(self.value, "")]
        if "\n" in self.value:
            # Lines of certificates and of public keys are public: no needles.
            public = _public_parts(self.value)
            public_lines = {line.strip() for c in _CERTIFICATE.findall(self.value) for line in c.splitlines()}
            found += [
                (line.strip(), "a line of it")
                for line in self.value.splitlines()
                if len(line.strip()) >= MIN_LINE_LENGTH
                and not line.startswith("-----")
                and line.strip() not in public_lines
                and not any(line.strip() in p for p in public)
            ]
        raw = self.value.encode()
        for shift in range(3):
            # base64 of the value at any offset inside a longer encoded text: the
            # first group (mixed with the bytes before) and the last are left out.
            encoded = base64.b64encode(b"\0" * shift + raw).decode()
            core = encoded[4 if shift else 0 : -4]
            if len(core) >= MIN_LENGTH:
                found.append((core, "base64-encoded"))
        return found


def _public_parts(text: str) -> list[str]:
    """base64 (at each byte alignment) of the public keys of the private keys in `text`.

    A private key's PEM holds its public key too (an EC point, an RSA modulus), and so
    does any certificate for it: a line of the key that is all public is no needle.
    """
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        return []
    public = []
    for block in _KEY_BLOCK.finditer(text):
        try:
            key = serialization.load_pem_private_key(
                block.group(0).encode(), password=None, unsafe_skip_rsa_key_validation=True
            )
        except Exception:  # encrypted, unsupported or not a key: nothing public in clear
            continue
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        public += [base64.b64encode(b"\0" * shift + der).decode() for shift in range(3)]
    return public


@dataclass(frozen=True)
class Finding:
    kind: str  # "PEM private key block (EC PRIVATE KEY)", "secret (<label>)"
    where: str  # "captured stdout call", "the failure report"
    how: str  # "", "a line of it", "base64-encoded", "truncated"
    fingerprint: str

    def __str__(self) -> str:
        how = f", {self.how}," if self.how else ""
        return f"{self.kind}{how} in {self.where} [{self.fingerprint}]"


_lock = threading.Lock()
_secrets: dict[str, Secret] = {}
_needles: list[tuple[str, str, Secret]] = []  # longest first


def remember(value: str, label: str = "given to leakscan.remember") -> None:
    """Treat `value` as secret for the rest of the session: it must appear in no output.

    Raises ValueError for a value shorter than MIN_LENGTH (it would match ordinary text).
    """
    if not isinstance(value, str) or len(value.strip()) < MIN_LENGTH:
        raise ValueError(f"leakscan.remember needs a string of at least {MIN_LENGTH} characters")
    _add(value, label)


def _add(value: str, label: str) -> None:
    with _lock:
        if value in _secrets:
            return
        secret = Secret(value, label)
        _secrets[value] = secret
        _needles.extend((needle, how, secret) for needle, how in secret.needles)
        _needles.sort(key=lambda n: len(n[0]), reverse=True)


def _maybe_add(value: Any, label: str) -> None:
    if isinstance(value, str) and len(value.strip()) >= MIN_LENGTH:
        _add(value, label)


# pytest's saferepr shortens a long string to 'head...tail': both ends of a secret show.
_END = r"([^\s'\"]{" + str(TRUNCATED_END) + ",})"
_TRUNCATED = re.compile(_END + r"\.\.\." + _END)


def _shows_both_ends(secret: str, head: str, tail: str) -> bool:
    """`head` ends with the start of `secret` and `tail` begins with its end."""
    if secret[:TRUNCATED_END] not in head or secret[-TRUNCATED_END:] not in tail:
        return False
    starts = any(head.endswith(secret[:k]) for k in range(TRUNCATED_END, min(len(head), len(secret)) + 1))
    return starts and any(
        tail.startswith(secret[-k:]) for k in range(TRUNCATED_END, min(len(tail), len(secret)) + 1)
    )


def private_key_kinds(text: str) -> list[str]:
    """The kinds of the PEM private-key blocks (whole or truncated) in `text`."""
    return [f"{m.group(1) or ''}PRIVATE KEY" for m in _KEY_HEADER.finditer(text)]


def base64_text(text: str) -> str | None:
    """`text` base64-decoded, when it is base64 of UTF-8 text (Swarm secret and config data)."""
    if len(text) < 16 or len(text) % 4:
        return None
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def leaks_in(text: str, secrets: Mapping[str, str], where: str = "text") -> list[str]:
    """The one test of a leak, for checks of a given text (an error message, a resource
    input): each PEM private-key block, and each of `secrets` (label -> value) in any
    form the scan knows (whole, a line of it, base64-encoded), found in `text` as it
    is, base64-decoded, or with its whitespace removed (a key reflowed across lines).
    Returns descriptions that never hold the secret."""
    found: dict[str, str] = {}  # what leaked -> the first form it was seen in
    candidates = (
        ("", text),
        (" (base64-decoded)", base64_text(text)),
        (" (whitespace removed)", re.sub(r"\s", "", text)),
    )
    for form, candidate in candidates:
        if candidate is None:
            continue
        for kind in private_key_kinds(candidate):
            found.setdefault(f"a PEM {kind} block", form)
        for label, value in secrets.items():
            for needle, how in Secret(value, label).needles:
                if needle in candidate:
                    found.setdefault(f"{label}{', ' + how if how else ''}", form)
                    break
    return sorted(f"{where}{form}: {what}" for what, form in found.items())


def is_remembered(value: str) -> bool:
    return value in _secrets


def remembered_count() -> int:
    return len(_secrets)


def scan(text: str, where: str = "text") -> tuple[list[Finding], str]:
    """The leaks in `text`, and `text` with each of them replaced by its fingerprint."""
    findings: list[Finding] = []
    if not text:
        return findings, text
    with _lock:
        needles = list(_needles)
    for needle, how, secret in needles:
        if needle in text:
            findings.append(Finding(f"secret ({secret.label})", where, how, fingerprint(secret.value)))
            text = text.replace(needle, f"[leakscan: secret redacted, {fingerprint(secret.value)}]")
    with _lock:
        known = list(_secrets.values())

    def truncated(m: re.Match[str]) -> str:
        head, tail = m.group(1), m.group(2)
        for secret in known:
            if _shows_both_ends(secret.value, head, tail):
                findings.append(
                    Finding(f"secret ({secret.label})", where, "truncated", fingerprint(secret.value))
                )
                return f"[leakscan: secret redacted, {fingerprint(secret.value)}]"
        return m.group(0)

    if "..." in text:
        text = _TRUNCATED.sub(truncated, text)

    def redact(m: re.Match[str]) -> str:
        kind = f"{m.group(1) or ''}PRIVATE KEY"
        findings.append(Finding(f"PEM private key block ({kind})", where, "", fingerprint(m.group(0))))
        return f"[leakscan: {kind} redacted, {fingerprint(m.group(0))}]"

    for pattern in (_KEY_BLOCK, _KEY_HEADER):
        text = pattern.sub(redact, text)
    return findings, text


# ---------------------------------------------------------------------------
# Remembering automatically: secret config values and secrets the mocks mint
# ---------------------------------------------------------------------------


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}.{i}")
    elif isinstance(value, str):
        yield path, value


def _object_secrets(obj: Any) -> Iterator[tuple[str, str]]:
    """(path, value) of the secrets in a secret config object: private keys, fields
    named like credentials, `password=` options. Certificates are public."""
    for path, text in _leaves(obj):
        if "PRIVATE KEY-----" in text or (
            _SECRET_FIELD.search(path.rsplit(".", 1)[-1]) and _CERTIFICATE.sub("", text).strip()
        ):
            yield path, text
        for m in _SECRET_OPTION.finditer(text):
            yield f"{path} ({m.group(0).split('=')[0]}=)", m.group(1)


def remember_config(key: str, value: Any) -> None:
    """A config value stored as a secret: a scalar whole, an object's secret parts."""
    parsed = value
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
    if isinstance(parsed, dict | list):
        for path, text in _object_secrets(parsed):
            _maybe_add(text, f"secret config {key}, field {path}")
    else:
        _maybe_add(value if isinstance(value, str) else json.dumps(value), f"secret config {key}")


def _is_secret_wrapper(value: Any) -> bool:
    from pulumi.runtime import rpc

    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def _minted_secrets(args: Any, state: Any) -> None:
    """Remember what a mock returns wrapped as secret and did not get as an input."""
    if not isinstance(state, dict):
        return
    inputs = getattr(args, "inputs", {}) or {}
    for key, value in state.items():
        if _is_secret_wrapper(value) and inputs.get(key) != value:
            for path, text in _leaves(value["value"], key):
                _maybe_add(text, f"secret output {path} of {args.typ} {args.name}")


def _watch(mocks: Any) -> None:
    if getattr(mocks, "_leakscan_watched", False):
        return
    original: Callable[[Any], Any] = mocks.new_resource

    def new_resource(args: Any) -> Any:
        result = original(args)
        with contextlib.suppress(Exception):  # never break a run over bookkeeping
            _minted_secrets(args, result[1])
        return result

    mocks.new_resource = new_resource
    mocks._leakscan_watched = True


_patched: list[tuple[Any, str, Any]] = []


def _patch(owner: Any, name: str, wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = getattr(owner, name)
    if getattr(original, "_leakscan_original", None) is not None:
        return  # already wrapped (a nested pytester session in this process)
    wrapped = wrapper(original)
    wrapped._leakscan_original = original  # type: ignore[attr-defined]
    _patched.append((owner, name, original))
    setattr(owner, name, wrapped)


def _install_pulumi_hooks() -> None:
    try:
        import pulumi.runtime
        import pulumi.runtime.config
        import pulumi.runtime.mocks
    except ImportError:  # not a Pulumi project: captured output is still scanned
        return

    def on_set_mocks(original: Callable[..., Any]) -> Callable[..., Any]:
        def set_mocks(mocks: Any, *args: Any, **kwargs: Any) -> Any:
            with contextlib.suppress(Exception):
                _watch(mocks)
            return original(mocks, *args, **kwargs)

        return set_mocks

    def on_set_all_config(original: Callable[..., Any]) -> Callable[..., Any]:
        def set_all_config(config: dict[str, Any], secret_keys: list[str] | None = None) -> Any:
            for key in secret_keys or ():
                if key in config:
                    remember_config(key, config[key])
            return original(config, secret_keys)

        return set_all_config

    for module in (pulumi.runtime, pulumi.runtime.mocks):
        _patch(module, "set_mocks", on_set_mocks)
    for module in (pulumi.runtime, pulumi.runtime.config):
        _patch(module, "set_all_config", on_set_all_config)


def _uninstall_pulumi_hooks() -> None:
    while _patched:
        owner, name, original = _patched.pop()
        setattr(owner, name, original)


# ---------------------------------------------------------------------------
# pytest hooks
# ---------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    _install_pulumi_hooks()


def pytest_unconfigure(config: pytest.Config) -> None:
    _uninstall_pulumi_hooks()


def check_report(item: pytest.Item, report: pytest.TestReport) -> list[Finding]:
    """Scan one phase's report; on a leak redact it and turn it into a failure."""
    findings: list[Finding] = []
    sections = []
    for title, content in report.sections:
        found, clean = scan(content, title.lower())
        findings += found
        sections.append((title, clean))
    if findings:
        report.sections = sections
        # Later phases copy these: redact the item's own sections as well.
        item._report_sections = [(when, key, scan(text)[1]) for when, key, text in item._report_sections]
    original = ""
    if report.longrepr is not None:
        found, original = scan(report.longreprtext, "the failure report" if report.failed else "the report")
        findings += found
    if not findings:
        return []
    unique = list(dict.fromkeys(findings))
    message = f"leakscan: secret material in the {report.when} output of this test (redacted):\n" + "\n".join(
        f"  - {f}" for f in unique
    )
    report.longrepr = f"{original}\n\n{message}" if report.failed and original else message
    report.outcome = "failed"
    if hasattr(report, "wasxfail"):
        del report.wasxfail
    return unique


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    check_report(item, report)
    return report
