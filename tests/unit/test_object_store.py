"""The object store (rehearsal/object_store.py), moto's S3 server, on 127.0.0.1 of this
machine (no swarm): a bucket and a key at start, credentials checked as S3 checks
them, what it holds and what it was asked, and nothing left after stop. Then the
content-cache stand-in's start.sh with config.yml's `storage:` for object storage,
as the program renders it; and, where Debian's docker-registry is installed, the
stand-in with the real registry keeping a layer it fetched in the store's bucket."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import yaml

from components.registry_config import CacheConfig, render_config
from rehearsal import object_store
from rehearsal.object_store import STORE_LOG, STORE_PID, ObjectStore, Request, StoreError
from tests.support.leakscan import remember
from tools.redact import MASK, REDACT

ROOT = Path(__file__).resolve().parents[2]
START_SH = ROOT / "rehearsal" / "images" / "content-cache" / "start.sh"
BUSYBOX = shutil.which("busybox")
REAL_REGISTRY = Path("/usr/bin/docker-registry")
ROOTDIR = "/msr-cache"

needs_busybox = pytest.mark.skipif(
    BUSYBOX is None, reason="busybox is not installed (Debian: busybox-static)"
)
needs_registry = pytest.mark.skipif(
    not os.access(REAL_REGISTRY, os.X_OK) or BUSYBOX is None,
    reason=f"{REAL_REGISTRY} or busybox is absent (Debian: docker-registry, busybox-static)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """One store for the module's read-mostly tests (each takes keys of its own)."""
    port = free_port()
    started = object_store.start(None, tmp_path_factory.mktemp("store") / "work", port, region="eu-central-1")
    yield started
    object_store.stop(port)


@pytest.fixture
def known(store: ObjectStore) -> ObjectStore:
    remember(store.secret_key, "the object store's secret key")
    return store


