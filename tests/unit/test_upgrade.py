"""Deployed stacks upgrade with no replacement: every URN the previous release
registered is registered again, under the same type and parent.

The URNs below are what release 5e16220 (before issue 10) registered for the dev
stack, recorded by running that release's program under the same mocks. The one
resource retired on purpose is the ServiceConfig that held config.yml: config.yml
is now a Swarm secret (README, "config.yml is a Swarm secret"), so `up` creates the
secret, updates the service in place, then deletes the config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.engine import run_program

P = "urn:pulumi:dev::msr-cache::"
# The root stack resource is left out: the mocks register it once per process.
PREVIOUS = {
    f"{P}pulumi:pulumi:Stack$msrcache:index:MsrCache::msr-cache",
    f"{P}msrcache:index:MsrCache$msrcache:index:LabelledNode::msr-cache-node",
    f"{P}msrcache:index:MsrCache$msrcache:index:CacheTls::msr-cache-tls",
    f"{P}msrcache:index:MsrCache$msrcache:index:CacheFiles::msr-cache-files",
    f"{P}msrcache:index:MsrCache$msrcache:index:CacheService::msr-cache-service",
    f"{P}msrcache:index:LabelledNode$pulumi-python:dynamic/msrcache:NodeLabel::msr-cache-node-label",
    f"{P}msrcache:index:CacheTls$tls:index/privateKey:PrivateKey::msr-cache-tls-key",
    f"{P}msrcache:index:CacheTls$tls:index/selfSignedCert:SelfSignedCert::msr-cache-tls-cert",
    f"{P}msrcache:index:CacheFiles$docker:index/secret:Secret::msr-cache-files-cache-cert",
    f"{P}msrcache:index:CacheFiles$docker:index/secret:Secret::msr-cache-files-cache-key",
    f"{P}msrcache:index:CacheFiles$random:index/randomPassword:RandomPassword::msr-cache-files-http-secret",
    f"{P}msrcache:index:CacheFiles$docker:index/serviceConfig:ServiceConfig::msr-cache-files-config",
    f"{P}msrcache:index:CacheService$docker:index/service:Service::msr-cache-service-service",
}
VOLUME = f"{P}msrcache:index:CacheService$docker:index/volume:Volume::msr-cache-service-data"
RETIRED = {f"{P}msrcache:index:CacheFiles$docker:index/serviceConfig:ServiceConfig::msr-cache-files-config"}
ADDED = {f"{P}msrcache:index:CacheFiles$docker:index/secret:Secret::msr-cache-files-config-yml"}


def urns(config: dict[str, Any]) -> set[str]:
    return {
        u
        for u in run_program(config).mocks.urns.values()
        if not u.endswith("pulumi:pulumi:Stack::msr-cache-dev")
    }


@pytest.mark.parametrize(
    ("config", "previous"),
    [({}, PREVIOUS), ({"storage": {"mode": "volume"}}, PREVIOUS | {VOLUME})],
    ids=["default", "volume"],
)
def test_every_previous_urn_is_registered_again(config: dict[str, Any], previous: set[str]) -> None:
    now = urns(config)
    assert previous - RETIRED <= now, sorted(previous - RETIRED - now)


@pytest.mark.parametrize("config", [{}, {"storage": {"mode": "volume"}}], ids=["default", "volume"])
def test_the_only_new_resource_is_config_yml_as_a_secret(config: dict[str, Any]) -> None:
    previous = PREVIOUS | ({VOLUME} if config else set())
    assert urns(config) - previous == ADDED


# ---------------------------------------------------------------------------
# Issue 13 (several caches per stack): without `caches`, the program registers
# exactly what release f6e281a registered, with the same inputs.
# ---------------------------------------------------------------------------

# Recorded by running release f6e281a's program (a `git worktree` of it) under the
# same mocks, with the configurations below; values the mocks generate afresh on
# every run (keys, Swarm data, the pickled provider) are masked.
RECORDED = Path(__file__).parent / "data" / "registrations-f6e281a.json"
BEFORE_CACHES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "default": ({}, ()),
    "volume": ({"storage": {"mode": "volume"}}, ()),
    "host-ecdsa": ({"publishMode": "host", "tls": {"keyAlgorithm": "ECDSA"}, "cachePort": 8443}, ()),
    "registered": ({"register": True, "msrUser": "admin", "msrToken": "t0ken-t0ken-t0ken"}, ("msrToken",)),
}
GENERATED = ("__provider", "data", "privateKeyPem", "certRequestPem", "caPrivateKeyPem")


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<generated>" if k in GENERATED else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def registrations(config: dict[str, Any], secret_keys: tuple[str, ...]) -> dict[str, Any]:
    """URN -> the inputs it was registered with (masked), components included."""
    run = run_program(config, secret_keys=secret_keys)
    by_name = {urn.rsplit("::", 1)[1]: urn for urn in run.mocks.urns.values()}
    return {by_name[r.name]: _masked(r.plain) for r in run.mocks.resources if r.name in by_name}


@pytest.mark.parametrize("case", sorted(BEFORE_CACHES))
def test_without_caches_every_urn_is_the_one_f6e281a_registered(case: str) -> None:
    recorded = json.loads(RECORDED.read_text())[case]
    assert sorted(registrations(*BEFORE_CACHES[case])) == sorted(recorded)


@pytest.mark.parametrize("case", sorted(BEFORE_CACHES))
def test_without_caches_every_resource_has_the_inputs_f6e281a_gave_it(case: str) -> None:
    """The same inputs: `pulumi up` after the upgrade finds nothing to change."""
    recorded = json.loads(RECORDED.read_text())[case]
    now = registrations(*BEFORE_CACHES[case])
    changed = sorted(urn for urn in recorded if now.get(urn) != recorded[urn])
    assert not changed, changed
