"""Planned certificate rotation (`msr-cache:tls.rotateEvery`), as pure functions.

Time is cut into periods of `rotateEvery`, counted from the Unix epoch. The
period the run falls in is the key's `replacement_trigger`: it stays the same
for every run inside a period (so re-runs change nothing), and the first
`pulumi up` after a boundary sees a new value and replaces the key, which
replaces the certificate and the two Swarm secrets and updates the service in
place. pulumi-tls's `early_renewal_hours` cannot do this (pulumi-tls #39).

A certificate made anywhere in a period is replaced at most `rotateEvery`
later, provided `pulumi up` runs after the boundary; settings require
`rotateEvery` to be at least a day shorter than `validityHours`, and the
difference is the grace time to run it.
"""

from __future__ import annotations

import datetime as dt
import re

_PERIOD_RE = re.compile(r"^([1-9][0-9]{0,6})(h|d)$")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
PROJECT = "msr-cache"


def period_hours(text: str) -> int:
    """ "2160h" or "90d" in hours; ValueError for anything else."""
    m = _PERIOD_RE.match(text)
    if not m:
        raise ValueError("expected a whole number of hours or days, e.g. 2160h or 90d")
    return int(m.group(1)) * (24 if m.group(2) == "d" else 1)


def utcnow() -> dt.datetime:
    """The program's one clock for rotation (tests replace it)."""
    return dt.datetime.now(dt.UTC)


def period_index(every_hours: int, now: dt.datetime) -> int:
    return int((now - EPOCH).total_seconds() // (every_hours * 3600))


def trigger(every: str, now: dt.datetime) -> str:
    """The replacement trigger: the period and which one we are in."""
    return f"rotateEvery={every};period={period_index(period_hours(every), now)}"


def next_rotation(every: str, now: dt.datetime) -> dt.datetime:
    """When the current period ends: the first `pulumi up` after this rotates."""
    hours = period_hours(every)
    return EPOCH + dt.timedelta(hours=hours * (period_index(hours, now) + 1))


def key_urn(stack: str, project: str = PROJECT) -> str:
    """URN of the cache's private key, for `pulumi up --replace` (forced rotation)."""
    parents = "msrcache:index:MsrCache$msrcache:index:CacheTls"
    return f"urn:pulumi:{stack}::{project}::{parents}$tls:index/privateKey:PrivateKey::msr-cache-tls-key"
