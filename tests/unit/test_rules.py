"""The value rules shared by the settings and the policy pack (components/rules.py).

The table tests feed the same values to `parse_settings` and to the policy pack's
checks and require the same verdict: a stack that passes one passes the other.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from components import rules
from components.settings import SettingsError, parse_settings
from policy import msrcache_policies as mp
from tests.unit.test_policy import GOOD_SERVICE, changed, check, with_downstream

BASE: dict[str, Any] = {
    "msrHost": "msr.example.com",
    "cacheHost": "cache.example.com",
    "cacheNode": "node-1",
    "register": False,
}
DIGEST = "sha256:" + "ab" * 32


def settings_refuse(key: str, value: Any) -> bool:
    try:
        parse_settings({**BASE, key: value})
    except SettingsError as exc:
        return any(p.key == key for p in exc.problems)
    return False


IMAGES = [
    ("mirantis/dtr-content-cache:2.8.2", True),
    (f"mirantis/dtr-content-cache@{DIGEST}", True),
    (f"registry.example.com:5000/team/cache:1.0@{DIGEST}", True),
    ("localhost/cache:1", True),
    ("10.77.0.13:5999/msrc-test/dtr-content-cache-stand-in:2.8.2", True),
    ("mirantis/dtr-content-cache:latest", False),
    ("registry.example.com:5000/cache:latest", False),
    ("mirantis/dtr-content-cache", False),
    ("127.0.0.1:5999/x/y", False),  # the port is not a tag
    ("mirantis/dtr-content-cache@sha256:abc", False),
    ("mirantis/dtr-content-cache:", False),
    ("Mirantis/Cache:1", False),
    ("https://registry.example.com/cache:1", False),
]


@pytest.mark.parametrize(("image", "good"), IMAGES)
def test_settings_and_policy_agree_on_the_image(image: str, good: bool) -> None:
    policy_refuses = bool(
        check(mp.check_image_pinned, mp.SERVICE, changed(GOOD_SERVICE, "taskSpec.containerSpec.image", image))
    )
    assert (settings_refuse("image", image), policy_refuses) == (not good, not good)


TTLS = [
    ("24h", True),
    ("1h", True),
    ("720h", True),
    ("90m", True),
    ("1h30m", True),  # a Go duration that Distribution accepts
    ("1.5h", True),
    ("719h59m60s", True),
    ("30m", False),
    ("59m59s", False),
    ("721h", False),
    ("99999h", False),
    ("-24h", False),
    ("24", False),
    ("1d", False),
    (" 24h", False),
    ("24 hours", False),
]


def policy_refuses_ttl(ttl: str) -> bool:
    props = with_downstream({"blobttl": ttl, "upstreams": ["https://msr.example.com:443"]})
    # Whichever resource carries config.yml (a config, or a secret) is checked.
    return bool(
        check(mp.check_blob_ttl, mp.SERVICE_CONFIG, props) + check(mp.check_blob_ttl, mp.SWARM_SECRET, props)
    )


@pytest.mark.parametrize(("ttl", "good"), TTLS)
def test_settings_and_policy_agree_on_the_blob_ttl(ttl: str, good: bool) -> None:
    assert (settings_refuse("blobTtl", ttl), policy_refuses_ttl(ttl)) == (not good, not good)


@pytest.mark.parametrize(
    ("host", "good"),
    [
        ("msr.example.com", True),
        ("localhost", True),
        ("10.0.0.5", True),
        ("2001:db8::5", True),
        ("1.example.com", True),
        ("999.1.1.1", False),
        ("10.0.0.300", False),
        ("10.0.0", False),
        ("5", False),
        ("msr.example.123", False),
        ("https://msr.example.com", False),
        ("msr.example.com:443", False),
        ("-msr.example.com", False),
    ],
)
def test_host_names(host: str, good: bool) -> None:
    assert (rules.host_problem(host) is None, settings_refuse("msrHost", host)) == (good, not good)


def test_a_bad_dotted_quad_says_what_is_wrong_with_it() -> None:
    assert "is not a valid IP address" in str(rules.host_problem("999.1.1.1"))


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("127.0.0.1:5999/x/y:1.2", ("127.0.0.1:5999/x/y", "1.2", None)),
        ("127.0.0.1:5999/x/y", ("127.0.0.1:5999/x/y", None, None)),
        ("y:1.2", ("y", "1.2", None)),
        ("team/y:1.2", ("team/y", "1.2", None)),
        (f"host:1/y:t@{DIGEST}", ("host:1/y", "t", DIGEST)),
        ("Team/y:1", None),  # an upper-case path component is no host either
    ],
)
def test_image_reference_parsing(reference: str, expected: tuple[str, str | None, str | None] | None) -> None:
    assert rules.parse_image(reference) == (rules.ImageReference(*expected) if expected else None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24h", "86400"),
        ("1h30m", "5400"),
        ("1.5h", "5400"),
        (".5h", "1800"),
        ("1.h", "3600"),
        ("-2h", "-7200"),
        ("+90m", "5400"),
        ("0", "0"),
        ("300ms", "0.3"),
        ("2\u00b5s", "0.000002"),
        ("1h1h", "7200"),
        ("", None),
        ("h", None),
        ("24", None),
        ("1h 30m", None),
        (" 24h", None),
        ("1d", None),
        ("--1h", None),
    ],
)
def test_go_duration_parsing(text: str, seconds: str | None) -> None:
    parsed = rules.parse_go_duration(text)
    assert (str(parsed.normalize()) if parsed is not None else None) == (
        str(Decimal(seconds).normalize()) if seconds is not None else None
    )
