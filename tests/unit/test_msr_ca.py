"""Fetching MSR's CA from a real HTTPS server on 127.0.0.1, alone and in the program.

The server presents a self-signed certificate, as a fresh MSR does: the fetch
must succeed without verifying it, like `curl -sk https://<msr>/ca`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pulumi
import pytest
import yaml

from components.msr_ca import FetchError, fetch_msr_ca
from rehearsal import engine as program
from rehearsal import pki
from tests.unit.test_program import openssl_style_sha256

HOST = "127.0.0.1"
MSR_CA = pki.make_ca("MSR Test Root CA")
CA_PEM = MSR_CA.cert_pem
_NOW = dt.datetime.now(dt.UTC)
EXPIRED_PEM = pki.make_leaf(
    "expired", not_before=_NOW - dt.timedelta(days=10), not_after=_NOW - dt.timedelta(days=1)
).cert_pem
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class _Server(http.server.ThreadingHTTPServer):
    routes: dict[str, tuple[int, bytes]]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes = cast(_Server, self.server).routes
        status, body = routes.get(self.path, (404, b"404 page not found\n"))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _https_server(routes: dict[str, tuple[int, bytes]], tmp: Path) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate; yields its port."""
    server_cert = pki.make_leaf(HOST, ips=[HOST])
    cert_file, key_file = tmp / "server.crt", tmp / "server.key"
    cert_file.write_text(server_cert.cert_pem)
    key_file.write_text(server_cert.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = _Server((HOST, 0), _Handler)
    server.routes = routes
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module", autouse=True)
def _no_proxy() -> Iterator[None]:
    """urllib honours *_proxy: keep every request on 127.0.0.1."""
    with pytest.MonkeyPatch.context() as mp:
        for var in PROXY_VARS:
            mp.delenv(var, raising=False)
        mp.setenv("no_proxy", "*")
        mp.setenv("NO_PROXY", "*")
        yield


@pytest.fixture
def serving_ca(tmp_path: Path) -> Iterator[int]:
    with _https_server({"/ca": (200, CA_PEM.encode())}, tmp_path) as port:
        yield port


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# fetch_msr_ca
# ---------------------------------------------------------------------------


def test_fetch_returns_the_served_ca(serving_ca: int) -> None:
    assert fetch_msr_ca(HOST, serving_ca, timeout=5) == CA_PEM


def test_fetch_of_a_missing_ca_reports_http_404(tmp_path: Path) -> None:
    with _https_server({}, tmp_path) as port, pytest.raises(FetchError, match="HTTP 404"):
        fetch_msr_ca(HOST, port, timeout=5)


def test_fetch_of_a_body_that_is_not_pem_fails(tmp_path: Path) -> None:
    with (
        _https_server({"/ca": (200, b"<html>hello</html>")}, tmp_path) as port,
        pytest.raises(FetchError, match="not a PEM certificate"),
    ):
        fetch_msr_ca(HOST, port, timeout=5)


def test_fetch_of_an_expired_certificate_fails(tmp_path: Path) -> None:
    with (
        _https_server({"/ca": (200, EXPIRED_PEM.encode())}, tmp_path) as port,
        pytest.raises(FetchError, match="expired"),
    ):
        fetch_msr_ca(HOST, port, timeout=5)


def test_fetch_from_a_closed_port_fails(closed_port: int) -> None:
    with pytest.raises(FetchError, match=f"https://{HOST}:{closed_port}/ca"):
        fetch_msr_ca(HOST, closed_port, timeout=2)


def test_fetch_from_a_closed_port_fails_within_the_timeout(closed_port: int) -> None:
    start = time.monotonic()
    with pytest.raises(FetchError):
        fetch_msr_ca(HOST, closed_port, timeout=2)
    assert time.monotonic() - start < 2


# ---------------------------------------------------------------------------
# The whole program with fetchMsrCa
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fetched_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[program.Run]:
    with _https_server({"/ca": (200, CA_PEM.encode())}, tmp_path_factory.mktemp("msr")) as port:
        yield program.run_program(config={"msrHost": HOST, "msrPort": port, "fetchMsrCa": True})


def test_program_stores_the_fetched_ca_as_a_swarm_secret(fetched_run: program.Run) -> None:
    assert fetched_run.secret_data("msr-ca") == CA_PEM


def test_program_config_yml_trusts_the_mounted_msr_ca(fetched_run: program.Run) -> None:
    doc = yaml.safe_load(fetched_run.config_yml)
    (middleware,) = doc["middleware"]["registry"]
    assert middleware["options"]["cas"] == ["/run/secrets/dtr.cert.pem"]


def test_program_exports_the_fetched_ca_fingerprint(fetched_run: program.Run) -> None:
    assert fetched_run.exports["msrCaSha256"] == openssl_style_sha256(CA_PEM)


def test_program_upstream_is_the_fetched_msr(fetched_run: program.Run) -> None:
    doc = yaml.safe_load(fetched_run.config_yml)
    (middleware,) = doc["middleware"]["registry"]
    assert middleware["options"]["upstreams"] == [fetched_run.exports["upstream"]]


def _run_fetching(port: int) -> None:
    program.run_program(config={"msrHost": HOST, "msrPort": port, "fetchMsrCa": True})


def test_program_with_unreachable_msr_names_fetch_msr_ca(closed_port: int) -> None:
    with pytest.raises(pulumi.RunError, match=r"msr-cache:fetchMsrCa: .*expected"):
        _run_fetching(closed_port)


def test_program_with_unreachable_msr_registers_no_resource(closed_port: int, registered: list[str]) -> None:
    with pytest.raises(pulumi.RunError):
        _run_fetching(closed_port)
    assert registered == []


def test_program_with_reachable_msr_is_seen_registering_resources(
    serving_ca: int, registered: list[str]
) -> None:
    """The no-resource check above can fail: the spy does see a successful run."""
    _run_fetching(serving_ca)
    assert any(name.startswith("docker:index/secret:Secret::msr-cache-files-msr-ca") for name in registered)


def test_a_fetched_ca_that_did_not_change_causes_no_change(tmp_path: Path) -> None:
    """Two runs fetching the same CA: as in the engine's state, nothing changes."""
    with _https_server({"/ca": (200, CA_PEM.encode())}, tmp_path) as port:
        config = {"msrHost": HOST, "msrPort": port, "fetchMsrCa": True}
        first = program.StatefulMocks()
        program.run_program(config=config, mocks=first)
        second = program.StatefulMocks(previous=first)
        program.run_program(config=config, mocks=second)
    assert second.changed == set()


def test_a_fetched_ca_that_changed_replaces_only_its_secret_and_updates_the_service(tmp_path: Path) -> None:
    routes = {"/ca": (200, CA_PEM.encode())}
    with _https_server(routes, tmp_path) as port:
        config = {"msrHost": HOST, "msrPort": port, "fetchMsrCa": True}
        first = program.StatefulMocks()
        program.run_program(config=config, mocks=first)
        routes["/ca"] = (200, pki.make_ca("MSR CA, renewed").cert_pem.encode())
        second = program.StatefulMocks(previous=first)
        program.run_program(config=config, mocks=second)
    assert second.changed == {"msr-cache-files-msr-ca", "msr-cache-service-service"}
