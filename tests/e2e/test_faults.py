"""Faults on the real swarm: MSR down, a slow WAN, and what survives them.

Each test has its own upstream (so stopping or slowing it disturbs no other
test) and deploys the dev stack against it with the rehearsal applier.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rehearsal import upstream as up
from rehearsal.deploy import Deployed, apply_and_serve
from rehearsal.engine import ROOT
from rehearsal.localswarm import LocalSwarm
from tools.smoke import Image, RegistryError
from tools.stack_file import read_stack

pytestmark = pytest.mark.docker

DEV = read_stack(ROOT / "stacks/Pulumi.dev.yaml")
UNREGISTERED = {"register": False}
# How long an uncached layer may take to fail with MSR down: the cache must
# answer, not hang (its upstream dial fails at once on a refused port).
DOWN_BOUND_S = 30.0
# A cold pull over a 1 Mbit/s link must end (complete or fail) within this.
SLOW_BOUND_S = 90.0


@pytest.fixture
def own_upstream(swarm: LocalSwarm, test_images: None, tmp_path: Path) -> Iterator[up.Upstream]:
    started = up.start(swarm, tmp_path / "upstream", port=5950)
    yield started
    up.stop(swarm, port=5950)


def blobs_of(image: Image) -> list[str]:
    return list(image.blobs)


def fetch_blob(deployed: Deployed, repo: str, digest: str) -> tuple[int, bytes, float]:
    started = time.monotonic()
    status, _, body = deployed.registry().request("GET", f"/v2/{repo}/blobs/{digest}")
    return status, body, time.monotonic() - started


def test_with_msr_down_cached_layers_are_served_and_others_fail_fast(
    rehearsals: Callable[[str], Any], own_upstream: up.Upstream, tmp_path: Path
) -> None:
    # Not registered: these faults are of the data path, and this MSR goes away
    # before the rehearsal is destroyed.
    deployed = apply_and_serve(
        rehearsals("e2e-msr-down"), DEV, own_upstream, tmp_path, UNREGISTERED, log=lambda _m: None
    )
    cached, uncached = up.sample_image(), up.sample_image()
    up.push(own_upstream, "faults/cached", "1", cached)
    up.push(own_upstream, "faults/uncached", "1", uncached)
    deployed.registry().pull("faults/cached", "1")
    time.sleep(2)  # let the cache finish storing what it streamed

    own_upstream.container().stop(timeout=2)

    for digest, data in cached.blobs.items():
        status, body, _ = fetch_blob(deployed, "faults/cached", digest)
        assert (status, body == data) == (200, True), f"cached blob {digest[:19]} not served with MSR down"
    layer = next(d for d in uncached.blobs if uncached.blobs[d][:2] == b"\x1f\x8b")
    status, body, seconds = fetch_blob(deployed, "faults/uncached", layer)
    print(f"uncached layer with MSR down: HTTP {status} after {seconds:.2f} s: {body[:120]!r}")
    assert seconds < DOWN_BOUND_S
    assert status >= 400, "an uncached layer cannot be served with MSR down"
    assert b'"errors"' in body, f"expected a registry error document, got {body[:200]!r}"


@pytest.fixture
def wan(own_upstream: up.Upstream, swarm: LocalSwarm) -> Iterator[Any]:
    """A WAN link between the cache node and the msr node, through this machine
    (its address on the swarm's bridge)."""
    from bench.wan import WanLink

    link = WanLink((swarm.host_address, 0), (own_upstream.host, own_upstream.port), rtt_ms=50, mbit=100)
    link.start()
    yield link
    link.stop()


def test_a_slow_wan_bounds_the_cold_pull_and_warm_pulls_go_on(
    rehearsals: Callable[[str], Any],
    own_upstream: up.Upstream,
    wan: Any,
    tmp_path: Path,
    record_property: Any,
) -> None:
    deployed = apply_and_serve(
        rehearsals("e2e-slow-wan"),
        DEV,
        own_upstream,
        tmp_path,
        {"msrHost": wan.listen_host, "msrPort": wan.port, **UNREGISTERED},
        log=lambda _m: None,
    )
    warm, cold = up.sample_image(), up.sample_image()
    up.push(own_upstream, "faults/warm", "1", warm)
    up.push(own_upstream, "faults/cold", "1", cold)
    deployed.registry().pull("faults/warm", "1")
    time.sleep(2)

    wan.mbit = 1  # the link to MSR drops to 1 Mbit/s
    outcome: dict[str, Any] = {}

    def cold_pull() -> None:
        started = time.monotonic()
        try:
            deployed.registry().pull("faults/cold", "1")
            outcome["result"] = "completed"
        except (RegistryError, OSError) as exc:
            outcome["result"] = f"failed: {exc}"
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=cold_pull, daemon=True)
    thread.start()
    # Warm pulls as clients of an MSR cache make them: MSR (not the cache) serves
    # manifests and redirects layer downloads to the cache, so a warm pull is the
    # cache serving blobs by digest. (The stand-in also proxies manifests, checking
    # each with MSR over the same slow link; that is not the cache's job.)
    warm_times: list[float] = []
    while thread.is_alive() and len(warm_times) < 5:
        started = time.monotonic()
        for digest, data in warm.blobs.items():
            status, body, _ = fetch_blob(deployed, "faults/warm", digest)
            assert (status, body == data) == (200, True)
        warm_times.append(time.monotonic() - started)
        time.sleep(0.5)
    thread.join(SLOW_BOUND_S)
    assert not thread.is_alive(), (
        f"the cold pull at 1 Mbit/s neither completed nor failed in {SLOW_BOUND_S} s"
    )
    record_property("cold_pull_1mbit", outcome)
    record_property("warm_pull_seconds", warm_times)
    print(f"cold pull at 1 Mbit/s: {outcome}; warm pulls meanwhile: {[round(t, 2) for t in warm_times]}")
    assert warm_times, "no warm pull ran while the cold pull was in progress"
    assert max(warm_times) < 5, "warm pulls stalled behind the slow cold pull"
    assert outcome["result"] == "completed"
