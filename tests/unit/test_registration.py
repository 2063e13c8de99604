"""The cache's registration with MSR (components/registration.py): its dynamic
provider against a small HTTPS fake of MSR's documented content-cache API, and
the program's wiring (secret token, order, exports)."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dill
import pytest

from components.registration import API_PATH, RegistrationError, RegistrationProvider
from rehearsal import pki
from rehearsal.engine import ROOT, run_program

TOKEN = "s3cret-access-token"
CA = pki.make_ca("fake MSR CA")


class FakeMsr:
    """MSR's content-cache API as documented; what a POST answers is settable."""

    def __init__(self) -> None:
        self.caches: dict[str, dict[str, str]] = {}
        self.next_id = 1
        self.post_answer: tuple[int, Any] | None = None  # force an answer to POST
        self.requests: list[tuple[str, str]] = []


def _handler(msr: FakeMsr) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self) -> bool:
            expected = "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                return False
            return True

        def do_GET(self) -> None:
            msr.requests.append(("GET", self.path))
            if self.authorized() and self.path == API_PATH:
                self.reply(200, list(msr.caches.values()))

        def do_POST(self) -> None:
            msr.requests.append(("POST", self.path))
            if not self.authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if msr.post_answer is not None:
                self.reply(*msr.post_answer)
                return
            if any(c["name"] == body["name"] for c in msr.caches.values()):
                self.reply(400, {"errors": [{"message": "a content cache with this name exists"}]})
                return
            entry = {"id": f"c{msr.next_id}", "name": body["name"], "host": body["host"]}
            msr.next_id += 1
            msr.caches[entry["id"]] = entry
            self.reply(201, entry)

        def do_DELETE(self) -> None:
            msr.requests.append(("DELETE", self.path))
            if self.authorized():
                found = msr.caches.pop(self.path.rsplit("/", 1)[-1], None)
                self.reply(204 if found else 404)

    return Handler


@pytest.fixture
def msr(tmp_path: Path) -> Iterator[tuple[FakeMsr, dict[str, Any]]]:
    fake = FakeMsr()
    leaf = pki.make_leaf("localhost", dns=["localhost"], ips=["127.0.0.1"], issuer=CA)
    (tmp_path / "cert.pem").write_text(leaf.cert_pem)
    (tmp_path / "key.pem").write_text(leaf.key_pem)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    props = {
        "api": f"https://127.0.0.1:{server.server_address[1]}",
        "ca_pem": CA.cert_pem,
        "user": "admin",
        "token": TOKEN,
        "name": "region-asia",
        "host": "https://cache-asia.example.com",
    }
    yield fake, props
    server.shutdown()
    server.server_close()


P = RegistrationProvider()


def outs(result: Any) -> dict[str, Any]:
    assert result.outs is not None
    return dict(result.outs)


def test_create_registers_and_delete_removes(msr: tuple[FakeMsr, dict[str, Any]]) -> None:
    fake, props = msr
    made = P.create(props)
    assert fake.caches[made.id] == {"id": made.id, "name": "region-asia", "host": props["host"]}
    assert outs(made)["registration_id"] == made.id and outs(made)["adopted"] is False
    P.delete(made.id, outs(made))
    assert fake.caches == {}
    P.delete(made.id, outs(made))  # already gone: fine


def test_an_existing_registration_of_the_same_name_and_host_is_adopted(
    msr: tuple[FakeMsr, dict[str, Any]],
) -> None:
    fake, props = msr
    fake.caches["c9"] = {"id": "c9", "name": "region-asia", "host": props["host"] + "/"}
    made = P.create(props)
    assert (made.id, outs(made)["adopted"]) == ("c9", True)
    assert ("POST", API_PATH) not in fake.requests


def test_the_same_name_for_another_host_is_refused_naming_cache_name(
    msr: tuple[FakeMsr, dict[str, Any]],
) -> None:
    fake, props = msr
    fake.caches["c9"] = {"id": "c9", "name": "region-asia", "host": "https://cache-eu.example.com"}
    with pytest.raises(
        RegistrationError, match=r"already has a content cache named 'region-asia'.*cacheName"
    ):
        P.create(props)


def test_refresh_sees_a_registration_deleted_or_changed_in_msr(msr: tuple[FakeMsr, dict[str, Any]]) -> None:
    fake, props = msr
    made = P.create(props)
    fake.caches[made.id]["host"] = "https://elsewhere.example.com"
    seen = P.read(made.id, outs(made))
    assert seen.id == made.id and outs(seen)["host"] == "https://elsewhere.example.com"
    assert P.diff(made.id, outs(seen), props).replaces == ["host"]
    fake.caches.clear()
    assert P.read(made.id, outs(made)).id is None


def test_a_new_host_or_name_replaces_deleting_first_and_new_credentials_update(
    msr: tuple[FakeMsr, dict[str, Any]],
) -> None:
    _, props = msr
    moved = P.diff("c1", props, props | {"host": "https://cache-asia.example.com:8443"})
    assert moved.replaces == ["host"] and moved.delete_before_replace
    assert P.diff("c1", props, props | {"name": "asia-2"}).replaces == ["name"]
    rotated = P.diff("c1", props, props | {"token": "another-token"})
    assert rotated.changes and not rotated.replaces
    assert not P.diff("c1", props, dict(props)).changes


