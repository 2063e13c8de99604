"""rehearsal/images/content-cache/start.sh, the entrypoint of the dtr-content-cache STAND-IN.

The script runs on the host under `busybox sh`, which (in Debian's busybox-static) runs
its own applets for awk, sed and grep as well, so these tests exercise the same tools
as the image does. REGISTRY_BIN is a fake that reports how it was started, except in
the last tests, which start Debian's real docker-registry and talk TLS to it.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from components.registry_config import CACHE_CERT, CACHE_KEY, MSR_CA, SECRETS_DIR, CacheConfig, render_config
from rehearsal import pki

ROOT = Path(__file__).resolve().parents[2]
START_SH = ROOT / "rehearsal" / "images" / "content-cache" / "start.sh"
BUSYBOX = shutil.which("busybox")
REAL_REGISTRY = Path("/usr/bin/docker-registry")
SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")
MW = "middleware.registry.0"

pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed (Debian: busybox-static)")

FAKE_REGISTRY = """#!/bin/sh
for arg in "$@"; do printf 'argv=%s\\n' "$arg"; done
printf 'SSL_CERT_FILE=%s\\n' "${SSL_CERT_FILE-<unset>}"
"""

# Real certificates, so the bundle test can parse what start.sh concatenated.
MSR_ROOT = pki.make_ca("Stand-in Test MSR CA")
OTHER_ROOT = pki.make_ca("Stand-in Test Other CA")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    workdir: Path

    @property
    def argv(self) -> list[str]:
        """What the fake registry was started with; empty when it never ran."""
        return [line[len("argv=") :] for line in self.stdout.splitlines() if line.startswith("argv=")]

    @property
    def ssl_cert_file(self) -> str | None:
        for line in self.stdout.splitlines():
            if line.startswith("SSL_CERT_FILE="):
                return line[len("SSL_CERT_FILE=") :]
        return None

    def derived(self) -> dict[str, Any]:
        return yaml.safe_load((self.workdir / "registry.yml").read_text())


class IndentedDumper(yaml.SafeDumper):
    """Writes sequence items two columns deeper than their key (the other common style)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """Stand-ins for the Docker secrets the service mounts under /run/secrets."""
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"], issuer=MSR_ROOT)
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / CACHE_CERT).write_text(leaf.cert_pem)
    (directory / CACHE_KEY).write_text(leaf.key_pem)
    (directory / MSR_CA).write_text(MSR_ROOT.cert_pem)
    return directory


def config_text(secrets: Path, *, trust_msr_ca: bool = True, upstreams: list[str] | None = None) -> str:
    """The project's own config.yml, with /run/secrets moved to the test's directory."""
    text = render_config(
        CacheConfig(
            cache_url="https://cache.example.com:443",
            upstreams=upstreams if upstreams is not None else ["https://msr.example.com:443"],
            http_secret="s3cr3t-for-tests",
            trust_msr_ca=trust_msr_ca,
        )
    )
    assert SECRETS_DIR in text
    return text.replace(f"{SECRETS_DIR}/", f"{secrets}/")


def edited(text: str, edit: Any) -> str:
    """config.yml after `edit(document)`, re-rendered the way render_config renders."""
    document = yaml.safe_load(text)
    edit(document)
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def options(document: dict[str, Any]) -> dict[str, Any]:
    return document["middleware"]["registry"][0]["options"]


def run_start(
    tmp_path: Path, text: str | None, registry_bin: Path | None = None, args: list[str] | None = None
) -> Run:
    workdir = tmp_path / "work"
    fake = tmp_path / "fake-registry"
    fake.write_text(FAKE_REGISTRY)
    fake.chmod(0o755)
    config = tmp_path / "config.yml"
    if text is not None:
        config.write_text(text)
    assert BUSYBOX is not None
    # A clean environment: an SSL_CERT_FILE or REGISTRY_* from the caller must not leak in.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "STAND_IN_WORKDIR": str(workdir),
        "REGISTRY_BIN": str(registry_bin or fake),
    }
    proc = subprocess.run(
        [BUSYBOX, "sh", str(START_SH), *(args if args is not None else [str(config)])],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, workdir)


def assert_fails(run: Run, *needles: str) -> None:
    assert run.returncode == 1, run.stderr
    assert run.argv == [], "the registry must not be started"
    for needle in needles:
        assert needle in run.stderr


# ---------------------------------------------------------------------------
# The derived Distribution config
# ---------------------------------------------------------------------------


def _compact(text: str) -> str:
    return text


def _indented(text: str) -> str:
    out = yaml.dump(yaml.safe_load(text), Dumper=IndentedDumper, sort_keys=False, default_flow_style=False)
    assert "\n    - name: downstream\n" in out, out
    return out


