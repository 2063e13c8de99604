"""The MSR stand-in on the msr node (issue 12): the front of rehearsal/msr_front.py
at msrHost/msrPort, the registry behind it, and what the content cache depends on:
the content-cache API from this machine, pushes and manifests for users, the
redirect of a user's blob download to their cache, and the cache fetching that
blob from MSR without credentials."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rehearsal import upstream as up
from rehearsal.deploy import Deployed
from rehearsal.localswarm import LocalSwarm
from tests.support.leakscan import remember
from tools.smoke import MANIFEST_V2

pytestmark = pytest.mark.docker

FAKE_CACHE = "https://cache.e2e.test:5443"
# A port of its own: start/stop of this test's stand-ins disturb no other test.
OWN_PORT = 5970


@pytest.fixture
def msr(upstream: up.Upstream) -> up.Upstream:
    """The session's stand-in, its credentials known to the leak scan."""
    remember(upstream.admin_token, "the MSR stand-in's admin token")
    remember(upstream.test_password, "the MSR stand-in's test password")
    return upstream


@pytest.fixture
def tester_cache(msr: up.Upstream) -> Iterator[Callable[[str], dict[str, str]]]:
    """Point the test user at a cache (registering it unless it is already
    registered, e.g. by the program); everything undone afterwards."""
    made: list[str] = []

    def choose(host: str) -> dict[str, str]:
        found = [r for r in msr.registrations() if r["host"] == host]
        if found:
            chosen = found[0]
        else:
            chosen = msr.register_cache(f"e2e-{secrets.token_hex(4)}", host)
            made.append(chosen["id"])
        msr.set_user_cache(msr.test_user, chosen["id"])
        return chosen

    yield choose
    msr.set_user_cache(msr.test_user, None)
    for cache_id in made:
        msr.unregister_cache(cache_id)


def layer_of(image: up.Image) -> str:
    return next(d for d, data in image.blobs.items() if data[:2] == b"\x1f\x8b")


def test_the_content_cache_api_round_trip_from_this_machine(msr: up.Upstream) -> None:
    name = f"e2e-{secrets.token_hex(4)}"
    made = msr.register_cache(name, FAKE_CACHE)
    assert made == {"id": made["id"], "name": name, "host": FAKE_CACHE}
    assert made in msr.registrations()
    msr.unregister_cache(made["id"])
    assert made not in msr.registrations()


def test_a_push_is_served_back_to_a_user_as_a_manifest(msr: up.Upstream) -> None:
    image = up.sample_image()
    up.push(msr, "e2e/stand-in", "1", image)
    status, headers, body = msr.registry(msr.test_user).request(
        "GET", "/v2/e2e/stand-in/manifests/1", headers={"Accept": MANIFEST_V2}
    )
    assert (status, body, headers["docker-content-digest"]) == (200, image.manifest, image.digest)


def test_a_push_without_credentials_is_refused(msr: up.Upstream) -> None:
    status, headers, _ = msr.registry(None).request("POST", "/v2/e2e/stand-in/blobs/uploads/")
    assert status == 401
    assert headers["www-authenticate"] == 'Basic realm="msr-stand-in"'


def test_a_user_with_a_cache_is_redirected_for_blobs_without_msr_sending_them(
    msr: up.Upstream, tester_cache: Callable[[str], dict[str, str]]
) -> None:
    image = up.sample_image()
    up.push(msr, "e2e/redirected", "1", image)
    tester_cache(FAKE_CACHE)
    layer = layer_of(image)
    status, headers, body = msr.registry(msr.test_user).request("GET", f"/v2/e2e/redirected/blobs/{layer}")
    assert (status, headers["location"], body) == (307, f"{FAKE_CACHE}/v2/e2e/redirected/blobs/{layer}", b"")
    assert msr.blob_bytes_served([layer]) == 0


def test_the_redirect_leads_to_the_cache_which_fetches_the_blob_from_msr_without_credentials(
    deploy: Callable[..., Deployed],
    msr: up.Upstream,
    tester_cache: Callable[[str], dict[str, str]],
    swarm: LocalSwarm,
) -> None:
    deployed = deploy("e2e-stand-in")
    cache_url = str(deployed.run.exports["cacheUrl"])
    image = up.sample_image()
    up.push(msr, "e2e/via-cache", "1", image)
    tester_cache(cache_url)
    layer = layer_of(image)
    path = f"/v2/e2e/via-cache/blobs/{layer}"

    status, headers, _ = msr.registry(msr.test_user).request("GET", path)
    assert (status, headers["location"]) == (307, cache_url + path)
    # What Docker does next: the same path from the cache (its own TLS, its own CA).
    status, _, body = deployed.registry().request("GET", headers["location"].removeprefix(cache_url))
    assert (status, body == image.blobs[layer]) == (200, True)

    fetched = [
        r for r in msr.front_log() if r["path"] == path and r["method"] == "GET" and r["status"] == 200
    ]
    assert fetched, "the cache did not fetch the layer from MSR"
    assert {(r["user"], r["client"]) for r in fetched} == {(None, swarm.cache.address)}
    assert msr.blob_bytes_served([layer]) >= len(image.blobs[layer])


def test_stop_leaves_no_front_and_no_container_also_after_a_killed_run(
    swarm: LocalSwarm, test_images: None, tmp_path: Path
) -> None:
    containers = swarm.msr.client().containers
    name = f"{up.INSTANCE_PREFIX}{OWN_PORT}"
    try:
        # The first is left running, as a killed run leaves it; the second replaces it.
        up.start(swarm, tmp_path / "first", OWN_PORT)
        second = up.start(swarm, tmp_path / "second", OWN_PORT)
        assert up.front_processes(OWN_PORT) == [second.front_pid()]
        assert [c.id for c in containers.list(all=True, filters={"name": name})] == [second.container_id]
        assert second.registry().request("GET", "/v2/")[0] == 200
    finally:
        up.stop(swarm, OWN_PORT)
    assert up.front_processes(OWN_PORT) == []
    assert containers.list(all=True, filters={"name": name}) == []
    assert not (tmp_path / "second" / up.FRONT_PID).exists()
    with pytest.raises(OSError), socket.create_connection((swarm.msr.address, OWN_PORT), timeout=2):
        pass
    up.stop(swarm, OWN_PORT)  # nothing left to stop: no error
