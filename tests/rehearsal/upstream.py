"""The "MSR" stand-in: Docker Distribution serving TLS from a private test CA.

It runs as a plain container of the test daemon, published on loopback (for
the tests, which push to it) and on the daemon's bridge gateway (for the cache
task, which sits on that bridge). Its certificate names both addresses, and
its CA is what the cache must trust (`msrCaCert` -> dtr.cert.pem) to reach it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
import secrets
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import pki
from tools.smoke import Image, Registry

UPSTREAM_IMAGE = "127.0.0.1:5999/msrc-test/upstream-registry:2.8.2"
CACHE_STAND_IN_IMAGE = "127.0.0.1:5999/msrc-test/dtr-content-cache-stand-in:2.8.2"
ROLE_LABEL = "com.mirantis.msr-cache.rehearsal"
CONTAINER_PORT = 5000
BUSYBOX = Path("/bin/busybox")

_BLOB_GET = re.compile(r'"GET /v2/(?P<repo>[^ ]+)/blobs/(?P<digest>sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200')


@dataclass
class Upstream:
    container_id: str
    host: str
    """Where the cache reaches it (the bridge gateway): msrHost."""
    port: int
    """msrPort, on loopback and on the gateway."""
    ca_pem: str
    ca_file: Path

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def registry(self) -> Registry:
        """A verified client, from this machine through loopback."""
        return Registry(("127.0.0.1", self.port), "127.0.0.1", str(self.ca_file))

    def blob_gets(self, client: Any) -> list[str]:
        """Digests of the blobs served so far (from its access log)."""
        logs = (
            client.containers.get(self.container_id).logs(stdout=True, stderr=True).decode(errors="replace")
        )
        return [m["digest"] for m in _BLOB_GET.finditer(logs)]


def bridge_gateway(client: Any) -> str:
    """The host's address on the daemon's default bridge, which Swarm tasks without networks join."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"]
    return str(config[0]["Gateway"])


def start(client: Any, workdir: Path, port: int) -> Upstream:
    """Start the upstream (replacing one left from an earlier run on this port)."""
    stop(client, port)
    workdir.mkdir(parents=True, exist_ok=True)
    gateway = bridge_gateway(client)
    ca = pki.make_ca("msr-cache test MSR CA")
    leaf = pki.make_leaf(
        "msr-upstream.test", dns=["msr-upstream.test"], ips=[gateway, "127.0.0.1"], issuer=ca
    )
    (workdir / "ca.pem").write_text(ca.cert_pem)
    (workdir / "cert.pem").write_text(leaf.cert_pem)
    key = workdir / "key.pem"
    key.write_text(leaf.key_pem)
    key.chmod(0o600)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": True}},
        "http": {
            "addr": f"0.0.0.0:{CONTAINER_PORT}",
            "secret": secrets.token_hex(16),
            "tls": {"certificate": "/etc/docker/registry/cert.pem", "key": "/etc/docker/registry/key.pem"},
        },
    }
    (workdir / "config.yml").write_text(yaml.safe_dump(config))
    container = client.containers.run(
        UPSTREAM_IMAGE,
        detach=True,
        name=f"msrc-upstream-{port}",
        labels={ROLE_LABEL: "upstream"},
        volumes={str(workdir.resolve()): {"bind": "/etc/docker/registry", "mode": "ro"}},
        ports={f"{CONTAINER_PORT}/tcp": [("127.0.0.1", port), (gateway, port)]},
    )
    upstream = Upstream(container.id, gateway, port, ca.cert_pem, workdir / "ca.pem")
    try:
        upstream.registry().wait_ready(20)
    except Exception:
        logs = container.logs().decode(errors="replace")[-2000:]
        stop(client, port)
        raise RuntimeError(f"the upstream registry did not start:\n{logs}") from None
    return upstream


def stop(client: Any, port: int | None = None) -> None:
    """Remove the upstream on `port`, or every upstream when None."""
    import docker.errors

    for container in client.containers.list(all=True, filters={"label": f"{ROLE_LABEL}=upstream"}):
        if port is None or container.name == f"msrc-upstream-{port}":
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


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
    deadline = time.monotonic() + 10
    while True:
        try:
            upstream.registry().push(repo, tag, image)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
