"""`make rehearse` with the stack-file mistakes an operator makes (issue 11):
each is refused before anything is started (no DOCKER_HOST is needed to say
no), in under a second, naming the exact key, printing no secret and leaving
nothing behind. The cases are the ones a new user hit: values the rehearsal
swaps for stand-ins, plain-text keys and credentials, a certificate that `up`
refuses although only its key is encrypted, files the CLI cannot read."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from rehearsal import pki
from rehearsal.engine import ROOT

SECRET_WORD = "hunter22-do-not-print"
CA = pki.make_ca("corp CA")
ROOT_CA = pki.make_ca("corp root")
INTER = pki.make_ca("corp intermediate", issuer=ROOT_CA)
NOW = dt.datetime.now(dt.UTC)
EXPIRED = pki.make_leaf(
    "cache-asia.example.com", dns=["cache-asia.example.com"], issuer=INTER,
    not_before=NOW - dt.timedelta(days=60), not_after=NOW - dt.timedelta(days=1),
)  # fmt: skip
WRONG_NAME = pki.make_leaf("cache-eu.example.com", dns=["cache-eu.example.com"], issuer=INTER)
SECURE = {"secure": "v1:bm90IHJlYWxseSBlbmNyeXB0ZWQ="}
BASE: dict[str, object] = {
    "msr-cache:msrHost": "msr.example.com",
    "msr-cache:cacheHost": "cache-asia.example.com",
    "msr-cache:cacheNode": "cache-asia-01",
    "msr-cache:msrUser": "admin",
    "msr-cache:msrToken": {"secure": "v1:dG9rZW4="},
}


def prod(cert: pki.Issued) -> dict[str, object]:
    """The README's prod layout: certificate and chain in plain text, key encrypted."""
    tls = {"mode": "provided", "certPem": cert.cert_pem, "keyPem": SECURE, "chainPem": INTER.cert_pem}
    return BASE | {"msr-cache:tls": tls}


@dataclass(frozen=True)
class Mistake:
    config: dict[str, object] | None
    named: tuple[str, ...]
    text: str | None = None  # the file's text, when it is not YAML of `config`
    secrets: tuple[str, ...] = ()


MISTAKES = {
    "msrHost with a scheme": Mistake(BASE | {"msr-cache:msrHost": "https://msr.example.com"}, ("msrHost",)),
    "msrPort with a protocol": Mistake(BASE | {"msr-cache:msrPort": "443/tcp"}, ("msrPort",)),
    "cachePort with a protocol": Mistake(BASE | {"msr-cache:cachePort": "443/tcp"}, ("cachePort",)),
    "image without a tag": Mistake(BASE | {"msr-cache:image": "mirantis/dtr-content-cache"}, ("image",)),
    "a CA that is not PEM, and fetched too": Mistake(
        BASE | {"msr-cache:msrCaCert": "not a pem", "msr-cache:fetchMsrCa": True}, ("msrCaCert", "fetchMsrCa")
    ),
    "a CA key in plain text": Mistake(
        BASE | {"msr-cache:tls": {"mode": "caSigned", "caCertPem": CA.cert_pem, "caKeyPem": CA.key_pem}},
        ("tls.caKeyPem",),
        secrets=(CA.key_pem.splitlines()[1],),
    ),
    "an expired certificate, key encrypted": Mistake(prod(EXPIRED), ("tls.certPem",)),
    "a certificate for another name, key encrypted": Mistake(prod(WRONG_NAME), ("tls.certPem",)),
    "driver credentials in plain text": Mistake(
        BASE
        | {
            "msr-cache:storage": {
                "mode": "volume",
                "driverOpts": {"o": f"username=svc,password={SECRET_WORD}"},
            }
        },
        ("storage.driverOpts.o",),
        secrets=(SECRET_WORD,),
    ),
    "several at once, stand-in keys too": Mistake(
        BASE | {"msr-cache:msrHost": "msr:443", "msr-cache:image": "x:latest", "msr-cache:logLevel": "loud"},
        ("msrHost", "image", "logLevel"),
    ),
    "a key without its namespace": Mistake(
        None, ("write it as msr-cache:cacheHost",), text="config:\n  cacheHost: c.example.com\n"
    ),
    "a key given twice": Mistake(
        None,
        ("line 3: key 'msr-cache:cachePort' is already defined at line 2",),
        text="config:\n  msr-cache:cachePort: 443\n  msr-cache:cachePort: 8443\n",
    ),
    "a tab in the YAML": Mistake(
        None, ("line 2, column 1", "tabs"), text="config:\n\tmsr-cache:cacheHost: c\n"
    ),
    "a misspelt tls field": Mistake(
        BASE | {"msr-cache:tls": {"mode": "selfSigned", "validtyHours": 48}}, ("tls.validtyHours",)
    ),
}


