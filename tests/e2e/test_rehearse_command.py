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

from rehearsal import object_store, pki
from rehearsal.engine import ROOT
from rehearsal.localswarm import LocalSwarm
from rehearsal.upstream import admin_of
from tools.smoke import handshake

pytestmark = pytest.mark.docker


def rehearse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REHEARSAL_DIR": str(tmp_path / "state"),
        "UPSTREAM_PORT": "5920",
        "OBJECT_STORE_PORT": "5987",
    }
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
        "msrApi", "registrationId", "redirectedPullOk", "caches",
    }  # fmt: skip
    assert report["redirectedPullOk"] is True
    # The `caches` map has the one cache too, keyed as the program's `caches` output.
    (one,) = report["caches"].values()
    assert {k: one[k] for k in ("cacheUrl", "address", "registrationId", "redirectedPullOk")} == {
        k: report[k] for k in ("cacheUrl", "address", "registrationId", "redirectedPullOk")
    }
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
    """stacks/Pulumi.<stack>.yaml as an operator completes it (README "Stacks",
    the file's header): the certificate or CA certificate in plain text, its key
    and the MSR token encrypted; for each site of prod, its own certificate and
    key (`caches[i].tls`), and the intermediate at the top level."""
    doc = yaml.safe_load((ROOT / f"stacks/Pulumi.{stack}.yaml").read_text())
    config = doc["config"]
    tls = config["msr-cache:tls"]
    if tls["mode"] == "caSigned":
        tls |= {"caCertPem": pki.make_ca("corp CA").cert_pem, "caKeyPem": SECURE}
    elif "msr-cache:caches" in config:
        for site in config["msr-cache:caches"]:
            leaf = pki.make_leaf(site["cacheHost"], dns=[site["cacheHost"]], issuer=INTER)
            site["tls"] = {"certPem": leaf.cert_pem, "keyPem": SECURE}
        tls |= {"chainPem": INTER.cert_pem}
    else:
        host = config["msr-cache:cacheHost"]
        leaf = pki.make_leaf(host, dns=[host], issuer=INTER)
        tls |= {"certPem": leaf.cert_pem, "keyPem": SECURE, "chainPem": INTER.cert_pem}
    # The MSR admin that registers it, its token encrypted.
    config |= {"msr-cache:msrUser": "admin", "msr-cache:msrToken": SECURE}
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_rehearse_staging_without_keep_removes_everything(
    tmp_path: Path, docker_client: Any, test_images: None
) -> None:
    """caSigned, ECDSA, volume: the stack's one cache."""
    run = rehearse(tmp_path, "up", "--stack-config", str(completed(tmp_path, "staging")))
    assert run.returncode == 0, run.stdout + run.stderr
    assert '"pullOk": true' in run.stdout
    assert "tls.caCertPem/caKeyPem -> a test CA (caKeyPem encrypted in the stack file" in run.stdout
    assert "msrHost/msrPort/msrCaCert -> the MSR stand-in" in run.stdout
    mine = {"label": "com.mirantis.msr-cache.stack=staging"}
    assert docker_client.services.list(filters=mine) == []
    assert docker_client.volumes.list(filters=mine) == []
    assert "BEGIN" not in run.stdout + run.stderr  # no key or certificate printed
    # Nothing piles up: no state file, no work folder.
    assert list((tmp_path / "state").iterdir()) == []


def nothing_left(stack: str, docker_client: Any, swarm: LocalSwarm, tmp_path: Path) -> None:
    """What `down` (or a rehearsal without --keep) must leave: nothing of the
    stack on any node, no node label, no stand-in, no state."""
    mine = {"label": f"com.mirantis.msr-cache.stack={stack}"}
    for kind in (docker_client.services, docker_client.secrets, docker_client.configs):
        assert kind.list(filters=mine) == []
    for node in swarm.nodes:
        volumes = [v.name for v in node.client().volumes.list() if v.name.startswith(f"msr-cache-{stack}")]
        assert volumes == [], f"{node.hostname} keeps {volumes}"
    labels = {
        n.attrs["Description"]["Hostname"]: sorted(
            k for k in n.attrs["Spec"].get("Labels") or {} if "cache" in k
        )
        for n in docker_client.nodes.list()
    }
    assert all(v == [] for v in labels.values()), labels
    assert swarm.msr.client().containers.list(all=True, filters={"name": "msrc-upstream-5920"}) == []
    assert not (tmp_path / "state/state.json").exists()
    assert list((tmp_path / "state").iterdir()) == []


