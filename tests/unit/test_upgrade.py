"""Deployed stacks upgrade with no replacement: every URN the previous release
registered is registered again, under the same type and parent.

The URNs below are what release 5e16220 (before issue 10) registered for the dev
stack, recorded by running that release's program under the same mocks. The one
resource retired on purpose is the ServiceConfig that held config.yml: config.yml
is now a Swarm secret (README, "config.yml is a Swarm secret"), so `up` creates the
secret, updates the service in place, then deletes the config.
"""

from __future__ import annotations

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
