"""The "MSR" stand-in: Docker Distribution serving TLS from a private test CA.

It runs as a plain container on the swarm's msr node (msrc-msr), published on
that node's address, where the cache node and the tests on this machine both
reach it, as a site reaches MSR. Its certificate names that address, and its
CA is what the cache must trust (`msrCaCert` -> dtr.cert.pem) to reach it.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rehearsal import pki
from rehearsal.localswarm import LocalSwarm
from tools.smoke import Image, Registry

ROLE_LABEL = "com.mirantis.msr-cache.rehearsal"
CONTAINER_PORT = 5000
BUSYBOX = Path("/bin/busybox")

_BLOB_GET = re.compile(r'"GET /v2/(?P<repo>[^ ]+)/blobs/(?P<digest>sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200')


@dataclass
class Upstream:
    container_id: str
    host: str
    """The msr node's address: msrHost, for the cache and for the tests."""
    port: int
    """msrPort, published on that address."""
    ca_pem: str
    ca_file: Path
    client: Any = field(repr=False)
    """The msr node's Docker daemon, which runs the container."""

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def registry(self) -> Registry:
        """A verified client, from this machine over the swarm's bridge."""
        return Registry((self.host, self.port), self.host, str(self.ca_file))

    def container(self) -> Any:
        return self.client.containers.get(self.container_id)

    def blob_gets(self) -> list[str]:
        """Digests of the blobs served so far (from its access log)."""
        logs = self.container().logs(stdout=True, stderr=True).decode(errors="replace")
        return [m["digest"] for m in _BLOB_GET.finditer(logs)]


def start(swarm: LocalSwarm, workdir: Path, port: int) -> Upstream:
    """Start the upstream on the msr node (replacing one left from an earlier run on this port)."""
    stop(swarm, port)
    workdir.mkdir(parents=True, exist_ok=True)
    msr = swarm.msr
    client = msr.client()
    ca = pki.make_ca("msr-cache test MSR CA")
    # This machine's bridge address too: a simulated WAN link there forwards to it
    # (bench/wan.py), and the cache must still verify MSR through it.
    leaf = pki.make_leaf(
        "msr-upstream.test", dns=["msr-upstream.test"], ips=[msr.address, swarm.host_address], issuer=ca
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
    # The msr node's daemon shares this machine's file system: the bind mount is
    # a directory here.
    container = client.containers.run(
        swarm.upstream_image,
        detach=True,
        name=f"msrc-upstream-{port}",
        labels={ROLE_LABEL: "upstream"},
        volumes={str(workdir.resolve()): {"bind": "/etc/docker/registry", "mode": "ro"}},
        ports={f"{CONTAINER_PORT}/tcp": (msr.address, port)},
    )
    upstream = Upstream(container.id, msr.address, port, ca.cert_pem, workdir / "ca.pem", client)
    try:
        upstream.registry().wait_ready(20)
    except Exception as exc:
        logs = container.logs().decode(errors="replace")[-2000:]
        stop(swarm, port)
        raise RuntimeError(
            f"the upstream registry did not start: https://{msr.address}:{port}/v2/ on {msr.hostname} "
            f"did not answer within 20 s ({exc}); its log:\n{logs}"
        ) from None
    return upstream


def stop(swarm: LocalSwarm, port: int | None = None) -> None:
    """Remove the upstream on `port`, or every upstream when None."""
    import docker.errors

    client = swarm.msr.client()
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
