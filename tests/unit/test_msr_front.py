"""The MSR stand-in's front (rehearsal/msr_front.py), in this process on 127.0.0.1,
over Debian's real Docker Distribution (/usr/bin/docker-registry) on another
loopback port: MSR's content-cache API, the users' cache setting, the blob
redirect, what is proxied and what the access log says. The same through
`Upstream`'s helpers, which the end-to-end tests and the rehearsal use."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from rehearsal import pki, upstream
from rehearsal.msr_front import Account, Settings, serve
from rehearsal.upstream import ACCESS_LOG, Upstream, sample_image
from tests.support.leakscan import remember
from tools.smoke import MANIFEST_V2, Registry, context_for

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_BIN = Path("/usr/bin/docker-registry")
CACHE = "https://cache.example.test:5443"

pytestmark = pytest.mark.skipif(not REGISTRY_BIN.exists(), reason="needs Debian's docker-registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = pki.make_ca("front test CA")
    leaf = pki.make_leaf("msr.test", ips=["127.0.0.1"], issuer=ca)
    (d / "ca.pem").write_text(ca.cert_pem)
    (d / "cert.pem").write_text(leaf.cert_pem)
    (d / "key.pem").write_text(leaf.key_pem)
    return Pki(d / "ca.pem", d / "cert.pem", d / "key.pem")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """Docker Distribution over plain HTTP, as the registry container behind the front."""
    d = tmp_path_factory.mktemp("registry")
    port = free_port()
    (d / "config.yml").write_text(
        "version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {d}/data}}, delete: {{enabled: true}}}}\n"
        f'http: {{addr: "127.0.0.1:{port}", secret: unit-test-only}}\n'
    )
    # AWS_CA_BUNDLE makes this registry panic at start (docs/local-swarm.md).
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    proc = subprocess.Popen(
        [str(REGISTRY_BIN), "serve", str(d / "config.yml")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 5
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"docker-registry did not start: {proc.communicate()[1][-2000:]!r}")
            time.sleep(0.02)
    yield ("127.0.0.1", port)
    proc.terminate()
    proc.wait(5)


@dataclass
class Stand:
    """A running front and the Upstream that the tests and the rehearsal would see."""

    up: Upstream
    settings: Settings

    @property
    def address(self) -> tuple[str, int]:
        return (self.up.host, self.up.port)

    def client(self, user: str | None = "admin") -> Registry:
        return self.up.registry(user)

    def raw(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        """A request whose answer is read by the test (streamed bodies, chunked uploads)."""
        conn = http.client.HTTPSConnection(
            *self.address, context=context_for(str(self.up.ca_file)), timeout=10
        )
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.body = resp.read()  # type: ignore[attr-defined]
        conn.close()
        return resp


@pytest.fixture
def start_front(tls: Pki, backend: tuple[str, int], tmp_path: Path) -> Iterator[Callable[..., Stand]]:
    started: list[Any] = []
    admin, tester = "a-" + os.urandom(16).hex(), "t-" + os.urandom(16).hex()
    remember(admin, "the front's admin token")
    remember(tester, "the front's test password")

    def start(**overrides: Any) -> Stand:
        settings = Settings(
            listen=("127.0.0.1", 0),
            backend=backend,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            accounts=(Account("admin", admin, admin=True), Account("tester", tester)),
            access_log=tmp_path / ACCESS_LOG,
        )
        settings = replace(settings, **overrides)
        front = serve(settings)
        threading.Thread(target=front.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(front)
        port = front.server_address[1]
        up = Upstream(
            "no-container", "127.0.0.1", port, tls.ca_file.read_text(), tls.ca_file, None, tmp_path,
            admin_token=admin, test_password=tester,
        )  # fmt: skip
        return Stand(up, settings)

    yield start
    for front in started:
        front.shutdown()
        front.server_close()


@pytest.fixture
def stand(start_front: Callable[..., Stand]) -> Stand:
    return start_front()


@pytest.fixture(scope="module")
def image() -> Any:
    """Made once: gzipping busybox is most of a push's time."""
    return sample_image()


@pytest.fixture
def pushed(stand: Stand, image: Any) -> tuple[str, Any]:
    """An image pushed through the front as the admin."""
    upstream.push(stand.up, "unit/app", "1", image)
    return "unit/app", image


def layer_of(image: Any) -> str:
    return next(d for d, data in image.blobs.items() if data[:2] == b"\x1f\x8b")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- the content-cache API ---------------------------------------------------------


def test_api_without_credentials_is_401_with_a_basic_challenge(stand: Stand) -> None:
    status, headers, _ = stand.client(None).request("GET", "/api/v0/content_caches")
    assert status == 401
    assert headers["www-authenticate"].startswith("Basic ")


