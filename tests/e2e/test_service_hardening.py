"""The service's hardening on the real multi-node swarm (issue 10, points 4, 7 and 8).

- A failed update rolls back: an update whose new task cannot start (its image tag
  is not in the swarm's registry) makes Swarm restore the previous spec, the apply
  fails as pulumi-docker reports it ("rollback completed"), and the cache serves again.
- config.yml travels as a Swarm secret: no config of the stack exists, and the API
  does not show the secret's data.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from rehearsal import upstream as up
from rehearsal.deploy import Deployed
from rehearsal.engine import ROOT
from rehearsal.localswarm import LocalSwarm
from rehearsal.stack import for_local_swarm
from tools.smoke import handshake
from tools.stack_file import read_stack

pytestmark = pytest.mark.docker

DEV = read_stack(ROOT / "stacks/Pulumi.dev.yaml")
LABEL = "com.mirantis.msr-cache.stack"


def test_an_update_whose_task_cannot_start_rolls_back_and_the_cache_serves_again(
    deploy: Callable[..., Deployed], upstream: up.Upstream, swarm: LocalSwarm, record_property: Any
) -> None:
    deployed = deploy("e2e-rollback")
    before = deployed.service().attrs["Spec"]
    good_image = before["TaskTemplate"]["ContainerSpec"]["Image"]
    # The swarm's registry has no such tag: the cache node cannot pull it, so the new task
    # is rejected. Without a failure action Swarm would pause here, with the cache down.
    missing = swarm.stand_in_image.rsplit(":", 1)[0] + ":no-such-tag"
    settings = for_local_swarm(
        DEV, upstream, swarm.cache.hostname, {"image": missing}, image=swarm.stand_in_image
    )
    assert settings.config["image"] == missing

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="service update failed, rollback completed"):
        deployed.rehearsal.apply(settings.config, settings.secret_keys)
    record_property("seconds_to_rollback", round(time.monotonic() - started, 2))

    service = deployed.service().attrs
    assert service["UpdateStatus"]["State"] == "rollback_completed"
    # The previous spec is back: the image, and the spec otherwise.
    assert service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == good_image
    assert service["Spec"]["TaskTemplate"] == before["TaskTemplate"]
    # The update had really started: Swarm tried the new image on the cache node.
    tasks = deployed.service().tasks()
    assert any(t["Spec"]["ContainerSpec"]["Image"].startswith(missing) for t in tasks), [
        t["Spec"]["ContainerSpec"]["Image"] for t in tasks
    ]

    deployed.registry().wait_ready(60)
    (task,) = deployed.running_tasks()
    assert task["Spec"]["ContainerSpec"]["Image"] == good_image
    cert = handshake(deployed.address, deployed.server_name, str(deployed.ca_file))
    assert cert is not None
    status, _, body = deployed.registry().request("GET", "/v2/")
    assert (status, body.strip()) == (200, b"{}")


def test_config_yml_is_a_secret_whose_data_the_api_does_not_show(
    deploy: Callable[..., Deployed], docker_client: Any, swarm: LocalSwarm
) -> None:
    deployed = deploy("e2e-config-secret")
    mine = {"label": f"{LABEL}=e2e-config-secret"}
    assert docker_client.configs.list(filters=mine) == []

    mounted = {
        s["File"]["Name"]: s["SecretName"]
        for s in deployed.service().attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    }
    assert mounted.keys() >= {"/config.yml", "cache.cert.pem", "cache.key.pem"}
    secret = docker_client.secrets.get(mounted["/config.yml"])
    assert "Data" not in secret.attrs["Spec"], "the API shows config.yml's data"

    # Swarm carried it to the task on the cache node, at the absolute path the
    # entrypoint reads (compared by digest: it holds http.secret).
    (task,) = deployed.running_tasks()
    node = docker_client.nodes.get(task["NodeID"]).attrs["Description"]["Hostname"]
    assert node == swarm.cache.hostname
    container = swarm.cache.client().containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
    text = container.exec_run(["/bin/busybox", "cat", "/config.yml"]).output
    expected = deployed.run.secret_data("config-yml").encode()
    assert hashlib.sha256(text).digest() == hashlib.sha256(expected).digest()