def client_error(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(*args, **kwargs)
    return str(caught.value.response["Error"]["Code"])


def blob_key(data: bytes, root: str = ROOTDIR) -> tuple[str, str]:
    """(digest, key) of `data` stored as Distribution stores a blob under `root`."""
    hexdigest = hashlib.sha256(data).hexdigest()
    return (
        f"sha256:{hexdigest}",
        f"{root.strip('/')}/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data",
    )


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------


def test_start_gives_an_empty_bucket_and_distributions_parameters(known: ObjectStore) -> None:
    assert known.host == "127.0.0.1"
    assert known.endpoint == f"http://127.0.0.1:{known.port}"
    assert (known.region, known.bucket) == ("eu-central-1", object_store.DEFAULT_BUCKET)
    assert known.client().get_bucket_location(Bucket=known.bucket)["LocationConstraint"] == "eu-central-1"
    assert known.access_key.startswith("AKIA") and len(known.secret_key) >= 40
    assert known.pid() in object_store.processes(known.port)

    # What the program renders for storage.mode s3 (optional keys only when set).
    assert known.storage_section(ROOTDIR, 5 * 2**20) == {
        "delete": {"enabled": True},
        "redirect": {"disable": True},
        "s3": {
            "bucket": known.bucket,
            "region": "eu-central-1",
            "regionendpoint": known.endpoint,
            "accesskey": known.access_key,
            "secretkey": known.secret_key,
            "encrypt": False,
            "secure": False,
            "v4auth": True,
            "chunksize": 5 * 2**20,
            "rootdirectory": ROOTDIR,
        },
    }
    assert "chunksize" not in known.s3_parameters() and "rootdirectory" not in known.s3_parameters()


def test_the_secret_is_not_in_its_repr(known: ObjectStore) -> None:
    assert known.secret_key not in repr(known)
    assert known.access_key in repr(known)


def test_only_its_access_key_with_its_secret_reaches_only_its_bucket(known: ObjectStore) -> None:
    key = "creds/check"
    known.client().put_object(Bucket=known.bucket, Key=key, Body=b"1")

    def signed(access_key: str, secret_key: str) -> Any:
        return object_store._client("s3", known.endpoint, known.region, access_key, secret_key)

    wrong_secret = signed(known.access_key, known.secret_key[::-1])
    assert client_error(wrong_secret.get_object, Bucket=known.bucket, Key=key) == "SignatureDoesNotMatch"
    unknown = signed("AKIAUNKNOWN000000000", known.secret_key)
    assert client_error(unknown.list_objects_v2, Bucket=known.bucket) == "InvalidAccessKeyId"
    # The key's policy names the bucket: another one is out of reach.
    assert (
        client_error(known.client().create_bucket, Bucket="another-bucket",
                     CreateBucketConfiguration={"LocationConstraint": known.region})
        == "AccessDenied"
    )  # fmt: skip
    assert known.client().get_object(Bucket=known.bucket, Key=key)["Body"].read() == b"1"


def test_objects_and_blobs_list_what_distribution_would_store(known: ObjectStore) -> None:
    layer = os.urandom(1000)
    digest, key = blob_key(layer)
    other_root_digest, other_root_key = blob_key(b"elsewhere", "/another/root")
    client = known.client()
    client.put_object(Bucket=known.bucket, Key=key, Body=layer)
    client.put_object(Bucket=known.bucket, Key=other_root_key, Body=b"elsewhere")
    client.put_object(
        Bucket=known.bucket, Key="msr-cache/docker/registry/v2/repositories/x/_layers/l", Body=b""
    )

    assert object_store.StoredObject(key, 1000) in known.objects()
    assert [o.key for o in known.objects(prefix=key)] == [key]
    blobs = known.blobs()
    assert (blobs[digest], blobs[other_root_digest]) == (1000, len(b"elsewhere"))
    assert all(d.startswith("sha256:") and len(d) == 71 for d in blobs)


def test_blob_gets_name_the_client_and_digest_of_each_successful_read(known: ObjectStore) -> None:
    layer = os.urandom(100)
    digest, key = blob_key(layer)
    client = known.client()
    client.put_object(Bucket=known.bucket, Key=key, Body=layer)
    before = len(known.blob_gets())
    # Distribution reads with a Range header; a GET of a missing blob is no read.
    assert client.get_object(Bucket=known.bucket, Key=key, Range="bytes=0-")["Body"].read() == layer
    missing = blob_key(b"never stored")[1]
    assert client_error(client.get_object, Bucket=known.bucket, Key=missing) == "NoSuchKey"

    deadline = time.monotonic() + 5
    while len(known.blob_gets()) == before and time.monotonic() < deadline:
        time.sleep(0.05)  # the log line is written after the answer
    assert known.blob_gets()[before:] == [("127.0.0.1", digest)]
    assert any(r.method == "PUT" and r.path.endswith(key) and r.status == 200 for r in known.requests())


def test_requests_read_werkzeugs_access_log_coloured_or_not(tmp_path: Path) -> None:
    log = tmp_path / STORE_LOG
    log.write_text(
        " * Running on http://10.77.0.13:5985\n"
        '10.77.0.12 - - [01/Dec/2026 09:21:53] "PUT /b/k HTTP/1.1" 200 -\n'
        "10.77.0.11 - - [01/Dec/2026 09:21:53] "
        '"\x1b[31m\x1b[1mGET /b?list-type=2&prefix=x HTTP/1.1\x1b[0m" 403 -\n'
        "Traceback (most recent call last):\n"
        '10.77.0.12 - - [01/Dec/2026 09:21:54] "\x1b[33mGET /b/k HTTP/1.1\x1b[0m" 404 -\n'
    )
    s = ObjectStore("10.77.0.13", 5985, "us-east-1", "b", "AKIA", "s" * 40, tmp_path)
    assert s.requests() == [
        Request("10.77.0.12", "PUT", "/b/k", 200),
        Request("10.77.0.11", "GET", "/b?list-type=2&prefix=x", 403),
        Request("10.77.0.12", "GET", "/b/k", 404),
    ]
    (tmp_path / STORE_LOG).unlink()
    assert s.requests() == [] and s.blob_gets() == []


def test_stop_leaves_no_process_and_no_file_also_after_a_killed_run(tmp_path: Path) -> None:
    port = free_port()
    workdir = tmp_path / "store"
    try:
        # The first is left running, as a killed run leaves it; the second replaces it.
        object_store.start(None, workdir, port)
        second = object_store.start(None, workdir, port)
        remember(second.secret_key, "the object store's secret key")
        assert object_store.processes(port) == [second.pid()]
        assert REDACT(f"key {second.secret_key}") == f"key {MASK}"
        assert {p.name for p in workdir.iterdir()} == {STORE_LOG, STORE_PID}
    finally:
        object_store.stop(port)
    assert object_store.processes(port) == []
    assert not workdir.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    object_store.stop(port)  # nothing left to stop: no error


def test_stop_keeps_the_callers_own_files(tmp_path: Path) -> None:
    port = free_port()
    workdir = tmp_path / "store"
    workdir.mkdir()
    (workdir / "mine").write_text("x")
    try:
        object_store.start(None, workdir, port)
    finally:
        object_store.stop(port)
    assert [p.name for p in workdir.iterdir()] == ["mine"]


def test_a_store_that_cannot_listen_fails_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"did not start: .*the server exited.*its log") as caught:
            object_store.start(None, tmp_path / "store", port)
        assert time.monotonic() - started < object_store.READY_S
    assert "Address already in use" in str(caught.value)
    assert object_store.processes(port) == []
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------------
# The content-cache stand-in's start.sh with object storage
# ---------------------------------------------------------------------------