def _indent4(text: str) -> str:
    return yaml.safe_dump(yaml.safe_load(text), sort_keys=False, default_flow_style=False, indent=4)


@pytest.mark.parametrize(
    "style", [_compact, _indented, _indent4], ids=["items-at-key", "items-+2", "indent-4"]
)
def test_derived_config_proxies_the_first_upstream_and_keeps_the_rest(
    tmp_path: Path, secrets: Path, style: Any
) -> None:
    text = style(config_text(secrets, upstreams=["https://msr.example.com:443", "https://msr2.example.com"]))
    run = run_start(tmp_path, text)

    assert run.returncode == 0, run.stderr
    assert run.argv == ["serve", str(run.workdir / "registry.yml")]
    derived, original = run.derived(), yaml.safe_load(text)
    assert derived["proxy"] == {"remoteurl": "https://msr.example.com:443"}
    assert "middleware" not in derived
    assert set(derived) == {"version", "log", "storage", "http", "proxy"}
    for key in ("version", "log", "storage", "http"):
        assert derived[key] == original[key], key
    assert "upstream=https://msr.example.com:443 (1 more ignored" in run.stderr


def test_banner_says_it_is_a_stand_in(tmp_path: Path, secrets: Path) -> None:
    run = run_start(tmp_path, config_text(secrets))

    banners = [line for line in run.stderr.splitlines() if "STAND-IN" in line]
    assert len(banners) == 1, run.stderr
    banner = banners[0]
    assert "mirantis/dtr-content-cache" in banner
    assert "NOT the real image" in banner
    assert "upstream=https://msr.example.com:443;" in banner
    assert f"cas={secrets / MSR_CA};" in banner
    assert "blobttl=24h (accepted, NOT enforced" in banner


def test_hand_written_config_with_comments_quotes_and_no_cas(tmp_path: Path, secrets: Path) -> None:
    text = f"""\
# Written by hand, as an operator might.
version: 0.1
log:
  level: debug   # noisy on purpose

storage:
  filesystem:
    rootdirectory: "/var/lib/registry"
http:
  addr: ':5443'
  host: https://cache.example.com:5443
  tls:
    certificate: '{secrets / CACHE_CERT}'
    key: {secrets / CACHE_KEY}
middleware:
  registry:
    - name: "downstream"
      options:
        upstreams:
          - 'https://msr.example.com'   # the only one
"""
    run = run_start(tmp_path, text)

    assert run.returncode == 0, run.stderr
    derived = run.derived()
    assert derived["proxy"] == {"remoteurl": "https://msr.example.com"}
    assert derived["http"] == yaml.safe_load(text)["http"]
    assert derived["log"] == {"level": "debug"}
    assert "blobttl=unset" in run.stderr


def test_upstream_with_a_quote_stays_valid_yaml(tmp_path: Path, secrets: Path) -> None:
    url = "https://msr.example.com/it's"
    run = run_start(tmp_path, edited(config_text(secrets), lambda d: options(d).update(upstreams=[url])))

    assert run.returncode == 0, run.stderr
    assert run.derived()["proxy"] == {"remoteurl": url}


# ---------------------------------------------------------------------------
# MSR's CA
# ---------------------------------------------------------------------------


def test_cas_are_bundled_with_the_system_cas_and_exported(tmp_path: Path, secrets: Path) -> None:
    # No final newline: the bundle must still keep the two PEM blocks apart.
    other = secrets / "other-ca.pem"
    other.write_text(OTHER_ROOT.cert_pem.rstrip("\n"))
    (secrets / MSR_CA).write_text(MSR_ROOT.cert_pem.rstrip("\n"))
    text = edited(config_text(secrets), lambda d: options(d)["cas"].append(str(other)))
    run = run_start(tmp_path, text)

    assert run.returncode == 0, run.stderr
    bundle_path = run.workdir / "cas.pem"
    assert run.ssl_cert_file == str(bundle_path)
    bundle = bundle_path.read_text()
    assert bundle.startswith(MSR_ROOT.cert_pem.rstrip("\n"))
    end = "-----END CERTIFICATE-----"
    assert end + "-----BEGIN" not in bundle
    # Only our two are parsed: the system bundle holds certificates newer cryptography warns about.
    ours = [x509.load_pem_x509_certificate((block + end).encode()) for block in bundle.split(end)[:2]]
    assert ours == [MSR_ROOT.cert, OTHER_ROOT.cert]
    if SYSTEM_CAS.is_file():
        assert bundle.endswith(SYSTEM_CAS.read_text())
        assert bundle.count(end) > 2
    assert f"cas={secrets / MSR_CA},{other};" in run.stderr


