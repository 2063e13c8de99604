"""The "MSR" stand-in: Docker Distribution behind an MSR front, TLS from a private test CA.

Two parts on the swarm's msr node (msrc-msr), both started and stopped here:

- the front (rehearsal/msr_front.py), a process in that node's network namespace,
  on `https://<msr node address>:<port>` -- msrHost/msrPort, where the cache node
  and the tests on this machine reach it as a site reaches MSR. It serves MSR's
  content-cache API, authenticates users, redirects blob downloads of users with a
  content cache, and proxies everything else to the registry;
- the registry, a plain container of that node's daemon publishing plain HTTP on
  127.0.0.1:<port + 1> of that namespace, so only the front reaches it.

The front's certificate names the node's address (and this machine's bridge
address, for a simulated WAN link), and its CA is what the cache must trust
(`msrCaCert` -> dtr.cert.pem) to reach it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rehearsal import pki, processes
from rehearsal.localswarm import LocalSwarm
from tools.redact import REDACT
from tools.smoke import Image, Registry

ROOT = Path(__file__).resolve().parents[1]
ROLE_LABEL = "com.mirantis.msr-cache.rehearsal"
CONTAINER_PORT = 5000
BUSYBOX = Path("/bin/busybox")
NETNS_DIR = Path("/run/netns")
INSTANCE_PREFIX = "msrc-upstream-"
FRONT_MODULE = "rehearsal.msr_front"
ADMIN, TESTER = "admin", "tester"
READY_S = 20

# The workdir's files.
FRONT_CONFIG, FRONT_LOG, FRONT_PID, ACCESS_LOG = "front.json", "front.log", "front.pid", "front-access.jsonl"

_BLOB_GET = re.compile(r'"GET /v2/(?P<repo>[^ ]+)/blobs/(?P<digest>sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200')
_BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


class StandInError(RuntimeError):
    """The stand-in answered an API call with an unexpected status."""


@dataclass
class Upstream:
    container_id: str
    host: str
    """The msr node's address: msrHost, for the cache and for the tests."""
    port: int
    """msrPort: the front, published on that address."""
    ca_pem: str
    ca_file: Path
    client: Any = field(repr=False)
    """The msr node's Docker daemon, which runs the registry's container."""
    workdir: Path | None = None
    """The front's config, pid file, log and access log."""
    admin_user: str = ADMIN
    admin_token: str = field(default="", repr=False)
    """The admin's password, made at start (never printed)."""
    test_user: str = TESTER
    test_password: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def backend_port(self) -> int:
        """The registry's port, on 127.0.0.1 of the msr node's namespace (the front's only)."""
        return self.port + 1

    def credentials(self, user: str | None) -> tuple[str, str] | None:
        if user is None:
            return None
        passwords = {self.admin_user: self.admin_token, self.test_user: self.test_password}
        if user not in passwords:
            raise KeyError(f"the MSR stand-in has no user {user!r} (users: {', '.join(passwords)})")
        return user, passwords[user]

    def registry(self, as_user: str | None = ADMIN) -> Registry:
        """A verified client, from this machine over the swarm's bridge, as `as_user`:
        the admin by default (it may push and pull anything), None for no credentials
        (as the content cache calls MSR)."""
        auth = self.credentials(as_user) if self.admin_token else None
        return Registry((self.host, self.port), self.host, str(self.ca_file), auth=auth)

    def container(self) -> Any:
        return self.client.containers.get(self.container_id)

    # -- what MSR served -------------------------------------------------------------

    def front_log(self) -> list[dict[str, Any]]:
        """The front's access log: one dict per request, in order (time, client,
        method, path, user or None, status, bytes of body sent, location of a redirect)."""
        if self.workdir is None:
            return []
        path = self.workdir / ACCESS_LOG
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        # The last line may be half written while the front is busy.
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def _blob_bodies(self) -> list[tuple[str, int]]:
        served = []
        for r in self.front_log():
            m = _BLOB_PATH.match(r["path"])
            if m and r["method"] == "GET" and r["status"] in (200, 206):
                served.append((m["digest"], int(r["bytes"])))
        return served

    def blob_gets(self) -> list[str]:
        """Digests of the blobs MSR served so far, in order (blob GETs the front
        answered with a body; a redirect to a cache is not one)."""
        return [digest for digest, _ in self._blob_bodies()]

    def blob_bytes_served(self, digests: Iterable[str] | None = None) -> int:
        """Bytes of blob bodies MSR sent so far (of `digests` only, when given)."""
        wanted = None if digests is None else set(digests)
        return sum(n for digest, n in self._blob_bodies() if wanted is None or digest in wanted)

    def wait_quiet(self, settle: float = 1.5, timeout: float = 30) -> list[str]:
        """The blobs MSR served, once that stops changing: a cache has finished
        storing what it fetched (the stand-in of the cache, Distribution's
        proxy, fetches a second copy to store while it streams the first)."""
        deadline = time.monotonic() + timeout
        last, since = self.blob_gets(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.blob_gets()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= settle:
                return now
        raise StandInError(f"MSR kept serving blobs for {timeout:.0f} s")

    def registry_blob_gets(self) -> list[str]:
        """The same from the registry's own access log, behind the front."""
        logs = self.container().logs(stdout=True, stderr=True).decode(errors="replace")
        return [m["digest"] for m in _BLOB_GET.finditer(logs)]

    # -- MSR's API and the stand-in's control --------------------------------------

    def api(self, method: str, path: str, doc: Any = None, as_user: str | None = ADMIN) -> tuple[int, Any]:
        """An API call as `as_user`: the status and the JSON answer (None when empty)."""
        body = None if doc is None else json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, _, data = self.registry(as_user).request(method, path, body, headers)
        return status, json.loads(data) if data.strip() else None

    def _expect(self, expected: int, method: str, path: str, doc: Any = None) -> Any:
        status, answer = self.api(method, path, doc)
        if status != expected:
            raise StandInError(f"{method} {path} on the MSR stand-in: HTTP {status} {answer}")
        return answer

    def registrations(self) -> list[dict[str, str]]:
        """The registered content caches: [{id, name, host}]."""
        return list(self._expect(200, "GET", "/api/v0/content_caches"))

    def register_cache(self, name: str, host: str) -> dict[str, str]:
        """POST /api/v0/content_caches, as the docs' "Register the cache" step: {id, name, host}."""
        return dict(self._expect(201, "POST", "/api/v0/content_caches", {"name": name, "host": host}))

    def unregister_cache(self, cache_id: str) -> None:
        self._expect(204, "DELETE", f"/api/v0/content_caches/{cache_id}")

    def set_user_cache(self, user: str, cache_id: str | None) -> None:
        """A user's content cache setting (the stand-in's control: MSR's field is not public)."""
        self._expect(200, "PUT", f"/_stand_in/users/{user}/content_cache", {"id": cache_id})

    def front_pid(self) -> int | None:
        if self.workdir is None:
            return None
        return processes.read_pid(self.workdir / FRONT_PID)


def start(swarm: LocalSwarm, workdir: Path, port: int, *, anonymous_manifests: bool = True) -> Upstream:
    """Start the stand-in on the msr node (replacing one left from an earlier run on this port).

    `anonymous_manifests` (on by default): the cache stand-in, a Distribution
    pull-through proxy, fetches manifests from its upstream without credentials,
    which the real content cache never does (clients get manifests from MSR); off,
    manifests need a user, as on MSR.
    """
    stop(swarm, port)
    msr = swarm.msr
    netns = NETNS_DIR / msr.hostname
    if not netns.exists():
        raise RuntimeError(f"no network namespace {netns}: the local swarm is not up (scripts/swarm.sh up)")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    for stale in (ACCESS_LOG, FRONT_LOG, FRONT_PID):
        (workdir / stale).unlink(missing_ok=True)
    client = msr.client()
    ca = pki.make_ca("msr-cache test MSR CA")
    # This machine's bridge address too: a simulated WAN link there forwards to it
    # (bench/wan.py), and the cache must still verify MSR through it.
    leaf = pki.make_leaf(
        "msr-upstream.test", dns=["msr-upstream.test"], ips=[msr.address, swarm.host_address], issuer=ca
    )
    (workdir / "ca.pem").write_text(ca.cert_pem)
    (workdir / "cert.pem").write_text(leaf.cert_pem)
    _write_private(workdir / "key.pem", leaf.key_pem)

    # Only the registry's own config is mounted into its container.
    registry_dir = workdir / "registry"
    registry_dir.mkdir(exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": True}},
        "http": {"addr": f"0.0.0.0:{CONTAINER_PORT}", "secret": secrets.token_hex(16)},
    }
    (registry_dir / "config.yml").write_text(yaml.safe_dump(config))
    name = f"{INSTANCE_PREFIX}{port}"
    # The msr node's daemon shares this machine's file system: the bind mount is
    # a directory here.
    container = client.containers.run(
        swarm.upstream_image,
        detach=True,
        name=name,
        labels={ROLE_LABEL: "upstream"},
        volumes={str(registry_dir): {"bind": "/etc/docker/registry", "mode": "ro"}},
        ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port + 1)},
    )
    upstream = Upstream(
        container.id, msr.address, port, ca.cert_pem, workdir / "ca.pem", client, workdir,
        admin_token=secrets.token_urlsafe(24), test_password=secrets.token_urlsafe(24),
    )  # fmt: skip
    REDACT.add(upstream.admin_token, upstream.test_password)
    _write_private(
        workdir / FRONT_CONFIG,
        json.dumps(
            {
                "listen": [msr.address, port],
                "backend": ["127.0.0.1", port + 1],
                "cert_file": "cert.pem",
                "key_file": "key.pem",
                "users": [
                    {"name": ADMIN, "password": upstream.admin_token, "admin": True},
                    {"name": TESTER, "password": upstream.test_password},
                ],
                "access_log": ACCESS_LOG,
                "pid_file": FRONT_PID,
                "anonymous_manifests": anonymous_manifests,
            },
            indent=2,
        ),
    )
    try:
        _launch_front(netns, workdir, name)
        _wait_ready(upstream, msr.hostname)
    except BaseException:
        stop(swarm, port)
        raise
    return upstream


