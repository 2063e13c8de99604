"""Planned certificate renewal on the swarm: in its window, `up` renews the
certificate (same key), replaces its Swarm secret and updates the service in place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from components import rotation
from rehearsal.deploy import Deployed
from tools.smoke import handshake

pytestmark = pytest.mark.docker


def test_up_in_the_renewal_window_renews_the_certificate_with_the_same_key(
    deploy: Callable[..., Deployed],
    rehearsals: Callable[[str], Any],
    applied_log: list[str],
    applied_kinds: Callable[[str], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [dt.datetime.now(dt.UTC)]
    monkeypatch.setattr(rotation, "utcnow", lambda: now[0])
    rehearsal = rehearsals("e2e-renew")

    def again() -> Deployed:
        return deploy("e2e-renew", rehearsal=rehearsal)

    before = again()
    service_id = before.service().id
    old = handshake(before.address, before.server_name, str(before.ca_file))

    # A week later nothing is due: a re-apply changes nothing.
    now[0] += dt.timedelta(days=7)
    applied_log.clear()
    again()
    assert applied_log == []

    # 30 days (720 h, the default window) before the end: due.
    now[0] = old.not_valid_after_utc - dt.timedelta(hours=719)
    after = again()

    kinds = applied_kinds
    assert kinds("created") == ["Secret msr-cache-files-cache-cert", "SelfSignedCert msr-cache-tls-cert"]
    assert kinds("updated") == ["Service msr-cache-service-service in place"]
    assert kinds("deleted") == ["Secret msr-cache-files-cache-cert"]
    assert after.service().id == service_id
    new = handshake(after.address, after.server_name, str(after.ca_file))
    assert new.not_valid_after_utc > old.not_valid_after_utc
    spki = [c.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) for c in (old, new)]
    assert spki[0] == spki[1], "renewal keeps the key (rotateEvery replaces it)"