def test_rehearse_prod_serves_and_registers_both_sites_then_down_leaves_nothing(
    tmp_path: Path, docker_client: Any, swarm: LocalSwarm, test_images: None
) -> None:
    """`make rehearse STACK=prod` with the operator's material: both sites
    publish 443 in host mode, so each gets a node of its own; each serves its
    own test leaf (the operator's key is encrypted) and is registered with MSR,
    and a user's pull from MSR is redirected to each."""
    report_file = tmp_path / "prod.json"
    up = rehearse(
        tmp_path,
        "up",
        "--stack-config",
        str(completed(tmp_path, "prod")),
        "--report",
        str(report_file),
        "--keep",
    )
    out = up.stdout + up.stderr
    assert up.returncode == 0, out
    assert "BEGIN" not in out and "PRIVATE KEY" not in out
    for i, site in enumerate(("asia", "europe")):
        assert (
            f"caches[{i}] ({site}): tls.certPem/keyPem/chainPem -> a test leaf for cache-{site}.example.com "
            "and intermediate (keyPem encrypted in the stack file"
        ) in out
    report = json.loads(report_file.read_text())
    assert (report["pullOk"], report["redirectedPullOk"]) == (True, True)
    assert set(report["caches"]) == {"asia", "europe"}
    asia, europe = report["caches"]["asia"], report["caches"]["europe"]
    assert (asia["node"], europe["node"]) == (swarm.cache.hostname, swarm.manager.hostname)
    assert (asia["address"], europe["address"]) == (
        f"{swarm.cache.address}:443",
        f"{swarm.manager.address}:443",
    )
    stand_in = tmp_path / "state/prod/upstream"
    admin = admin_of(stand_in)
    assert admin is not None
    listed = requests.get(report["msrApi"], auth=admin, verify=str(stand_in / "ca.pem"), timeout=10).json()
    registered = {r["id"]: (r["name"], r["host"]) for r in listed}
    for site, cache in report["caches"].items():
        # Served now, verified for its own name with the report alone; registered as its cacheName.
        host, port = cache["address"].rsplit(":", 1)
        assert handshake((host, int(port)), f"cache-{site}.example.com", cache["caFile"]) is not None
        assert registered[cache["registrationId"]] == (f"region-{site}", f"https://cache-{site}.example.com")
        assert cache["redirectedPullOk"] is True and cache["pullOk"] is True
        assert 0 < cache["secondsToServe"] < 120
        assert docker_client.nodes.get(cache["node"]).attrs["Spec"]["Labels"][f"dtr.cache.{site}"] == "true"
    assert len(registered) == 2
    state = (tmp_path / "state/state.json").read_text()
    assert "PRIVATE KEY" not in state and admin[1] not in state

    down = rehearse(tmp_path, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    nothing_left("prod", docker_client, swarm, tmp_path)


CHAINED: dict[str, Any] = {
    "msr-cache:msrHost": "msr.example.com",
    "msr-cache:msrUser": "admin",
    "msr-cache:msrToken": SECURE,
    "msr-cache:publishMode": "host",
    "msr-cache:tls": {"mode": "caSigned", "caKeyPem": SECURE, "keyAlgorithm": "ECDSA"},
    "msr-cache:caches": [
        {
            "name": "hub",
            "cacheHost": "hub.rehearsal.example.com",
            "nodes": ["hub-1.example.com", "hub-2.example.com"],
            "replicas": 2,
            "storage": {
                "mode": "s3",
                "s3": {"bucket": "layers", "region": "eu-west-1", "accessKey": SECURE, "secretKey": SECURE},
            },
        },
        {
            "name": "site",
            "cacheHost": "site.rehearsal.example.com",
            "cachePort": 8443,
            "cacheNode": "branch-1.example.com",
            "upstream": "hub",
        },
    ],
}


def test_rehearse_a_chained_stack_on_object_storage_then_down_leaves_nothing(
    tmp_path: Path, docker_client: Any, swarm: LocalSwarm, test_images: None
) -> None:
    """Two replicas of a hub on S3 (the S3 stand-in), and a site cache chained
    to it by name: the site's config.yml names https://hub.rehearsal.example.com,
    which resolves to the hub's node in its container; a user's pull through the
    site is redirected to it and served. `down` removes the S3 stand-in too."""
    tls = CHAINED["msr-cache:tls"] | {"caCertPem": pki.make_ca("corp CA").cert_pem}
    path = tmp_path / "Pulumi.chain.yaml"
    path.write_text(yaml.safe_dump({"config": CHAINED | {"msr-cache:tls": tls}}))
    report_file = tmp_path / "chain.json"
    up = rehearse(tmp_path, "up", "--stack-config", str(path), "--report", str(report_file), "--keep")
    out = up.stdout + up.stderr
    assert up.returncode == 0, out
    assert "caches[0] (hub): storage.mode s3 -> s3 on the S3 stand-in http://10.77.0.13:5987" in out
    assert f"hub.rehearsal.example.com resolves to {swarm.cache.address}" in out
    report = json.loads(report_file.read_text())
    hub, site = report["caches"]["hub"], report["caches"]["site"]
    assert hub["nodes"] == [swarm.cache.hostname, swarm.manager.hostname]
    assert site["nodes"] == [swarm.cache.hostname]  # another port: it shares the hub's first node
    assert site["upstream"] == "https://hub.rehearsal.example.com"
    assert report["objectStore"] == "http://10.77.0.13:5987/msr-cache-layers"
    assert (report["pullOk"], report["redirectedPullOk"]) == (True, True)
    service = docker_client.services.get(site["serviceName"])
    hosts = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Hosts"]
    assert f"{swarm.cache.address} hub.rehearsal.example.com" in hosts
    assert object_store.processes(5987), "the S3 stand-in runs while the rehearsal is kept"

    down = rehearse(tmp_path, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    nothing_left("chain", docker_client, swarm, tmp_path)
    assert object_store.processes(5987) == []


def test_an_unknown_stack_names_the_ones_there_are(tmp_path: Path) -> None:
    run = rehearse(tmp_path, "up", "--stack", "nope")
    assert run.returncode != 0
    assert "stacks here: dev, prod, staging" in run.stderr


def test_rehearse_refuses_caches_that_need_more_nodes_than_the_swarm_has(
    tmp_path: Path, swarm: LocalSwarm, test_images: None
) -> None:
    """One more site on 443 than the swarm has nodes for caches: `up` says how
    many it needs and how to add them, before it starts anything."""
    sites = [
        {"name": f"s{i}", "cacheHost": f"s{i}.example.com", "cacheNode": f"s{i}-01"}
        for i in range(len(swarm.nodes))
    ]
    config = {
        "msr-cache:msrHost": "msr.example.com",
        "msr-cache:msrUser": "admin",
        "msr-cache:msrToken": SECURE,
        "msr-cache:publishMode": "host",
        "msr-cache:caches": sites,
    }
    path = tmp_path / "Pulumi.many.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    run = rehearse(tmp_path, "up", "--stack-config", str(path))
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"need {len(sites)} nodes of the local swarm" in run.stderr
    assert f"scripts/swarm.sh node-add msrc-node{len(swarm.nodes) + 1}" in run.stderr
    assert not (tmp_path / "state").exists()