def stop(swarm: LocalSwarm, port: int | None = None) -> None:
    """Remove the stand-in on `port` (front and registry), or every one when None.
    Nothing is left, also of a run that was killed: the front is found by its
    command line, the container by its label and name."""
    import docker.errors

    stop_fronts(port)
    client = swarm.msr.client()
    for container in client.containers.list(all=True, filters={"label": f"{ROLE_LABEL}=upstream"}):
        if port is None or container.name == f"{INSTANCE_PREFIX}{port}":
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def front_processes(port: int | None = None) -> list[int]:
    """Pids of the fronts of `port` (of every port when None), from their command lines."""
    return processes.instances(FRONT_MODULE, INSTANCE_PREFIX, port)


def stop_fronts(port: int | None) -> None:
    """SIGTERM, then SIGKILL, every front of `port` (of every port when None), and
    their pid files; raises when one survives."""
    pids = front_processes(port)
    configs = {_config_of(pid) for pid in pids}
    if pids := processes.end(pids):
        raise RuntimeError(f"the MSR stand-in's front (pids {pids}) did not exit after SIGKILL")
    for config in configs:
        if config is not None:
            (config.parent / FRONT_PID).unlink(missing_ok=True)


def _config_of(pid: int) -> Path | None:
    path = processes.arg(processes.cmdline(pid), "--config")
    return Path(path) if path else None


