"""The measurements of `make bench`, on the local multi-node swarm (see bench/__main__.py).

Where things run (rehearsal/localswarm.py):

    msrc-manager  10.77.0.11  the manager Pulumi (the rehearsal) talks to; its engine
                              does the `docker pull`s of a site's Docker host
    msrc-cache    10.77.0.12  the cache (host-mode publish on this address)
    msrc-msr      10.77.0.13  the upstream "MSR" stand-in
    this machine  10.77.0.1   the API clients of the site, and both WAN links

The cache reaches MSR only through `wan_cache`, a WanLink on this machine's
bridge address forwarding to the msr node: the simulated WAN sits between the
cache node and the msr node. A site pulling from MSR without a cache goes
through `wan_client`, a second link with the same figures (its own bandwidth,
as a second site's access link would be). The floor pulls from the msr node
directly, over the bridge and no WAN.

Every figure is taken `runs` times and reported as the median, next to its
floor (what the same operation costs without the thing being measured).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import os
import socket
import ssl
import statistics
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearsal import upstream as up
from rehearsal.applier import Rehearsal
from rehearsal.deploy import Deployed, apply_and_serve, destroy_leaving_nothing
from rehearsal.localswarm import LocalSwarm
from tools.smoke import Image, Registry

Log = Callable[[str], None]


@dataclass
class Params:
    runs: int = 3
    size_mb: int = 100
    rtt_ms: float = 50
    mbit: float = 100
    upstream_port: int = 5960


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def random_image(size_mb: int) -> Image:
    """One incompressible layer of `size_mb` MiB (random bytes), as a pushable image."""
    data = os.urandom(size_mb * 1024 * 1024)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("blob.bin")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    # Level 1: random data does not compress; spend no time trying.
    layer = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    return Image.from_layer(layer, "sha256:" + hashlib.sha256(tar_bytes).hexdigest())


def timed(fn: Callable[[], Any]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def wait_until_quiet(counter: Callable[[], int], settle: float = 1.0, timeout: float = 120) -> int:
    """The counter once it stopped moving for `settle` seconds."""
    deadline = time.monotonic() + timeout
    last, since = counter(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = counter()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return now
    return last


@dataclass
class Prober:
    """GET /v2/ every 100 ms; records (time, ok). Availability only: the
    certificate changes during a rotation, so the probe does not verify it."""

    address: tuple[str, int]
    interval: float = 0.1
    results: list[tuple[float, bool]] = field(default_factory=list)

    def probe(self) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection(self.address, timeout=0.5) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.settimeout(0.5)
                tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                return tls.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    @contextlib.contextmanager
    def running(self) -> Iterator[Prober]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                started = time.monotonic()
                self.results.append((started, self.probe()))
                stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(5)

    @property
    def failed(self) -> int:
        return sum(1 for _, ok in self.results if not ok)

    def wait_recovered(self, timeout: float = 60) -> None:
        """Until a failure has been followed by a success (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen_failure = any(not ok for _, ok in self.results)
            if seen_failure and self.results and self.results[-1][1]:
                return
            time.sleep(0.1)


@dataclass
class Bench:
    client: Any
    """The manager's Docker client (DOCKER_HOST): Swarm's API, and the site's engine."""
    swarm: LocalSwarm
    params: Params
    workdir: Path
    log: Log = print
    results: dict[str, Any] = field(default_factory=dict)

    # -- set-up ------------------------------------------------------------

    def __post_init__(self) -> None:
        from bench.wan import WanLink

        p = self.params
        self.upstream = up.start(self.swarm, self.workdir / "upstream", port=p.upstream_port)
        msr = (self.upstream.host, self.upstream.port)
        # The link the cache uses to reach MSR, and one with the same figures for
        # a site that pulls from MSR without a cache. Both listen on this
        # machine's bridge address: the cache node and the manager's engine
        # reach it (this machine's loopback is not theirs), and the upstream's
        # certificate names it, so TLS to MSR is still verified through a link.
        self.wan_cache = WanLink((self.swarm.host_address, 0), msr, rtt_ms=p.rtt_ms, mbit=p.mbit)
        self.wan_client = WanLink((self.swarm.host_address, 0), msr, rtt_ms=p.rtt_ms, mbit=p.mbit)
        self.wan_cache.start()
        self.wan_client.start()
        self.rehearsal = Rehearsal(self.client, "bench", log=lambda _m: None)
        self.deployed: Deployed | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.destroy()
        self.wan_cache.stop()
        self.wan_client.stop()
        up.stop(self.swarm, self.params.upstream_port)

    def destroy(self) -> None:
        """Destroy the rehearsal, and the volume Swarm made on the cache node for
        its mount (which `pulumi destroy` leaves, with the cached layers)."""
        destroy_leaving_nothing(self.rehearsal, self.swarm.cache, log=lambda _m: None)

    def deploy(self, overrides: dict[str, Any] | None = None) -> Deployed:
        from rehearsal.engine import ROOT
        from tools.stack_file import read_stack

        stack = read_stack(ROOT / "stacks/Pulumi.dev.yaml")
        self.deployed = apply_and_serve(
            self.rehearsal, stack, self.upstream, self.workdir / "cache",
            {"msrHost": self.wan_cache.listen_host, "msrPort": self.wan_cache.port, **(overrides or {})},
            log=lambda _m: None, swarm=self.swarm,
        )  # fmt: skip
        return self.deployed

    def registries(self) -> dict[str, Registry]:
        assert self.deployed is not None
        ca = str(self.upstream.ca_file)
        wan = (self.wan_client.listen_host, self.wan_client.port)
        return {
            "direct": Registry((self.upstream.host, self.upstream.port), self.upstream.host, ca, timeout=600),
            "wan": Registry(wan, self.wan_client.listen_host, ca, timeout=600),
            "cache": Registry(
                self.deployed.address, self.deployed.server_name, str(self.deployed.ca_file), timeout=600
            ),
        }

    # -- deploy ------------------------------------------------------------

    def measure_deploy(self) -> None:
        """Apply → first verified TLS answer, next to a bare `docker service create`
        of the same image with the same secrets and config."""
        deploys, floors = [], []
        for i in range(self.params.runs):
            self.destroy()
            deployed = self.deploy()
            deploys.append(deployed.seconds_to_serve)
            floors.append(self.bare_service_create(deployed, i))
            self.log(f"  deploy {i + 1}: {deploys[-1]:.2f} s (bare service create {floors[-1]:.2f} s)")
        self.results["deploy"] = {
            "secondsToServe": median(deploys),
            "bareServiceCreateSeconds": median(floors),
            "runs": {"deploy": deploys, "bare": floors},
        }

    def bare_service_create(self, deployed: Deployed, i: int) -> float:
        spec = deployed.service().attrs["Spec"]
        task = dict(spec["TaskTemplate"])
        # On the cache node, as the cache's own task (its image is there), but
        # by hostname: no node label of the program's own making.
        task["Placement"] = {"Constraints": [f"node.hostname == {deployed.node.hostname}"]}
        port = deployed.address[1] + 1
        endpoint = {
            "Ports": [{"Protocol": "tcp", "TargetPort": 443, "PublishedPort": port, "PublishMode": "host"}]
        }
        registry = Registry((deployed.node.address, port), deployed.server_name, str(deployed.ca_file))
        node = deployed.node.client()
        started = time.monotonic()
        made = self.client.api.create_service(
            task_template=task, name=f"msr-cache-bench-floor-{i}", endpoint_spec=endpoint
        )
        try:
            registry.wait_ready(60)
            return round(time.monotonic() - started, 3)
        finally:
            self.client.api.remove_service(made["ID"])
            # Its container is on the cache node: only that node's daemon shows it.
            mine = {"label": f"com.docker.swarm.service.id={made['ID']}"}
            wait_until_quiet(lambda: len(node.containers.list(all=True, filters=mine)), settle=0.3)

    # -- pulls ---------------------------------------------------------------

    def measure_pulls(self) -> None:
        p = self.params
        api: dict[str, list[float]] = {k: [] for k in ("direct", "wan", "cacheCold", "cacheWarm")}
        engine: dict[str, list[float]] = {k: [] for k in ("direct", "wan", "cacheCold", "cacheWarm")}
        cold_bytes: list[int] = []
        cold_gets: list[int] = []
        regs = self.registries()
        assert self.deployed is not None
        for i in range(p.runs):
            image = random_image(p.size_mb)
            layer_size = max(len(b) for b in image.blobs.values())
            tag = str(i)
            up.push(self.upstream, "bench/api", tag, image)
            api["direct"].append(timed(lambda: regs["direct"].pull("bench/api", tag)))  # noqa: B023
            api["wan"].append(timed(lambda: regs["wan"].pull("bench/api", tag)))  # noqa: B023
            before_bytes = self.wan_cache.bytes_down
            before_gets = len(self.upstream.blob_gets())
            api["cacheCold"].append(timed(lambda: regs["cache"].pull("bench/api", tag)))  # noqa: B023
            wait_until_quiet(lambda: self.wan_cache.bytes_down)
            cold_bytes.append(self.wan_cache.bytes_down - before_bytes)
            cold_gets.append(len(self.upstream.blob_gets()) - before_gets)
            api["cacheWarm"].append(timed(lambda: regs["cache"].pull("bench/api", tag)))  # noqa: B023
            self.log(
                f"  API pull {i + 1}: direct {api['direct'][-1]:.2f} s, WAN {api['wan'][-1]:.2f} s, "
                f"cache cold {api['cacheCold'][-1]:.2f} s, warm {api['cacheWarm'][-1]:.2f} s; "
                f"MSR sent {cold_bytes[-1] / layer_size:.2f}x the layer for the cold pull"
            )

            image = random_image(p.size_mb)
            up.push(self.upstream, "bench/pull", str(i), image)
            # The manager's engine pulls (it treats the bridge's 10.77.0.0/24 as
            # insecure registries: it does not verify, the API pulls above do).
            cache = f"{self.deployed.address[0]}:{self.deployed.address[1]}/bench/pull"
            refs = {
                "direct": f"{self.upstream.host}:{self.upstream.port}/bench/pull",
                "wan": f"{self.wan_client.listen_host}:{self.wan_client.port}/bench/pull",
                "cacheCold": cache,
                "cacheWarm": cache,
            }
            for key, ref in refs.items():
                engine[key].append(self.docker_pull(ref, str(i)))
                if key == "cacheCold":
                    wait_until_quiet(lambda: self.wan_cache.bytes_down)
            self.log(
                f"  docker pull {i + 1}: direct {engine['direct'][-1]:.2f} s, WAN {engine['wan'][-1]:.2f} s, "
                f"cache cold {engine['cacheCold'][-1]:.2f} s, warm {engine['cacheWarm'][-1]:.2f} s"
            )
        self.results["pulls"] = {
            "imageMiB": p.size_mb,
            "api": {k: median(v) for k, v in api.items()},
            "dockerPull": {k: median(v) for k, v in engine.items()},
            "coldPullUpstreamBytes": int(statistics.median(cold_bytes)),
            "coldPullUpstreamBytesPerImageByte": round(
                statistics.median(cold_bytes) / (p.size_mb * 1024 * 1024), 3
            ),
            "coldPullUpstreamBlobGets": int(statistics.median(cold_gets)),
            "runs": {"api": api, "dockerPull": engine, "coldBytes": cold_bytes, "coldGets": cold_gets},
        }

    def docker_pull(self, repo: str, tag: str) -> float:
        started = time.monotonic()
        image = self.client.images.pull(repo, tag=tag)
        seconds = time.monotonic() - started
        self.client.images.remove(image.id, force=True)
        return round(seconds, 3)

    # -- unavailability --------------------------------------------------------

    def measure_unavailability(self) -> None:
        from components import rotation

        assert self.deployed is not None
        rotations, restarts = [], []
        for i in range(self.params.runs):
            # A planned rotation: the next period starts, the program runs again.
            base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=30 * i)
            real_now = rotation.utcnow
            rotation.utcnow = lambda base=base: base  # type: ignore[misc]
            try:
                tls = {**self.deployed.config.get("tls", {}), "rotateEvery": "720h"}
                self.deploy({"tls": tls})
                rotation.utcnow = lambda base=base: base + dt.timedelta(days=30)  # type: ignore[misc]
                prober = Prober(self.deployed.address)
                with prober.running():
                    self.deploy({"tls": tls})
                    time.sleep(1)
                rotations.append(round(prober.failed * prober.interval, 2))
            finally:
                rotation.utcnow = real_now

            (task,) = self.deployed.running_tasks()
            # The task's container is on the cache node: only that node's daemon has it.
            container_id = task["Status"]["ContainerStatus"]["ContainerID"]
            container = self.deployed.node.client().containers.get(container_id)
            prober = Prober(self.deployed.address)
            with prober.running():
                container.kill()
                prober.wait_recovered()
            restarts.append(round(prober.failed * prober.interval, 2))
            self.log(
                f"  unavailable: rotation {rotations[-1]:.1f} s, restart on failure {restarts[-1]:.1f} s"
            )
        self.results["unavailability"] = {
            "rotationSeconds": median(rotations),
            "restartOnFailureSeconds": median(restarts),
            "probeIntervalSeconds": 0.1,
            "runs": {"rotation": rotations, "restart": restarts},
        }
