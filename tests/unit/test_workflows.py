"""The GitHub workflows: actionlint passes them and fails a broken one, and the
preview covers every stack with the policy pack and the least permissions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rehearsal.engine import ROOT

ACTIONLINT = ROOT / ".venv/bin/actionlint"
WORKFLOWS = ROOT / ".github/workflows"
needs_actionlint = pytest.mark.skipif(not ACTIONLINT.exists(), reason="actionlint not in .venv (make venv)")


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ACTIONLINT), "-shellcheck=", "-pyflakes=", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load(name: str) -> dict[Any, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the `on:` key as True.
    return {("on" if k is True else k): v for k, v in doc.items()}


@needs_actionlint
def test_actionlint_passes_our_workflows() -> None:
    result = actionlint(*sorted(WORKFLOWS.glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_actionlint
def test_actionlint_fails_a_broken_workflow(tmp_path: Path) -> None:
    broken = (WORKFLOWS / "preview.yml").read_text().replace("matrix.stack", "matrix.stak", 1)
    (tmp_path / ".github/workflows").mkdir(parents=True)
    path = tmp_path / ".github/workflows/preview.yml"
    path.write_text(broken)
    result = actionlint(path)
    assert result.returncode != 0
    assert "stak" in result.stdout


def test_preview_runs_for_every_stack_with_the_policy_pack() -> None:
    doc = load("preview.yml")
    assert "pull_request" in doc["on"]
    job = doc["jobs"]["preview"]
    stacks = sorted(
        p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml") if ".test-" not in p.name
    )
    assert sorted(job["strategy"]["matrix"]["stack"]) == stacks
    (step,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert step["with"]["command"] == "preview"
    assert step["with"]["comment-on-pr"] is True
    assert step["with"]["policyPacks"] == "policy"
    assert step["with"]["stack-name"].endswith("/msr-cache/${{ matrix.stack }}")


def test_workflows_ask_for_the_least_permissions() -> None:
    assert load("preview.yml")["permissions"] == {"contents": "read"}
    assert load("preview.yml")["jobs"]["preview"]["permissions"] == {
        "contents": "read",
        "pull-requests": "write",
    }
    assert load("test.yml")["permissions"] == {"contents": "read"}


def test_the_test_workflow_runs_make_test() -> None:
    steps = load("test.yml")["jobs"]
    commands = [s.get("run", "") for job in steps.values() for s in job["steps"]]
    assert any("make test" in c for c in commands)


def run_steps(name: str) -> list[str]:
    return [s.get("run", "") for job in load(name)["jobs"].values() for s in job["steps"]]


def test_workflows_install_python_packages_only_from_the_hashed_locks() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for command in run_steps(path.name):
            for line in command.replace("\\\n", " ").splitlines():
                if re.search(r"pip(\[@\]\}\")? install", line):
                    assert ("--require-hashes -r " in line and ".lock" in line) or "--no-index" in line, (
                        f"{path.name}: {line.strip()}"
                    )


def test_the_engine_job_runs_the_real_engine_on_every_pull_request() -> None:
    doc = load("engine.yml")
    assert "pull_request" in doc["on"] and doc["permissions"] == {"contents": "read"}
    commands = run_steps("engine.yml")
    install = next(i for i, c in enumerate(commands) if "scripts/install-pulumi.sh" in c)
    engine = next(i for i, c in enumerate(commands) if "scripts/engine-check.sh" in c)
    assert any("make venv policy-venv" in c for c in commands[:engine])
    assert install < engine
    # The CLI installed by a step is the one the (root) engine step finds.
    assert "$GITHUB_PATH" in commands[install]
    assert "--preserve-env=CI,PATH" in commands[engine]


def test_the_engine_check_goes_up_previews_destroys_and_looks_for_leftovers() -> None:
    lines = [line.strip() for line in (ROOT / "scripts/engine-check.sh").read_text().splitlines()]
    order = [
        next(i for i, line in enumerate(lines) if line.startswith(prefix))
        for prefix in (
            "pulumi up --stack",
            'pulumi preview --stack "$STACK" --expect-no-changes',
            "pulumi destroy --stack",
            'ids=$(docker "$kind" ls --quiet --filter "label=$LABEL")',
        )
    ]
    assert order == sorted(order)
