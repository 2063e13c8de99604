"""Planned certificate renewal, on by default (tls.renewBeforeHours -> pulumi-tls
early_renewal_hours), and the policy that refuses a certificate never renewed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from components import rotation
from components.settings import SettingsError, parse_settings
from policy import msrcache_policies as mp
from rehearsal.engine import run_program
from rehearsal.resources import Created, LocallySignedCert, SelfSignedCert
from tests.unit.test_policy import analyze, deploy, only

BASE: dict[str, Any] = {
    "msrHost": "msr.example.com",
    "cacheHost": "cache.example.com",
    "cacheNode": "node-1",
    "register": False,
}


def tls_problems(tls: dict[str, Any]) -> list[str]:
    try:
        parse_settings({**BASE, "tls": tls})
    except SettingsError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_renewal_is_on_by_default_a_month_before_expiry() -> None:
    assert parse_settings(BASE).tls.effective_renew_before_hours == 720


def test_a_short_lived_certificate_is_renewed_in_its_last_quarter() -> None:
    assert parse_settings({**BASE, "tls": {"validityHours": 200}}).tls.effective_renew_before_hours == 50


@pytest.mark.parametrize("hours", [4380, 9000])
def test_a_window_of_half_the_validity_or_more_is_refused(hours: int) -> None:
    (problem,) = tls_problems({"renewBeforeHours": hours})
    assert problem.startswith("msr-cache:tls.renewBeforeHours: ")
    assert "below half of tls.validityHours (8760)" in problem


def test_never_renewing_is_not_a_choice() -> None:
    (problem,) = tls_problems({"renewBeforeHours": 0})
    assert problem.startswith("msr-cache:tls.renewBeforeHours: is not valid; expected a whole number")


def test_a_provided_certificate_cannot_be_renewed_by_the_program() -> None:
    problems = tls_problems({"mode": "provided", "renewBeforeHours": 100})
    assert any(
        p.startswith("msr-cache:tls.renewBeforeHours: cannot renew a provided certificate") for p in problems
    )


@pytest.mark.parametrize(
    ("config", "typ"),
    [
        ({}, "tls:index/selfSignedCert:SelfSignedCert"),
        (
            {"tls": {"validityHours": 2000, "renewBeforeHours": 300}},
            "tls:index/selfSignedCert:SelfSignedCert",
        ),
    ],
)
def test_the_certificate_carries_the_window(config: dict[str, Any], typ: str) -> None:
    run = run_program({**BASE, **config}, base={})
    (cert,) = run.of_type(typ)
    want = config.get("tls", {}).get("renewBeforeHours", 720)
    assert cert.inputs["earlyRenewalHours"] == want


def test_the_real_program_passes_the_renewal_policy() -> None:
    name, inputs, outs = deploy().one(mp.SELF_SIGNED_CERT)
    assert [
        d for d in analyze(mp.SELF_SIGNED_CERT, name, inputs, outs) if d.policy == "certificate-renewed"
    ] == []


@pytest.mark.parametrize(
    ("renew", "fragment"), [(0, "never renewed"), (None, "never renewed"), (4380, "for good")]
)
def test_the_policy_refuses_a_certificate_that_is_not_renewed_in_time(renew: Any, fragment: str) -> None:
    name, inputs, outs = deploy().one(mp.SELF_SIGNED_CERT)
    wire = {k: v for k, v in inputs.items() if k != "earlyRenewalHours"}
    if renew is not None:
        wire["earlyRenewalHours"] = renew
    only(analyze(mp.SELF_SIGNED_CERT, name, wire, outs), "certificate-renewed", fragment)


# -- the rehearsal's imitation of pulumi-tls's renewal --------------------------

END = dt.datetime(2027, 12, 1, tzinfo=dt.UTC)
CERT = Created("c", {"validityEndTime": END.isoformat(), "certPem": "x"})


@pytest.mark.parametrize(("handler"), [SelfSignedCert(), LocallySignedCert()])
@pytest.mark.parametrize(
    ("now", "due"), [(END - dt.timedelta(hours=721), False), (END - dt.timedelta(hours=720), True)]
)
def test_a_certificate_is_due_from_its_window_on(
    handler: Any, now: dt.datetime, due: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rotation, "utcnow", lambda: now)
    inputs = {"earlyRenewalHours": 720}
    assert handler.due(CERT, inputs) is due
    assert (handler.update(None, CERT, inputs, inputs) is None) is due


def test_changing_only_the_window_is_made_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rotation, "utcnow", lambda: END - dt.timedelta(days=300))
    old = {"validityPeriodHours": 8760, "earlyRenewalHours": 720}
    assert SelfSignedCert().update(None, CERT, old, {**old, "earlyRenewalHours": 100}) is CERT  # type: ignore[arg-type]
    assert SelfSignedCert().update(None, CERT, old, {**old, "validityPeriodHours": 100}) is None  # type: ignore[arg-type]
