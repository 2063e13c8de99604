"""The stack's caches: one `MsrCache` per entry of `msr-cache:caches`, parents
before the caches that fetch from them, or the stack's one cache.

Resource names are URNs, which deployed stacks depend on: the stack's one
cache is `msr-cache` (as it has always been), a cache of `caches` is
`msr-cache-<name>`.
"""

from __future__ import annotations

from typing import Any

import pulumi

from components.cache import MsrCache, MsrCacheArgs
from components.settings import Settings, StackSettings

ROOT_NAME = "msr-cache"


def component_name(s: Settings) -> str:
    return f"{ROOT_NAME}-{s.name}" if s.name else ROOT_NAME


def build_caches(settings: StackSettings, stack: str, msr_ca_pem: str | None) -> dict[str, MsrCache]:
    """Every cache of the stack, keyed by its name in the `caches` export."""
    built: dict[str, MsrCache] = {}
    by_entry: dict[str, MsrCache] = {}
    for s in settings.build_order():
        parent = by_entry.get(s.parent_in_stack or "")
        cache = MsrCache(
            component_name(s),
            MsrCacheArgs(settings=s, stack=stack, msr_ca_pem=msr_ca_pem, parent=parent),
        )
        if s.name:
            by_entry[s.name] = cache
        built[settings.export_name(s, stack)] = cache
    # In the order the stack lists them, for the export.
    order = [settings.export_name(s, stack) for s in settings.caches]
    return {name: built[name] for name in order}


def summary(cache: MsrCache) -> dict[str, Any]:
    """What the `caches` export shows of one cache."""
    return {
        "cacheUrl": cache.cache_url,
        "upstream": cache.upstream,
        "certificateSha256": cache.certificate_sha256,
        "certificateNotAfter": cache.certificate_not_after,
        "nextRotation": cache.next_rotation,
        "serviceName": cache.service_name,
        "nodes": cache.nodes,
        "replicas": cache.replicas,
        "label": cache.label,
        "registrationId": cache.registration_id,
    }


def export_all(caches: dict[str, MsrCache]) -> None:
    """`caches` (a map keyed by name) and, with one cache, its outputs at the
    top level as they have always been."""
    pulumi.export("caches", {name: summary(cache) for name, cache in caches.items()})
    if len(caches) != 1:
        return
    (cache,) = caches.values()
    pulumi.export("cacheUrl", cache.cache_url)
    pulumi.export("upstream", cache.upstream)
    pulumi.export("certificatePem", cache.certificate_pem)
    pulumi.export("certificateSha256", cache.certificate_sha256)
    pulumi.export("certificateNotAfter", cache.certificate_not_after)
    # With tls.rotateEvery: the first `pulumi up` after this replaces key and certificate.
    pulumi.export("nextRotation", cache.next_rotation)
    pulumi.export("serviceName", cache.service_name)
    pulumi.export("node", cache.node)
    pulumi.export("label", cache.label)
    # MSR's id of the cache's registration (None with register: false).
    pulumi.export("registrationId", cache.registration_id)
