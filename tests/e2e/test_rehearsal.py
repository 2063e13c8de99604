"""The program's real resources on a real multi-node swarm, pulling through the cache.

Each test applies the dev stack (or a variant) with the rehearsal applier,
through the manager (msrc-manager), with the cache on its own worker
(msrc-cache): real Swarm secrets, config, volume, service and node label; the
content-cache stand-in image, which the cache node pulls from the swarm's
registry; the upstream "MSR" stand-in on msrc-msr behind a private CA.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from components.registry_config import files_named
from rehearsal import upstream as up
from rehearsal.deploy import Deployed
from rehearsal.engine import ROOT
from rehearsal.localswarm import LocalSwarm
from tests.support.tasks import container_of, wait_replacement
from tools.smoke import handshake
from tools.stack_file import read_stack

pytestmark = pytest.mark.docker

DEV = read_stack(ROOT / "stacks/Pulumi.dev.yaml")
LABEL = "com.mirantis.msr-cache.stack"


def sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]


def labelled_nodes(client: Any, label: str) -> list[str]:
    return sorted(
        n.attrs["Description"]["Hostname"]
        for n in client.nodes.list()
        if label in (n.attrs["Spec"].get("Labels") or {})
    )


def pull_and_settle(deployed: Deployed, upstream: up.Upstream, repo: str) -> up.Image:
    image = up.sample_image()
    up.push(upstream, repo, "1", image)
    assert deployed.registry().pull(repo, "1").digest == image.digest
    upstream.wait_quiet()
    return image


# -- deploy -------------------------------------------------------------------


def test_deploy_labels_the_cache_node_only_and_serves_from_its_address(
    deploy: Callable[..., Deployed], docker_client: Any, node: Any, swarm: LocalSwarm
) -> None:
    deployed = deploy("e2e-deploy")
    assert labelled_nodes(docker_client, "dtr.cache") == [swarm.cache.hostname]
    node.reload()
    assert node.attrs["Spec"]["Labels"]["dtr.cache"] == "true"

    (task,) = deployed.running_tasks()
    assert task["NodeID"] == node.id
    assert deployed.address == (swarm.cache.address, 5443)
    # The cache node pulled the image from the swarm's registry itself.
    assert swarm.cache.client().images.list(name=swarm.stand_in_image)

    cert = handshake(deployed.address, deployed.server_name, str(deployed.ca_file))
    assert deployed.server_name in sans(cert)
    status, _, body = deployed.registry().request("GET", "/v2/")
    assert (status, body.strip()) == (200, b"{}")


def test_secrets_and_config_reach_the_cache_node_where_config_yml_says(
    deploy: Callable[..., Deployed], docker_client: Any, swarm: LocalSwarm
) -> None:
    """Swarm carries the secrets and config.yml to the worker (raft): nothing is
    read from the manager's file system."""
    deployed = deploy("e2e-files")
    (task,) = deployed.running_tasks()
    container = container_of(swarm, docker_client, task)
    config = container.exec_run(["/bin/busybox", "cat", "/config.yml"]).output.decode()
    # Compared by digest: config.yml holds http.secret, which must not reach test output.
    assert (
        hashlib.sha256(config.encode()).digest() == hashlib.sha256(deployed.run.config_yml.encode()).digest()
    )
    for path in files_named(config):
        result = container.exec_run(["/bin/busybox", "stat", "-c", "%a %u", path])
        assert result.exit_code == 0, f"{path} is not in the container"
        # secretFiles' defaults: Swarm's own mode and owner, as the documented stack file gets.
        assert result.output.decode().split() == ["444", "0"], path


def test_a_wrong_upstream_ca_stops_the_cache_loudly(
    rehearsals: Callable[[str], Any], upstream: up.Upstream, docker_client: Any, swarm: LocalSwarm
) -> None:
    """The trust in dtr.cert.pem is real: with another CA the cache cannot
    reach MSR, and says so (the stand-in checks the upstream at start)."""
    from rehearsal import pki
    from rehearsal.resources import CreatedButFailed
    from rehearsal.stack import for_local_swarm

    rehearsal = rehearsals("e2e-wrong-ca")
    settings = for_local_swarm(
        DEV,
        upstream,
        swarm.cache.hostname,
        # Not registered: the registration would fail first (MSR's CA verifies
        # its API too); this is about the cache's own trust.
        {"msrCaCert": pki.make_ca("Not MSR's CA").cert_pem, "register": False},
        image=swarm.stand_in_image,
    )
    try:
        run = rehearsal.apply(settings.config, settings.secret_keys)
    except CreatedButFailed as exc:
        # The stand-in exits at start: when Swarm sees three failed tasks
        # before one that runs, the apply fails with the task's log.
        assert "certificate signed by unknown authority" in str(exc)
        return
    service = docker_client.services.get(run.exports["serviceName"])
    deadline = time.monotonic() + 30
    logs = ""
    while time.monotonic() < deadline and "certificate signed by unknown authority" not in logs:
        time.sleep(0.5)
        logs = b"".join(service.logs(stdout=True, stderr=True)).decode(errors="replace")
    assert "certificate signed by unknown authority" in logs


