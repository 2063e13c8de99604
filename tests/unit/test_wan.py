"""bench.wan: the simulated WAN link, against echo and sink servers on 127.0.0.1.

Timings are checked with tolerances meant for a loaded 2-core machine: the
delay is a lower bound the link guarantees (release times are absolute), so
only the upper bounds and the bandwidth figures have slack.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.wan import WanLink
from rehearsal import pki

HOST = "127.0.0.1"
MB = 1_000_000
Handler = Callable[[socket.socket], None]


@contextlib.contextmanager
def _server(handler: Handler) -> Iterator[int]:
    """A TCP server on 127.0.0.1 running `handler` per connection (own thread); yields its port."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            handler(conn)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def _read_to_eof(conn: socket.socket) -> bytes:
    chunks = []
    while data := conn.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


def _echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 16):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def _sink(conn: socket.socket) -> None:
    """Reads to EOF, then answers `<count> <sha256>`."""
    digest, count = hashlib.sha256(), 0
    while data := conn.recv(1 << 16):
        digest.update(data)
        count += len(data)
    conn.sendall(f"{count} {digest.hexdigest()}".encode())


def _connect(link: WanLink) -> socket.socket:
    conn = socket.create_connection((HOST, link.port), timeout=10)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _upload(link: WanLink, data: bytes) -> float:
    """Seconds from the first byte sent to the sink's answer; checks what the sink got."""
    with _connect(link) as conn:
        start = time.monotonic()
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        answer = _read_to_eof(conn)
        elapsed = time.monotonic() - start
    assert answer.decode() == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    return elapsed


