"""The locked dependencies: every lock pins, with hashes, versions inside the
ranges of the requirements file it is compiled from; the locks agree with each
other; make installs from them (and again when one changes), and `make up`
checks for the CLI before it builds the policy pack's virtualenv. The provider
plugins the engine uses are the versions the locked SDKs declare."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rehearsal.engine import ROOT

# lock -> the requirements file it is compiled from
LOCKS = {
    "requirements.lock": "requirements.txt",
    "requirements-dev.lock": "requirements-dev.txt",
    "requirements-bench.lock": "requirements-bench.txt",
    "policy/requirements.lock": "policy/requirements.txt",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.M)
PROVIDER_SDKS = {"pulumi-docker": "docker", "pulumi-tls": "tls", "pulumi-random": "random"}


def pins(lock: str) -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in PIN.findall((ROOT / lock).read_text())}


def ranges(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, following -r."""
    out: list[Requirement] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            out += ranges(path.parent / line[3:].strip())
        else:
            out.append(Requirement(line))
    return out


@pytest.mark.parametrize(("lock", "source"), sorted(LOCKS.items()))
def test_each_lock_pins_every_range_of_its_source_within_it(lock: str, source: str) -> None:
    pinned = pins(lock)
    for req in ranges(ROOT / source):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{lock} has no {req.name}: run make lock"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {req.name}=={pinned[name]}, outside {source}'s {req.specifier}: run make lock"
        )


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_carries_a_hash(lock: str) -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text())
    for block in blocks:
        if PIN.match(block):
            assert "--hash=sha256:" in block, f"{lock}: no hash for {block.splitlines()[0]}"


def test_the_locks_agree_on_every_shared_package() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for lock in LOCKS:
        for name, version in pins(lock).items():
            first = seen.setdefault(name, (lock, version))
            assert first[1] == version, f"{name}: {first[0]} pins {first[1]}, {lock} pins {version}"


def test_the_policy_venv_gets_the_programs_dependencies_and_its_build_backend() -> None:
    policy = pins("policy/requirements.lock")
    for name in [*pins("requirements.lock"), "pulumi-policy", "setuptools"]:
        assert name in policy


def make_dry_run(*args: str) -> list[str]:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.replace("\\\n", " ").splitlines()


@pytest.mark.parametrize(
    ("lock", "target", "python"),
    [
        ("requirements-dev.lock", ".venv/.installed", ".venv/bin/python"),
        ("policy/requirements.lock", "policy/venv/.installed", "policy/venv/bin/python"),
        ("requirements-bench.lock", ".venv/.bench-installed", ".venv/bin/python"),
    ],
)
def test_make_reinstalls_from_the_lock_when_it_changes(lock: str, target: str, python: str) -> None:
    # -W: as if the lock had just been changed.
    lines = make_dry_run("-W", lock, target)
    assert any(line.startswith(python) and f"--require-hashes -r {lock}" in line for line in lines), (
        "\n".join(lines)
    )


def test_the_policy_venv_installs_the_project_itself() -> None:
    lines = make_dry_run("-W", "pyproject.toml", "policy/venv/.installed")
    assert any("--no-deps" in line and "--editable ." in line for line in lines), "\n".join(lines)


@pytest.mark.parametrize("action", ["up", "preview", "rotate"])
def test_make_up_checks_the_cli_before_it_builds_the_policy_venv(action: str) -> None:
    lines = make_dry_run("-W", "policy/requirements.lock", action, "STACK=dev")
    prepare = next(i for i, line in enumerate(lines) if f"pulumi-stack.sh prepare {action} " in line)
    policy = next(i for i, line in enumerate(lines) if "policy/requirements.lock" in line)
    run = next(i for i, line in enumerate(lines) if line.startswith(f"scripts/pulumi-stack.sh {action} "))
    assert prepare < policy < run


def installed_plugins() -> dict[str, str]:
    plugins = {}
    for dist in metadata.distributions():
        for f in dist.files or ():
            if f.name == "pulumi-plugin.json":
                doc = json.loads(f.read_text())
                if doc.get("resource"):
                    plugins[doc["name"]] = doc["version"].lstrip("v")
    return plugins


def test_the_locked_provider_sdks_pin_the_plugins_the_engine_uses() -> None:
    """Each SDK declares its plugin at its own version: locking the SDK locks the plugin."""
    locked = pins("requirements.lock")
    for sdk in PROVIDER_SDKS:
        if metadata.version(sdk) != locked[sdk]:
            pytest.skip(f"this environment's {sdk} is not the locked one (make venv)")
    plugins = installed_plugins()
    assert {plugin: plugins[plugin] for plugin in PROVIDER_SDKS.values()} == {
        plugin: locked[sdk] for sdk, plugin in PROVIDER_SDKS.items()
    }