FAKE_REGISTRY = '#!/bin/sh\nfor arg in "$@"; do printf \'argv=%s\\n\' "$arg"; done\n'
# An AWS-style secret: base64 letters, + and /, as safe_dump writes them (plain).
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def program_config(storage: dict[str, Any], upstream: str = "http://127.0.0.1:1") -> str:
    """config.yml as the program renders it, with `storage` and plain HTTP (no TLS files)."""
    document = yaml.safe_load(
        render_config(CacheConfig(cache_url="https://cache.example.com:443", upstreams=[upstream],
                                  http_secret="http-secret-for-tests", trust_msr_ca=False))
    )  # fmt: skip
    document["storage"] = storage
    del document["http"]["tls"]
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def s3_storage(endpoint: str = "http://10.77.0.13:5985", **extra: Any) -> dict[str, Any]:
    return {
        "delete": {"enabled": True},
        "redirect": {"disable": True},
        "s3": {
            "bucket": "msr-cache-layers",
            "region": "us-east-1",
            "regionendpoint": endpoint,
            "accesskey": "AKIAIOSFODNN7EXAMPLE",
            "secretkey": SECRET,
            "encrypt": False,
            "secure": False,
            "v4auth": True,
            **extra,
        },
    }


def run_start_sh(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "fake-registry"
    fake.write_text(FAKE_REGISTRY)
    fake.chmod(0o755)
    config = tmp_path / "config.yml"
    config.write_text(text)
    assert BUSYBOX is not None
    env = {"PATH": "/usr/bin:/bin", "STAND_IN_WORKDIR": str(tmp_path / "work"), "REGISTRY_BIN": str(fake)}
    return subprocess.run(
        [BUSYBOX, "sh", str(START_SH), str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_busybox
@pytest.mark.parametrize(
    "extra", [{}, {"chunksize": 5242880, "rootdirectory": ROOTDIR}], ids=["required", "all"]
)
def test_start_sh_passes_s3_storage_through_and_shows_where_layers_go_not_the_keys(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    remember(SECRET, "the example S3 secret")
    storage = s3_storage(**extra)
    text = program_config(storage)
    assert f"secretkey: {SECRET}\n" in text, "safe_dump writes the secret plain: the case to read"
    proc = run_start_sh(tmp_path, text)
    assert proc.returncode == 0, proc.stderr
    derived = yaml.safe_load((tmp_path / "work" / "registry.yml").read_text())
    assert derived["storage"] == storage
    assert "middleware" not in derived and derived["proxy"] == {"remoteurl": "http://127.0.0.1:1"}
    banner = proc.stderr
    where = "bucket=msr-cache-layers, regionendpoint=http://10.77.0.13:5985"
    assert f"storage=s3 ({where}, rootdirectory={extra.get('rootdirectory', '')})" in banner
    assert SECRET not in banner and "AKIAIOSFODNN7EXAMPLE" not in banner


@needs_busybox
@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"azure": {"accountname": "a", "accountkey": "k", "container": "c"}},
         "storage.azure: the stand-in's Distribution (Debian's docker-registry 2.8) has no azure driver"),
        ({"gcs": {"bucket": "b"}}, "has no gcs driver, only filesystem, inmemory, s3 and swift"),
        ({"delete": {"enabled": True}}, "storage names no driver"),
        ({**s3_storage(), "swift": {"container": "c"}}, "storage names more than one driver (s3 swift)"),
        ({**s3_storage(), "tag": {"concurrencylimit": 2}},
         "storage.tag is neither a storage driver nor an option Distribution 2.8 knows"),
    ],
    ids=["azure", "gcs", "none", "two", "unknown-option"],
)  # fmt: skip
def test_start_sh_refuses_storage_the_stand_in_cannot_run(
    tmp_path: Path, storage: dict[str, Any], message: str
) -> None:
    proc = run_start_sh(tmp_path, program_config(storage))
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "argv=" not in proc.stdout, "the registry must not be started"


