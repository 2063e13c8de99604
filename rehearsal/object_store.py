"""An S3-compatible object store for the highly available caches (issue 13): moto's
S3 server (PyPI `moto`, server mode), started and stopped here.

A STAND-IN for S3, not S3. Caches with `storage.mode: s3` keep their layers in one
bucket, and Debian's docker-registry (the content-cache stand-in) has the s3-aws
driver, so the tests and the rehearsal need a real S3 API on the swarm:

- on the swarm, a process in the msr node's network namespace (as the MSR
  stand-in's front, rehearsal/upstream.py), on `http://<msr node address>:<port>`,
  where every node's containers and this machine reach it: Distribution's
  `regionendpoint`;
- without a swarm (`swarm=None`), on 127.0.0.1 of this machine, for unit tests.

It checks credentials as S3 does. moto lets its first `INITIAL_NO_AUTH_ACTION_COUNT`
actions through unsigned and then requires every request to be signed (SigV4, or
v2) with a key its IAM knows: `start` spends those actions on an IAM user whose
policy allows S3 on the bucket only, that user's access key and the bucket. From
then on a request signed with another key fails with InvalidAccessKeyId, with the
wrong secret with SignatureDoesNotMatch, and one for another bucket with AccessDenied.

What it keeps is in the server's memory only (objects over 16 MB spill to unlinked
temporary files), so `stop` leaves nothing: it ends the process and removes the
pid file and the log it wrote. Its log is werkzeug's access log, one line per
request, which `ObjectStore.requests` reads: what the caches asked for, and from
which node.

The server is `python -m rehearsal.object_store --listen HOST PORT --pid-file F
--instance NAME`: moto's own server, behind a command line that names the instance,
so that whoever stops it finds it by that, also after a killed run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearsal import processes as procs
from rehearsal.localswarm import LocalSwarm
from tools.redact import REDACT

ROOT = Path(__file__).resolve().parents[1]
MODULE = "rehearsal.object_store"
NETNS_DIR = Path("/run/netns")
INSTANCE_PREFIX = "msrc-object-store-"
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 5980
"""`make rehearse`'s; the end-to-end tests use ports of their own."""
DEFAULT_REGION = "us-east-1"
DEFAULT_BUCKET = "msr-cache-layers"
USER = "msr-cache"
READY_S = 20

# The workdir's files.
STORE_LOG, STORE_PID = "object-store.log", "object-store.pid"

# The unsigned actions `start` makes before moto checks signatures:
# CreateUser, PutUserPolicy, CreateAccessKey, CreateBucket.
BOOTSTRAP_ACTIONS = 4

# Where Distribution keeps a blob, under its rootdirectory.
_BLOB_KEY = re.compile(r"(?:^|/)docker/registry/v2/blobs/sha256/[0-9a-f]{2}/(?P<hex>[0-9a-f]{64})/data$")
# werkzeug's access log: `10.77.0.12 - - [01/Dec/2026 09:21:53] "GET /bucket/key HTTP/1.1" 200 -`,
# the request in colour (ANSI escapes) when its status is not 2xx.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ACCESS = re.compile(
    r'^(?P<client>\S+) - - \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>[0-9]{3}) '
)