def rehearse_up(tmp_path: Path, stack_file: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if k not in {"DOCKER_HOST", "MSRC_SWARM"}}
    env["REHEARSAL_DIR"] = str(tmp_path / "state")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rehearsal", "up", "--stack-config", str(stack_file)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return proc, time.monotonic() - started


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_mistake_is_refused_at_once_naming_the_key(tmp_path: Path, case: str) -> None:
    mistake = MISTAKES[case]
    path = tmp_path / "Pulumi.mistake.yaml"
    path.write_text(mistake.text or yaml.safe_dump({"config": mistake.config}))
    proc, seconds = rehearse_up(tmp_path, path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    for named in mistake.named:
        assert named in proc.stderr, out
    assert "Traceback" not in out
    for secret in (*mistake.secrets, "PRIVATE KEY"):
        assert secret not in out
    assert not (tmp_path / "state").exists(), "nothing is started or written"
    assert seconds < 1.0, f"refused after {seconds:.2f} s"


def test_every_problem_is_named_with_the_full_key(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.mistake.yaml"
    path.write_text(yaml.safe_dump({"config": MISTAKES["several at once, stand-in keys too"].config}))
    proc, _ = rehearse_up(tmp_path, path)
    assert "(3 problems)" in proc.stderr
    for key in ("msrHost", "image", "logLevel"):
        assert f"msr-cache:{key}:" in proc.stderr


def test_a_missing_stack_file_is_said_at_once(tmp_path: Path) -> None:
    proc, seconds = rehearse_up(tmp_path, tmp_path / "Pulumi.nope.yaml")
    assert proc.returncode == 2
    assert "no stack file" in proc.stderr and "stacks here: dev, prod, staging" in proc.stderr
    assert seconds < 1.0


def test_a_file_name_that_is_no_stack_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.my stack.yaml"
    path.write_text(yaml.safe_dump({"config": BASE}))
    proc, _ = rehearse_up(tmp_path, path)
    assert proc.returncode == 2
    assert "the stack name 'my stack' (from the file name Pulumi.my stack.yaml)" in proc.stderr


def test_the_prod_template_without_its_certificate_is_refused_like_up(tmp_path: Path) -> None:
    """The committed prod stack lacks each site's certificate and key, which the
    operator adds: `pulumi up` refuses it, so the rehearsal does, naming each."""
    proc, _ = rehearse_up(tmp_path, ROOT / "stacks/Pulumi.prod.yaml")
    assert proc.returncode == 2
    for site in (0, 1):
        assert f"msr-cache:caches[{site}].tls.certPem: is required" in proc.stderr
        assert f"msr-cache:caches[{site}].tls.keyPem: is required" in proc.stderr


def test_check_passes_a_good_stack_and_starts_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DOCKER_HOST", "MSRC_SWARM"}}
    env["REHEARSAL_DIR"] = str(tmp_path / "state")
    good = tmp_path / "Pulumi.asia.yaml"
    good.write_text(
        yaml.safe_dump(
            {
                "config": prod(
                    pki.make_leaf("cache-asia.example.com", dns=["cache-asia.example.com"], issuer=INTER)
                )
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "rehearsal", "check", "--for-up", "--stack-config", str(good)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no problem `pulumi up` would refuse" in proc.stdout
    (tmp_path / "state").mkdir()
    (tmp_path / "state/state.json").write_text("{}")
    again = subprocess.run(
        [sys.executable, "-m", "rehearsal", "check", "--for-up", "--stack-config", str(good)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 2 and "make rehearse-down" in again.stderr


THREE_SITES_ON_443 = {
    "msr-cache:msrHost": "msr.example.com",
    "msr-cache:msrUser": "admin",
    "msr-cache:msrToken": {"secure": "v1:dG9rZW4="},
    "msr-cache:publishMode": "host",
    "msr-cache:caches": [
        {"name": n, "cacheHost": f"cache-{n}.example.com", "cacheNode": f"{n}-01"}
        for n in ("asia", "europe", "us")
    ],
}


@pytest.mark.parametrize(
    ("swarm_nodes", "hint"),
    [
        # A swarm that is up with three nodes: add one to it.
        (3, "scripts/swarm.sh node-add msrc-node4"),
        # None up: `make rehearse` starts one of NODES nodes.
        (None, "make rehearse ... NODES=4"),
    ],
)
def test_caches_needing_more_nodes_than_the_swarm_are_refused_before_it_starts(
    tmp_path: Path, swarm_nodes: int | None, hint: str
) -> None:
    """Three caches publishing 443 in host mode need three nodes besides the
    msr node: `check --for-up` (make rehearse's first step) says so and how."""
    nodes_json = tmp_path / "nodes.json"
    if swarm_nodes is not None:
        nodes = [
            {"hostname": f"n{i}", "address": f"10.0.0.{i}", "dockerHost": "x"} for i in range(swarm_nodes)
        ]
        nodes_json.write_text(json.dumps({"nodes": nodes}))
    env = {k: v for k, v in os.environ.items() if k not in {"DOCKER_HOST", "NODES"}}
    env |= {"REHEARSAL_DIR": str(tmp_path / "state"), "MSRC_SWARM": str(nodes_json)}
    path = tmp_path / "Pulumi.sites.yaml"
    path.write_text(yaml.safe_dump({"config": THREE_SITES_ON_443}))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rehearsal", "check", "--for-up", "--stack-config", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the stack's caches need 3 nodes of the local swarm" in proc.stderr
    assert hint in proc.stderr
    assert time.monotonic() - started < 1.0
    # With enough nodes it passes.
    env["NODES"] = "4"
    nodes_json.unlink(missing_ok=True)
    ok = subprocess.run(
        [sys.executable, "-m", "rehearsal", "check", "--for-up", "--stack-config", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
