"""scripts/pulumi-stack.sh (make up/preview/destroy/rotate/drift) with stand-in
`pulumi` and `docker` commands that record what they are asked to run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from components import rotation
from tests.support.program import ROOT

SCRIPT = ROOT / "scripts/pulumi-stack.sh"

FAKE_PULUMI = """#!/bin/sh
echo "$*" >> "$RECORD"
case "$1" in
  whoami) [ -z "$NO_LOGIN" ] ;;
  config)
    if [ "$2 $3 $4" = "get --path tls.mode" ] && [ -n "$TLS_MODE" ]; then echo "$TLS_MODE"; exit 0; fi
    exit 1 ;;
  stack) [ "$2" != select ] || [ -z "$NO_STACK" ] ;;
  *) exit 0 ;;
esac
"""
FAKE_DOCKER = """#!/bin/sh
echo true
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("pulumi", FAKE_PULUMI), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "RECORD": str(tmp_path / "calls"),
        "HOME": str(tmp_path),
    }


def run(action: str, stack: str, env: dict[str, str], **extra: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run(
        ["bash", str(SCRIPT), action, stack],
        cwd=ROOT,
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    record = Path(env["RECORD"])
    calls = record.read_text().splitlines() if record.exists() else []
    return proc.returncode, proc.stderr, calls


@pytest.mark.skipif(not (ROOT / ".venv/bin/python").exists(), reason="needs the project's .venv (make venv)")
def test_rotate_replaces_the_key_by_its_urn(env: dict[str, str]) -> None:
    code, err, calls = run("rotate", "prod", env)
    assert code == 0, err
    assert calls[-1] == f"up --stack prod --replace {rotation.key_urn('prod')} --policy-pack policy"


def test_rotate_refuses_a_provided_certificate(env: dict[str, str]) -> None:
    code, err, calls = run("rotate", "prod", env, TLS_MODE="provided")
    assert code == 1
    assert "tls.mode is provided: rotate by setting the new tls.certPem and tls.keyPem" in err
    assert not any(c.startswith("up") for c in calls)


def test_rotate_needs_an_existing_stack(env: dict[str, str]) -> None:
    code, err, _ = run("rotate", "dev", env, NO_STACK="1")
    assert code == 1 and "make up STACK=dev first" in err


def test_drift_is_a_refresh_preview_that_expects_no_changes(env: dict[str, str]) -> None:
    code, err, calls = run("drift", "staging", env)
    assert code == 0, err
    assert calls[-1] == "refresh --stack staging --preview-only --expect-no-changes"


def test_up_creates_the_stack_when_missing(env: dict[str, str]) -> None:
    code, err, calls = run("up", "dev", env, NO_STACK="1")
    assert code == 0, err
    assert calls[-2:] == ["stack init dev", "up --stack dev --policy-pack policy"]


def test_destroy_of_a_stack_that_does_not_exist_creates_nothing(env: dict[str, str]) -> None:
    code, err, calls = run("destroy", "dev", env, NO_STACK="1")
    assert code == 1 and "stack dev does not exist" in err
    assert not any(c.startswith("stack init") for c in calls)


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"NO_LOGIN": "1"}, "not logged in to a state backend"), ({}, "no stacks/Pulumi.nope.yaml")],
)
def test_missing_pieces_are_named(env: dict[str, str], extra: dict[str, str], message: str) -> None:
    stack = "nope" if not extra else "dev"
    code, err, _ = run("drift", stack, env, **extra)
    assert code == 1 and message in err


def test_no_pulumi_cli_is_named(env: dict[str, str]) -> None:
    os.remove(Path(env["PATH"].split(":")[0]) / "pulumi")
    code, err, _ = run("up", "dev", env)
    assert code == 1 and "the Pulumi CLI is not installed" in err