# ---------------------------------------------------------------------------
# The stand-in with the real registry: a layer it fetched lands in the bucket
# ---------------------------------------------------------------------------


def wait_http(port: int, path: str = "/v2/", within: float = 15, log: Path | None = None) -> None:
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path)
            if (status := conn.getresponse().status) == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = exc
        finally:
            conn.close()
        time.sleep(0.1)
    pytest.fail(f"127.0.0.1:{port}{path} did not answer 200 ({last}):\n{log.read_text() if log else ''}")


def http_request(
    port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            method, path, body=body, headers={"Content-Type": "application/octet-stream"} if body else {}
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


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


@needs_registry
def test_the_stand_in_keeps_a_layer_it_fetched_in_the_bucket_and_serves_it_from_there(
    tmp_path: Path, known: ObjectStore, processes: list[subprocess.Popen[bytes]]
) -> None:
    # The upstream: a plain registry on loopback, holding one blob.
    up_port = free_port()
    (tmp_path / "up.yml").write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "up-data")}},
        "http": {"addr": f"127.0.0.1:{up_port}"},
    }))  # fmt: skip
    with (tmp_path / "up.log").open("wb") as out:
        processes.append(
            subprocess.Popen([str(REAL_REGISTRY), "serve", str(tmp_path / "up.yml")],
                             env={"PATH": "/usr/bin:/bin"}, stdout=out, stderr=subprocess.STDOUT)
        )  # fmt: skip
    wait_http(up_port, log=tmp_path / "up.log")
    layer = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    status, headers, _ = http_request(up_port, "POST", "/v2/unit/layers/blobs/uploads/")
    assert status == 202
    location = headers["location"].split(f"127.0.0.1:{up_port}", 1)[-1]
    status, _, _ = http_request(up_port, "PUT", f"{location}&digest={digest}", layer)
    assert status == 201

    # The cache: start.sh with the real registry, storing in the bucket under its own root.
    root = f"/unit-{os.urandom(4).hex()}"
    cache_port = free_port()
    document = yaml.safe_load(program_config(known.storage_section(root), f"http://127.0.0.1:{up_port}"))
    document["http"]["addr"] = f"127.0.0.1:{cache_port}"
    (tmp_path / "config.yml").write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
    assert BUSYBOX is not None
    # No AWS_CA_BUNDLE: with it Distribution 2.8's s3 driver panics at start (containers never have it).
    env = {
        "PATH": "/usr/bin:/bin",
        "STAND_IN_WORKDIR": str(tmp_path / "work"),
        "REGISTRY_BIN": str(REAL_REGISTRY),
    }
    log = tmp_path / "cache.log"
    with log.open("wb") as out:
        processes.append(
            subprocess.Popen([BUSYBOX, "sh", str(START_SH), str(tmp_path / "config.yml")], env=env,
                             stdout=out, stderr=subprocess.STDOUT)
        )  # fmt: skip
    wait_http(cache_port, log=log)

    status, _, body = http_request(cache_port, "GET", f"/v2/unit/layers/blobs/{digest}")
    assert (status, body == layer) == (200, True), log.read_text()
    deadline = time.monotonic() + 15
    while known.blobs().get(digest) != len(layer) and time.monotonic() < deadline:
        time.sleep(0.2)  # Distribution 2.8's proxy stores its own second copy of the blob
    stored = [o for o in known.objects(root.lstrip("/") + "/") if o.key.endswith(f"/{digest[7:]}/data")]
    assert [o.size for o in stored] == [len(layer)], log.read_text()

    # Served again from the bucket: read there, MSR's stand-in not asked.
    processes[0].terminate()
    processes[0].wait(timeout=5)
    reads = len(known.blob_gets())
    status, _, body = http_request(cache_port, "GET", f"/v2/unit/layers/blobs/{digest}")
    assert (status, body == layer) == (200, True), log.read_text()
    deadline = time.monotonic() + 5
    while len(known.blob_gets()) == reads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ("127.0.0.1", digest) in known.blob_gets()[reads:]
    assert known.secret_key not in log.read_text()