# -- pull-through -------------------------------------------------------------


def test_pull_through_serves_the_second_pull_from_the_cache(
    deploy: Callable[..., Deployed], upstream: up.Upstream, docker_client: Any
) -> None:
    deployed = deploy("e2e-pull")
    image = pull_and_settle(deployed, upstream, "e2e/pull")
    fetched = upstream.blob_gets()
    assert set(image.blobs) <= set(fetched), "the first pull did not go to the upstream"

    again = deployed.registry().pull("e2e/pull", "1")
    assert again.digest == image.digest
    # What Docker clients at the site run, here the manager's engine (it lists
    # the swarm's subnet as an insecure registry: the stack's certificate names
    # cacheHost, not the node's address).
    ref = f"{deployed.address[0]}:{deployed.address[1]}/e2e/pull"
    pulled = docker_client.images.pull(ref, tag="1")
    docker_client.images.remove(pulled.id, force=True)
    assert upstream.blob_gets() == fetched, "the second pull fetched blobs from the upstream again"


# -- restart ------------------------------------------------------------------


def test_killed_task_is_restarted_on_the_labelled_node(
    deploy: Callable[..., Deployed], docker_client: Any, node: Any, swarm: LocalSwarm, record_property: Any
) -> None:
    deployed = deploy("e2e-restart")
    (task,) = deployed.running_tasks()
    started = time.monotonic()
    container_of(swarm, docker_client, task).kill()
    fresh = wait_replacement(deployed, task["ID"])
    deployed.registry().wait_ready(60)
    seconds = time.monotonic() - started
    record_property("seconds_to_serve_after_kill", round(seconds, 2))
    print(f"served again {seconds:.1f} s after the kill")
    assert fresh["NodeID"] == node.id
    # Swarm waits the restart delay (5 s) first; far longer means something is wrong.
    assert seconds < 30


# -- certificate rotation -----------------------------------------------------


def test_rotation_creates_new_secrets_first_and_updates_in_place(
    deploy: Callable[..., Deployed],
    rehearsals: Callable[[str], Any],
    docker_client: Any,
    applied_log: list[str],
) -> None:
    rehearsal = rehearsals("e2e-rotate")
    before = deploy("e2e-rotate", rehearsal=rehearsal)
    service_id = before.service().id
    old_secret = {
        s["SecretName"] for s in before.service().attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    }
    applied_log.clear()

    tls = {**DEV["tls"], "dnsNames": ["rotated.msr-cache.test"]}
    after = deploy("e2e-rotate", {"tls": tls}, rehearsal=rehearsal)

    assert after.service().id == service_id, "the service was replaced, not updated"
    new_secret = {
        s["SecretName"] for s in after.service().attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    }
    (old_cert,) = sorted(n for n in old_secret - new_secret)
    (new_cert,) = sorted(n for n in new_secret - old_secret)
    assert old_cert.startswith("msr-cache-files-cache-cert-") and new_cert.startswith(
        "msr-cache-files-cache-cert-"
    )

    created = applied_log.index(f"created Secret msr-cache-files-cache-cert ({new_cert})")
    updated = applied_log.index("updated Service msr-cache-service-service in place")
    deleted = applied_log.index(f"deleted Secret msr-cache-files-cache-cert ({old_cert})")
    assert created < updated < deleted, applied_log

    cert = handshake(after.address, after.server_name, str(after.ca_file))
    assert "rotated.msr-cache.test" in sans(cert)
    assert old_cert not in {s.name for s in docker_client.secrets.list()}


# -- storage ------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "refetched"), [("volume", False), ("container", True)])
def test_cached_layers_survive_a_restart_only_on_a_volume(
    deploy: Callable[..., Deployed],
    upstream: up.Upstream,
    docker_client: Any,
    cache_client: Any,
    swarm: LocalSwarm,
    mode: str,
    refetched: bool,
) -> None:
    deployed = deploy(f"e2e-storage-{mode}", {"storage": {"mode": mode}})
    pull_and_settle(deployed, upstream, f"e2e/storage-{mode}")
    fetched = upstream.blob_gets()
    from rehearsal.deploy import pulumi_volumes

    volumes = pulumi_volumes(deployed.rehearsal)
    on_node = {v.name for v in cache_client.volumes.list()}
    # The volume the layers live in is on the cache node, where the task runs.
    assert len(volumes) == (mode == "volume")
    assert set(volumes) <= on_node

    (task,) = deployed.running_tasks()
    container_of(swarm, docker_client, task).kill()
    fresh = wait_replacement(deployed, task["ID"])
    assert fresh["NodeID"] == task["NodeID"]
    deployed.registry().wait_ready(60)
    deployed.registry().pull(f"e2e/storage-{mode}", "1")
    upstream.wait_quiet()
    assert (upstream.blob_gets() != fetched) is refetched