def test_without_cas_the_trust_store_is_left_alone(tmp_path: Path, secrets: Path) -> None:
    text = config_text(secrets, trust_msr_ca=False)
    assert "cas:" not in text
    run = run_start(tmp_path, text)

    assert run.returncode == 0, run.stderr
    assert run.ssl_cert_file == "<unset>"
    assert not (run.workdir / "cas.pem").exists()
    assert "cas=none" in run.stderr


# ---------------------------------------------------------------------------
# Failing loudly, as the real image does
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "key"),
    [
        (CACHE_CERT, "http.tls.certificate"),
        (CACHE_KEY, "http.tls.key"),
        (MSR_CA, f"{MW}.options.cas.0"),
    ],
)
def test_a_missing_file_fails_naming_key_and_path(
    tmp_path: Path, secrets: Path, filename: str, key: str
) -> None:
    (secrets / filename).unlink()
    run = run_start(tmp_path, config_text(secrets))

    assert_fails(run, f"{key}: {secrets / filename} does not exist")
    assert not (run.workdir / "registry.yml").exists()


def test_a_directory_where_a_file_is_named_fails(tmp_path: Path, secrets: Path) -> None:
    (secrets / MSR_CA).unlink()
    (secrets / MSR_CA).mkdir()
    run = run_start(tmp_path, config_text(secrets))

    assert_fails(run, f"{MW}.options.cas.0: {secrets / MSR_CA} is not a readable file")


@pytest.mark.parametrize(
    "edit",
    [
        lambda o: o.pop("upstreams"),
        lambda o: o.update(upstreams=[]),
        lambda o: o.update(upstreams=None),
    ],
    ids=["absent", "empty-list", "null"],
)
def test_missing_upstreams_fail(tmp_path: Path, secrets: Path, edit: Any) -> None:
    run = run_start(tmp_path, edited(config_text(secrets), lambda d: edit(options(d))))

    assert_fails(run, f"{MW}.options.upstreams is missing or empty")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda o: o.update(upstreams="https://msr.example.com"), "options.upstreams must be a list"),
        (lambda o: o.update(upstreams=["msr.example.com"]), "expected an http(s):// URL"),
        (lambda o: o.update(cas="/run/secrets/dtr.cert.pem"), "options.cas must be a list"),
        (lambda o: o.update(ttl="1h"), f"{MW}.options.ttl is not a known downstream option"),
    ],
    ids=["upstreams-scalar", "upstream-not-url", "cas-scalar", "unknown-option"],
)
def test_bad_options_fail(tmp_path: Path, secrets: Path, edit: Any, message: str) -> None:
    run = run_start(tmp_path, edited(config_text(secrets), lambda d: edit(options(d))))

    assert_fails(run, message)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("middleware"), "has no 'downstream' entry"),
        (
            lambda d: d["middleware"]["registry"].append({"name": "redirect", "options": {}}),
            "middleware.registry.1.name is 'redirect'",
        ),
        (lambda d: d["middleware"]["registry"][0].update(name="upstream"), "only the 'downstream'"),
        (
            lambda d: d["middleware"].update(storage=[{"name": "cloudfront"}]),
            "middleware.storage is not supported",
        ),
        (lambda d: d.update(proxy={"remoteurl": "https://elsewhere"}), "already has a top-level proxy"),
    ],
    ids=["no-middleware", "second-registry-middleware", "other-name", "storage-middleware", "own-proxy"],
)
def test_other_middleware_setups_fail(tmp_path: Path, secrets: Path, edit: Any, message: str) -> None:
    run = run_start(tmp_path, edited(config_text(secrets), edit))

    assert_fails(run, message)


@pytest.mark.parametrize(
    "text",
    [
        "http:\n  addr: [':443']\n",
        "log:\n  level: |\n    info\n",
        "a: 1\na: 2\n",
        "http:\n  addr: ':443'\n    tls: {}\n",
    ],
    ids=["flow-sequence", "block-scalar", "duplicate-key", "bad-indent"],
)
def test_yaml_it_cannot_read_is_rejected(tmp_path: Path, text: str) -> None:
    run = run_start(tmp_path, text)

    assert_fails(run, "cannot parse")


def test_usage(tmp_path: Path) -> None:
    assert_fails(run_start(tmp_path, None, args=[]), "usage: start.sh /config.yml")
    # What `docker run IMAGE /start.sh /config.yml` passes, the entrypoint being /start.sh.
    assert_fails(
        run_start(tmp_path, None, args=["/start.sh", "/config.yml"]), "entrypoint is already /start.sh"
    )
    assert_fails(
        run_start(tmp_path, None, args=[str(tmp_path / "nope.yml")]),
        f"{tmp_path / 'nope.yml'} does not exist",
    )


# ---------------------------------------------------------------------------
# The real docker-registry behind start.sh
# ---------------------------------------------------------------------------

