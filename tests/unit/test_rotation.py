"""Planned rotation (tls.rotateEvery), forced rotation, and idempotent re-runs.

Two runs of the program share StatefulMocks, which keep a resource's outputs
when its inputs and replacement trigger are unchanged, as the engine's state
does; `changed` lists what a second `pulumi up` would replace or update.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest

from components import rotation
from rehearsal import pki
from rehearsal.engine import StatefulMocks, run_program

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
EVERY = "2160h"  # 90 days
CA = pki.make_ca("Corp CA")
CA_SIGNED = {
    "tls": {"mode": "caSigned", "caCertPem": CA.cert_pem, "caKeyPem": CA.key_pem, "rotateEvery": EVERY}
}


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = T0
        monkeypatch.setattr(rotation, "utcnow", lambda: self.now)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    yield Clock(monkeypatch)


def two_runs(
    first: dict[str, Any], second: dict[str, Any] | None = None, secret_keys: tuple[str, ...] = (),
    clock: Clock | None = None, later: dt.timedelta = dt.timedelta(0),
) -> tuple[StatefulMocks, StatefulMocks]:  # fmt: skip
    a = StatefulMocks()
    run_program(first, secret_keys=secret_keys, mocks=a)
    if clock is not None:
        clock.now = T0 + later
    b = StatefulMocks(previous=a)
    run_program(second if second is not None else first, secret_keys=secret_keys, mocks=b)
    return a, b


ROTATED = {
    "msr-cache-tls-key",
    "msr-cache-tls-cert",
    "msr-cache-files-cache-cert",
    "msr-cache-files-cache-key",
    "msr-cache-service-service",
}


# -- the period arithmetic -----------------------------------------------------


@pytest.mark.parametrize(("text", "hours"), [("2160h", 2160), ("90d", 2160), ("24h", 24), ("1d", 24)])
def test_period_forms(text: str, hours: int) -> None:
    assert rotation.period_hours(text) == hours


@pytest.mark.parametrize("text", ["90", "90 days", "2160H", "0h", "1.5h", "-24h", "1w", ""])
def test_bad_period_forms(text: str) -> None:
    with pytest.raises(ValueError, match="expected a whole number of hours or days"):
        rotation.period_hours(text)


def test_trigger_is_stable_inside_a_period_and_changes_across_it() -> None:
    end = rotation.next_rotation(EVERY, T0)
    assert T0 < end <= T0 + dt.timedelta(hours=2160)
    assert rotation.trigger(EVERY, T0) == rotation.trigger(EVERY, end - dt.timedelta(seconds=1))
    assert rotation.trigger(EVERY, T0) != rotation.trigger(EVERY, end)
    assert rotation.trigger(EVERY, T0) != rotation.trigger("1440h", T0)


# -- planned rotation through the program --------------------------------------


def test_only_the_key_carries_the_trigger(clock: Clock) -> None:
    mocks = StatefulMocks()
    run = run_program(CA_SIGNED, secret_keys=("tls",), mocks=mocks)
    assert mocks.replacement_triggers == {"msr-cache-tls-key": rotation.trigger(EVERY, T0)}
    assert run.exports["nextRotation"] == rotation.next_rotation(EVERY, T0).isoformat()


def test_without_rotate_every_no_trigger_and_no_next_rotation() -> None:
    mocks = StatefulMocks()
    run = run_program({}, mocks=mocks)
    assert mocks.replacement_triggers == {}
    assert run.exports["nextRotation"] is None


def test_a_rerun_inside_the_period_changes_nothing(clock: Clock) -> None:
    _, second = two_runs(CA_SIGNED, secret_keys=("tls",), clock=clock, later=dt.timedelta(days=1))
    assert second.changed == set()


@pytest.mark.parametrize(
    "config", [CA_SIGNED, {"tls": {"rotateEvery": EVERY}}], ids=["caSigned", "selfSigned"]
)
def test_crossing_the_period_rotates_key_cert_secrets_and_updates_the_service(
    clock: Clock, config: dict[str, Any]
) -> None:
    first, second = two_runs(config, secret_keys=("tls",), clock=clock, later=dt.timedelta(hours=2160))
    assert second.changed == ROTATED | ({"msr-cache-tls-csr"} if "caCertPem" in config["tls"] else set())
    # The service changes only in the secrets it mounts, which the provider
    # updates in place (name and mode, which would replace it, are unchanged).
    before = first.memory["msr-cache-service-service"][1]
    after = second.memory["msr-cache-service-service"][1]
    assert (after["name"], after["mode"]) == (before["name"], before["mode"])
    assert {k for k in after if after[k] != before[k]} == {"taskSpec"}
    mounts = after["taskSpec"]["containerSpec"]["secrets"]
    assert {m["secretName"] for m in mounts} != {
        m["secretName"] for m in before["taskSpec"]["containerSpec"]["secrets"]
    }


def test_changing_the_period_rotates_too(clock: Clock) -> None:
    other = {"tls": {**CA_SIGNED["tls"], "rotateEvery": "1440h"}}
    _, second = two_runs(CA_SIGNED, other, secret_keys=("tls",))
    assert second.changed == ROTATED | {"msr-cache-tls-csr"}


def test_the_key_urn_for_forced_rotation_is_the_programs(clock: Clock) -> None:
    run = run_program({}, stack="prod")
    assert rotation.key_urn("prod") == run.engine_urn("msr-cache-tls-key")


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"rotateEvery": "90 days"}, "msr-cache:tls.rotateEvery: .*expected a whole number of hours or days"),
        (
            {"rotateEvery": "8760h"},
            r"msr-cache:tls.rotateEvery: 8760h must be .* 24h shorter than tls.validityHours",
        ),
        ({"rotateEvery": "12h"}, r"msr-cache:tls.rotateEvery: 12h must be at least 24h"),
        (
            {"mode": "provided", "rotateEvery": "90d"},
            r"msr-cache:tls.rotateEvery: cannot rotate a provided certificate",
        ),
    ],
)
def test_bad_rotation_settings_are_named(tls: dict[str, Any], message: str) -> None:
    with pytest.raises(pulumi.RunError, match=message):
        run_program({"tls": tls})


# -- idempotence ---------------------------------------------------------------

CONFIGS = {
    "default": ({}, ()),
    "host-ecdsa-volume": (
        {
            "publishMode": "host",
            "tls": {"keyAlgorithm": "ECDSA", "rotateEvery": "90d"},
            "storage": {"mode": "volume"},
        },
        (),
    ),
    "caSigned-msrCa": ({**CA_SIGNED, "msrCaCert": CA.cert_pem}, ("tls",)),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_same_config_twice_gives_identical_inputs(name: str, clock: Clock) -> None:
    config, secret_keys = CONFIGS[name]
    first, second = two_runs(config, secret_keys=secret_keys, clock=clock, later=dt.timedelta(minutes=5))
    assert second.changed == set()
    assert [(r.typ, r.name) for r in first.resources] and len(first.resources) == len(second.resources)
    before, after = {r.name: r.plain for r in first.resources}, {r.name: r.plain for r in second.resources}
    # Names only in the message: the inputs hold keys and http.secret.
    assert sorted(after) == sorted(before)
    assert [n for n in before if before[n] != after[n]] == []


def test_the_shared_engine_rule_keeps_a_volume_whose_ignored_options_changed() -> None:
    """StatefulMocks and the rehearsal's applier decide alike (rehearsal.engine):
    with ignore_changes, new driver options leave the volume as it is."""
    volume = {"storage": {"mode": "volume", "driverOpts": {"type": "nfs", "o": "addr=10.0.0.9"}}}
    a = StatefulMocks()
    run_program(volume, mocks=a)
    b = StatefulMocks(previous=a)
    run_program(
        {"storage": {**volume["storage"], "driverOpts": {"type": "nfs", "o": "addr=10.0.0.10"}}}, mocks=b
    )
    assert "msr-cache-service-data" not in b.changed
    assert "msr-cache-service-service" in b.changed  # the mount carries the new options