def test_a_wrong_password_is_401(stand: Stand) -> None:
    status, _, _ = stand.client(None).request(
        "GET", "/api/v0/content_caches", headers=basic("admin", "not-the-token")
    )
    assert status == 401


def test_the_api_is_for_the_admin_only(stand: Stand) -> None:
    status, _ = stand.up.api("GET", "/api/v0/content_caches", as_user="tester")
    assert status == 403


def test_post_registers_a_cache_that_get_lists_and_finds(stand: Stand) -> None:
    status, made = stand.up.api("POST", "/api/v0/content_caches", {"name": "region-asia", "host": CACHE})
    assert status == 201
    assert isinstance(made["id"], str) and made["id"]
    assert made == {"id": made["id"], "name": "region-asia", "host": CACHE}
    assert stand.up.registrations() == [made]
    assert stand.up.api("GET", f"/api/v0/content_caches/{made['id']}") == (200, made)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"name": "taken", "host": CACHE}, "already registered"),
        ({"host": CACHE}, "name is missing"),
        ({"name": "no-host"}, "host is missing"),
        ({"name": "plain", "host": "http://cache.example.test:5443"}, "not an https:// URL"),
        ({"name": "bare", "host": "cache.example.test:5443"}, "not an https:// URL"),
        ({"name": "path", "host": "https://cache.example.test/v2"}, "without a path"),
        ("not an object", "expected a JSON object"),
    ],
    ids=["duplicate-name", "no-name", "no-host", "http-host", "no-scheme", "host-with-path", "not-object"],
)
def test_post_refuses_what_cannot_be_a_registration(stand: Stand, body: Any, says: str) -> None:
    stand.up.register_cache("taken", CACHE)
    status, answer = stand.up.api("POST", "/api/v0/content_caches", body)
    assert status == 400
    assert says in answer["errors"][0]["message"]
    assert [c["name"] for c in stand.up.registrations()] == ["taken"]


def test_post_refuses_a_body_that_is_not_json(stand: Stand) -> None:
    status, _, body = stand.client().request("POST", "/api/v0/content_caches", b"{name", {})
    assert status == 400
    assert "not JSON" in json.loads(body)["errors"][0]["message"]


def test_delete_removes_a_registration_once(stand: Stand) -> None:
    made = stand.up.register_cache("region-eu", CACHE)
    path = f"/api/v0/content_caches/{made['id']}"
    assert stand.up.api("DELETE", path) == (204, None)
    assert stand.up.api("GET", path)[0] == 404
    assert stand.up.api("DELETE", path)[0] == 404
    assert stand.up.registrations() == []


# -- the users' setting (the stand-in's control) -----------------------------------------


def test_the_control_sets_and_clears_a_users_cache(stand: Stand) -> None:
    made = stand.up.register_cache("region-asia", CACHE)
    path = "/_stand_in/users/tester/content_cache"
    assert stand.up.api("PUT", path, {"id": made["id"]}) == (200, {"user": "tester", "id": made["id"]})
    assert stand.up.api("PUT", path, {"id": None}) == (200, {"user": "tester", "id": None})


def test_the_control_refuses_an_unknown_user_404_and_an_unknown_cache_400(stand: Stand) -> None:
    assert stand.up.api("PUT", "/_stand_in/users/nobody/content_cache", {"id": None})[0] == 404
    assert stand.up.api("PUT", "/_stand_in/users/tester/content_cache", {"id": "no-such-id"})[0] == 400
    assert stand.up.api("PUT", "/_stand_in/users/tester/content_cache", {"cache": None})[0] == 400


def test_the_control_is_for_the_admin_only(stand: Stand) -> None:
    path = "/_stand_in/users/tester/content_cache"
    assert stand.up.api("PUT", path, {"id": None}, as_user=None)[0] == 401
    assert stand.up.api("PUT", path, {"id": None}, as_user="tester")[0] == 403


# -- /v2/ ------------------------------------------------------------------------------


def test_v2_without_credentials_asks_for_basic_auth(stand: Stand) -> None:
    status, headers, _ = stand.client(None).request("GET", "/v2/")
    assert status == 401
    assert headers["www-authenticate"] == 'Basic realm="msr-stand-in"'


def test_v2_with_a_users_credentials_is_200(stand: Stand) -> None:
    status, _, body = stand.client("tester").request("GET", "/v2/")
    assert (status, json.loads(body)) == (200, {})


def test_a_push_through_the_front_is_pulled_back_whole_by_a_user_without_a_cache(
    stand: Stand, pushed: tuple[str, Any]
) -> None:
    repo, image = pushed
    assert stand.client("tester").pull(repo, "1") == image