# -- destroy ------------------------------------------------------------------


def test_destroy_leaves_nothing_of_the_stack_on_any_node(
    deploy: Callable[..., Deployed], rehearsals: Callable[[str], Any], docker_client: Any, swarm: LocalSwarm
) -> None:
    from rehearsal.deploy import pulumi_volumes, remove_node_volumes

    rehearsal = rehearsals("e2e-destroy")
    deployed = deploy("e2e-destroy", {"storage": {"mode": "volume"}}, rehearsal=rehearsal)
    names = {r.created.outputs.get("name") for r in rehearsal.state.resources if r.typ.startswith("docker:")}
    assert len(names) >= 6  # service, volume, three secrets and config.yml's
    (volume,) = pulumi_volumes(rehearsal)
    assert volume in {v.name for v in swarm.manager.client().volumes.list()}, (
        "Pulumi's volume is on the manager"
    )

    rehearsal.destroy()

    mine = {"label": f"{LABEL}=e2e-destroy"}
    assert docker_client.services.list(filters=mine) == []
    assert docker_client.secrets.list(filters=mine) == []
    assert docker_client.configs.list(filters=mine) == []
    assert labelled_nodes(docker_client, "dtr.cache") == []
    leftovers = {s.name for s in docker_client.secrets.list()} | {
        c.name for c in docker_client.configs.list()
    }
    assert not (names & leftovers)
    assert deployed.run.exports["serviceName"] not in {s.name for s in docker_client.services.list()}
    service_filter = {"label": f"com.docker.swarm.service.name={deployed.run.exports['serviceName']}"}
    for n in swarm.nodes:
        client = n.client()
        # Each node removes the task's container once Swarm has removed the task.
        deadline = time.monotonic() + 30
        while client.containers.list(all=True, filters=service_filter):
            assert time.monotonic() < deadline, f"the task's container is still on {n.hostname}"
            time.sleep(0.3)
        if n.hostname != swarm.cache.hostname:
            assert volume not in {v.name for v in client.volumes.list()}, n.hostname
    # The documented rule (README, "Storage"): Swarm made the cache node's volume
    # for the service's mount, and destroy leaves it, with the cached layers.
    assert volume in {v.name for v in swarm.cache.client().volumes.list()}
    remove_node_volumes(swarm.cache, [volume], log=lambda _m: None)


def test_a_failed_apply_keeps_what_it_made_for_destroy(
    rehearsals: Callable[[str], Any], upstream: up.Upstream, docker_client: Any, swarm: LocalSwarm
) -> None:
    """As after a failed `pulumi up`: what was created stays in the state, and
    destroy removes it. An unknown node fails in the label provider."""
    from rehearsal.stack import for_local_swarm

    rehearsal = rehearsals("e2e-failed")
    settings = for_local_swarm(DEV, upstream, "no-such-node", image=swarm.stand_in_image)
    with pytest.raises(Exception, match="Swarm node 'no-such-node' not found"):
        rehearsal.apply(settings.config, settings.secret_keys)
    mine = {"label": f"{LABEL}=e2e-failed"}
    assert docker_client.services.list(filters=mine) == []  # it waits for the label
    # Whatever got created before the failure (the order is the SDK's) is in the state.
    recorded = {r.created.id for r in rehearsal.state.resources if r.typ.startswith("docker:")}
    on_swarm = {
        o.id for o in docker_client.secrets.list(filters=mine) + docker_client.configs.list(filters=mine)
    }
    assert on_swarm == recorded

    rehearsal.destroy()
    assert docker_client.secrets.list(filters=mine) == []
    assert docker_client.configs.list(filters=mine) == []


# -- an unusable cache node ---------------------------------------------------


def set_availability(node: Any, availability: str) -> None:
    node.reload()
    node.update({**node.attrs["Spec"], "Availability": availability})