def test_an_id_missing_from_the_post_answer_is_found_by_name(msr: tuple[FakeMsr, dict[str, Any]]) -> None:
    fake, props = msr
    fake.caches["c7"] = {"id": "c7", "name": "other", "host": "https://other"}

    def answer_empty_then_list() -> None:
        fake.caches["c8"] = {"id": "c8", "name": props["name"], "host": props["host"]}

    fake.post_answer = (201, None)
    original = fake.caches.copy()
    answer_empty_then_list()  # MSR stored it, but answered no body
    fake.caches = {"c7": original["c7"]}
    with pytest.raises(RegistrationError, match="accepted content cache 'region-asia' but does not list it"):
        P.create(props)
    fake.caches["c8"] = {"id": "c8", "name": props["name"], "host": props["host"]}
    assert P.created_id(props, _Answer(201, None)) == "c8"


class _Answer:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code, self._body, self.text, self.reason = status, body, "", ""

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("no body")
        return self._body


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token": "wrong-token"}, r"refused the credentials of msr-cache:msrUser 'admin' \(HTTP 401\)"),
        (
            {"ca_pem": pki.make_ca("not MSR's CA").cert_pem},
            r"could not be verified; expected msr-cache:msrCaCert",
        ),
        ({"ca_pem": ""}, r"could not be verified"),
    ],
)
def test_errors_name_the_setting_to_fix_and_never_the_token(
    msr: tuple[FakeMsr, dict[str, Any]], change: dict[str, str], message: str
) -> None:
    _, props = msr
    with pytest.raises(RegistrationError, match=message) as err:
        P.create(props | change)
    assert TOKEN not in str(err.value) and "wrong-token" not in str(err.value)


def test_an_unreachable_msr_names_msr_host_and_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    props = {"api": f"https://127.0.0.1:{port}", "ca_pem": "", "user": "admin", "token": TOKEN}
    with pytest.raises(RegistrationError, match=r"unreachable.*msr-cache:msrHost and msr-cache:msrPort"):
        P.create(props | {"name": "n", "host": "https://h"})


def test_a_refused_post_says_what_msr_said(msr: tuple[FakeMsr, dict[str, Any]]) -> None:
    fake, props = msr
    fake.post_answer = (400, {"errors": [{"message": "host must be an https URL"}]})
    with pytest.raises(RegistrationError) as err:
        P.create(props)
    assert "HTTP 400" in str(err.value) and "host must be an https URL" in str(err.value)
    assert "msr-cache:cacheName and msr-cache:cacheHost/cachePort" in str(err.value)


def test_the_serialized_provider_works_in_a_fresh_interpreter(
    msr: tuple[FakeMsr, dict[str, Any]], tmp_path: Path
) -> None:
    """As the engine runs it: dill-pickled (recurse, as pulumi.dynamic does),
    loaded where this project cannot be imported; no secret in the pickle."""
    import pickle

    fake, props = msr
    blob = dill.dumps(RegistrationProvider(), protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
    assert TOKEN.encode() not in blob
    (tmp_path / "provider.pkl").write_bytes(blob)
    (tmp_path / "props.json").write_text(json.dumps(props))
    script = (
        f"import dill, json, sys; sys.path = [p for p in sys.path if p.rstrip('/') != {str(ROOT)!r}]\n"
        "p = dill.loads(open('provider.pkl', 'rb').read()); props = json.load(open('props.json'))\n"
        "made = p.create(props); print(made.id)\n"
        "try:\n    p.create(props | {'host': 'https://other'})\n"
        "except Exception as e:\n    print(type(e).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    made_id, error = proc.stdout.split()
    assert fake.caches[made_id]["name"] == "region-asia" and error == "RegistrationError"


# -- the program --------------------------------------------------------------

REGISTER = {"register": True, "msrUser": "admin", "msrToken": TOKEN, "cacheName": "region-asia"}


def test_the_program_registers_after_the_service_with_the_token_secret() -> None:
    run = run_program(REGISTER, secret_keys=("msrToken",))
    entry = run.named("msr-cache-registration-entry")
    assert entry.typ == "pulumi-python:dynamic/msrcache:Registration"
    assert entry.inputs["name"] == "region-asia" and entry.inputs["host"] == "https://cache.example.com"
    assert entry.inputs["api"] == "https://msr.example.com:443"
    assert entry.inputs["token"] != TOKEN and "value" in entry.inputs["token"], "a secret wrapper"
    assert "registrationId" in run.exports


def test_register_false_registers_nothing() -> None:
    run = run_program({"register": False})
    assert not [r for r in run.resources if "registration" in r.name]
    assert run.exports["registrationId"] is None


def test_the_cache_name_defaults_to_the_stack() -> None:
    run = run_program(
        {k: v for k, v in REGISTER.items() if k != "cacheName"}, secret_keys=("msrToken",), stack="asia"
    )
    assert run.named("msr-cache-registration-entry").inputs["name"] == "asia"
