"""The measurements of `make bench`, on the local multi-node swarm (see bench/__main__.py).

Where things run (rehearsal/localswarm.py):

    msrc-manager  10.77.0.11  the manager Pulumi (the rehearsal) talks to; its engine
                              does the `docker pull`s of a site's Docker host
    msrc-cache    10.77.0.12  the cache (host-mode publish on this address)
    msrc-msr      10.77.0.13  the upstream "MSR" stand-in
    this machine  10.77.0.1   the API clients of the site, and both WAN links

The cache reaches MSR only through `wan_cache`, a WanLink on this machine's
bridge address forwarding to the msr node: the simulated WAN sits between the
cache node and the msr node. A site's clients reach MSR through `wan_client`,
a second link with the same figures (its own bandwidth, as a site's access
link would be). Both charge TCP's connection set-up (one round trip before the
first byte), since `docker pull` opens a connection per request. The floor
pulls from the msr node directly, over the bridge and no WAN.

The pulls, as MSR users meet the cache (issue 12): the cache is registered
with MSR and the stand-in's test user chose it, so MSR answers that user's
blob GETs with a redirect to the cache (https://10.77.0.12:<port>, the cache
node's address as cacheHost) and the blobs cross the site only; manifests
still come from MSR over the WAN. The admin chose no cache: its pulls from MSR
are a site without one. Pulls from the cache's own address show what the
cache alone costs.

The chained pulls (issue 13): the same user's pull once the stack is two
caches, `site` chained to `hub` (site -> hub -> MSR). The hub runs on the cache
node and reaches MSR over `wan_cache`; the site runs on another node (the
manager's, in a three-node swarm), the user chose it, and it reaches the hub over
the bridge: the hub is in the site's region, and the WAN lies between the hub
and MSR (and between the user and MSR, for the manifests).

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
from rehearsal.deploy import Deployed, DeployedCache, apply_and_serve, cache_nodes, destroy_leaving_nothing
from rehearsal.localswarm import LocalSwarm
from rehearsal.stack import place_caches
from rehearsal.user_pull import cache_client, pull_as_user
from tools.smoke import Image, Registry

Log = Callable[[str], None]

PULLS = ("direct", "wan", "userCold", "userWarm", "userWarmNoWan", "cacheWarm")
"""The pulls, by the registry API client and by `docker pull`: from MSR with no
WAN (the floor), from MSR over the WAN by a user with no cache, from MSR over
the WAN by the user who chose the cache (every blob redirected to it) cold and
warm, the same warm with no WAN (MSR at the site: what the WAN adds to a warm
pull is the difference), and warm from the cache's own address."""

CHAIN_PULLS = ("chainCold", "chainParentWarm", "chainWarm")
"""The chained pulls, by the registry API client as the user who chose the site
cache: both caches cold (site -> hub -> MSR over the WAN), the site cold with
the hub warm (a layer another site already fetched), and the site warm."""
CHAIN = ("hub", "site")
"""The chained stack's caches: the site fetches from the hub."""


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
class Observed:
    """One pull from MSR over `wan_client`, as MSR and the link saw it."""

    seconds: float
    records: list[dict[str, Any]]
    """The MSR front's access-log records of the pull (Upstream.front_log)."""
    connections: int
    """TCP connections the pull opened over the link."""


REQUEST_KINDS = ("challenge", "ping", "manifest", "redirect", "blob", "other")


def msr_requests(records: list[dict[str, Any]]) -> dict[str, int]:
    """What a pull asked MSR for, by kind: `challenge` (/v2/ answered 401, which
    asks for credentials), `ping` (/v2/ answered otherwise), `manifest`,
    `redirect` (a blob GET answered with a redirect to the cache), `blob` (a blob
    MSR served itself) and `other`."""
    counts = dict.fromkeys(REQUEST_KINDS, 0)
    for r in records:
        path, status = r["path"], int(r["status"])
        if path in ("/v2", "/v2/"):
            kind = "challenge" if status == 401 else "ping"
        elif "/manifests/" in path:
            kind = "manifest"
        elif "/blobs/" in path:
            kind = "redirect" if 300 <= status < 400 else "blob"
        else:
            kind = "other"
        counts[kind] += 1
    return counts


