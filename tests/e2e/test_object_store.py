"""The object store on the swarm (rehearsal/object_store.py, issue 13): moto's S3
server in the msr node's network namespace, and the content-cache stand-in keeping
the layers it fetches from MSR in its bucket.

Each cache here is the stand-in image as a one-task Swarm service on one node,
publishing its port there in host mode, with a hand-written config.yml (a Swarm
secret at /config.yml) whose `storage:` is what the program renders for
`storage.mode: s3`, pointed at the store; MSR is the session's stand-in. Nothing
of the program runs: this proves the stand-in and the store, which the program's
HA tests then build on.

- A layer pulled through a cache on the cache node lands in the bucket, written
  from that node with the store's access key; a second cache on another node, with
  nothing of its own, serves it from the bucket without asking MSR.
- A cache whose secret key is wrong does not start: the store refuses its signature.
"""

from __future__ import annotations

import contextlib
import http.client
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
import yaml

from rehearsal import object_store
from rehearsal import upstream as up
from rehearsal.localswarm import LocalSwarm, Node
from rehearsal.object_store import ObjectStore
from tests.support.leakscan import remember

pytestmark = pytest.mark.docker

# Ports of this module's own: the store on the msr node, the caches on theirs.
CACHE_PORT = 5481
CONTAINER_PORT = 5000
# What this module makes on the swarm carries this label, so that a killed run's
# leftovers are found and removed by the next (not the stacks' label: the
# end-to-end fixtures refuse to run beside a service that has it).
LABEL = "com.mirantis.msr-cache.e2e"
MINE = {LABEL: "object-store"}
ROOTDIRECTORY = "/msr-cache"
SERVE_S = 60


@pytest.fixture
def msr(upstream: up.Upstream) -> up.Upstream:
    remember(upstream.admin_token, "the MSR stand-in's admin token")
    remember(upstream.test_password, "the MSR stand-in's test password")
    return upstream


