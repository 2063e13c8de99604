"""scripts/pulumi-stack.sh (make up/preview/destroy/rotate/drift) with stand-in
`pulumi`, `docker`, `curl` and swarm.sh commands that record what they are asked
to run. Nothing is downloaded: the stand-in curl serves a tarball made here, or
fails as it does on a machine without Internet access."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from components import rotation
from rehearsal.engine import ROOT, Run, run_program

SCRIPT = ROOT / "scripts/pulumi-stack.sh"

FAKE_PULUMI = """#!/bin/sh
echo "$*" >> "$RECORD"
echo "$1 backend=${PULUMI_BACKEND_URL:-} passphrase=${PULUMI_CONFIG_PASSPHRASE_FILE:-}" \\
  "docker=${DOCKER_HOST:-}" >> "$RECORD.env"
case "$1" in
  whoami) [ -z "$NO_LOGIN" ] || [ -n "$PULUMI_BACKEND_URL" ] ;;
  config)
    [ "$2 $3" = "get --path" ] || exit 1
    if [ "$4" = tls.mode ] && [ -n "$TLS_MODE" ]; then echo "$TLS_MODE"; exit 0; fi
    # CONFIG: the stack's config, a PATH=VALUE a line (caches[0].name=asia).
    printf '%s\n' "$CONFIG" |
      awk -v k="$4=" 'index($0, k) == 1 { print substr($0, length(k) + 1); f = 1 } END { exit !f }' ;;
  stack)
    if [ "$2 $3" = "output caches" ]; then
      [ -z "$CACHES" ] || { echo "$CACHES"; exit 0; }
      echo "error: current stack does not have output property 'caches'" >&2; exit 255
    fi
    if [ "$2" = output ]; then [ -n "$NOT_AFTER" ] && echo "$NOT_AFTER"; exit; fi
    [ "$2" != select ] || [ -z "$NO_STACK" ] ;;
  *) exit 0 ;;
esac
"""
# A manager answers on the local socket, unless MANAGER names the only host that has one.
FAKE_DOCKER = """#!/bin/sh
if [ -n "$MANAGER" ] && [ "${DOCKER_HOST:-}" != "$MANAGER" ]; then echo false; else echo true; fi
"""
# curl -o FILE URL: serves $TARBALL, or fails like curl without a network.
FAKE_CURL = """#!/bin/sh
out=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    http*) echo "$1" >> "$RECORD.curl" ;;
  esac
  shift
done
if [ -z "$TARBALL" ]; then echo "curl: (6) Could not resolve host: get.pulumi.com" >&2; exit 6; fi
cp "$TARBALL" "$out"
"""
# scripts/swarm.sh: `up` brings it up unless SWARM_CANNOT_START; `env` points at it.
FAKE_SWARM = """#!/bin/sh
echo "swarm $*" >> "$RECORD"
case "$1" in
  status) [ -f "$SWARM_UP" ] ;;
  up) [ -n "$SWARM_CANNOT_START" ] || touch "$SWARM_UP" ;;
  env) [ -f "$SWARM_UP" ] && echo "export DOCKER_HOST=$MANAGER MSRC_REGISTRY=10.77.0.13:5999" ;;
esac
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("pulumi", FAKE_PULUMI), ("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    swarm = tmp_path / "swarm.sh"
    swarm.write_text(FAKE_SWARM)
    swarm.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "RECORD": str(tmp_path / "calls"),
        "HOME": str(tmp_path),
        "MSRC_PULUMI_DIR": str(tmp_path / "project-pulumi"),
        "MSRC_SWARM_SH": str(swarm),
        "SWARM_UP": str(tmp_path / "swarm-is-up"),
    }


def run(action: str, stack: str, env: dict[str, str], **extra: str) -> tuple[int, str, list[str]]:
    return run_args([action, stack], env, **extra)


def run_args(args: list[str], env: dict[str, str], **extra: str) -> tuple[int, str, list[str]]:
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args],
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


def pulumi_env(env: dict[str, str], command: str) -> str:
    """What the stand-in pulumi saw in its environment for its last `command`."""
    lines = Path(env["RECORD"] + ".env").read_text().splitlines()
    return [line for line in lines if line.startswith(command + " ")][-1]


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