def _send_then_eof(conn: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _approx(actual: float, expected: float, tolerance: float = 0.25) -> bool:
    return expected * (1 - tolerance) <= actual <= expected * (1 + tolerance)


def test_relays_bytes_exactly_both_ways() -> None:
    up, down = os.urandom(5 * MB), os.urandom(5 * MB)
    received: dict[str, str] = {}

    def exchange(conn: socket.socket) -> None:
        sender = _send_then_eof(conn, down)
        received["up"] = hashlib.sha256(_read_to_eof(conn)).hexdigest()
        sender.join()

    with _server(exchange) as port, WanLink((HOST, 0), (HOST, port), rtt_ms=10, mbit=800) as link:
        with _connect(link) as conn:
            sender = _send_then_eof(conn, up)
            got = _read_to_eof(conn)
            sender.join()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(down).hexdigest()
        _wait_for(lambda: "up" in received)
        assert received["up"] == hashlib.sha256(up).hexdigest()


def _wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _round_trips(conn: socket.socket, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.monotonic()
        conn.sendall(b"x")
        assert conn.recv(1) == b"x"
        times.append(time.monotonic() - start)
    return times


def test_adds_the_round_trip_time() -> None:
    with (
        _server(_echo) as port,
        WanLink((HOST, 0), (HOST, port), rtt_ms=100) as link,
        _connect(link) as conn,
    ):
        times = _round_trips(conn, 5)
    assert min(times) >= 0.100, times
    assert statistics.median(times) < 0.160, times


def test_handshake_charges_one_more_round_trip_on_a_new_connection() -> None:
    with _server(_echo) as port, WanLink((HOST, 0), (HOST, port), rtt_ms=100, handshake=True) as link:
        start = time.monotonic()
        with _connect(link) as conn:
            _round_trips(conn, 1)
            first = time.monotonic() - start  # from connect() to the first answer
            later = _round_trips(conn, 2)
    assert 0.200 <= first < 0.300, first
    assert min(later) >= 0.100 and statistics.median(later) < 0.160, later


@pytest.mark.parametrize("rtt_ms", [0, 100])
def test_bandwidth_limits_a_stream_and_the_delay_does_not(rtt_ms: int) -> None:
    """2.5 MB at 20 Mbit/s is 1 s; with 100 ms RTT, 1.1 s (pipelined). A link that
    waited a round trip per chunk would take several seconds."""
    data = os.urandom(2_500_000)
    with _server(_sink) as port, WanLink((HOST, 0), (HOST, port), rtt_ms=rtt_ms, mbit=20) as link:
        elapsed = _upload(link, data)
    assert _approx(elapsed, 1.0 + rtt_ms / 1000), elapsed


def test_concurrent_streams_share_the_bandwidth() -> None:
    """Two 1.25 MB uploads at once on a 20 Mbit/s link: both take ~1 s (not 0.5 s)."""
    data = [os.urandom(1_250_000), os.urandom(1_250_000)]
    times: list[float] = [0.0, 0.0]
    barrier = threading.Barrier(2)

    def upload(i: int) -> None:
        barrier.wait()
        times[i] = _upload(link, data[i])

    with _server(_sink) as port, WanLink((HOST, 0), (HOST, port), rtt_ms=0, mbit=20) as link:
        threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert all(_approx(t, 1.0) for t in times), times


def test_counts_bytes_per_direction_over_16_concurrent_connections() -> None:
    size, count = 200_000, 16
    payloads = [os.urandom(size) for _ in range(count)]
    ok: list[bool] = []

    def client(data: bytes) -> None:
        with _connect(link) as conn:
            sender = _send_then_eof(conn, data)
            ok.append(_read_to_eof(conn) == data)
            sender.join()

    with _server(_echo) as port, WanLink((HOST, 0), (HOST, port), rtt_ms=20, mbit=None) as link:
        threads = [threading.Thread(target=client, args=(p,)) for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert ok == [True] * count
        assert link.bytes_up == link.bytes_down == size * count
        assert link.connections_accepted == count
        _wait_for(lambda: link.active_connections == 0)


def test_a_bandwidth_change_slows_an_ongoing_transfer() -> None:
    """2 MB at 32 Mbit/s would take 0.5 s; after 0.2 s the link drops to 8 Mbit/s, so
    the remaining ~1.2 MB take ~1.2 s more."""
    data = os.urandom(2 * MB)
    with _server(_sink) as port, WanLink((HOST, 0), (HOST, port), rtt_ms=0, mbit=32) as link:
        seen: list[int] = []

        def slow_down() -> None:
            time.sleep(0.2)
            seen.append(link.bytes_up)
            link.mbit = 8

        changer = threading.Thread(target=slow_down)
        changer.start()
        elapsed = _upload(link, data)
        changer.join()
    assert 0 < seen[0] < len(data)
    assert 1.0 <= elapsed <= 2.0, elapsed


def test_half_close_propagates_both_ways() -> None:
    got: list[bytes] = []

    def answer_after_eof(conn: socket.socket) -> None:
        request = _read_to_eof(conn)
        conn.sendall(b"got " + request)

    def greet_then_listen(conn: socket.socket) -> None:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        got.append(_read_to_eof(conn))

    with (
        _server(answer_after_eof) as port,
        WanLink((HOST, 0), (HOST, port), rtt_ms=20) as link,
        _connect(link) as conn,
    ):
        conn.sendall(b"ping")
        conn.shutdown(socket.SHUT_WR)
        assert _read_to_eof(conn) == b"got ping"
    with (
        _server(greet_then_listen) as port,
        WanLink((HOST, 0), (HOST, port), rtt_ms=20) as link,
        _connect(link) as conn,
    ):
        assert _read_to_eof(conn) == b"hello"  # the server's EOF arrived...
        conn.sendall(b"bye")  # ...and the client can still send
        conn.shutdown(socket.SHUT_WR)
        _wait_for(lambda: got == [b"bye"])


def test_stop_closes_connections_and_frees_the_port() -> None:
    server_saw_eof = threading.Event()

    def echo_then_note(conn: socket.socket) -> None:
        _echo(conn)
        server_saw_eof.set()

    with _server(echo_then_note) as port, _server(_sink) as sink_port:
        link = WanLink((HOST, 0), (HOST, port), rtt_ms=20, mbit=1)
        listen_port = link.start()
        conn = _connect(link)
        _round_trips(conn, 1)
        # A second connection in the middle of a long (throttled) upload.
        link.target_port = sink_port
        busy = _connect(link)
        upload_failed = threading.Event()

        def upload() -> None:
            try:
                for _ in range(64):  # far more than socket buffers hold: sendall blocks
                    busy.sendall(bytes(MB))
            except OSError:
                upload_failed.set()

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        _wait_for(lambda: link.bytes_up > 1000)
        start = time.monotonic()
        link.stop()
        assert time.monotonic() - start < 2
        assert upload_failed.wait(2)  # its blocked sendall failed: the link closed the connection
        busy.close()
        conn.settimeout(2)
        with contextlib.suppress(ConnectionResetError):
            assert conn.recv(1) == b""
        conn.close()
        assert server_saw_eof.wait(2)
        assert link.active_connections == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, listen_port), timeout=2)
        with WanLink((HOST, listen_port), (HOST, port), rtt_ms=0) as again:
            assert again.port == listen_port
            with _connect(again) as conn:
                assert _round_trips(conn, 1)


def test_relays_tls(tmp_path: Path) -> None:
    ca = pki.make_ca("WAN Test CA")
    leaf = pki.make_leaf("cache.test", dns=["cache.test"], issuer=ca)
    (tmp_path / "leaf.pem").write_text(leaf.cert_pem)
    (tmp_path / "leaf.key").write_text(leaf.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem)

    def tls_echo(conn: socket.socket) -> None:
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"pong:" + tls.recv(100))

    with (
        _server(tls_echo) as port,
        WanLink((HOST, 0), (HOST, port), rtt_ms=20) as link,
        _connect(link) as raw,
        client_ctx.wrap_socket(raw, server_hostname="cache.test") as tls,
    ):
        tls.sendall(b"ping")
        assert tls.recv(100) == b"pong:ping"
        assert tls.version() is not None


def test_a_target_that_refuses_closes_the_client() -> None:
    with socket.create_server((HOST, 0)) as placeholder:
        closed_port = placeholder.getsockname()[1]
    with WanLink((HOST, 0), (HOST, closed_port), rtt_ms=0) as link, _connect(link) as conn:
        conn.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert conn.recv(1) == b""
        _wait_for(lambda: link.active_connections == 0)


def test_command_line() -> None:
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        listen_port = probe.getsockname()[1]
    with _server(_echo) as port:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.wan", "--listen", f"{HOST}:{listen_port}",
             "--target", f"{HOST}:{port}", "--rtt-ms", "40", "--mbit", "10"],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            assert f"{HOST}:{listen_port} -> {HOST}:{port}" in proc.stdout.readline()
            with socket.create_connection((HOST, listen_port), timeout=5) as conn:
                assert min(_round_trips(conn, 2)) >= 0.040
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "down 2 bytes, up 2 bytes" in err


@pytest.mark.parametrize(
    ("json_name", "png_name"),
    [
        ("bench.json", "bench.png"),
        ("tmp.X3f9", "tmp.X3f9.png"),
        ("run.2026-12-01.json", "run.2026-12-01.png"),
    ],
)
def test_the_benchmark_plot_goes_beside_its_json_whatever_the_dots(json_name: str, png_name: str) -> None:
    from bench.__main__ import plot_path

    assert plot_path(Path("/tmp") / json_name) == Path("/tmp") / png_name