@dataclass
class Cache:
    service: Any
    node: Node
    port: int

    def get(self, path: str) -> tuple[int, bytes]:
        """A plain-HTTP request from this machine to the cache's node, as a client pulls."""
        conn = http.client.HTTPConnection(self.node.address, self.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def logs(self) -> str:
        return b"".join(self.service.logs(stdout=True, stderr=True)).decode(errors="replace")

    def log_tail(self) -> str:
        return self.logs()[-3000:]

    def task_states(self) -> list[str]:
        return [t["Status"]["State"] for t in self.service.tasks()]

    def wait_serving(self) -> float:
        """Seconds until /v2/ answers 200; fails early, with its log, when its task ends."""
        started = time.monotonic()
        last: object = "no answer yet"
        while time.monotonic() - started < SERVE_S:
            if set(self.task_states()) & {"failed", "rejected", "complete"}:
                pytest.fail(
                    f"the cache on {self.node.hostname} stopped ({self.task_states()}):\n{self.log_tail()}"
                )
            try:
                status, _ = self.get("/v2/")
                if status == 200:
                    return time.monotonic() - started
                last = f"HTTP {status}"
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        pytest.fail(
            f"the cache on {self.node.hostname} did not serve within {SERVE_S} s ({last}):\n{self.log_tail()}"
        )

    def wait_ended(self, within: float = SERVE_S) -> list[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if set(states := self.task_states()) & {"failed", "rejected", "complete"}:
                return states
            time.sleep(0.3)
        pytest.fail(
            f"the cache on {self.node.hostname} kept running ({self.task_states()}):\n{self.log_tail()}"
        )


def remove_mine(client: Any, swarm: LocalSwarm) -> None:
    """This module's services, then their secrets once no task holds them."""
    for service in client.services.list(filters={"label": f"{LABEL}=object-store"}):
        with contextlib.suppress(docker.errors.NotFound):
            service.remove()
    deadline = time.monotonic() + 30
    for secret in client.secrets.list(filters={"label": f"{LABEL}=object-store"}):
        while True:
            try:
                secret.remove()
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError as exc:
                if "in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    # The tasks' containers on the nodes go with them.
    for node in swarm.nodes:
        containers = node.client().containers
        while [c for c in containers.list(all=True) if c.labels.get(LABEL) == "object-store"]:
            if time.monotonic() > deadline:
                raise AssertionError(f"containers of this test are still on {node.hostname}")
            time.sleep(0.3)


@pytest.fixture
def caches(
    docker_client: Any, swarm: LocalSwarm, msr: up.Upstream, test_images: None
) -> Iterator[Callable[[Node, dict[str, Any]], Cache]]:
    """Run the stand-in on a node with config.yml's `storage:` as given; everything
    removed afterwards (and before: a killed run's leftovers)."""
    remove_mine(docker_client, swarm)
    ca = docker_client.secrets.create(
        name=f"e2e-os-msr-ca-{secrets.token_hex(4)}", data=msr.ca_pem, labels=MINE
    )

    def run(node: Node, storage: dict[str, Any]) -> Cache:
        nonce = secrets.token_hex(4)
        config = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": storage,
            "http": {"addr": f"0.0.0.0:{CONTAINER_PORT}", "secret": secrets.token_hex(16)},
            "middleware": {
                "registry": [
                    {
                        "name": "downstream",
                        "options": {
                            "blobttl": "24h",
                            "upstreams": [msr.url],
                            "cas": ["/run/secrets/dtr.cert.pem"],
                        },
                    }
                ]
            },
        }
        text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
        config_secret = docker_client.secrets.create(name=f"e2e-os-config-{nonce}", data=text, labels=MINE)
        service = docker_client.services.create(
            swarm.stand_in_image,
            name=f"e2e-object-store-{nonce}",
            labels=MINE,
            container_labels=MINE,
            secrets=[
                docker.types.SecretReference(config_secret.id, config_secret.name, filename="/config.yml"),
                docker.types.SecretReference(ca.id, ca.name, filename="dtr.cert.pem"),
            ],
            constraints=[f"node.hostname == {node.hostname}"],
            endpoint_spec=docker.types.EndpointSpec(ports={CACHE_PORT: (CONTAINER_PORT, "tcp", "host")}),
            restart_policy=docker.types.RestartPolicy(condition="none"),
        )
        return Cache(service, node, CACHE_PORT)

    yield run
    remove_mine(docker_client, swarm)


def layer_of(image: up.Image) -> str:
    return next(d for d, data in image.blobs.items() if data[:2] == b"\x1f\x8b")


def msr_blob_gets(msr: up.Upstream, path: str) -> list[str]:
    """Clients MSR's front served `path` to."""
    return [
        r["client"]
        for r in msr.front_log()
        if r["path"] == path and r["method"] == "GET" and r["status"] == 200
    ]


def test_a_layer_fetched_by_one_cache_lands_in_the_bucket_and_another_node_serves_it_from_there(
    store: ObjectStore,
    msr: up.Upstream,
    caches: Callable[[Node, dict[str, Any]], Cache],
    swarm: LocalSwarm,
    record_property: Any,
) -> None:
    image = up.sample_image()
    up.push(msr, "e2e/object-store", "1", image)
    layer = layer_of(image)
    path = f"/v2/e2e/object-store/blobs/{layer}"
    storage = store.storage_section(ROOTDIRECTORY)

    first = caches(swarm.cache, storage)
    record_property("seconds_to_serve", round(first.wait_serving(), 2))
    status, body = first.get(path)
    assert (status, body == image.blobs[layer]) == (200, True), first.log_tail()
    assert msr_blob_gets(msr, path), "the cache did not fetch the layer from MSR"

    # Distribution 2.8's proxy stores its own second copy of a cold blob, after the answer.
    started = time.monotonic()
    while store.blobs().get(layer) != len(image.blobs[layer]) and time.monotonic() - started < 20:
        time.sleep(0.2)
    record_property("seconds_to_store", round(time.monotonic() - started, 2))
    key = f"{ROOTDIRECTORY.lstrip('/')}/docker/registry/v2/blobs/sha256/{layer[7:9]}/{layer[7:]}/data"
    assert object_store.StoredObject(key, len(image.blobs[layer])) in store.objects(), first.log_tail()
    writers = {r.client for r in store.requests() if r.method in ("PUT", "POST") and key in r.path}
    assert writers == {swarm.cache.address}

    # Another node, no storage of its own: the layer comes from the bucket, not MSR.
    fetched_by_msr = msr_blob_gets(msr, path)
    second = caches(swarm.manager, storage)
    second.wait_serving()
    reads = len(store.blob_gets())
    status, body = second.get(path)
    assert (status, body == image.blobs[layer]) == (200, True), second.log_tail()
    assert msr_blob_gets(msr, path) == fetched_by_msr
    deadline = time.monotonic() + 5
    while (swarm.manager.address, layer) not in store.blob_gets()[reads:] and time.monotonic() < deadline:
        time.sleep(0.1)  # the log line is written after the answer
    assert (swarm.manager.address, layer) in store.blob_gets()[reads:]
    for cache in (first, second):
        assert f"storage=s3 (bucket={store.bucket}, regionendpoint={store.endpoint}" in cache.logs()


def test_a_cache_whose_secret_key_is_wrong_does_not_start(
    store: ObjectStore,
    caches: Callable[[Node, dict[str, Any]], Cache],
    swarm: LocalSwarm,
    record_property: Any,
) -> None:
    storage = store.storage_section(ROOTDIRECTORY)
    wrong = secrets.token_urlsafe(30)
    remember(wrong, "a wrong S3 secret key")
    storage["s3"]["secretkey"] = wrong
    cache = caches(swarm.cache, storage)

    assert "failed" in cache.wait_ended()
    said = [line for line in cache.logs().splitlines() if "SignatureDoesNotMatch" in line]
    assert said, cache.log_tail()
    record_property("registry_says", said[0][:300])
    refused = [r for r in store.requests() if r.client == swarm.cache.address]
    assert refused and {r.status for r in refused} == {403}
    assert store.objects() == []