def admin_of(workdir: Path) -> tuple[str, str] | None:
    """(user, password) of the admin of the stand-in whose files are in
    `workdir`, from its front's config; None when there is none (stopped and
    removed). For a later process: `make rehearse-down` of a kept rehearsal."""
    try:
        users = json.loads((workdir / FRONT_CONFIG).read_text())["users"]
        admin = next(u for u in users if u.get("admin"))
    except (OSError, ValueError, KeyError, StopIteration):
        return None
    REDACT.add(admin["password"])
    return admin["name"], admin["password"]


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _launch_front(netns: Path, workdir: Path, instance: str) -> None:
    """The front in the msr node's network namespace, detached (setsid -f: it is
    nobody's child, holds no terminal and none of the caller's descriptors, such as
    the swarm lock); this venv's python, from the repo root."""
    cmd = [
        "setsid", "-f", "nsenter", f"--net={netns}",
        sys.executable, "-m", FRONT_MODULE, "--config", str(workdir / FRONT_CONFIG), "--instance", instance,
    ]  # fmt: skip
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with (workdir / FRONT_LOG).open("ab") as log:
        subprocess.run(  # noqa: S603 - our own interpreter and arguments
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True, timeout=10
        )


def _wait_ready(upstream: Upstream, hostname: str) -> None:
    """Until the front answers an admin's /v2/ with the registry's 200."""
    assert upstream.workdir is not None
    deadline = time.monotonic() + READY_S
    last: Any = "no answer yet"
    while time.monotonic() < deadline:
        pid = upstream.front_pid()
        if pid is not None and not processes.alive(pid):
            last = "the front exited"
            break
        try:
            status, _, body = upstream.registry().request("GET", "/v2/")
            if status == 200:
                return
            last = f"HTTP {status} {body[:200]!r}"
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    front_log = processes.tail(upstream.workdir / FRONT_LOG)
    try:
        registry_log = upstream.container().logs().decode(errors="replace")[-2000:]
    except Exception as exc:
        registry_log = f"(cannot read it: {exc})"
    raise RuntimeError(
        f"the MSR stand-in did not start: {upstream.url}/v2/ (the front on {hostname}, "
        f"{upstream.host}:{upstream.port}) did not answer 200 within {READY_S} s ({last}); "
        f"the front's log {upstream.workdir / FRONT_LOG} ends:\n{front_log}\n"
        f"the registry's log (127.0.0.1:{upstream.backend_port} on {hostname}) ends:\n{registry_log}"
    )


def sample_image(nonce: str | None = None) -> Image:
    """A one-layer image of busybox-static plus a nonce file, so each test's
    layers are new to any cache; deterministic otherwise."""
    nonce = nonce or secrets.token_hex(8)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data, mode in [
            ("bin/busybox", BUSYBOX.read_bytes(), 0o755),
            ("etc/msrc-test-nonce", nonce.encode() + b"\n", 0o644),
        ]:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    layer = gzip.compress(tar_bytes, mtime=0)
    return Image.from_layer(layer, "sha256:" + hashlib.sha256(tar_bytes).hexdigest())


def push(upstream: Upstream, repo: str, tag: str, image: Image) -> None:
    """Push through the front as the admin, as a user pushes to MSR."""
    deadline = time.monotonic() + 10
    while True:
        try:
            upstream.registry().push(repo, tag, image)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
