"""A rehearsal stopped half-way leaves nothing behind (issue 11): Ctrl-C (or
SIGTERM) tears down what was made and exits 130; a run killed outright (-9)
leaves its state file, from which `make rehearse-down` removes everything.
And a Docker error that quotes a credential is printed without it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from rehearsal.engine import ROOT
from rehearsal.localswarm import LocalSwarm
from tools.redact import redact

pytestmark = pytest.mark.docker

PORT = 5930
MINE_LABELS = {"com.mirantis.msr-cache.stack": "dev"}
MINE = {"label": "com.mirantis.msr-cache.stack=dev"}


def start(tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "REHEARSAL_DIR": str(tmp_path / "state"), "UPSTREAM_PORT": str(PORT)}
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "rehearsal", "up", "--stack", "dev"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 120) -> str:
    """Output up to the line holding `marker` (the run is then at that step)."""
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
        assert time.monotonic() < deadline, "".join(seen)
    pytest.fail(f"the rehearsal ended before {marker!r}:\n{''.join(seen)}")


def assert_nothing_left(docker_client: Any, swarm: LocalSwarm, tmp_path: Path) -> None:
    assert docker_client.services.list(filters=MINE) == []
    assert docker_client.secrets.list(filters=MINE) == []
    assert docker_client.configs.list(filters=MINE) == []
    assert docker_client.volumes.list(filters=MINE) == []
    assert "dtr.cache" not in docker_client.nodes.get(swarm.cache.hostname).attrs["Spec"]["Labels"]
    assert swarm.msr.client().containers.list(all=True, filters={"name": f"msrc-upstream-{PORT}"}) == []
    state = tmp_path / "state"
    assert not state.exists() or list(state.iterdir()) == [], list(state.iterdir())


@pytest.mark.parametrize(
    ("sig", "marker"),
    [
        # The service exists and the run goes on to register the cache: mid-way.
        (signal.SIGINT, "created Service"),
        (signal.SIGTERM, "created Service"),
        # Early in the program's run, most resources still to come.
        (signal.SIGINT, "created Secret"),
    ],
    ids=["ctrl-c", "sigterm", "ctrl-c-early-in-the-apply"],
)
def test_an_interrupted_rehearsal_removes_what_it_made(
    tmp_path: Path, docker_client: Any, swarm: LocalSwarm, test_images: None, sig: signal.Signals, marker: str
) -> None:
    proc = start(tmp_path)
    try:
        before = read_until(proc, marker)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    out = before + rest
    assert proc.returncode == 130, out
    assert "rehearse: interrupted" in out and "rehearse: removing the rehearsal" in out
    assert "Traceback" not in out and "PRIVATE KEY" not in out
    assert_nothing_left(docker_client, swarm, tmp_path)


def test_a_killed_rehearsal_is_removed_by_rehearse_down(
    tmp_path: Path, docker_client: Any, swarm: LocalSwarm, test_images: None
) -> None:
    proc = start(tmp_path)
    try:
        read_until(proc, "created Service")
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert (tmp_path / "state/state.json").exists(), "the state file follows every change"
    assert docker_client.services.list(filters=MINE) != []
    env = {**os.environ, "REHEARSAL_DIR": str(tmp_path / "state")}
    again = subprocess.run(
        [sys.executable, "-m", "rehearsal", "up", "--stack", "dev"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 2 and "make rehearse-down" in again.stderr
    down = subprocess.run(
        [sys.executable, "-m", "rehearsal", "down"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    assert_nothing_left(docker_client, swarm, tmp_path)


def test_a_docker_mount_error_is_printed_without_the_password(swarm: LocalSwarm, test_images: None) -> None:
    """The settings refuse credentials in plain text, so the program never hands
    Docker one; but Docker quotes a volume's mount options, password included,
    in the error it passes back (seen with a CIFS share), and any tool message
    built from such an error goes through the one redaction."""
    import docker

    password = "hunter22-e2e-secret"
    client = swarm.cache.client()
    volume = client.volumes.create(
        "msrc-e2e-cifs",
        driver="local",
        driver_opts={
            "type": "cifs",
            "device": "//10.77.0.254/share",
            "o": f"username=svc,password={password}",
        },
    )
    container = client.containers.create(
        swarm.stand_in_image, ["true"], entrypoint=[], volumes={volume.name: {"bind": "/data"}}
    )
    try:
        with pytest.raises(docker.errors.APIError) as err:
            container.start()  # the mount happens here
    finally:
        container.remove(force=True)
        volume.remove(force=True)
    assert password in str(err.value), "Docker quotes the mount options (the reason for the redaction)"
    shown = redact(f"rehearse: FAILED: {err.value}")
    assert password not in shown and "password=[secret]" in shown


def test_rehearse_down_removes_what_a_killed_run_could_not_record(
    tmp_path: Path, docker_client: Any, swarm: LocalSwarm, test_images: None
) -> None:
    """Killed while waiting for its service to converge, a run has made the
    service and its secrets, but the state file has no service yet:
    `rehearse-down` also removes what carries the stack's label."""
    import json

    secret = docker_client.secrets.create(name="msrc-e2e-unrecorded", data=b"x", labels=MINE_LABELS)
    docker_client.services.create(
        swarm.stand_in_image, name="msr-cache-dev", labels=MINE_LABELS,
        secrets=[docker.types.SecretReference(secret.id, secret.name)],
        constraints=[f"node.hostname == {swarm.cache.hostname}"],
    )  # fmt: skip
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(
        json.dumps({"stack": "dev", "resources": [], "extra": {"upstreamPort": PORT}})
    )
    env = {**os.environ, "REHEARSAL_DIR": str(state)}
    down = subprocess.run(
        [sys.executable, "-m", "rehearsal", "down"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    assert "removed Service msr-cache-dev, which no state recorded" in down.stdout
    assert_nothing_left(docker_client, swarm, tmp_path)
