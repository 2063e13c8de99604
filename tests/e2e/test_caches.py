"""Several caches of one stack on the swarm (issue 13): the program's own resources,
applied by the rehearsal's applier.

- Chained: two caches in one stack on two worker nodes, the second (`site`, on the
  msr node) fetching from the first (`hub`, on the cache node). A pull through the
  child is served by the parent: MSR's access log shows each blob fetched from the
  hub's node, never from the site's.
- Highly available: two replicas of one cache on two nodes with `storage.mode: s3`
  against the S3 stand-in (moto, rehearsal/object_store.py). A layer pulled through
  one replica is then served by the other without touching MSR; with one replica's
  task killed, the other keeps serving.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rehearsal.applier import Rehearsal
from rehearsal.engine import Run
from rehearsal.localswarm import LocalSwarm, Node
from rehearsal.object_store import ObjectStore
from rehearsal.upstream import Upstream, sample_image
from tools.smoke import Registry

pytestmark = pytest.mark.docker

HUB_PORT, SITE_PORT, HA_PORT = 5931, 5932, 5933
SERVE_S = 90


def msr_keys(upstream: Upstream, swarm: LocalSwarm) -> dict[str, Any]:
    return {
        "msrHost": upstream.host,
        "msrPort": upstream.port,
        "msrCaCert": upstream.ca_pem,
        "image": swarm.stand_in_image,
        "publishMode": "host",
        "register": False,
        # ECDSA: fast keys; the certificate covers cacheHost, the node's address.
        "tls": {"keyAlgorithm": "ECDSA"},
    }


def secret_pem(run: Run, name: str) -> str:
    return base64.b64decode(run.named(name).plain["data"]).decode()


def client_for(node: Node, port: int, ca_pem: str, tmp_path: Path, name: str) -> Registry:
    ca_file = tmp_path / f"{name}-ca.pem"
    ca_file.write_text(ca_pem)
    registry = Registry((node.address, port), node.address, str(ca_file))
    registry.wait_ready(SERVE_S)
    return registry


def blob_fetchers(upstream: Upstream, digests: set[str]) -> dict[str, set[str]]:
    """Digest -> the addresses that fetched it from MSR (blob bodies served)."""
    found: dict[str, set[str]] = {d: set() for d in digests}
    for record in upstream.front_log():
        path = str(record.get("path") or "")
        digest = path.rsplit("/", 1)[-1]
        served = record.get("method") == "GET" and record.get("status") in (200, 206) and record.get("bytes")
        if "/blobs/" in path and digest in found and served:
            found[digest].add(str(record.get("client", "")).split(":")[0])
    return found


@pytest.fixture
def stack(rehearsals: Callable[[str], Rehearsal], request: pytest.FixtureRequest) -> Rehearsal:
    """A stack of the test's own, named after it."""
    return rehearsals(f"caches-{hashlib.sha256(request.node.name.encode()).hexdigest()[:6]}")


# --- chained caches -----------------------------------------------------------------


def test_a_pull_through_a_chained_cache_is_served_by_its_parent(
    stack: Rehearsal, upstream: Upstream, swarm: LocalSwarm, tmp_path: Path
) -> None:
    hub_node, site_node = swarm.cache, swarm.msr
    config = {
        **msr_keys(upstream, swarm),
        "caches": [
            {
                "name": "hub",
                "cacheHost": hub_node.address,
                "cachePort": HUB_PORT,
                "cacheNode": hub_node.hostname,
            },
            {
                "name": "site",
                "cacheHost": site_node.address,
                "cachePort": SITE_PORT,
                "cacheNode": site_node.hostname,
                "upstream": "hub",
            },
        ],
    }
    run = stack.apply(config)
    assert run.exports["caches"]["site"]["upstream"] == f"https://{hub_node.address}:{HUB_PORT}"
    site = client_for(
        site_node, SITE_PORT, secret_pem(run, "msr-cache-site-files-cache-cert"), tmp_path, "site"
    )

    image = sample_image()
    upstream.registry().push("chain/app", "v1", image)
    pulled = site.pull("chain/app", "v1")

    assert pulled.blobs == image.blobs
    upstream.wait_quiet()
    fetchers = blob_fetchers(upstream, set(image.blobs))
    assert all(fetchers[d] == {hub_node.address} for d in image.blobs), fetchers


