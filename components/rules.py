"""The rules a value must follow, in one place for the settings and the policy pack.

`components/settings.py` applies them to the stack configuration before any
resource is registered; `policy/msrcache_policies.py` applies them to the
resources at preview. Both import this module (the policy pack's virtualenv
installs the project), so a value cannot pass one and fail the other; a table
test feeds the same values to both.

Each `*_problem` function returns None for a good value, or the reason it is
not, ending in the expected form.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

# -- image references ---------------------------------------------------------

# distribution/reference's grammar: [domain[:port]/]path-components[:tag][@digest].
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?)"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE: Final = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Za-z=_-]+))?$"
)
_SHA256_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGE_FORM: Final = (
    "an image pinned by a version tag (not latest) or a sha256 digest, e.g. "
    "mirantis/dtr-content-cache:2.8.2 or mirantis/dtr-content-cache@sha256:<64 hex digits>"
)


@dataclass(frozen=True)
class ImageReference:
    repository: str
    tag: str | None
    digest: str | None


def parse_image(reference: str) -> ImageReference | None:
    """The parts of an image reference, or None when it breaks the grammar.

    A first component is a registry host only when it has a '.' or ':' or is
    `localhost` (distribution's rule); otherwise `a/b` is a path, and the
    reference names no registry."""
    m = _IMAGE_RE.match(reference)
    if not m or len(reference) > 4096:
        return None
    domain, path = m.group("domain"), m.group("path")
    is_host = domain is not None and ("." in domain or ":" in domain or domain == "localhost")
    # Otherwise it was the first path component, and must follow that grammar.
    if domain is not None and not is_host and not re.fullmatch(_PATH_COMPONENT, domain):
        return None
    repository = f"{domain}/{path}" if domain else path
    if len(path) > 255:
        return None
    return ImageReference(repository, m.group("tag"), m.group("digest"))


def image_problem(reference: str) -> str | None:
    ref = parse_image(reference)
    if ref is None:
        return f"is not an image reference; expected {IMAGE_FORM}"
    if ref.digest is not None:
        return None if _SHA256_RE.match(ref.digest) else f"has a malformed digest; expected {IMAGE_FORM}"
    if ref.tag is None:
        return f"has no tag, so Docker pulls ':latest'; expected {IMAGE_FORM}"
    if ref.tag == "latest":
        return f"uses the floating tag 'latest'; expected {IMAGE_FORM}"
    return None


# -- Go durations and the blob TTL ---------------------------------------------

_GO_UNITS: Final = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "\u00b5s": Decimal("1e-6"),  # micro sign
    "\u03bcs": Decimal("1e-6"),  # Greek mu
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_GO_PART_RE: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")

# blobttl bounds, in seconds: 1h .. 720h (30 days). Shorter refetches layers over
# the WAN all the time; longer keeps layers MSR has deleted for a month or more.
MIN_BLOB_TTL: Final = Decimal(3600)
MAX_BLOB_TTL: Final = Decimal(720 * 3600)
BLOB_TTL_FORM: Final = "a Go duration from 1h to 720h (30 days), e.g. 24h, 90m or 1h30m"


def parse_go_duration(text: str) -> Decimal | None:
    """Seconds in a Go duration string, as time.ParseDuration reads it ('24h',
    '90m', '1h30m', '1.5h', '-2h', '0'); None when it is not one."""
    if text != text.strip():
        return None  # Go reads no surrounding space
    rest = text
    sign = Decimal(1)
    if rest and rest[0] in "+-":
        sign = Decimal(-1) if rest[0] == "-" else Decimal(1)
        rest = rest[1:]
    if rest == "0":
        return Decimal(0)
    if not rest:
        return None
    total = Decimal(0)
    pos = 0
    while pos < len(rest):
        part = _GO_PART_RE.match(rest, pos)
        if not part:
            return None
        try:
            total += Decimal(part.group(1)) * _GO_UNITS[part.group(2)]
        except InvalidOperation:
            return None
        pos = part.end()
    return sign * total


def blob_ttl_problem(text: str) -> str | None:
    seconds = parse_go_duration(text)
    if seconds is None:
        return f"is not a Go duration; expected {BLOB_TTL_FORM}"
    if seconds < MIN_BLOB_TTL:
        return f"is shorter than 1h; expected {BLOB_TTL_FORM}"
    if seconds > MAX_BLOB_TTL:
        return f"is longer than 720h; expected {BLOB_TTL_FORM}"
    return None


# -- host names -----------------------------------------------------------------

_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE: Final = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
HOST_FORM: Final = "a DNS host name or an IP address, without scheme, port or path"


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_dns_name(value: str) -> bool:
    """A DNS name (not an IP address). Its last label is not all digits (RFC 3696
    2: no top-level domain is), so `999.1.1.1` or `10.0.0.300` is neither an IP
    address nor a name, where the plain label grammar would take it."""
    if is_ip(value) or len(value) > 253 or not _HOSTNAME_RE.match(value):
        return False
    return not value.rsplit(".", 1)[-1].isdigit()


def host_problem(value: str) -> str | None:
    if is_ip(value) or is_dns_name(value):
        return None
    if all(part.isdigit() for part in value.split(".")):
        return f"is not a valid IP address (each of its 4 numbers is 0-255); expected {HOST_FORM}"
    if "://" in value:
        return f"has a scheme; expected {HOST_FORM}"
    if ":" in value or "/" in value:
        return f"has a port or path; expected {HOST_FORM}"
    return f"is not a host name; expected {HOST_FORM}"


# -- credentials in text -------------------------------------------------------

# A credential in a volume driver option (CIFS `o: username=u,password=p`, a
# `secret=` or `token=`): group 1 is the option's name, group 2 its value: a
# quoted string, or up to the next comma, space or quote (a colon that ends
# the options in a Docker error is left out). The settings refuse one in plain
# text; the operator tools blank it out of any message that quotes one.
CREDENTIAL_OPTION: Final = re.compile(
    r"(?:^|(?<=[,\s'\"=]))(pass(?:word|wd)?|secret|token|credentials?)="
    r"('[^']*'|\"[^\"]*\"|[^,\s'\"]+?(?=[,\s'\"]|:?$|:\s))",
    re.IGNORECASE,
)
