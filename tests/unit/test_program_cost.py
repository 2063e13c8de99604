"""bench.program_cost: the N-cache program registers N times what __main__.py does, and
measure() reports JSON-able figures with the ratios computed from them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench import program_cost
from rehearsal import engine as program


def _types(mocks: program.RecordingMocks) -> Counter[str]:
    return Counter(r.typ for r in mocks.resources)


def test_n_caches_register_n_times_what_main_registers() -> None:
    main = program_cost.run_main()
    # FastMocks only answer keys differently: the same registrations as RecordingMocks.
    plain = program.run_program({"tls": {"keyAlgorithm": "ECDSA"}})
    assert _types(main) == _types(plain.mocks)
    per_cache = len(main.resources)
    assert per_cache == 13
    for n in (1, 3):
        mocks = program_cost.run_caches(n)
        assert len(mocks.resources) == n * per_cache
        assert _types(mocks) == Counter({t: c * n for t, c in _types(main).items()})
        assert len({r.name for r in mocks.resources}) == n * per_cache


def test_n_caches_are_the_entries_of_caches_in_the_real_program() -> None:
    mocks = program_cost.run_caches(2)
    components = sorted(r.name for r in mocks.resources if r.typ == "msrcache:index:MsrCache")
    assert components == ["msr-cache-c0", "msr-cache-c1"]  # __main__.py's names for caches entries


def test_caches_are_distinct() -> None:
    mocks = program_cost.run_caches(3)
    services = [r.plain for r in mocks.resources if r.typ == "docker:index/service:Service"]
    assert sorted(s["name"] for s in services) == ["msr-cache-dev-c0", "msr-cache-dev-c1", "msr-cache-dev-c2"]
    ports = sorted(s["endpointSpec"]["ports"][0]["publishedPort"] for s in services)
    assert ports == [5000, 5001, 5002]
    certs = [r.plain for r in mocks.resources if r.typ == "tls:index/selfSignedCert:SelfSignedCert"]
    assert sorted(c["dnsNames"][0] for c in certs) == [f"cache{i}.example.com" for i in range(3)]


def test_the_sdk_floor_registers_the_programs_resources() -> None:
    # Same types, names and parents (so URNs), and the same provider classes: the
    # floor differs from the program by the program's own work only.
    program_run, floor = program_cost.run_caches(3), program_cost.run_floor(3)
    names = [r.name for r in program_run.resources]
    assert sorted(r.name for r in floor.resources) == sorted(names)
    assert {n: floor.urns[n] for n in names} == {n: program_run.urns[n] for n in names}
    assert _types(floor) == _types(program_run)
    # Minimal inputs: nothing of the program's settings reaches the service.
    (service,) = [r.plain for r in floor.resources if r.name == "msr-cache-c0-service-service"]
    assert set(service) == {"taskSpec"}


def test_fast_mocks_answer_every_key_with_one_ecdsa_key() -> None:
    mocks = program_cost.run_caches(2)
    keys = [r for r in mocks.resources if r.typ == program_cost.PRIVATE_KEY]
    assert [k.plain["algorithm"] for k in keys] == ["RSA", "RSA"]  # the default settings ask for RSA
    pems = {program.unwrap(k.state["privateKeyPem"]) for k in keys}
    assert len(pems) == 1 and "BEGIN PRIVATE KEY" in pems.pop()
    assert all(program.is_secret_wrapper(k.state["privateKeyPem"]) for k in keys)


def test_measure_in_fresh_interpreters() -> None:
    results = program_cost.measure(ns=(1, 3), runs=1)
    assert json.loads(json.dumps(results)) == results
    floor = results["importFloorSeconds"]
    assert floor > 0 and results["importFloorRunsSeconds"] == [floor]
    cases = {c["caches"]: c for c in results["cases"]}
    assert sorted(cases) == [1, 3]
    assert (cases[1]["resources"], cases[3]["resources"]) == (13, 39)
    assert (cases[1]["customResources"], cases[3]["customResources"]) == (8, 24)
    assert cases[1]["ratioToOneCache"] == 1.0
    assert cases[3]["ratioToOneCache"] == pytest.approx(cases[3]["seconds"] / cases[1]["seconds"], abs=1e-3)
    main = results["mainProgram"]
    assert (main["caches"], main["resources"], main["customResources"]) == (1, 13, 8)
    for case in [*results["cases"], main]:
        assert case["ratioToImport"] == pytest.approx(case["seconds"] / floor, abs=1e-3)
        assert case["runsSeconds"] == [case["seconds"]]
        assert case["importSeconds"] + case["evaluationSeconds"] == pytest.approx(case["seconds"], abs=1e-3)
        assert case["evaluationSeconds"] > 0
    sdk = {c["caches"]: c for c in results["sdkFloor"]}
    assert sorted(sdk) == [1, 3]
    assert (sdk[1]["resources"], sdk[3]["resources"]) == (13, 39)
    assert (sdk[1]["customResources"], sdk[3]["customResources"]) == (8, 24)
    assert sdk[3]["ratioToOneCache"] == pytest.approx(sdk[3]["seconds"] / sdk[1]["seconds"], abs=1e-3)
    for n in (1, 3):
        assert cases[n]["ratioToFloor"] == pytest.approx(cases[n]["seconds"] / sdk[n]["seconds"], abs=1e-3)
    table = program_cost.table(results)
    assert "__main__.py (1 cache)" in table and "3 cache(s) in caches" in table
    assert "SDK floor, 3 cache(s)" in table


def test_ratio_to_one_cache_is_against_the_one_cache_case(monkeypatch: pytest.MonkeyPatch) -> None:
    seconds = {"main": 1.1, "1": 1.0, "10": 1.4, "50": 2.9, "floor:1": 0.8, "floor:10": 1.0, "floor:50": 2.0}

    def case(name: str) -> dict[str, float | int]:
        n = 1 if name == "main" else int(name.removeprefix("floor:"))
        return {"seconds": seconds[name], "importSeconds": 0.5, "evaluationSeconds": seconds[name] - 0.5,
                "resources": 13 * n, "customResources": 8 * n}  # fmt: skip

    monkeypatch.setattr(program_cost, "_case", case)
    monkeypatch.setattr(program_cost, "_import_floor", lambda: 0.4)
    results = program_cost.measure(ns=(1, 10, 50), runs=1)
    assert [c["ratioToOneCache"] for c in results["cases"]] == [1.0, 1.4, 2.9]
    assert "ratioToOneCache" not in results["mainProgram"]
    # The floor against its own one cache; each program case against the floor's.
    assert [c["ratioToOneCache"] for c in results["sdkFloor"]] == [1.0, 1.25, 2.5]
    assert [c["ratioToFloor"] for c in results["cases"]] == [1.25, 1.4, 1.45]
    lines = program_cost.table(results).splitlines()
    assert lines[-4].split()[-2:] == ["2.90", "1.45"]
    assert lines[-1].split()[-1] == "2.50"
    without_one = program_cost.measure(ns=(10,), runs=1)
    assert without_one["cases"][0]["ratioToOneCache"] is None
    assert without_one["sdkFloor"][0]["ratioToOneCache"] is None


def test_measure_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        program_cost.measure(ns=(0,), runs=1)
    with pytest.raises(ValueError):
        program_cost.measure(ns=(1,), runs=0)
