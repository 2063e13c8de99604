"""bench: what a user's pull from MSR asks MSR for, what that costs over the WAN, and
how `make bench` reports it (issue 12, part 4), with the chained pulls (issue 13).
No swarm: the front's access-log records are written out as the MSR stand-in logs
them."""

from __future__ import annotations

from typing import Any

from bench.__main__ import CHAIN_PULLS as CHAINED
from bench.__main__ import PULLS, rows
from bench.measure import CHAIN_PULLS as MEASURED_CHAINED
from bench.measure import PULLS as MEASURED
from bench.measure import msr_requests, wan_cost

CONFIG, LAYER = "sha256:" + "c" * 64, "sha256:" + "1" * 64


def logged(method: str, path: str, status: int, user: str | None = "tester") -> dict[str, Any]:
    location = f"https://10.77.0.12:5443{path}" if status == 307 else None
    return {"time": "2026-12-01T07:09:49.365+00:00", "client": "10.77.0.1", "method": method,
            "path": path, "user": user, "status": status, "bytes": 0, "location": location}  # fmt: skip


# What the front logged for a warm `docker pull` and a warm API pull by the test user.
DOCKER_WARM = [
    logged("GET", "/v2/", 401, user=None),
    logged("HEAD", "/v2/bench/pull/manifests/0", 200),
    logged("GET", f"/v2/bench/pull/manifests/{'sha256:' + 'f' * 64}", 200),
    logged("GET", f"/v2/bench/pull/blobs/{CONFIG}", 307),
    logged("GET", f"/v2/bench/pull/blobs/{LAYER}", 307),
]
API_WARM = [
    logged("GET", "/v2/bench/api/manifests/0", 200),
    logged("GET", f"/v2/bench/api/blobs/{CONFIG}", 307),
    logged("GET", f"/v2/bench/api/blobs/{LAYER}", 307),
]


def test_a_docker_pull_asks_msr_for_a_challenge_two_manifests_and_a_redirect_per_blob() -> None:
    assert msr_requests(DOCKER_WARM) == {
        "challenge": 1, "ping": 0, "manifest": 2, "redirect": 2, "blob": 0, "other": 0
    }  # fmt: skip


def test_a_blob_msr_serves_itself_is_not_counted_as_a_redirect() -> None:
    no_cache = [logged("GET", f"/v2/bench/pull/blobs/{LAYER}", 200, user="admin")]
    assert msr_requests(no_cache)["blob"] == 1 and msr_requests(no_cache)["redirect"] == 0


def test_docker_waits_four_steps_of_three_round_trips_as_its_blob_redirects_overlap() -> None:
    """Challenge, manifest by tag, manifest by digest, then both blobs at once;
    each on a new connection: TCP, TLS 1.3 and the request, one round trip each."""
    cost = wan_cost(msr_requests(DOCKER_WARM), 5, 50, concurrent_blobs=True, tcp_handshake=True)
    assert cost == (12, 0.6)


def test_the_api_client_waits_for_each_blob_redirect_in_turn() -> None:
    cost = wan_cost(msr_requests(API_WARM), 3, 50, concurrent_blobs=False, tcp_handshake=True)
    assert cost == (9, 0.45)


def test_a_link_that_does_not_charge_tcp_set_up_costs_a_round_trip_less_per_step() -> None:
    cost = wan_cost(msr_requests(DOCKER_WARM), 5, 50, concurrent_blobs=True, tcp_handshake=False)
    assert cost == (8, 0.4)


def test_a_kept_alive_connection_pays_the_handshakes_once() -> None:
    cost = wan_cost(msr_requests(API_WARM), 1, 50, concurrent_blobs=False, tcp_handshake=True)
    assert cost == (5, 0.25)


def results() -> dict[str, Any]:
    pulls = {"direct": 1.5, "wan": 9.9, "userCold": 18.3, "userWarm": 2.1, "userWarmNoWan": 1.5,
             "cacheWarm": 1.4}  # fmt: skip
    warm = {"wanRoundTrips": 12, "expectedWanSeconds": 0.6, "measuredWanSeconds": 0.63}
    return {
        "pulls": {
            "imageMiB": 100,
            "api": {k: v for k, v in pulls.items() if k != "userCold"},
            "dockerPull": pulls,
            "coldPullUpstreamBytes": 210_000_000,
            "userPull": {"warm": {"dockerPull": warm}},
        }
    }


def row(name: str) -> tuple[float | None, float | None]:
    (found,) = [(value, floor) for measure, value, floor, _ in rows(results()) if measure == name]
    return found


def test_the_table_sets_a_warm_redirected_pull_against_the_floor() -> None:
    assert row("docker pull: from MSR over the WAN, user's cache, warm") == (2.1, 1.5)


def test_the_table_sets_a_warm_redirected_pull_against_the_pull_without_a_cache() -> None:
    assert row("docker pull: user's cache warm, against no cache") == (2.1, 9.9)


def test_the_table_sets_the_wans_part_of_a_warm_pull_against_the_round_trips_expected() -> None:
    assert row("docker pull: WAN's part of a warm one; 12 RTTs expected") == (0.63, 0.6)


def test_a_pull_not_measured_has_no_row() -> None:
    names = [measure for measure, *_ in rows(results())]
    assert "API pull: from MSR over the WAN, user's cache, cold" not in names
    assert "docker pull: from MSR over the WAN, user's cache, cold" in names


def test_the_table_reports_every_pull_the_bench_measures() -> None:
    assert [key for key, _, _ in PULLS] == list(MEASURED)


def chained_results() -> dict[str, Any]:
    return {
        **results(),
        "chainedPulls": {
            "imageMiB": 100,
            "api": {"chainCold": 19.2, "chainParentWarm": 1.9, "chainWarm": 1.1},
            "coldPullUpstreamBytes": 210_000_000,
            "parentWarmUpstreamBytes": 0,
        },
    }


def test_the_table_sets_each_chained_pull_against_the_floor() -> None:
    found = {m: (v, f) for m, v, f, _ in rows(chained_results()) if "chained" in m}
    assert found == {
        "API pull, chained site -> hub -> MSR: both cold": (19.2, 1.5),
        "API pull, chained site -> hub -> MSR: site cold, hub warm": (1.9, 1.5),
        "API pull, chained site -> hub -> MSR: site warm": (1.1, 1.5),
        "WAN bytes MSR sent for a chained pull, both cold": (210.0, 104.857_6),
        "WAN bytes MSR sent for a chained pull, hub warm": (0.0, 104.857_6),
    }


def test_the_table_reports_every_chained_pull_the_bench_measures() -> None:
    assert [key for key, _ in CHAINED] == list(MEASURED_CHAINED)


def test_a_bench_without_the_chain_has_no_chained_row() -> None:
    assert not [m for m, *_ in rows(results()) if "chained" in m]


def test_the_table_sets_the_program_and_its_sdk_floor_against_the_bare_import() -> None:
    def case(n: int, seconds: float) -> dict[str, float | int]:
        return {"caches": n, "seconds": seconds}

    cost = {
        "importFloorSeconds": 0.4,
        "mainProgram": case(1, 0.6),
        "cases": [case(1, 0.6), case(50, 1.8)],
        "sdkFloor": [case(1, 0.55), case(50, 1.7)],
    }
    found = {m: (v, f) for m, v, f, _ in rows({"programCost": cost})}
    assert found["program run, 50 cache(s) in one program"] == (1.8, 0.4)
    assert found["SDK floor, 50 cache(s), resources only"] == (1.7, 0.4)
    assert found["SDK floor, 1 cache(s), resources only"] == (0.55, 0.4)
