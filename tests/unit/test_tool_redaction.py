"""What tools/smoke.py and tools/test_cache.py print passes through tools/redact.py.

Each test makes a step fail or an output line quote a secret, the way Docker or the
Pulumi CLI would, and checks that the secret is not in what the operator sees.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import tools.test_cache as tc
from rehearsal import pki
from tests.support.docker_errors import MOUNT_ERROR
from tools import smoke
from tools.redact import REDACT
from tools.stack_file import problems, project_values

ROOT = Path(__file__).resolve().parents[2]
STACK = "test-prod-20250304050607-a1b2c3d4"


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text(pki.make_ca("Test CA").cert_pem)
    return str(path)


# ---------------------------------------------------------------------------
# tools/smoke.py: its errors are what rehearse and test-cache print
# ---------------------------------------------------------------------------


def test_a_registry_reply_quoting_a_password_is_redacted(
    monkeypatch: pytest.MonkeyPatch, ca_file: str
) -> None:
    registry = smoke.Registry(("127.0.0.1", 1), "cache.example.com", ca_file)
    monkeypatch.setattr(registry, "request", lambda *a, **k: (500, {}, MOUNT_ERROR.encode()))
    with pytest.raises(smoke.RegistryError) as exc:
        registry.pull("library/busybox", "1.36")
    assert "hunter22" not in str(exc.value) and "password=[secret]" in str(exc.value)


def test_a_failed_smoke_check_does_not_quote_a_known_secret(
    monkeypatch: pytest.MonkeyPatch, ca_file: str
) -> None:
    REDACT.add("s3cret-passphrase")

    def fail(self: smoke.Registry, timeout: float) -> float:
        raise OSError("connection reset after auth with s3cret-passphrase")

    monkeypatch.setattr(smoke.Registry, "wait_ready", fail)
    with pytest.raises(smoke.SmokeError) as exc:
        smoke.smoke_check(("127.0.0.1", 1), "cache.example.com", ca_file)
    assert "s3cret-passphrase" not in str(exc.value) and "[secret]" in str(exc.value)


# ---------------------------------------------------------------------------
# tools/test_cache.py: its messages, and the Pulumi CLI's output it passes on
# ---------------------------------------------------------------------------


class FailingBackend:
    """A Backend whose `up` prints `lines`, and whose step `at` raises `error` (if any)."""

    def __init__(self, error: BaseException | None = None, at: str = "up", lines: Sequence[str] = ()) -> None:
        self.error, self.at, self.lines = error, at, lines

    def _step(self, name: str) -> None:
        if self.error and name == self.at:
            raise self.error

    def create(self, stack: str, secrets_provider: str | None) -> None:
        self._step("create")

    def set_config(self, settings: Sequence[tc.Setting], environments: Sequence[str] = ()) -> None:
        pass

    def up(self, on_output: tc.OnOutput) -> None:
        for line in self.lines:
            on_output(line)
        self._step("up")

    def outputs(self) -> dict[str, Any]:
        return {}

    def destroy(self, on_output: tc.OnOutput) -> None:
        pass

    def remove(self) -> None:
        pass


BASE = {
    "msr-cache:msrHost": "msr.example.com",
    "msr-cache:cacheHost": "cache.example.com",
    "msr-cache:cacheNode": "node1",
    "msr-cache:register": False,
}


def run_with(config: dict[str, Any], backend: FailingBackend) -> int:
    """A test-cache run of a stack file with `config` over BASE: one the stack-file
    check (what `up` refuses, run before the plan) lets through."""
    doc = {"config": {**BASE, **config}}
    assert problems(project_values(doc, Path("Pulumi.prod.yaml"))) == []
    plan = tc.plan_config(doc, env="prod", stack=STACK)
    return tc.run_test(tc.CacheTest(env="prod", stack=STACK, plan=plan, root=ROOT), backend)


def test_a_failed_step_quoting_a_plain_key_set_as_secret_is_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A plain key gets past the check only with another tls value encrypted (the CLI
    # then treats all of tls as secret).
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"])
    config = {"msr-cache:tls": {"mode": "provided", "certPem": {"secure": "v1:c"}, "keyPem": leaf.key_pem}}
    line = leaf.key_pem.splitlines()[1]
    error = tc.StepError(f"pulumi up failed: cannot load key {line}")
    assert run_with(config, FailingBackend(error)) == tc.EXIT_FAILED
    err = capsys.readouterr().err
    assert "FAILED: pulumi up failed: cannot load key [secret]" in err and line not in err


def test_a_failed_step_quoting_a_docker_mount_error_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    error = tc.StepError(f"pulumi up failed: {MOUNT_ERROR}")
    assert run_with({}, FailingBackend(error)) == tc.EXIT_FAILED
    err = capsys.readouterr().err
    assert "hunter22" not in err and "password=[secret]" in err


def test_a_volume_password_from_the_stack_file_is_never_printed_even_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Plain credentials get past the check only with another storage value encrypted.
    opts = {"o": "username=svc,password=hunter22", "device": {"secure": "v1:d"}, "type": "cifs"}
    config = {"msr-cache:storage": {"mode": "volume", "driverOpts": opts}}
    error = tc.StepError("pulumi up failed: CIFS VFS: cifs_mount failed w/return code = -13 for 'hunter22'")
    assert run_with(config, FailingBackend(error)) == tc.EXIT_FAILED
    assert "hunter22" not in capsys.readouterr().err


def test_pulumi_output_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    backend = FailingBackend(lines=["Updating (test stack)", f"  docker:index:Service: {MOUNT_ERROR}"])
    run_with({}, backend)
    out = capsys.readouterr().out
    assert "Updating (test stack)" in out and "hunter22" not in out


auto = pytest.importorskip("pulumi.automation")


class FakeStack:
    """Enough of pulumi.automation.Stack for AutomationBackend.up."""

    name = STACK
    workspace = SimpleNamespace()

    def up(self, **kw: Any) -> Any:
        kw["on_output"](f"Updating: {MOUNT_ERROR}")
        kw["on_error"](f"error: {MOUNT_ERROR}")
        return SimpleNamespace(outputs={"adminToken": auto.OutputValue("secret-output-value", True)})


def test_the_clis_stdout_and_stderr_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    backend = tc.AutomationBackend(ROOT, "prod", auto=auto)
    backend.stack = FakeStack()
    backend.up(tc._echo)
    captured = capsys.readouterr()
    assert "password=[secret]" in captured.out and "password=[secret]" in captured.err
    assert "hunter22" not in captured.out + captured.err


def test_a_secret_stack_output_is_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    backend = tc.AutomationBackend(ROOT, "prod", auto=auto)
    backend.stack = FakeStack()
    backend.up(lambda line: None)
    tc.say(f"deployed with {backend.outputs()['adminToken']}")
    assert capsys.readouterr().out == "test-cache: deployed with [secret]\n"


def test_main_never_prints_the_passphrase_it_holds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main installs its own
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "correct-horse-battery")
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/pulumi")
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "someone\n", "")
    )
    error = tc.StepError("creating stack failed: passphrase 'correct-horse-battery' is incorrect")
    backend = FailingBackend(error, at="create")
    assert tc.main(["dev"], backend_factory=lambda root, env: backend) == tc.EXIT_FAILED
    err = capsys.readouterr().err
    assert "correct-horse-battery" not in err and "passphrase '[secret]'" in err


def test_main_installs_the_redacting_excepthook(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # main refuses at once
    tc.main(["dev"])
    capsys.readouterr()
    try:
        raise RuntimeError(MOUNT_ERROR)
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "RuntimeError" in err and "hunter22" not in err
