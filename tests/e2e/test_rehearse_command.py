"""`make rehearse` and `make rehearse-down` as an operator runs them (the make
targets call `python -m rehearsal`; the swarm is already up here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from rehearsal import pki
from rehearsal.engine import ROOT
from rehearsal.localswarm import LocalSwarm
from rehearsal.upstream import admin_of
from tools.smoke import handshake

pytestmark = pytest.mark.docker


def rehearse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REHEARSAL_DIR": str(tmp_path / "state"), "UPSTREAM_PORT": "5920"}
    return subprocess.run(
        [sys.executable, "-m", "rehearsal", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_rehearse_keep_report_then_down(
    tmp_path: Path, docker_client: Any, swarm: LocalSwarm, test_images: None
) -> None:
    report_file = tmp_path / "r.json"
    up = rehearse(tmp_path, "up", "--stack", "dev", "--report", str(report_file), "--keep")
    assert up.returncode == 0, up.stdout + up.stderr
    report = json.loads(report_file.read_text())
    assert set(report) == {
        "cacheUrl", "address", "caFile", "dockerHost", "serviceName",
        "node", "nodeAddress", "manager", "label", "secondsToServe", "pullOk",
        "msrApi", "registrationId", "redirectedPullOk",
    }  # fmt: skip
    assert report["redirectedPullOk"] is True
    assert report["msrApi"] == "https://10.77.0.13:5920/api/v0/content_caches"
    assert report["pullOk"] is True
    # The cache runs on the cache node, not on the manager Pulumi talks to.
    assert (report["node"], report["manager"]) == (swarm.cache.hostname, swarm.manager.hostname)
    assert report["address"] == f"{swarm.cache.address}:5443" == f"{report['nodeAddress']}:5443"
    assert report["cacheUrl"] == "https://localhost:5443"
    assert report["dockerHost"] == os.environ["DOCKER_HOST"]
    assert (report["serviceName"], report["label"]) == ("msr-cache-dev", "dtr.cache")
    assert 0 < report["secondsToServe"] < 90

    # Kept: still serving, verifiable with the report alone.
    host, port = report["address"].rsplit(":", 1)
    cert = handshake((host, int(port)), "localhost", report["caFile"])
    assert cert is not None
    assert docker_client.services.get("msr-cache-dev")
    state = (tmp_path / "state/state.json").read_text()
    assert "PRIVATE KEY" not in state
    # Registered with the kept MSR stand-in, whose token is in no state file.
    stand_in = tmp_path / "state/dev/upstream"
    admin = admin_of(stand_in)
    assert admin is not None and admin[1] not in state
    listed = requests.get(report["msrApi"], auth=admin, verify=str(stand_in / "ca.pem"), timeout=10).json()
    assert [(r["id"], r["host"]) for r in listed] == [(report["registrationId"], report["cacheUrl"])]

    again = rehearse(tmp_path, "up", "--stack", "dev")
    assert again.returncode != 0 and "make rehearse-down" in again.stdout + again.stderr

    down = rehearse(tmp_path, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    # The registration went first, with the stand-in's admin password from its config.
    assert "deleted Registration msr-cache-registration-entry" in down.stdout
    mine = {"label": "com.mirantis.msr-cache.stack=dev"}
    assert docker_client.services.list(filters=mine) == []
    assert docker_client.secrets.list(filters=mine) == []
    assert docker_client.configs.list(filters=mine) == []
    assert swarm.msr.client().containers.list(all=True, filters={"name": "msrc-upstream-5920"}) == []
    assert not (tmp_path / "state/state.json").exists()


ROOT_CA = pki.make_ca("corp root")
INTER = pki.make_ca("corp intermediate", issuer=ROOT_CA)
SECURE = {"secure": "v1:bm90IHJlYWxseSBlbmNyeXB0ZWQ="}


def completed(tmp_path: Path, stack: str) -> Path:
    """stacks/Pulumi.<stack>.yaml as an operator completes it (README "Stacks"):
    the certificate or CA certificate in plain text, its key and the MSR token
    encrypted."""
    doc = yaml.safe_load((ROOT / f"stacks/Pulumi.{stack}.yaml").read_text())
    tls = doc["config"]["msr-cache:tls"]
    host = doc["config"]["msr-cache:cacheHost"]
    if tls["mode"] == "caSigned":
        tls |= {"caCertPem": pki.make_ca("corp CA").cert_pem, "caKeyPem": SECURE}
    else:
        leaf = pki.make_leaf(host, dns=[host], issuer=INTER)
        tls |= {"certPem": leaf.cert_pem, "keyPem": SECURE, "chainPem": INTER.cert_pem}
    # The MSR admin that registers it, its token encrypted.
    doc["config"] |= {"msr-cache:msrUser": "admin", "msr-cache:msrToken": SECURE}
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("stack", "material"),
    [
        # caSigned, ECDSA, volume
        ("staging", "tls.caCertPem/caKeyPem -> a test CA (caKeyPem encrypted in the stack file"),
        # provided, named volume
        (
            "prod",
            "tls.certPem/keyPem/chainPem -> a test leaf and intermediate (keyPem encrypted in the stack file",
        ),
    ],
)
def test_rehearse_without_keep_removes_everything(
    tmp_path: Path, docker_client: Any, test_images: None, stack: str, material: str
) -> None:
    run = rehearse(tmp_path, "up", "--stack-config", str(completed(tmp_path, stack)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"pullOk": true' in run.stdout
    assert material in run.stdout
    assert "msrHost/msrPort/msrCaCert -> the MSR stand-in" in run.stdout
    mine = {"label": f"com.mirantis.msr-cache.stack={stack}"}
    assert docker_client.services.list(filters=mine) == []
    assert docker_client.volumes.list(filters=mine) == []
    assert "BEGIN" not in run.stdout + run.stderr  # no key or certificate printed
    # Nothing piles up: no state file, no work folder.
    assert list((tmp_path / "state").iterdir()) == []


def test_an_unknown_stack_names_the_ones_there_are(tmp_path: Path) -> None:
    run = rehearse(tmp_path, "up", "--stack", "nope")
    assert run.returncode != 0
    assert "stacks here: dev, prod, staging" in run.stderr