class StoreError(RuntimeError):
    """The object store did not start, or answered unexpectedly."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


@dataclass(frozen=True)
class Request:
    """One request the store answered, from its access log."""

    client: str
    """The address it came from: a node's (10.77.0.12 for the cache node), or this machine's."""
    method: str
    path: str
    """As sent, query included: `/<bucket>/<key>` (Distribution addresses the bucket by path)."""
    status: int


@dataclass
class ObjectStore:
    host: str
    """Where it listens: the msr node's address, or 127.0.0.1 without a swarm."""
    port: int
    region: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    """The access key's secret, made by moto at start (never printed)."""
    workdir: Path
    """Its pid file and log."""

    @property
    def endpoint(self) -> str:
        """Distribution's `regionendpoint`: plain HTTP, so `secure: false`."""
        return f"http://{self.host}:{self.port}"

    def s3_parameters(self, rootdirectory: str | None = None, chunksize: int | None = None) -> dict[str, Any]:
        """Distribution's `storage.s3` parameters for this store, with the keys
        and values the program renders for `storage.mode: s3` (optional ones
        only when given)."""
        params: dict[str, Any] = {
            "bucket": self.bucket,
            "region": self.region,
            "regionendpoint": self.endpoint,
            "accesskey": self.access_key,
            "secretkey": self.secret_key,
            "encrypt": False,
            "secure": False,
            "v4auth": True,
        }
        if chunksize is not None:
            params["chunksize"] = chunksize
        if rootdirectory is not None:
            params["rootdirectory"] = rootdirectory
        return params

    def storage_section(
        self, rootdirectory: str | None = None, chunksize: int | None = None
    ) -> dict[str, Any]:
        """config.yml's whole `storage:` for a cache on this store, as the program
        renders it: deletes on (blobttl needs them), no redirect of clients to
        the bucket, and the s3 driver."""
        return {
            "delete": {"enabled": True},
            "redirect": {"disable": True},
            "s3": self.s3_parameters(rootdirectory, chunksize),
        }

    def client(self) -> Any:
        """A boto3 S3 client of this store, signing with its access key."""
        return _client("s3", self.endpoint, self.region, self.access_key, self.secret_key)

    # -- what it holds --------------------------------------------------------------

    def objects(self, prefix: str = "") -> list[StoredObject]:
        """Every object in the bucket (under `prefix`), by key."""
        found: list[StoredObject] = []
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            found += [StoredObject(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        return sorted(found, key=lambda o: o.key)

    def blobs(self) -> dict[str, int]:
        """The blobs Distribution stored in the bucket (under any rootdirectory):
        digest -> size. A layer a cache keeps is one of them."""
        found = {}
        for o in self.objects():
            m = _BLOB_KEY.search(o.key)
            if m:
                found[f"sha256:{m['hex']}"] = o.size
        return found

    # -- what it was asked ----------------------------------------------------------

    def requests(self) -> list[Request]:
        """Every request answered so far, in order (its own at start included)."""
        try:
            text = (self.workdir / STORE_LOG).read_text(errors="replace")
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            m = _ACCESS.match(_ANSI.sub("", line))
            if m:
                found.append(Request(m["client"], m["method"], m["path"], int(m["status"])))
        return found

    def blob_gets(self) -> list[tuple[str, str]]:
        """(client address, digest) of every blob read from the bucket with
        success, in order: a cache serving a layer from the store."""
        gets = []
        for r in self.requests():
            key = r.path.split("?", 1)[0]
            m = _BLOB_KEY.search(key)
            if r.method == "GET" and r.status in (200, 206) and key.startswith(f"/{self.bucket}/") and m:
                gets.append((r.client, f"sha256:{m['hex']}"))
        return gets

    def pid(self) -> int | None:
        return procs.read_pid(self.workdir / STORE_PID)


def start(
    swarm: LocalSwarm | None,
    workdir: Path,
    port: int = DEFAULT_PORT,
    *,
    bucket: str = DEFAULT_BUCKET,
    region: str = DEFAULT_REGION,
) -> ObjectStore:
    """Start the store with an empty `bucket` in `region`, on the msr node of
    `swarm` (on 127.0.0.1 of this machine when None), replacing one left from an
    earlier run on this port. Raises StoreError, saying why, when it does not serve."""
    stop(port)
    netns: Path | None = None
    host = LOOPBACK
    if swarm is not None:
        netns = NETNS_DIR / swarm.msr.hostname
        if not netns.exists():
            raise StoreError(f"no network namespace {netns}: the local swarm is not up (scripts/swarm.sh up)")
        host = swarm.msr.address
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    for stale in (STORE_LOG, STORE_PID):
        (workdir / stale).unlink(missing_ok=True)
    where = f"{host}:{port}" + (f" in {netns}" if netns else "")
    try:
        _launch(netns, host, port, workdir)
        _wait_ready(host, port, workdir, where)
        access_key, secret_key = _bootstrap(f"http://{host}:{port}", region, bucket)
    except BaseException:
        stop(port)
        _remove_files(workdir)  # also when the server exited by itself
        raise
    REDACT.add(secret_key)
    return ObjectStore(host, port, region, bucket, access_key, secret_key, workdir)


def stop(port: int | None = None) -> None:
    """End the store on `port` (every one when None), also one a killed run left,
    found by its command line, and remove its pid file and log (and its workdir,
    when that is then empty). Raises when a process survives SIGKILL."""
    pids = processes(port)
    files = {f for pid in pids if (f := _pid_file_of(pid)) is not None}
    if pids := procs.end(pids):
        raise StoreError(f"the object store (pids {pids}) did not exit after SIGKILL")
    for pid_file in files:
        _remove_files(pid_file.parent)


def processes(port: int | None = None) -> list[int]:
    """Pids of the stores on `port` (on any port when None), from their command lines."""
    return procs.instances(MODULE, INSTANCE_PREFIX, port)


# -- starting -------------------------------------------------------------------------


def _launch(netns: Path | None, host: str, port: int, workdir: Path) -> None:
    """The server, detached (setsid -f: nobody's child, no terminal, none of the
    caller's descriptors such as the swarm lock), in `netns` when given; this
    venv's python, from the repo root."""
    enter = ["nsenter", f"--net={netns}"] if netns is not None else []
    cmd = [
        "setsid", "-f", *enter,
        sys.executable, "-m", MODULE, "--listen", host, str(port),
        "--pid-file", str(workdir / STORE_PID), "--instance", f"{INSTANCE_PREFIX}{port}",
    ]  # fmt: skip
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with (workdir / STORE_LOG).open("ab") as log:
        subprocess.run(  # noqa: S603 - our own interpreter and arguments
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True, timeout=10
        )


def _wait_ready(host: str, port: int, workdir: Path, where: str) -> None:
    """Until moto's own API answers (which is not an action: it spends none of
    the unsigned ones)."""
    deadline = time.monotonic() + READY_S
    last: object = "no answer yet"
    while time.monotonic() < deadline:
        pid = procs.read_pid(workdir / STORE_PID)
        if pid is not None and not procs.alive(pid):
            last = "the server exited"
            break
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", "/moto-api/")
            status = conn.getresponse().status
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = exc
        finally:
            conn.close()
        time.sleep(0.2)
    raise StoreError(
        f"the object store did not start: http://{host}:{port}/moto-api/ ({where}) did not answer 200 "
        f"within {READY_S} s ({last}); its log {workdir / STORE_LOG} ends:\n{procs.tail(workdir / STORE_LOG)}"
    )


def _bootstrap(endpoint: str, region: str, bucket: str) -> tuple[str, str]:
    """The bucket, and a user allowed S3 on it only, with an access key: the
    unsigned actions moto allows. Returns (access key id, secret)."""
    import botocore.exceptions

    # Any key signs the unsigned actions: moto does not look at it yet.
    anyone = ("bootstrap", "bootstrap")
    iam = _client("iam", endpoint, region, *anyone)
    s3 = _client("s3", endpoint, region, *anyone)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    try:
        iam.create_user(UserName=USER)
        iam.put_user_policy(UserName=USER, PolicyName=f"{bucket}-only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=USER)["AccessKey"]
        REDACT.add(key["SecretAccessKey"])
        location = (
            {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        s3.create_bucket(Bucket=bucket, **location)
    except botocore.exceptions.ClientError as exc:
        raise StoreError(f"the object store at {endpoint} refused to set up bucket {bucket}: {exc}") from None
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def _client(service: str, endpoint: str, region: str, access_key: str, secret_key: str) -> Any:
    """A boto3 client of the store: path-style addressing (the bucket in the path,
    as Distribution's driver does with a regionendpoint), no proxy, a few retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        proxies={},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


# -- processes ------------------------------------------------------------------------


def _remove_files(workdir: Path) -> None:
    """The store's pid file and log, and `workdir` when that leaves it empty (the
    caller's own files stay)."""
    for name in (STORE_PID, STORE_LOG):
        (workdir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        workdir.rmdir()


def _pid_file_of(pid: int) -> Path | None:
    path = procs.arg(procs.cmdline(pid), "--pid-file")
    return Path(path) if path else None


# -- the server -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="moto's S3 server, named")
    parser.add_argument("--listen", nargs=2, metavar=("HOST", "PORT"), required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--instance", required=True, help="only labels the process, for stop()")
    args = parser.parse_args(argv)
    host, port = args.listen[0], int(args.listen[1])
    # Read by moto when it is imported: after these, every request must be signed.
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP_ACTIONS)
    args.pid_file.write_text(f"{os.getpid()}\n")
    from moto.server import main as moto_main

    moto_main(["--host", host, "--port", str(port)])


if __name__ == "__main__":
    main()