def test_a_drained_cache_node_fails_up_naming_the_node_and_the_reason(
    rehearsals: Callable[[str], Any], upstream: up.Upstream, docker_client: Any, node: Any, swarm: LocalSwarm
) -> None:
    from rehearsal.stack import for_local_swarm

    rehearsal = rehearsals("e2e-drained")
    settings = for_local_swarm(DEV, upstream, swarm.cache.hostname, image=swarm.stand_in_image)
    set_availability(node, "drain")
    try:
        started = time.monotonic()
        with pytest.raises(
            Exception, match=r"Swarm node 'msrc-cache' is drained \(availability: drain\)"
        ) as err:
            rehearsal.apply(settings.config, settings.secret_keys)
        assert "docker node update --availability active msrc-cache" in str(err.value)
        assert time.monotonic() - started < 30, "it waited for a converge timeout instead of saying why"
    finally:
        set_availability(node, "active")
    assert docker_client.services.list(filters={"label": f"{LABEL}=e2e-drained"}) == []


@pytest.fixture
def gone_node(swarm: LocalSwarm, docker_client: Any) -> Iterator[str]:
    """A fourth node that joined the swarm and then went away (its engine stopped)."""
    name = "msrc-gone"
    script = str(ROOT / "scripts/swarm.sh")
    subprocess.run([script, "node-add", name], check=True, capture_output=True, text=True, timeout=120)
    try:
        # The node's daemon leaves the swarm: the manager marks it down at once.
        node_sock = f"unix:///tmp/msrc-swarm/{name}/docker.sock"
        subprocess.run(
            ["docker", "-H", node_sock, "swarm", "leave", "--force"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while docker_client.nodes.get(name).attrs["Status"]["State"] != "down":
            assert time.monotonic() < deadline, f"{name} did not go down"
            time.sleep(0.5)
        yield name
    finally:
        subprocess.run([script, "node-rm", name], check=False, capture_output=True, timeout=120)


def test_a_cache_node_that_is_gone_fails_up_naming_the_node_and_the_reason(
    rehearsals: Callable[[str], Any],
    upstream: up.Upstream,
    docker_client: Any,
    gone_node: str,
    swarm: LocalSwarm,
) -> None:
    from rehearsal.stack import for_local_swarm

    rehearsal = rehearsals("e2e-gone")
    settings = for_local_swarm(DEV, upstream, gone_node, image=swarm.stand_in_image)
    started = time.monotonic()
    with pytest.raises(Exception, match=rf"Swarm node '{gone_node}' is down \(state: down"):
        rehearsal.apply(settings.config, settings.secret_keys)
    assert time.monotonic() - started < 30
    assert docker_client.services.list(filters={"label": f"{LABEL}=e2e-gone"}) == []


# -- re-runs and planned rotation ---------------------------------------------


def test_reapplying_the_same_stack_changes_nothing(
    deploy: Callable[..., Deployed], rehearsals: Callable[[str], Any], applied_log: list[str]
) -> None:
    rehearsal = rehearsals("e2e-rerun")
    first = deploy("e2e-rerun", rehearsal=rehearsal)
    version = first.service().attrs["Version"]["Index"]
    applied_log.clear()
    second = deploy("e2e-rerun", rehearsal=rehearsal)
    assert applied_log == []
    assert second.service().attrs["Version"]["Index"] == version


def test_crossing_the_rotation_period_replaces_key_cert_and_secrets_only(
    deploy: Callable[..., Deployed],
    rehearsals: Callable[[str], Any],
    applied_log: list[str],
    applied_kinds: Callable[[str], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import datetime as dt

    from components import rotation

    now = [dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)]
    monkeypatch.setattr(rotation, "utcnow", lambda: now[0])
    tls = {**DEV["tls"], "rotateEvery": "720h"}
    rehearsal = rehearsals("e2e-rotate-every")
    before = deploy("e2e-rotate-every", {"tls": tls}, rehearsal=rehearsal)
    service_id = before.service().id
    old_cert = handshake(before.address, before.server_name, str(before.ca_file))
    applied_log.clear()

    now[0] = rotation.next_rotation("720h", now[0])
    after = deploy("e2e-rotate-every", {"tls": tls}, rehearsal=rehearsal)

    kinds = applied_kinds
    made = [
        "PrivateKey msr-cache-tls-key",
        "Secret msr-cache-files-cache-cert",
        "Secret msr-cache-files-cache-key",
    ]
    assert kinds("created") == sorted([*made, "SelfSignedCert msr-cache-tls-cert"])
    assert kinds("updated") == ["Service msr-cache-service-service in place"]
    assert kinds("deleted") == ["Secret msr-cache-files-cache-cert", "Secret msr-cache-files-cache-key"]
    assert after.service().id == service_id
    new_cert = handshake(after.address, after.server_name, str(after.ca_file))
    spki = [
        c.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        for c in (old_cert, new_cert)
    ]
    assert spki[0] != spki[1], "the cache still serves the old key"