def in_days(days: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_drift_is_a_refresh_preview_that_expects_no_changes(env: dict[str, str]) -> None:
    code, err, calls = run("drift", "staging", env, NOT_AFTER=in_days(200))
    assert code == 0, err
    assert calls[-1] == "refresh --stack staging --preview-only --expect-no-changes"


def test_drift_also_fails_on_a_certificate_close_to_its_end(env: dict[str, str]) -> None:
    code, err, calls = run("drift", "staging", env, NOT_AFTER=in_days(10))
    assert code == 1
    assert "the cache's certificate expires in 10 days" in err
    assert calls[-1] == "refresh --stack staging --preview-only --expect-no-changes"


@pytest.mark.parametrize(("days", "code"), [(31, 0), (29, 1), (-2, 1)])
def test_check_fails_within_30_days_of_the_certificates_end(
    env: dict[str, str], days: int, code: int
) -> None:
    got, err, _ = run("check", "prod", env, NOT_AFTER=in_days(days))
    assert got == code, err
    if code:
        assert "within 30 days: make up STACK=prod renews it" in err
        assert ("EXPIRED" in err) is (days < 0)


def test_check_of_a_provided_certificate_says_to_set_the_new_one(env: dict[str, str]) -> None:
    code, err, _ = run("check", "prod", env, NOT_AFTER=in_days(5), TLS_MODE="provided")
    assert code == 1 and "set the renewed tls.certPem (and tls.keyPem)" in err


def test_check_needs_the_output(env: dict[str, str]) -> None:
    code, err, _ = run("check", "prod", env)
    assert code == 1
    assert "has no caches output and no certificateNotAfter output: make up STACK=prod first" in err


# ---------------------------------------------------------------------------
# Several caches: the `caches` output, and CACHE= for rotate
# ---------------------------------------------------------------------------

TWO_SITES = {
    "publishMode": "host",
    "caches": [
        {"name": "asia", "cacheHost": "cache-asia.example.com", "cacheNode": "asia-1"},
        {"name": "europe", "cacheHost": "cache-europe.example.com", "cacheNode": "europe-1"},
    ],
}
TWO_NAMES = "caches[0].name=asia\ncaches[1].name=europe"


@pytest.fixture(scope="module")
def two_sites() -> Run:
    """The program run with two caches: its `caches` output, and its URNs."""
    return run_program(TWO_SITES, stack="prod")


def caches_output(run: Run, **not_after: str) -> str:
    """The `caches` output as `pulumi stack output caches --json` prints it, with
    the certificateNotAfter of the caches named here replaced."""
    caches = json.loads(json.dumps(run.exports["caches"]))
    for name, value in not_after.items():
        caches[name]["certificateNotAfter"] = value
    return json.dumps(caches, indent=2)


def test_check_reads_every_cache_of_the_caches_output(env: dict[str, str], two_sites: Run) -> None:
    out = caches_output(two_sites, asia=in_days(200), europe=in_days(90))
    proc = subprocess.run(
        ["bash", str(SCRIPT), "check", "prod"], cwd=ROOT, env={**env, "CACHES": out},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "prod: cache asia: the certificate expires" in proc.stdout and "in 200 days" in proc.stdout
    assert "prod: cache europe: the certificate expires" in proc.stdout and "in 90 days" in proc.stdout


def test_check_names_the_cache_whose_certificate_ends(env: dict[str, str], two_sites: Run) -> None:
    out = caches_output(two_sites, asia=in_days(200), europe=in_days(10))
    code, err, calls = run("check", "prod", env, CACHES=out, NOT_AFTER=in_days(300), CONFIG=TWO_NAMES)
    assert code == 1
    assert "prod: cache europe: the certificate expires in 10 days" in err
    how = "make up STACK=prod renews it (tls.renewBeforeHours), or make rotate STACK=prod CACHE=europe"
    assert f"within 30 days: {how}" in err
    assert "cache asia" not in err
    assert "1 of 2 caches fail the certificate check (30 days): europe" in err
    # The caches output, not the top-level output of a stack's one cache.
    assert "stack output certificateNotAfter --stack prod" not in calls


def test_check_of_several_caches_ending(env: dict[str, str], two_sites: Run) -> None:
    out = caches_output(two_sites, asia=in_days(-3), europe=in_days(5))
    code, err, _ = run("check", "prod", env, CACHES=out, CHECK_DAYS="7")
    assert code == 1
    assert "cache asia: the certificate EXPIRED" in err
    assert "cache europe: the certificate expires in 5 days" in err
    assert "2 of 2 caches fail the certificate check (7 days): asia, europe" in err


def test_check_of_a_cache_with_its_own_provided_certificate(env: dict[str, str], two_sites: Run) -> None:
    out = caches_output(two_sites, asia=in_days(200), europe=in_days(3))
    config = f"{TWO_NAMES}\ntls.mode=provided\ncaches[1].tls.certPem=-----BEGIN CERTIFICATE-----"
    code, err, _ = run("check", "prod", env, CACHES=out, CONFIG=config)
    assert code == 1
    assert "cache europe: the certificate expires in 3 days" in err
    assert "set the renewed caches[1].tls.certPem (and caches[1].tls.keyPem), then make up STACK=prod" in err


def test_check_of_a_cache_inheriting_the_stacks_provided_certificate(
    env: dict[str, str], two_sites: Run
) -> None:
    out = caches_output(two_sites, asia=in_days(3), europe=in_days(200))
    code, err, _ = run("check", "prod", env, CACHES=out, CONFIG=f"{TWO_NAMES}\ntls.mode=provided")
    assert code == 1 and "set the renewed tls.certPem (and tls.keyPem), then make up STACK=prod" in err


def test_check_of_a_cache_without_its_end_in_the_output(env: dict[str, str], two_sites: Run) -> None:
    caches = json.loads(caches_output(two_sites, asia=in_days(200)))
    caches["europe"]["certificateNotAfter"] = None
    code, err, _ = run("check", "prod", env, CACHES=json.dumps(caches))
    assert code == 1 and "cache europe: the caches output has no certificateNotAfter for it" in err


def test_check_of_a_stacks_one_cache_in_the_caches_output(env: dict[str, str]) -> None:
    """A stack without caches exports its one cache in the map too, keyed by its MSR name."""
    out = json.dumps({"prod": {"cacheUrl": "https://c.example.com", "certificateNotAfter": in_days(12)}})
    code, err, _ = run("check", "prod", env, CACHES=out, TLS_MODE="provided")
    assert code == 1
    assert "cache prod: the certificate expires in 12 days" in err
    assert "set the renewed tls.certPem (and tls.keyPem), then make up STACK=prod" in err


def test_drift_checks_every_cache_and_still_refreshes(env: dict[str, str], two_sites: Run) -> None:
    out = caches_output(two_sites, asia=in_days(200), europe=in_days(1))
    code, err, calls = run("drift", "prod", env, CACHES=out)
    assert code == 1 and "cache europe: the certificate expires in 1 days" in err
    assert calls[-1] == "refresh --stack prod --preview-only --expect-no-changes"


def test_check_refuses_a_check_days_that_is_no_number(env: dict[str, str]) -> None:
    code, err, _ = run("check", "prod", env, NOT_AFTER=in_days(100), CHECK_DAYS="thirty")
    assert code == 1 and "CHECK_DAYS=thirty is not a whole number of days" in err


@pytest.mark.skipif(not (ROOT / ".venv/bin/python").exists(), reason="needs the project's .venv (make venv)")
@pytest.mark.parametrize(
    ("config", "extra", "name"),
    [(TWO_NAMES, {"CACHE": "europe"}, "europe"), ("caches[0].name=asia", {}, "asia")],
    ids=["named", "the-only-one"],
)
def test_rotate_of_one_cache_of_caches_replaces_its_key(
    env: dict[str, str], two_sites: Run, config: str, extra: dict[str, str], name: str
) -> None:
    code, err, calls = run("rotate", "prod", env, CONFIG=config, **extra)
    assert code == 0, err
    urn = two_sites.engine_urn(f"msr-cache-{name}-tls-key")
    assert calls[-1] == f"up --stack prod --replace {urn} --policy-pack policy"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "stack prod has several caches (asia, europe): say which, make rotate STACK=prod CACHE=<name>"),
        ({"CACHE": "emea"}, "stack prod has no cache emea; its caches are: asia, europe"),
        (
            {"CACHE": "asia", "CONFIG": f"{TWO_NAMES}\ncaches[0].tls.mode=provided"},
            "caches[0].tls.mode is provided: rotate by setting the new caches[0].tls.certPem and "
            "caches[0].tls.keyPem",
        ),
    ],
)
def test_rotate_with_several_caches_needs_one_of_them(
    env: dict[str, str], extra: dict[str, str], message: str
) -> None:
    code, err, calls = run("rotate", "prod", env, **{"CONFIG": TWO_NAMES, **extra})
    assert code == 1 and message in err
    assert not any(c.startswith("up") for c in calls)