def wan_cost(
    counts: dict[str, int], connections: int, rtt_ms: float, *, concurrent_blobs: bool, tcp_handshake: bool
) -> tuple[int, float]:
    """(round trips, seconds) that a pull's requests to MSR (`msr_requests`) wait
    for over a link of `rtt_ms`, their bytes aside (a manifest, a redirect: a few
    hundred). A request waits one round trip; one that opens a connection waits
    one more for TLS 1.3's handshake and one more for TCP's when the link charges
    it. The requests wait for each other, except the blob GETs of a client that
    sends them together (`concurrent_blobs`: Docker asks for the config and the
    layers at once), which are one step."""
    blobs = counts["redirect"] + counts["blob"]
    steps = sum(counts.values()) - blobs + (min(blobs, 1) if concurrent_blobs else blobs)
    per_connection = 1 + (1 if tcp_handshake else 0)
    trips = steps + min(connections, steps) * per_connection
    return trips, round(trips * rtt_ms / 1000, 3)


def timings(pulls: dict[str, list[float]]) -> str:
    """The last run's pulls, for the log."""
    return ", ".join(f"{key} {times[-1]:.2f} s" for key, times in pulls.items() if times)


def describe(seen: Observed) -> str:
    counts = msr_requests(seen.records)
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    return f"{len(seen.records)} requests to MSR ({kinds}) on {seen.connections} connection(s)"


