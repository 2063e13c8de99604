"""Fetching MSR's CA certificate, as the docs do with `curl -sk https://<msr>/ca`.

MSR serves its CA at /ca. The fetch skips verification on purpose (the CA is
what we do not trust yet), exactly like the documented curl; the operator
checks the fingerprint the stack exports against the one MSR shows.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from components import certs

if TYPE_CHECKING:
    from components.settings import Settings

TIMEOUT_SECONDS = 15
MAX_BYTES = 1 << 20


class FetchError(Exception):
    """MSR's CA could not be fetched or is not a certificate."""


def ca_url(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{port}/ca"


def fetch_msr_ca(host: str, port: int, timeout: float = TIMEOUT_SECONDS) -> str:
    """PEM text of MSR's CA; raises FetchError with the reason."""
    url = ca_url(host, port)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:  # noqa: S310
            body = resp.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"could not fetch {url}: {reason}") from None
    if len(body) > MAX_BYTES:
        raise FetchError(f"{url} answered more than {MAX_BYTES} bytes; expected a PEM certificate")
    text = body.decode("utf-8", errors="replace").strip() + "\n"
    try:
        cas = certs.load_certificates(text)
    except certs.PemError as exc:
        raise FetchError(f"{url} {exc}") from None
    if any(certs.is_expired(ca) for ca in cas):
        raise FetchError(f"{url} served an expired certificate")
    return text


def resolve_msr_ca(settings: Settings, fetch: Callable[[str, int], str] = fetch_msr_ca) -> str | None:
    """MSR's CA for dtr.cert.pem: msrCaCert, or fetched when fetchMsrCa is true,
    or None (MSR publicly trusted). A failed fetch is a configuration error."""
    import pulumi

    from components.settings import Problem, SettingsError

    if settings.msr_ca_cert:
        return settings.msr_ca_cert.strip() + "\n"
    if not settings.fetch_msr_ca:
        return None
    try:
        return fetch(settings.msr_host, settings.msr_port)
    except FetchError as exc:
        problem = Problem(
            "fetchMsrCa",
            settings.redact(
                f"is true, but {exc}; expected MSR to serve its CA there, or set msrCaCert instead"
            ),
        )
        raise pulumi.RunError(str(SettingsError([problem]))) from None