def test_upload_locations_point_at_the_front_not_the_registry(stand: Stand) -> None:
    status, headers, _ = stand.client().request("POST", "/v2/unit/loc/blobs/uploads/")
    assert status == 202
    assert headers["location"].startswith(f"https://127.0.0.1:{stand.up.port}/v2/unit/loc/blobs/uploads/")


def test_a_chunked_upload_is_streamed_to_the_registry(stand: Stand) -> None:
    """Docker sends layer uploads as PATCH with a chunked body."""
    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    auth = basic("admin", stand.up.admin_token)
    started = stand.raw("POST", "/v2/unit/chunked/blobs/uploads/", headers=auth)
    location = started.headers["Location"].split(str(stand.up.port), 1)[1]
    chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
    patched = stand.raw("PATCH", location, chunks, {**auth, "Content-Type": "application/octet-stream"})
    assert patched.status == 202, patched.body  # type: ignore[attr-defined]
    done = patched.headers["Location"].split(str(stand.up.port), 1)[1]
    assert stand.raw("PUT", f"{done}&digest={digest}", b"", auth).status == 201
    assert stand.client("tester").request("GET", f"/v2/unit/chunked/blobs/{digest}")[2] == data


def test_manifests_need_a_user(stand: Stand, pushed: tuple[str, Any]) -> None:
    repo, image = pushed
    status, _, _ = stand.client(None).request("GET", f"/v2/{repo}/manifests/1")
    assert status == 401
    status, headers, body = stand.client("tester").request(
        "GET", f"/v2/{repo}/manifests/1", headers={"Accept": MANIFEST_V2}
    )
    assert (status, body, headers["docker-content-digest"]) == (200, image.manifest, image.digest)


def test_anonymous_manifest_reads_when_configured_for_the_cache_stand_in(
    start_front: Callable[..., Stand], image: Any
) -> None:
    stand = start_front(anonymous_manifests=True)
    repo = "unit/anon"
    upstream.push(stand.up, repo, "1", image)
    status, _, body = stand.client(None).request(
        "GET", f"/v2/{repo}/manifests/1", headers={"Accept": MANIFEST_V2}
    )
    assert (status, body) == (200, image.manifest)
    assert stand.client(None).request("GET", "/v2/")[0] == 401
    assert stand.client(None).request("POST", f"/v2/{repo}/blobs/uploads/")[0] == 401


def test_pushes_need_a_user(stand: Stand) -> None:
    status, _, _ = stand.client(None).request("POST", "/v2/unit/anon/blobs/uploads/")
    assert status == 401


def test_a_user_with_a_cache_is_redirected_for_blobs_and_gets_no_body(
    stand: Stand, pushed: tuple[str, Any]
) -> None:
    repo, image = pushed
    made = stand.up.register_cache("region-asia", CACHE)
    stand.up.set_user_cache("tester", made["id"])
    layer = layer_of(image)
    for method in ("GET", "HEAD"):
        resp = stand.raw(method, f"/v2/{repo}/blobs/{layer}", headers=basic("tester", stand.up.test_password))
        assert resp.status == 307
        assert resp.headers["Location"] == f"{CACHE}/v2/{repo}/blobs/{layer}"
        assert resp.body == b""  # type: ignore[attr-defined]
    assert stand.up.blob_bytes_served([layer]) == 0


def test_a_user_with_a_cache_still_gets_manifests_from_msr(stand: Stand, pushed: tuple[str, Any]) -> None:
    repo, image = pushed
    stand.up.set_user_cache("tester", stand.up.register_cache("region-asia", CACHE)["id"])
    status, _, body = stand.client("tester").request(
        "GET", f"/v2/{repo}/manifests/1", headers={"Accept": MANIFEST_V2}
    )
    assert (status, body) == (200, image.manifest)


def test_the_cache_fetching_without_credentials_gets_the_blob(stand: Stand, pushed: tuple[str, Any]) -> None:
    repo, image = pushed
    stand.up.set_user_cache("tester", stand.up.register_cache("region-asia", CACHE)["id"])
    layer = layer_of(image)
    status, _, body = stand.client(None).request("GET", f"/v2/{repo}/blobs/{layer}")
    assert (status, body == image.blobs[layer]) == (200, True)


def test_deleting_a_registration_sends_its_users_back_to_msr(stand: Stand, pushed: tuple[str, Any]) -> None:
    repo, image = pushed
    made = stand.up.register_cache("region-asia", CACHE)
    stand.up.set_user_cache("tester", made["id"])
    stand.up.unregister_cache(made["id"])
    assert stand.up.api("GET", "/_stand_in/users/tester/content_cache") == (
        200,
        {"user": "tester", "id": None},
    )
    assert stand.client("tester").pull(repo, "1") == image