def warm_summary(
    seen: list[Observed], rtt_ms: float, *, concurrent_blobs: bool, tcp_handshake: bool, no_wan: float
) -> dict[str, Any]:
    """Where a warm redirected pull's time goes: what it asked MSR for (the last
    run's), the round trips that costs over the WAN, against the measured
    difference to the same pull with no WAN (`no_wan`, its median)."""
    last = seen[-1]
    counts = msr_requests(last.records)
    trips, expected = wan_cost(
        counts, last.connections, rtt_ms, concurrent_blobs=concurrent_blobs, tcp_handshake=tcp_handshake
    )
    t0 = dt.datetime.fromisoformat(last.records[0]["time"]) if last.records else None
    return {
        "requestsToMsr": counts,
        "connectionsToMsr": last.connections,
        "wanRoundTrips": trips,
        "expectedWanSeconds": expected,
        "measuredWanSeconds": round(median([s.seconds for s in seen]) - no_wan, 3),
        # When the front answered each request, after the first answer: what waited for what.
        "log": [
            f"{r['method']} {r['path']} -> {r['status']} "
            f"+{(dt.datetime.fromisoformat(r['time']) - t0).total_seconds() * 1000:.0f} ms"
            for r in last.records
            if t0 is not None
        ],
        "runs": [
            {"seconds": s.seconds, "requests": len(s.records), "connections": s.connections} for s in seen
        ],
    }


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
        # the site's clients, who pull from MSR (with a cache or without: the
        # manifests always come from MSR). Both listen on this machine's bridge
        # address: the cache node and the manager's engine reach it (this
        # machine's loopback is not theirs), and the upstream's certificate
        # names it, so TLS to MSR is still verified through a link. Both charge
        # TCP's handshake: Docker opens a connection per request.
        def link() -> WanLink:
            return WanLink((self.swarm.host_address, 0), msr, rtt_ms=p.rtt_ms, mbit=p.mbit, handshake=True)

        self.wan_cache, self.wan_client = link(), link()
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
        """Destroy the rehearsal, and the volumes Swarm made for its mounts on
        every node a cache ran on (which `pulumi destroy` leaves, with the
        cached layers)."""
        destroy_leaving_nothing(self.rehearsal, self.swarm, log=lambda _m: None)

    @staticmethod
    def dev_stack(caches: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The dev stack as written, or with `caches` its values as the defaults of
        those caches (the rehearsal places the caches from the stack as written)."""
        from rehearsal.engine import ROOT
        from tools.stack_file import read_stack

        stack = read_stack(ROOT / "stacks/Pulumi.dev.yaml")
        return stack if caches is None else {**stack, "caches": caches}

    def deploy(
        self, overrides: dict[str, Any] | None = None, caches: list[dict[str, Any]] | None = None
    ) -> Deployed:
        """dev_stack(caches), applied with MSR behind `wan_cache`."""
        self.deployed = apply_and_serve(
            self.rehearsal, self.dev_stack(caches), self.upstream, self.workdir / "cache",
            {
                "msrHost": self.wan_cache.listen_host, "msrPort": self.wan_cache.port,
                # MSR redirects a user's blob GETs to https://<cacheHost>:<cachePort>,
                # which the site's engine (the manager's) must reach: dev's
                # localhost is that node's own loopback, the cache node's
                # address is where host mode publishes the cache.
                "cacheHost": self.swarm.cache.address,
                **(overrides or {}),
            },
            log=lambda _m: None, swarm=self.swarm,
        )  # fmt: skip
        return self.deployed

    def msr(self, user: str, *, over_wan: bool) -> Registry:
        """MSR as `user`, from this machine: over `wan_client`, or directly."""
        ca = str(self.upstream.ca_file)
        auth = self.upstream.credentials(user)
        if over_wan:
            wan = (self.wan_client.listen_host, self.wan_client.port)
            return Registry(wan, self.wan_client.listen_host, ca, timeout=600, auth=auth)
        msr = (self.upstream.host, self.upstream.port)
        return Registry(msr, self.upstream.host, ca, timeout=600, auth=auth)

    def registries(self) -> dict[str, Registry]:
        assert self.deployed is not None
        # As MSR users: the admin chose no cache, the test user chose this one.
        admin, tester = self.upstream.admin_user, self.upstream.test_user
        return {
            "direct": self.msr(admin, over_wan=False),
            "wan": self.msr(admin, over_wan=True),
            "wanUser": self.msr(tester, over_wan=True),
            "directUser": self.msr(tester, over_wan=False),
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
        assert self.deployed is not None
        exports = self.deployed.run.exports
        cache_url, registration = exports["cacheUrl"], exports["registrationId"]
        # The test user chooses the cache (MSR redirects that user's blob GETs to
        # it); the admin chose none and gets every blob from MSR itself: the
        # pulls without a cache are the admin's.
        self.upstream.set_user_cache(self.upstream.test_user, registration)
        self.log(f"  {self.upstream.test_user} chose the cache {cache_url} (registration {registration})")
        api: dict[str, list[float]] = {k: [] for k in PULLS}
        engine: dict[str, list[float]] = {k: [] for k in PULLS}
        cold_bytes: list[int] = []
        cold_gets: list[int] = []
        warm: dict[str, list[Observed]] = {"api": [], "dockerPull": []}
        regs = self.registries()
        cache_for = cache_client(cache_url, self.deployed.address, str(self.deployed.ca_file))

        def as_user(msr: Registry, repo: str, tag: str) -> float:
            return self.pull_as_tester(msr, repo, tag, cache_for)

        for i in range(p.runs):
            tag = str(i)
            image = random_image(p.size_mb)
            layer_size = max(len(b) for b in image.blobs.values())
            up.push(self.upstream, "bench/api", tag, image)
            api["direct"].append(timed(lambda: regs["direct"].pull("bench/api", tag)))  # noqa: B023
            api["wan"].append(timed(lambda: regs["wan"].pull("bench/api", tag)))  # noqa: B023
            seconds, sent, gets = self.fetched_by_caches(
                lambda: as_user(regs["wanUser"], "bench/api", tag)  # noqa: B023
            )
            api["userCold"].append(seconds)
            cold_bytes.append(sent)
            cold_gets.append(gets)
            seen = self.over_wan_client(lambda: as_user(regs["wanUser"], "bench/api", tag))  # noqa: B023
            api["userWarm"].append(seen.seconds)
            warm["api"].append(seen)
            api["userWarmNoWan"].append(as_user(regs["directUser"], "bench/api", tag))
            api["cacheWarm"].append(timed(lambda: regs["cache"].pull("bench/api", tag)))  # noqa: B023
            ratio = sent / layer_size
            self.log(f"  API pull {i + 1}: {timings(api)}; MSR sent the cache {ratio:.2f}x the layer (cold)")

            image = random_image(p.size_mb)
            up.push(self.upstream, "bench/pull", tag, image)
            # The manager's engine pulls (it treats the bridge's 10.77.0.0/24 as
            # insecure registries: it does not verify, the API pulls above do).
            admin = self.upstream.credentials(self.upstream.admin_user)
            tester = self.upstream.credentials(self.upstream.test_user)
            msr = f"{self.upstream.host}:{self.upstream.port}/bench/pull"
            over_wan = f"{self.wan_client.listen_host}:{self.wan_client.port}/bench/pull"
            engine["direct"].append(self.docker_pull(msr, tag, admin))
            engine["wan"].append(self.docker_pull(over_wan, tag, admin))
            engine["userCold"].append(self.docker_pull(over_wan, tag, tester))
            self.settle()
            seen = self.over_wan_client(lambda: self.docker_pull(over_wan, tag, tester))  # noqa: B023
            if msr_requests(seen.records)["blob"]:
                raise RuntimeError(f"MSR served bench/pull:{tag}'s blobs to {self.upstream.test_user} itself")
            engine["userWarm"].append(seen.seconds)
            warm["dockerPull"].append(seen)
            engine["userWarmNoWan"].append(self.docker_pull(msr, tag, tester))
            cache = f"{self.deployed.address[0]}:{self.deployed.address[1]}/bench/pull"
            engine["cacheWarm"].append(self.docker_pull(cache, tag))
            self.log(f"  docker pull {i + 1}: {timings(engine)}; the warm one from MSR: {describe(seen)}")
        self.results["pulls"] = {
            "imageMiB": p.size_mb,
            "api": {k: median(v) for k, v in api.items()},
            "dockerPull": {k: median(v) for k, v in engine.items()},
            "coldPullUpstreamBytes": int(statistics.median(cold_bytes)),
            "coldPullUpstreamBytesPerImageByte": round(
                statistics.median(cold_bytes) / (p.size_mb * 1024 * 1024), 3
            ),
            "coldPullUpstreamBlobGets": int(statistics.median(cold_gets)),
            "userPull": {
                "user": self.upstream.test_user,
                "cacheUrl": cache_url,
                "warm": {
                    kind: warm_summary(
                        seen,
                        p.rtt_ms,
                        concurrent_blobs=kind == "dockerPull",
                        tcp_handshake=self.wan_client.handshake,
                        no_wan=median((api if kind == "api" else engine)["userWarmNoWan"]),
                    )
                    for kind, seen in warm.items()
                },
            },
            "runs": {"api": api, "dockerPull": engine, "coldBytes": cold_bytes, "coldGets": cold_gets},
        }

    def pull_as_tester(
        self, msr: Registry, repo: str, tag: str, cache_for: Callable[[str], Registry]
    ) -> float:
        """Seconds for the test user's pull of repo:tag from `msr`, its blobs from
        the cache MSR redirects to (`cache_for`); MSR serving any itself fails."""
        started = time.monotonic()
        pulled = pull_as_user(msr, repo, tag, cache_for)
        seconds = time.monotonic() - started
        if pulled.from_msr:
            raise RuntimeError(f"MSR served {repo}:{tag}'s blobs to {self.upstream.test_user} itself")
        return seconds

    def fetched_by_caches(self, pull: Callable[[], float]) -> tuple[float, int, int]:
        """`pull`'s time, and the bytes (over `wan_cache`) and blob GETs MSR served
        the caches for it, once they have stored what they fetched (settle)."""
        before, gets = self.wan_cache.bytes_down, len(self.upstream.blob_gets())
        seconds = pull()
        self.settle()
        return seconds, self.wan_cache.bytes_down - before, len(self.upstream.blob_gets()) - gets

    def settle(self) -> None:
        """After a cold pull through the cache: until the cache has stored what it
        fetched (the stand-in fetches a second copy while it streams the first),
        so that the next pull finds a quiet WAN and a warm cache."""
        self.upstream.wait_quiet(timeout=120)
        wait_until_quiet(lambda: self.wan_cache.bytes_down)

    def over_wan_client(self, pull: Callable[[], float]) -> Observed:
        """`pull` (which returns its own time), and what it asked MSR for over `wan_client`."""
        logged = len(self.upstream.front_log())
        connections = self.wan_client.connections_accepted
        seconds = pull()
        return Observed(
            round(seconds, 3),
            self.upstream.front_log()[logged:],
            self.wan_client.connections_accepted - connections,
        )

    def docker_pull(self, repo: str, tag: str, auth: tuple[str, str] | None = None) -> float:
        """`docker pull repo:tag` by the manager's engine (as `auth`, user and password), then
        the image removed, so that the next pull fetches every layer again."""
        auth_config = {"username": auth[0], "password": auth[1]} if auth else None
        started = time.monotonic()
        image = self.client.images.pull(repo, tag=tag, auth_config=auth_config)
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

    # -- chained pulls -----------------------------------------------------------

    def deploy_chain(self) -> dict[str, DeployedCache]:
        """The rehearsal becomes two caches: `hub`, fetching from MSR over
        `wan_cache`, and `site`, chained to it, on a node of its own (both
        publish dev's port, so the rehearsal places them apart). Each
        cacheHost is its node's address, which MSR redirects to and this
        machine reaches."""
        entries: list[dict[str, Any]] = [{"name": "hub"}, {"name": "site", "upstream": "hub"}]
        # Where the rehearsal will place them: the same stack, the same nodes.
        placed = place_caches(self.dev_stack(entries), cache_nodes(self.swarm))
        for entry, nodes in zip(entries, placed, strict=True):
            entry["cacheHost"] = self.swarm.node(nodes[0]).address
        self.destroy()
        deployed = self.deploy(caches=entries)
        return {name: deployed.caches[name] for name in CHAIN}

    def measure_chained_pulls(self) -> None:
        p = self.params
        caches = self.deploy_chain()
        hub, site = caches["hub"], caches["site"]
        self.upstream.set_user_cache(self.upstream.test_user, site.exports["registrationId"])
        self.log(
            f"  {self.upstream.test_user} chose the site cache {site.cache_url}, "
            f"which fetches from the hub {hub.cache_url}"
        )
        wan_user = self.msr(self.upstream.test_user, over_wan=True)
        through_site = cache_client(site.cache_url, site.address, str(site.ca_file))
        times: dict[str, list[float]] = {k: [] for k in CHAIN_PULLS}
        cold_bytes: list[int] = []
        parent_warm_bytes: list[int] = []
        cold_gets: list[int] = []
        parent_warm_gets: list[int] = []

        def as_user(repo: str, tag: str) -> float:
            return round(self.pull_as_tester(wan_user, repo, tag, through_site), 3)

        for i in range(p.runs):
            # Both cold: the site fetches from the hub, the hub from MSR.
            cold = f"cold-{i}"
            up.push(self.upstream, "bench/chain", cold, random_image(p.size_mb))
            seconds, sent, gets = self.fetched_by_caches(lambda: as_user("bench/chain", cold))  # noqa: B023
            times["chainCold"].append(seconds)
            cold_bytes.append(sent)
            cold_gets.append(gets)
            # The site cold, the hub warm: a layer another site of the hub
            # pulled already (here, pulled from the hub's own address).
            shared = f"shared-{i}"
            up.push(self.upstream, "bench/chain", shared, random_image(p.size_mb))
            hub.registry().pull("bench/chain", shared)
            self.settle()
            seconds, sent, gets = self.fetched_by_caches(lambda: as_user("bench/chain", shared))  # noqa: B023
            times["chainParentWarm"].append(seconds)
            parent_warm_bytes.append(sent)
            parent_warm_gets.append(gets)
            times["chainWarm"].append(as_user("bench/chain", cold))
            mib = 1024 * 1024
            self.log(
                f"  chained pull {i + 1}: {timings(times)}; MSR sent the caches {cold_bytes[-1] / mib:.1f} "
                f"MiB in {cold_gets[-1]} blob GETs (both cold), {parent_warm_bytes[-1] / mib:.1f} MiB in "
                f"{parent_warm_gets[-1]} (hub warm)"
            )
        self.results["chainedPulls"] = {
            "imageMiB": p.size_mb,
            "site": site.cache_url,
            "hub": hub.cache_url,
            "api": {k: median(v) for k, v in times.items()},
            "coldPullUpstreamBytes": int(statistics.median(cold_bytes)),
            "parentWarmUpstreamBytes": int(statistics.median(parent_warm_bytes)),
            # Blob bodies MSR served the hub: one image is a config and a layer.
            "coldPullUpstreamBlobGets": int(statistics.median(cold_gets)),
            "parentWarmUpstreamBlobGets": int(statistics.median(parent_warm_gets)),
            "runs": {
                "api": times,
                "coldBytes": cold_bytes,
                "parentWarmBytes": parent_warm_bytes,
                "coldGets": cold_gets,
                "parentWarmGets": parent_warm_gets,
            },
        }