def test_rotate_of_a_stack_without_caches_takes_no_cache_name(env: dict[str, str]) -> None:
    code, err, calls = run("rotate", "staging", env, CACHE="asia")
    assert code == 1 and "stack staging has no caches list" in err
    assert not any(c.startswith("up") for c in calls)


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
    stack = "nope" if not extra else "staging"
    code, err, _ = run("drift", stack, env, **extra)
    assert code == 1 and message in err


def remove_pulumi(env: dict[str, str]) -> None:
    os.remove(Path(env["PATH"].split(":")[0]) / "pulumi")


def pulumi_tarball(tmp_path: Path) -> tuple[Path, str]:
    """A release-shaped tarball (pulumi/pulumi, ...) holding the stand-in pulumi."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("pulumi/pulumi", FAKE_PULUMI), ("pulumi/pulumi-language-python", "#!/bin/sh\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "served.tar.gz"
    path.write_bytes(buf.getvalue())
    return path, hashlib.sha256(buf.getvalue()).hexdigest()


def pinned() -> tuple[str, str]:
    text = (ROOT / "scripts/pulumi-cli.env").read_text()
    version = re.search(r"^PULUMI_CLI_VERSION=(\S+)$", text, re.M)
    sha = re.search(r"^PULUMI_CLI_SHA256_LINUX_X64=([0-9a-f]{64})$", text, re.M)
    assert version and sha
    return version.group(1), sha.group(1)


def test_no_cli_and_no_internet_names_the_cli_and_the_download(env: dict[str, str]) -> None:
    remove_pulumi(env)
    code, err, calls = run("up", "dev", env)
    version, _ = pinned()
    assert code == 1
    assert "the Pulumi CLI is not installed (https://www.pulumi.com/docs/install/)" in err
    assert f"could not download https://get.pulumi.com/releases/sdk/pulumi-v{version}-linux-x64.tar.gz" in err
    assert not (Path(env["MSRC_PULUMI_DIR"]) / "bin").exists()
    assert not any(c.startswith("up") for c in calls)


def test_no_cli_installs_the_pinned_version_into_the_project(env: dict[str, str], tmp_path: Path) -> None:
    remove_pulumi(env)
    tarball, sha = pulumi_tarball(tmp_path)
    code, err, calls = run(
        "up", "dev", env, TARBALL=str(tarball), MSRC_PULUMI_VERSION="3.999.0", MSRC_PULUMI_SHA256=sha
    )
    assert code == 0, err
    installed = Path(env["MSRC_PULUMI_DIR"]) / "bin/pulumi"
    assert installed.stat().st_mode & stat.S_IXUSR
    assert Path(env["RECORD"] + ".curl").read_text().split() == [
        "https://get.pulumi.com/releases/sdk/pulumi-v3.999.0-linux-x64.tar.gz"
    ]
    assert calls[-1] == "up --stack dev --policy-pack policy"


def test_a_download_with_another_checksum_installs_nothing(env: dict[str, str], tmp_path: Path) -> None:
    remove_pulumi(env)
    tarball, sha = pulumi_tarball(tmp_path)
    code, err, calls = run("up", "dev", env, TARBALL=str(tarball))
    assert code == 1
    assert f"has sha256 {sha}, not the pinned {pinned()[1]}" in err
    assert "the Pulumi CLI is not installed" in err
    assert not (Path(env["MSRC_PULUMI_DIR"]) / "bin").exists()
    assert calls == []


def test_dev_without_a_backend_keeps_its_state_in_the_project(env: dict[str, str]) -> None:
    code, err, _ = run_args(["prepare", "up", "dev"], env, NO_LOGIN="1")
    assert code == 0, err
    state = Path(env["MSRC_PULUMI_DIR"]) / "state"
    assert "dev: keeping the stack's state in" in err
    assert "`pulumi login` is needed for staging and prod" in err
    code, err, calls = run("up", "dev", env, NO_LOGIN="1")
    assert code == 0, err
    passphrase = Path(env["MSRC_PULUMI_DIR"]) / "dev-passphrase"
    assert pulumi_env(env, "up") == f"up backend=file://{state} passphrase={passphrase} docker="
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    assert calls[-1] == "up --stack dev --policy-pack policy"


def test_dev_state_stays_in_the_project_after_a_login(env: dict[str, str]) -> None:
    state = Path(env["MSRC_PULUMI_DIR"]) / "state"
    (state / ".pulumi").mkdir(parents=True)
    code, err, _ = run("preview", "dev", env)
    assert code == 0, err
    assert pulumi_env(env, "preview").startswith(f"preview backend=file://{state} ")


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_staging_and_prod_need_an_explicit_login(env: dict[str, str], stack: str) -> None:
    code, err, calls = run("up", stack, env, NO_LOGIN="1")
    assert code == 1 and "not logged in to a state backend: run `pulumi login`" in err
    assert not (Path(env["MSRC_PULUMI_DIR"]) / "state").exists()
    assert not any(c.startswith("up") for c in calls)


def test_dev_starts_the_local_swarm_when_no_manager_answers(env: dict[str, str]) -> None:
    manager = "unix:///tmp/msrc-swarm/msrc-manager/docker.sock"
    code, err, calls = run_args(["prepare", "up", "dev"], env, MANAGER=manager)
    assert code == 0, err
    assert "swarm up" in calls
    assert "dev: using the local swarm" in err and "10.77.0.13:5999" in err
    code, err, calls = run("up", "dev", env, MANAGER=manager)
    assert code == 0, err
    assert calls.count("swarm up") == 1
    assert pulumi_env(env, "up").endswith(f"docker={manager}")


def test_dev_uses_a_local_swarm_that_is_up(env: dict[str, str]) -> None:
    Path(env["SWARM_UP"]).touch()
    manager = "unix:///tmp/msrc-swarm/msrc-manager/docker.sock"
    code, err, calls = run("up", "dev", env, MANAGER=manager)
    assert code == 0, err
    assert "swarm up" not in calls
    assert pulumi_env(env, "up").endswith(f"docker={manager}")


def test_dev_where_the_local_swarm_cannot_start(env: dict[str, str]) -> None:
    code, err, calls = run_args(
        ["prepare", "up", "dev"], env, MANAGER="unix:///nowhere.sock", SWARM_CANNOT_START="1"
    )
    assert code == 1
    assert "cannot reach a Swarm manager on the local socket, and the local swarm cannot start here" in err
    assert not any(c.startswith("up") for c in calls)


@pytest.mark.parametrize("extra", [{}, {"DOCKER_HOST": "tcp://mke.example.com:443"}])
def test_no_local_swarm_for_staging_or_an_explicit_host(env: dict[str, str], extra: dict[str, str]) -> None:
    stack = "staging" if not extra else "dev"
    code, err, calls = run("up", stack, env, MANAGER="unix:///nowhere.sock", **extra)
    assert code == 1 and "cannot reach a Swarm manager at" in err
    assert not any(c.startswith("swarm") for c in calls)


def test_prepare_runs_no_pulumi_command_that_changes_anything(env: dict[str, str]) -> None:
    code, err, calls = run_args(["prepare", "up", "dev"], env, NO_STACK="1")
    assert code == 0, err
    assert {c.split()[0] for c in calls} == {"whoami", "config"}