def test_a_range_request_is_passed_through(stand: Stand, pushed: tuple[str, Any]) -> None:
    repo, image = pushed
    layer = layer_of(image)
    resp = stand.raw("GET", f"/v2/{repo}/blobs/{layer}", headers={"Range": "bytes=10-19"})
    assert (resp.status, resp.body) == (206, image.blobs[layer][10:20])  # type: ignore[attr-defined]


def test_a_registry_that_does_not_answer_is_a_502_registry_error(start_front: Callable[..., Stand]) -> None:
    stand = start_front(backend=("127.0.0.1", free_port()))
    status, _, body = stand.client("tester").request("GET", "/v2/unit/app/manifests/1")
    assert status == 502
    assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"


# -- the access log, as Upstream reads it ------------------------------------------------


def test_the_access_log_has_a_line_per_request(stand: Stand, pushed: tuple[str, Any]) -> None:
    repo, image = pushed
    layer = layer_of(image)
    before = len(stand.up.front_log())
    stand.up.set_user_cache("tester", stand.up.register_cache("region-asia", CACHE)["id"])
    stand.client("tester").request("GET", f"/v2/{repo}/blobs/{layer}")
    stand.client(None).request("GET", f"/v2/{repo}/blobs/{layer}")
    *_, redirect, served = stand.up.front_log()[before:]
    path = f"/v2/{repo}/blobs/{layer}"
    assert {k: redirect[k] for k in ("method", "path", "user", "status", "bytes", "location")} == {
        "method": "GET", "path": path, "user": "tester", "status": 307, "bytes": 0, "location": CACHE + path,
    }  # fmt: skip
    assert {k: served[k] for k in ("method", "path", "user", "status", "bytes", "location")} == {
        "method": "GET", "path": path, "user": None, "status": 200, "bytes": len(image.blobs[layer]),
        "location": None,
    }  # fmt: skip
    assert served["time"] and served["client"] == "127.0.0.1"


def test_blob_gets_and_bytes_count_what_msr_served_not_redirects(
    stand: Stand, pushed: tuple[str, Any]
) -> None:
    repo, image = pushed
    layer = layer_of(image)
    assert stand.up.blob_gets() == []  # a push sends no blob GET
    stand.client("tester").pull(repo, "1")
    stand.up.set_user_cache("tester", stand.up.register_cache("region-asia", CACHE)["id"])
    stand.client("tester").request("GET", f"/v2/{repo}/blobs/{layer}")  # redirected
    assert sorted(stand.up.blob_gets()) == sorted(image.blobs)
    assert stand.up.blob_bytes_served() == sum(len(b) for b in image.blobs.values())
    assert stand.up.blob_bytes_served([layer]) == len(image.blobs[layer])


# -- the process: `python -m rehearsal.msr_front` ----------------------------------------


def test_the_command_serves_writes_its_pid_and_leaves_nothing_on_sigterm(
    tls: Pki, backend: tuple[str, int], tmp_path: Path
) -> None:
    port = free_port()
    token = "cli-" + os.urandom(16).hex()
    remember(token, "the command's admin token")
    config = tmp_path / "front.json"
    config.write_text(
        json.dumps(
            {
                "listen": ["127.0.0.1", port], "backend": list(backend),
                "cert_file": str(tls.cert_file), "key_file": str(tls.key_file),
                "users": [{"name": "admin", "password": token, "admin": True}],
                "access_log": "access.jsonl", "pid_file": "front.pid",
            }
        )
    )  # fmt: skip
    instance = f"{upstream.INSTANCE_PREFIX}{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rehearsal.msr_front", "--config", str(config), "--instance", instance],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        client = Registry(("127.0.0.1", port), "127.0.0.1", str(tls.ca_file), auth=("admin", token))
        client.wait_ready(5)
        assert (tmp_path / "front.pid").read_text().strip() == str(proc.pid)
        assert upstream.front_processes(port) == [proc.pid]
        upstream.stop_fronts(port)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "front.pid").exists()
    assert upstream.front_processes(port) == []
    out = proc.stdout.read() if proc.stdout else ""
    assert "STAND-IN for MSR" in out and token not in out


def test_the_command_refuses_a_config_without_an_admin(tmp_path: Path) -> None:
    config = tmp_path / "front.json"
    config.write_text(json.dumps({"listen": ["127.0.0.1", 1], "backend": ["127.0.0.1", 2], "users": []}))
    run = subprocess.run(
        [sys.executable, "-m", "rehearsal.msr_front", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert "users must hold an admin" in run.stderr


def test_upstream_credentials_stay_out_of_its_repr(stand: Stand) -> None:
    assert stand.up.admin_token not in repr(stand.up)
    assert stand.up.test_password not in repr(stand.up)
