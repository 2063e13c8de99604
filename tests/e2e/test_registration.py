"""The cache as MSR users meet it, on the local swarm (issue 12): `up` registers
it with MSR (the stand-in on msrc-msr), a user who chose it pulls from MSR and
gets every layer from the cache, refresh sees a registration deleted in MSR
and `up` restores it, a new port updates MSR, and destroy removes the
registration before the service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rehearsal import upstream as up
from rehearsal.deploy import Deployed, destroy_leaving_nothing
from rehearsal.localswarm import LocalSwarm
from rehearsal.user_pull import cache_client, pull_as_user

pytestmark = pytest.mark.docker

ENTRY = "msr-cache-registration-entry"


def registered(upstream: up.Upstream) -> dict[str, dict[str, str]]:
    return {r["id"]: r for r in upstream.registrations()}


def test_up_registers_the_cache_and_destroy_removes_it_before_the_service(
    deploy: Callable[..., Deployed],
    rehearsals: Callable[[str], Any],
    upstream: up.Upstream,
    swarm: LocalSwarm,
    applied_log: list[str],
) -> None:
    rehearsal = rehearsals("e2e-register")
    deployed = deploy("e2e-register", {"cacheName": "region-e2e"}, rehearsal=rehearsal)
    exports = deployed.run.exports
    rid = exports["registrationId"]
    assert registered(upstream)[rid] == {"id": rid, "name": "region-e2e", "host": exports["cacheUrl"]}
    # What a state file would hold: never the token.
    saved = next(r for r in rehearsal.state.to_json() if r["name"] == ENTRY)
    assert "token" not in saved["outputs"] and saved["outputs"]["name"] == "region-e2e"

    destroy_leaving_nothing(rehearsal, swarm, log=lambda _m: None)
    assert rid not in registered(upstream)
    deleted = [line.split(" (")[0] for line in applied_log if line.startswith("deleted ")]
    assert deleted.index(f"deleted Registration {ENTRY}") < deleted.index(
        "deleted Service msr-cache-service-service"
    ), "MSR stops sending users to the cache before it goes"


def test_a_user_who_chose_the_cache_gets_every_layer_from_it(
    deploy: Callable[..., Deployed], upstream: up.Upstream, swarm: LocalSwarm
) -> None:
    deployed = deploy("e2e-redirect")
    rid = deployed.run.exports["registrationId"]
    upstream.set_user_cache(upstream.test_user, rid)
    image = up.sample_image()
    up.push(upstream, "e2e/redirect", "1", image)
    msr = upstream.registry(as_user=upstream.test_user)
    cache_for = cache_client(deployed.run.exports["cacheUrl"], deployed.address, str(deployed.ca_file))

    cold = pull_as_user(msr, "e2e/redirect", "1", cache_for)
    assert (
        cold.digest == image.digest and sorted(cold.from_cache) == sorted(image.blobs) and not cold.from_msr
    )
    # On a miss the cache fetched the layers from MSR.
    assert set(image.blobs) <= set(upstream.wait_quiet())
    before = upstream.blob_bytes_served(image.blobs)
    warm = pull_as_user(msr, "e2e/redirect", "1", cache_for)
    assert sorted(warm.from_cache) == sorted(image.blobs)
    assert upstream.blob_bytes_served(image.blobs) == before, "MSR served layer bytes on a warm pull"

    # `docker pull` from MSR by a site's engine (the cache node's: cacheHost is
    # localhost there), following MSR's redirects to the cache.
    engine = swarm.cache.client()
    ref = f"{upstream.host}:{upstream.port}/e2e/redirect"
    pulled = engine.images.pull(
        ref, tag="1", auth_config={"username": upstream.test_user, "password": upstream.test_password}
    )
    engine.images.remove(pulled.id, force=True)
    assert upstream.blob_bytes_served(image.blobs) == before
    redirects = [
        r for r in upstream.front_log() if r["status"] == 307 and "/e2e/redirect/blobs/" in r["path"]
    ]
    assert {r["user"] for r in redirects} == {upstream.test_user}

    # A user with no cache gets the layers from MSR itself.
    upstream.set_user_cache(upstream.test_user, None)
    direct = pull_as_user(msr, "e2e/redirect", "1", cache_for)
    assert sorted(direct.from_msr) == sorted(image.blobs) and not direct.from_cache


def test_a_registration_deleted_in_msr_is_seen_by_refresh_and_restored_by_up(
    deploy: Callable[..., Deployed], rehearsals: Callable[[str], Any], upstream: up.Upstream
) -> None:
    rehearsal = rehearsals("e2e-drift")
    first = deploy("e2e-drift", rehearsal=rehearsal)
    rid = first.run.exports["registrationId"]
    upstream.unregister_cache(rid)
    assert rehearsal.refresh() == [ENTRY]
    again = deploy("e2e-drift", rehearsal=rehearsal)
    restored = again.run.exports["registrationId"]
    assert registered(upstream)[restored]["host"] == again.run.exports["cacheUrl"]


def test_a_new_cache_port_updates_msr(
    deploy: Callable[..., Deployed], rehearsals: Callable[[str], Any], upstream: up.Upstream
) -> None:
    rehearsal = rehearsals("e2e-port")
    first = deploy("e2e-port", {"cachePort": 5491}, rehearsal=rehearsal)
    moved = deploy("e2e-port", {"cachePort": 5492}, rehearsal=rehearsal)
    mine = [r for r in upstream.registrations() if r["name"] == "e2e-port"]
    assert [r["host"] for r in mine] == ["https://localhost:5492"]
    assert first.run.exports["registrationId"] not in registered(upstream)
    assert moved.run.exports["registrationId"] == mine[0]["id"]