needs_registry = pytest.mark.skipif(
    not os.access(REAL_REGISTRY, os.X_OK), reason=f"{REAL_REGISTRY} is absent (Debian: docker-registry)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; all are stopped afterwards, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def get_v2(port: int, cafile: Path) -> int:
    context = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/", context=context, timeout=2) as response:
        return int(response.status)


def wait_for_v2(
    proc: subprocess.Popen[bytes], port: int, cafile: Path, log: Path, within: float = 10
) -> None:
    deadline = time.monotonic() + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before answering:\n{log.read_text()}")
        try:
            assert get_v2(port, cafile) == 200
            return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
            time.sleep(0.1)
    pytest.fail(f"no TLS answer on /v2/ within {within} s ({last}):\n{log.read_text()}")


def start(argv: list[str], env: dict[str, str], log: Path, processes: list[subprocess.Popen[bytes]]) -> Any:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    processes.append(proc)
    return proc


@pytest.fixture
def msr(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> int:
    """A real registry with a certificate from MSR_ROOT, standing in for MSR; its port."""
    port = free_port()
    leaf = pki.make_leaf("127.0.0.1", ips=["127.0.0.1"], issuer=MSR_ROOT)
    directory = tmp_path / "msr"
    directory.mkdir()
    (directory / "cert.pem").write_text(leaf.cert_pem)
    (directory / "key.pem").write_text(leaf.key_pem)
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(directory / "data")}},
        "http": {
            "addr": f"127.0.0.1:{port}",
            "tls": {"certificate": str(directory / "cert.pem"), "key": str(directory / "key.pem")},
        },
    }
    (directory / "config.yml").write_text(yaml.safe_dump(config))
    (directory / "ca.pem").write_text(MSR_ROOT.cert_pem)
    log = directory / "log"
    proc = start(
        [str(REAL_REGISTRY), "serve", str(directory / "config.yml")],
        {"PATH": "/usr/bin:/bin"},
        log,
        processes,
    )
    wait_for_v2(proc, port, directory / "ca.pem", log)
    return port


def real_cache_config(tmp_path: Path, secrets: Path, msr_port: int, trust_msr_ca: bool) -> tuple[str, int]:
    port = free_port()
    # The cache's own certificate, for the address the test connects to.
    leaf = pki.make_leaf("127.0.0.1", ips=["127.0.0.1"], issuer=MSR_ROOT)
    (secrets / CACHE_CERT).write_text(leaf.cert_pem)
    (secrets / CACHE_KEY).write_text(leaf.key_pem)

    def edit(document: dict[str, Any]) -> None:
        document["http"]["addr"] = f"127.0.0.1:{port}"
        document["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "cache-data")

    text = config_text(secrets, trust_msr_ca=trust_msr_ca, upstreams=[f"https://127.0.0.1:{msr_port}"])
    return edited(text, edit), port


def start_real_cache(
    tmp_path: Path, secrets: Path, msr: int, processes: list[subprocess.Popen[bytes]], trust_msr_ca: bool
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """start.sh running the real registry binary as the cache: (process, port, log file)."""
    text, port = real_cache_config(tmp_path, secrets, msr, trust_msr_ca=trust_msr_ca)
    config = tmp_path / "config.yml"
    config.write_text(text)
    assert BUSYBOX is not None
    env = {
        "PATH": "/usr/bin:/bin",
        "STAND_IN_WORKDIR": str(tmp_path / "work"),
        "REGISTRY_BIN": str(REAL_REGISTRY),
    }
    log = tmp_path / "cache.log"
    return start([BUSYBOX, "sh", str(START_SH), str(config)], env, log, processes), port, log


@needs_registry
def test_real_registry_serves_tls_as_a_cache_of_msr(
    tmp_path: Path, secrets: Path, msr: int, processes: list[subprocess.Popen[bytes]]
) -> None:
    proc, port, log = start_real_cache(tmp_path, secrets, msr, processes, trust_msr_ca=True)

    wait_for_v2(proc, port, secrets / MSR_CA, log)
    assert "STAND-IN for mirantis/dtr-content-cache" in log.read_text()


@needs_registry
def test_real_registry_without_msr_ca_refuses_to_start(
    tmp_path: Path, secrets: Path, msr: int, processes: list[subprocess.Popen[bytes]]
) -> None:
    # Distribution 2.8.2 calls the upstream's /v2/ while starting, so an untrusted MSR
    # certificate stops the cache at once: that is what makes `cas` matter.
    proc, _, log = start_real_cache(tmp_path, secrets, msr, processes, trust_msr_ca=False)

    assert proc.wait(timeout=10) != 0
    assert "x509: certificate signed by unknown authority" in log.read_text()
