"""scripts/swarm.sh's guards, which act before anything is started."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearsal.engine import ROOT

SCRIPT = ROOT / "scripts/swarm.sh"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the local swarm's commands need root")


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    return tmp_path / "msrc-swarm.lock"


def run(lock: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, "MSRC_SWARM_LOCK": str(lock), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def held(lock: Path) -> Iterator[None]:
    """Another run holding the swarm, as `make test` does for its whole e2e run."""
    lock.with_name(lock.name + ".owner").write_text("pid 4242, started 01:02:03Z: make test\n")
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def test_a_second_run_fails_at_once_naming_the_one_that_holds_the_swarm(lock: Path, held: None) -> None:
    started = time.monotonic()
    proc = run(lock, "with", "--", "touch", str(lock.with_name("ran")))
    assert proc.returncode == 1
    assert time.monotonic() - started < 5
    assert "another run is using the local swarm: pid 4242, started 01:02:03Z: make test" in proc.stderr
    assert not lock.with_name("ran").exists(), "the command ran without the lock"


def test_swarm_down_waits_for_no_one_while_a_run_holds_the_swarm(lock: Path, held: None) -> None:
    proc = run(lock, "down")
    assert proc.returncode == 1
    assert "the local swarm is in use: pid 4242" in proc.stderr


def test_fewer_than_three_nodes_is_refused_before_anything_starts(lock: Path) -> None:
    proc = run(lock, "up", "2")
    assert proc.returncode == 1
    assert "NODES must be a number from 3 to 50 (got '2')" in proc.stderr


def test_an_unknown_command_shows_the_usage(lock: Path) -> None:
    proc = run(lock, "sideways")
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
