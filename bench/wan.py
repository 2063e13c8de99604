"""A simulated WAN link: a throttling TCP proxy, standard library only.

`WanLink(listen=(host, port), target=(host, port))` listens on a local
address (loopback, or this machine's address on the local swarm's bridge,
10.77.0.1, where the swarm's nodes reach it; port 0 picks a free one, which
`start()` returns) and forwards every accepted connection to the target.
Bytes are relayed as they are, so TLS passes through untouched. `make bench`
and the fault tests put one between the cache node and the msr node:

    cache (msrc-cache 10.77.0.12) -> WanLink (10.77.0.1:<port>) -> MSR (msrc-msr 10.77.0.13)

The model, per direction (up = client -> target, down = target -> client):

- bandwidth: one token bucket per direction shared by every connection of the
  link, like an access link. A chunk read from a socket first reserves its
  transmission time on the bucket (reservations are FIFO, so concurrent
  connections interleave and share the rate), the reader waits until the
  chunk has been "transmitted", and only then reads the next one. A slow link
  therefore pushes back on the sender through TCP, as a real one does.
- delay: each transmitted chunk is timestamped and released to the other side
  `rtt_ms / 2` later by a separate writer thread. Many chunks are in flight at
  once (pipelined), so a long transfer is limited by the bandwidth, not by the
  delay: 100 MB at 100 Mbit/s with 50 ms RTT takes ~8 s.
- EOF (a half-close) travels like data: after the delay the other side is shut
  down for writing and can still send in the other direction. An error on
  either socket closes both.
- `handshake=True` also charges TCP's connection set-up: nothing is forwarded
  until one RTT after the connection was accepted, so the first byte reaches
  the target 1.5 RTT after `connect()`, as over a real link.

`rtt_ms` and `mbit` are plain attributes read at every chunk: change them at
run time to make the WAN slow down mid-transfer. `mbit=None` (or <= 0) means
no bandwidth limit. `bytes_up` / `bytes_down` count the bytes relayed.

Each connection uses four threads (a reader and a writer per direction).

    with WanLink(("127.0.0.1", 0), ("127.0.0.1", 5000), rtt_ms=50, mbit=100) as link:
        ... connect to ("127.0.0.1", link.port) ...

    python -m bench.wan --listen 127.0.0.1:15000 --target 127.0.0.1:5000 --rtt-ms 50 --mbit 100
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

DEFAULT_RTT_MS = 50.0
DEFAULT_MBIT = 100.0
MAX_CHUNK = 64 * 1024
MIN_CHUNK = 1024
# A chunk is about this much of the link's time: small enough that rate
# changes act quickly and connections interleave finely.
CHUNK_SECONDS = 0.005
# A reader that wakes late may catch up by this much; no burst beyond it.
SLACK_SECONDS = 0.02
# Bytes a direction may hold in flight beyond the bandwidth-delay product
# before its reader stops reading (when the receiving side does not read).
MIN_QUEUE_BYTES = 1 << 20
UNLIMITED_QUEUE_BYTES = 8 << 20
CONNECT_TIMEOUT = 5.0


def _bytes_per_second(mbit: float | None) -> float | None:
    return mbit * 1e6 / 8 if mbit is not None and mbit > 0 else None


class _Bucket:
    """The bandwidth of one direction of the link, shared by all its connections."""

    def __init__(self, link: WanLink) -> None:
        self._link = link
        self._lock = threading.Lock()
        self._next = 0.0

    def reserve(self, nbytes: int) -> float:
        """The monotonic time at which `nbytes` queued now have been transmitted."""
        rate = _bytes_per_second(self._link.mbit)
        with self._lock:
            now = time.monotonic()
            if rate is None:
                self._next = now
                return now
            self._next = max(self._next, now - SLACK_SECONDS) + nbytes / rate
            return self._next


class _Direction:
    """One direction of one connection: src -> bandwidth -> delay -> dst."""

    def __init__(self, conn: _Connection, src: socket.socket, dst: socket.socket, up: bool) -> None:
        self.conn = conn
        self.src = src
        self.dst = dst
        self.up = up
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.cond = threading.Condition()

    @property
    def _link(self) -> WanLink:
        return self.conn.link

    def _limit(self) -> int:
        rate = _bytes_per_second(self._link.mbit)
        if rate is None:
            return UNLIMITED_QUEUE_BYTES
        return max(MIN_QUEUE_BYTES, int(2 * rate * (self._link.rtt_ms / 2000 + SLACK_SECONDS)))

    def _put(self, release_at: float, data: bytes | None) -> bool:
        with self.cond:
            while data is not None and self.queued >= self._limit() and not self.conn.dead.is_set():
                self.cond.wait(0.1)
            if self.conn.dead.is_set():
                return False
            self.queue.append((release_at, data))
            self.queued += len(data or b"")
            self.cond.notify_all()
            return True

    def read_loop(self) -> None:
        bucket = self._link.up_bucket if self.up else self._link.down_bucket
        try:
            while True:
                rate = _bytes_per_second(self._link.mbit)
                chunk = MAX_CHUNK if rate is None else int(rate * CHUNK_SECONDS)
                data = self.src.recv(max(MIN_CHUNK, min(MAX_CHUNK, chunk)))
                read_at = time.monotonic()
                if self.conn.dead.is_set():
                    return
                if not data:
                    self._put(read_at + self._link.rtt_ms / 2000, None)
                    return
                sent_at = bucket.reserve(len(data))
                wait = sent_at - time.monotonic()
                if wait > 0 and self.conn.dead.wait(wait):
                    return
                if not self._put(max(sent_at, read_at) + self._link.rtt_ms / 2000, data):
                    return
        except OSError:
            self.conn.abort()
        finally:
            self.conn.thread_done()

    def write_loop(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.conn.dead.is_set():
                        self.cond.wait()
                    if self.conn.dead.is_set():
                        return
                    release_at, data = self.queue[0]
                wait = release_at - time.monotonic()
                if wait > 0 and self.conn.dead.wait(wait):
                    return
                with self.cond:
                    self.queue.popleft()
                    self.queued -= len(data or b"")
                    self.cond.notify_all()
                if data is None:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                # Counted first, so a peer that has read the bytes sees them counted.
                self._link._count(self.up, len(data))
                self.dst.sendall(data)
        except OSError:
            self.conn.abort()
        finally:
            self.conn.thread_done()


class _Connection:
    """A client connection and its connection to the target."""

    def __init__(self, link: WanLink, client: socket.socket) -> None:
        self.link = link
        self.client = client
        self.server: socket.socket | None = None
        self.directions: tuple[_Direction, ...] = ()
        self.dead = threading.Event()
        self._lock = threading.Lock()
        self._threads = 0
        self._closed = False

    def run(self) -> None:
        """Connect to the target, then relay in both directions (this thread reads upwards)."""
        accepted = time.monotonic()
        try:
            server = socket.create_connection(
                (self.link.target_host, self.link.target_port), timeout=CONNECT_TIMEOUT
            )
            with self._lock:
                # abort() may have run meanwhile; it shuts down only what it saw.
                self.server = server
                if self.dead.is_set():
                    raise OSError("connection aborted")
            server.settimeout(None)
            for sock in (self.client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.link.handshake:
                wait = accepted + self.link.rtt_ms / 1000 - time.monotonic()
                if wait > 0 and self.dead.wait(wait):
                    raise OSError("connection aborted")
            up = _Direction(self, self.client, server, up=True)
            down = _Direction(self, server, self.client, up=False)
            with self._lock:
                self.directions = (up, down)
                self._threads = 4
            loops = ((up.write_loop, "up-w"), (down.read_loop, "down-r"), (down.write_loop, "down-w"))
            for loop, name in loops:
                self.link._spawn(loop, f"wan-{name}")
        except (OSError, RuntimeError):  # RuntimeError: no thread could be started
            self.abort()
            self._close_sockets()
            self.link._forget(self)
            return
        up.read_loop()

    def abort(self) -> None:
        """Close both sides now (an error, or the link stops)."""
        with self._lock:
            if self.dead.is_set():
                return
            self.dead.set()
            sockets, directions = (self.client, self.server), self.directions
        for sock in sockets:
            if sock is not None and not self._closed:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for direction in directions:
            with direction.cond:
                direction.cond.notify_all()

    def thread_done(self) -> None:
        with self._lock:
            self._threads -= 1
            last = self._threads == 0
        if last:
            self._close_sockets()
            self.link._forget(self)

    def _close_sockets(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.dead.set()
        for sock in (self.client, self.server):
            if sock is not None:
                sock.close()


class WanLink:
    """A throttling TCP proxy from `listen` (host, port) to `target` (host, port)."""

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        rtt_ms: float = DEFAULT_RTT_MS,
        mbit: float | None = DEFAULT_MBIT,
        handshake: bool = False,
    ) -> None:
        self.listen_host, self.listen_port = listen
        """Where to listen; port 0 picks a free one (see `port` after start())."""
        self.target_host, self.target_port = target
        self.rtt_ms = rtt_ms
        """Round-trip delay in milliseconds; half of it is added in each direction."""
        self.mbit = mbit
        """Bandwidth per direction in Mbit/s (10^6 bit/s), shared by all connections; None: unlimited."""
        self.handshake = handshake
        """Charge one RTT for TCP's connection set-up before forwarding anything."""
        self.bytes_up = 0
        """Bytes relayed client -> target."""
        self.bytes_down = 0
        """Bytes relayed target -> client."""
        self.connections_accepted = 0
        self.up_bucket = _Bucket(self)
        self.down_bucket = _Bucket(self)
        self.stopping = threading.Event()
        self.port = 0
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._threads: list[threading.Thread] = []

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def start(self) -> int:
        """Listen and start forwarding; the port listened on (a free one when listen_port is 0)."""
        if self._listener is not None:
            return self.port
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        listener = socket.create_server((self.listen_host, self.listen_port), family=family, backlog=128)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self.stopping.clear()
        self._acceptor = threading.Thread(target=self._accept_loop, name="wan-accept", daemon=True)
        self._acceptor.start()
        return self.port

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    return
                time.sleep(0.01)  # e.g. out of file descriptors: do not spin
                continue
            client.settimeout(None)
            conn = _Connection(self, client)
            with self._lock:
                self.connections_accepted += 1
                self._connections.add(conn)
            try:
                self._spawn(conn.run, "wan-up-r")
            except RuntimeError:  # too many threads: refuse this connection
                self._forget(conn)
                client.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection (both sides) and free the port."""
        self.stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        if self._listener is not None:
            self._listener.close()
        self._listener = None
        self._acceptor = None
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for conn in connections:
            conn.abort()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for conn in connections:
            conn._close_sockets()

    def __enter__(self) -> WanLink:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _count(self, up: bool, nbytes: int) -> None:
        with self._lock:
            if up:
                self.bytes_up += nbytes
            else:
                self.bytes_down += nbytes

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wan", description="A simulated WAN link: a throttling TCP proxy."
    )
    parser.add_argument("--listen", type=_host_port, required=True, help="HOST:PORT to listen on")
    parser.add_argument("--target", type=_host_port, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--rtt-ms", type=float, default=DEFAULT_RTT_MS, help="round-trip delay (ms)")
    parser.add_argument("--mbit", type=float, default=DEFAULT_MBIT, help="Mbit/s per direction, 0: unlimited")
    parser.add_argument("--handshake", action="store_true", help="charge one RTT for connection set-up")
    args = parser.parse_args(argv)
    link = WanLink(args.listen, args.target, args.rtt_ms, args.mbit or None, handshake=args.handshake)
    port = link.start()
    print(
        f"{args.listen[0]}:{port} -> {args.target[0]}:{args.target[1]}, "
        f"rtt {args.rtt_ms:g} ms, {args.mbit:g} Mbit/s per direction; Ctrl-C stops",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        link.stop()
        print(f"down {link.bytes_down} bytes, up {link.bytes_up} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