def test_a_childs_trust_is_its_parents_certificate_on_the_swarm(
    stack: Rehearsal, upstream: Upstream, swarm: LocalSwarm
) -> None:
    """The upstream.cert.pem Swarm secret the child mounts holds the hub's served certificate."""
    config = {
        **msr_keys(upstream, swarm),
        "caches": [
            {
                "name": "hub",
                "cacheHost": swarm.cache.address,
                "cachePort": HUB_PORT,
                "cacheNode": swarm.cache.hostname,
            },
            {
                "name": "site",
                "cacheHost": swarm.msr.address,
                "cachePort": SITE_PORT,
                "cacheNode": swarm.msr.hostname,
                "upstream": "hub",
            },
        ],
    }
    run = stack.apply(config)
    client = stack.ctx.client
    service = client.services.get(run.exports["caches"]["site"]["serviceName"])
    mounts = {
        s["File"]["Name"]: s["SecretName"]
        for s in service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    }
    assert set(mounts) == {"cache.cert.pem", "cache.key.pem", "upstream.cert.pem", "/config.yml"}
    assert secret_pem(run, "msr-cache-site-files-upstream-ca") == secret_pem(
        run, "msr-cache-hub-files-cache-cert"
    )


# --- highly available on S3 -----------------------------------------------------------


def ha_config(upstream: Upstream, swarm: LocalSwarm, store: ObjectStore) -> dict[str, Any]:
    nodes = [swarm.cache, swarm.msr]
    return {
        **msr_keys(upstream, swarm),
        "caches": [
            {
                "name": "ha",
                "cacheHost": "cache-ha.example.com",
                "cachePort": HA_PORT,
                "nodes": [n.hostname for n in nodes],
                "replicas": 2,
                "tls": {"keyAlgorithm": "ECDSA", "ipAddresses": [n.address for n in nodes]},
                "storage": {
                    "mode": "s3",
                    "s3": {
                        "bucket": store.bucket,
                        "region": store.region,
                        "regionEndpoint": store.endpoint,
                        "accessKey": store.access_key,
                        "secretKey": store.secret_key,
                        "secure": False,
                        "rootDirectory": "/ha",
                    },
                },
            }
        ],
    }


def test_two_replicas_on_s3_share_their_layers_and_survive_one_task_killed(
    stack: Rehearsal, upstream: Upstream, swarm: LocalSwarm, store: ObjectStore, tmp_path: Path
) -> None:
    run = stack.apply(ha_config(upstream, swarm, store), secret_keys=("caches",))
    service = stack.ctx.client.services.get(run.exports["caches"]["ha"]["serviceName"])
    running = [
        t for t in service.tasks(filters={"desired-state": "running"}) if t["Status"]["State"] == "running"
    ]
    assert len(running) == 2 and len({t["NodeID"] for t in running}) == 2, "one task per node"

    cert = secret_pem(run, "msr-cache-ha-files-cache-cert")
    first = client_for(swarm.cache, HA_PORT, cert, tmp_path, "first")
    second = client_for(swarm.msr, HA_PORT, cert, tmp_path, "second")

    image = sample_image()
    upstream.registry().push("ha/app", "v1", image)
    assert first.pull("ha/app", "v1").blobs == image.blobs
    fetched = upstream.wait_quiet()
    assert set(image.blobs) <= set(store.blobs()), "the layers are in the bucket"

    assert second.pull("ha/app", "v1").blobs == image.blobs
    assert upstream.wait_quiet() == fetched, "the second replica asked MSR for a blob"

    # One replica's task killed: the other keeps serving, layers included.
    victim = swarm.cache.client()
    try:
        (container,) = victim.containers.list(filters={"label": f"com.docker.swarm.service.id={service.id}"})
        container.kill()
    finally:
        victim.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert second.pull("ha/app", "v1").blobs == image.blobs
        time.sleep(0.5)
    assert upstream.wait_quiet() == fetched


def test_the_storage_credentials_are_in_no_swarm_object_but_config_yml(
    stack: Rehearsal, upstream: Upstream, swarm: LocalSwarm, store: ObjectStore
) -> None:
    """The secret key reaches the cache only inside config.yml, a Swarm secret
    (whose data the API never returns): not in the service, labels or env."""
    run = stack.apply(ha_config(upstream, swarm, store), secret_keys=("caches",))
    client = stack.ctx.client
    service = client.services.get(run.exports["caches"]["ha"]["serviceName"])
    assert store.secret_key not in repr(service.attrs)
    for secret in client.secrets.list(filters={"label": f"com.mirantis.msr-cache.stack={stack.stack}"}):
        assert store.secret_key not in repr(secret.attrs)
