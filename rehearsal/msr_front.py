"""The MSR stand-in's front: what the content cache depends on in MSR, over the
plain Docker Distribution that stores the images (issue 12).

A STAND-IN, not MSR. It does what the MSR documentation says MSR does around a
content cache, and no more:

- `/api/v0/content_caches` registers, lists and removes caches (admin, HTTP basic
  auth), as the docs' "Register the cache with MSR" step calls it;
- each user has a content cache setting; the docs name the endpoint
  (`/api/v0/accounts/{username}/settings`) but not the field, so the stand-in sets
  it through its own control, `PUT /_stand_in/users/{user}/content_cache`;
- `/v2/`: manifests and pushes always go to MSR (proxied to the registry here);
  a blob GET/HEAD by a user whose setting names a cache is answered with a
  307 to `<cache host>/v2/<repo>/blobs/<digest>` and no body; a blob for a user
  without a cache, or asked for without credentials (the content cache itself:
  its config holds no credentials), is served from the registry.

Where MSR signs the redirect, the stand-in does not: the cache stand-in (a
Distribution pull-through proxy) fetches blobs without credentials anyway.

Standard library only, so the same venv python can run it inside the msr node's
network namespace: `python -m rehearsal.msr_front --config <json> [--instance <name>]`.
The config (JSON, mode 0600: it holds the users' passwords):

    {"listen": ["10.77.0.13", 5910], "backend": ["127.0.0.1", 5911],
     "cert_file": "cert.pem", "key_file": "key.pem",
     "users": [{"name": "admin", "password": "...", "admin": true},
               {"name": "tester", "password": "..."}],
     "access_log": "front-access.jsonl", "pid_file": "front.pid",
     "anonymous_manifests": false}

Relative paths are relative to the config file. `--instance` only labels the
process, so that whoever stops it can find it by its command line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import hmac
import http.client
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

REALM = "msr-stand-in"
API = "/api/v0/content_caches"
CONTROL = re.compile(r"^/_stand_in/users/(?P<user>[^/]+)/content_cache$")
BLOB = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$")
MANIFEST = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

CHUNK = 64 * 1024
MAX_API_BODY = 64 * 1024
MAX_SKIPPED_BODY = 1024 * 1024
HANDSHAKE_TIMEOUT_S = 10
IDLE_TIMEOUT_S = 120
BACKEND_TIMEOUT_S = 300

# Never forwarded either way: they describe one connection, not the message
# (RFC 9110 7.6.1), and the front sets its own framing on each side.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "expect"}
)  # fmt: skip


# -- configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    password: str = field(repr=False)
    admin: bool = False


@dataclass(frozen=True)
class Settings:
    listen: tuple[str, int]
    """Where clients reach "MSR": msrHost/msrPort."""
    backend: tuple[str, int]
    """The Docker Distribution behind the front (plain HTTP, reachable by the front only)."""
    cert_file: Path
    key_file: Path
    accounts: tuple[Account, ...]
    access_log: Path
    """One JSON line per request."""
    pid_file: Path | None = None
    anonymous_manifests: bool = False
    """Serve manifest GET/HEAD without credentials too. MSR authenticates every pull;
    the cache stand-in, unlike the real cache, fetches manifests itself, without
    credentials, so the rehearsal turns this on (see rehearsal/upstream.py)."""

    @classmethod
    def load(cls, path: Path) -> Settings:
        """From the JSON file; raises ValueError naming the key that is wrong."""
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the front's config {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a JSON object")
        base = path.parent

        def address(key: str) -> tuple[str, int]:
            value = doc.get(key)
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)):
                raise ValueError(f"{path}: {key} must be [host, port], got {value!r}")
            return str(value[0]), value[1]

        def file(key: str, required: bool = True) -> Path | None:
            value = doc.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value:
                raise ValueError(f"{path}: {key} must be a file path, got {value!r}")
            return base / value

        accounts = []
        for i, user in enumerate(doc.get("users") or []):
            if not (isinstance(user, dict) and user.get("name") and user.get("password")):
                raise ValueError(f"{path}: users[{i}] needs a name and a password")
            accounts.append(Account(str(user["name"]), str(user["password"]), bool(user.get("admin"))))
        if not any(a.admin for a in accounts):
            raise ValueError(f'{path}: users must hold an admin ("admin": true)')
        return cls(
            listen=address("listen"),
            backend=address("backend"),
            cert_file=cast(Path, file("cert_file")),
            key_file=cast(Path, file("key_file")),
            accounts=tuple(accounts),
            access_log=cast(Path, file("access_log")),
            pid_file=file("pid_file", required=False),
            anonymous_manifests=bool(doc.get("anonymous_manifests", False)),
        )


# -- what MSR keeps in its database -------------------------------------------------


class Invalid(ValueError):
    """A request the API refuses with 400; the message says why."""


@dataclass(frozen=True)
class Registration:
    id: str
    name: str
    host: str

    def doc(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "host": self.host}


def checked_host(host: Any) -> str:
    """`https://<cache-url>:<cache-port>`, as the docs' registration body has it; the
    redirect appends /v2/..., so a path, query or fragment is refused."""
    if not isinstance(host, str) or not host:
        raise Invalid("host is missing: expected https://<cache-url>:<cache-port>")
    try:
        parts = urlsplit(host)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise Invalid(f"host {host!r} is not a URL: {exc}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise Invalid(f"host {host!r} is not an https:// URL: expected https://<cache-url>:<cache-port>")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise Invalid(f"host {host!r} must be https://<cache-url>:<cache-port> only, without a path or query")
    return host.rstrip("/")


class Directory:
    """The accounts, the registered caches and each user's content cache setting."""

    def __init__(self, accounts: tuple[Account, ...]) -> None:
        self._accounts = {a.name: a for a in accounts}
        self._caches: dict[str, Registration] = {}
        self._setting: dict[str, str | None] = dict.fromkeys(self._accounts)
        self._lock = threading.Lock()

    def authenticate(self, header: str | None) -> Account | None:
        """The account of a valid `Authorization: Basic` header, else None."""
        if not header or header[:6].lower() != "basic ":
            return None
        try:
            name, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        account = self._accounts.get(name)
        if account is None or not hmac.compare_digest(account.password.encode(), password.encode()):
            return None
        return account

    def register(self, doc: Any) -> Registration:
        if not isinstance(doc, dict):
            raise Invalid('expected a JSON object {"name": ..., "host": ...}')
        name, host = doc.get("name"), checked_host(doc.get("host"))
        if not isinstance(name, str) or not name.strip():
            raise Invalid("name is missing: expected a non-empty string")
        with self._lock:
            if any(c.name == name for c in self._caches.values()):
                raise Invalid(f"a content cache named {name!r} is already registered")
            made = Registration(str(uuid.uuid4()), name, host)
            self._caches[made.id] = made
        return made

    def registrations(self) -> list[Registration]:
        with self._lock:
            return list(self._caches.values())

    def get(self, cache_id: str) -> Registration | None:
        with self._lock:
            return self._caches.get(cache_id)

    def delete(self, cache_id: str) -> bool:
        """Remove a registration; users whose setting named it fall back to no cache."""
        with self._lock:
            if self._caches.pop(cache_id, None) is None:
                return False
            for user, chosen in self._setting.items():
                if chosen == cache_id:
                    self._setting[user] = None
            return True

    def set_cache(self, user: str, cache_id: str | None) -> None:
        """Raises KeyError for an unknown user, Invalid for an unknown cache."""
        with self._lock:
            if user not in self._setting:
                raise KeyError(user)
            if cache_id is not None and cache_id not in self._caches:
                raise Invalid(f"no content cache has id {cache_id!r}")
            self._setting[user] = cache_id

    def cache_of(self, user: str) -> Registration | None:
        with self._lock:
            chosen = self._setting.get(user)
            return self._caches.get(chosen) if chosen else None

    def has_user(self, user: str) -> bool:
        return user in self._accounts


class AccessLog:
    """One JSON line per request: what the tests read to see what MSR served."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)

    def close(self) -> None:
        with self._lock:
            self._file.close()


# -- HTTP ----------------------------------------------------------------------


class Front(ThreadingHTTPServer):
    """TLS on the listening address; each connection's handshake runs in its own thread."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = Directory(settings.accounts)
        self.access_log = AccessLog(settings.access_log)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(str(settings.cert_file), str(settings.key_file))
        super().__init__(settings.listen, Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        # Headers and body leave in separate writes: without this, Nagle's algorithm
        # and the client's delayed ACK hold each answer back by ~40 ms.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            _say(f"TLS handshake with {client_address[0]} failed: {exc}")
            return
        try:
            Handler(conn, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def server_close(self) -> None:
        super().server_close()
        self.access_log.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server_version = "msr-stand-in"

    # What the access log records of the request in progress.
    _status: int
    _sent: int
    _location: str | None
    _body_read: bool
    _logged: bool
    _user: str | None
    _path: str

    # -- one request: route, answer, log ------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        front = cast(Front, self.server)
        self._status, self._sent, self._location, self._body_read = 0, 0, None, False
        self._logged = False
        presented = self.headers.get("Authorization") is not None
        account = front.directory.authenticate(self.headers.get("Authorization"))
        self._user = account.name if account else None
        path = self._path = urlsplit(self.path).path
        try:
            if presented and account is None:
                self._unauthorized()
            elif path == "/v2" or path.startswith("/v2/"):
                self._registry(front, path, account)
            elif path == API or path.startswith(API + "/"):
                self._caches_api(front, path, account)
            elif CONTROL.match(path):
                self._control(front, path, account)
            else:
                self._error(404, "NOT_FOUND", f"{path} is not served by the MSR stand-in")
        except OSError as exc:  # a broken pipe, a reset, a timeout, a TLS error
            self.close_connection = True
            _say(f"{self.command} {path}: the client connection broke: {exc}")
        finally:
            self._record()

    def _record(self) -> None:
        """The request's access-log line, once. Written just before the answer's
        last bytes leave, so that whoever reads the log after an answer finds it."""
        if self._logged:
            return
        self._logged = True
        cast(Front, self.server).access_log.write(
            {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "client": self.client_address[0],
                "method": self.command,
                "path": self._path,
                "user": self._user,
                "status": self._status,
                "bytes": self._sent,
                "location": self._location,
            }
        )

    def _registry(self, front: Front, path: str, account: Account | None) -> None:
        if path in ("/v2", "/v2/"):
            # Docker sends credentials only after a challenge: the 401 asks for them.
            return self._proxy(front) if account else self._unauthorized()
        read = self.command in ("GET", "HEAD")
        blob = BLOB.match(path) if read else None
        if blob:
            cache = front.directory.cache_of(account.name) if account else None
            if cache is None:
                return self._proxy(front)  # no cache chosen, or the cache itself fetching
            location = f"{cache.host}/v2/{blob['repo']}/blobs/{blob['digest']}"
            return self._answer(307, b"", [("Location", location), API_VERSION])
        if account or (read and front.settings.anonymous_manifests and MANIFEST.match(path)):
            return self._proxy(front)
        return self._unauthorized()

    def _caches_api(self, front: Front, path: str, account: Account | None) -> None:
        if not self._is_admin(account):
            return
        directory, method = front.directory, self.command
        if path == API:
            if method == "GET":
                return self._json(200, [c.doc() for c in directory.registrations()])
            if method == "POST":
                try:
                    made = directory.register(self._json_body())
                except Invalid as exc:
                    return self._error(400, "INVALID_CONTENT_CACHE", str(exc))
                return self._json(201, made.doc())
            return self._not_allowed("GET, POST")
        cache_id = unquote(path[len(API) + 1 :])
        if method == "GET":
            found = directory.get(cache_id)
            return self._json(200, found.doc()) if found else self._no_cache(cache_id)
        if method == "DELETE":
            return self._answer(204, b"") if directory.delete(cache_id) else self._no_cache(cache_id)
        return self._not_allowed("GET, DELETE")

    def _control(self, front: Front, path: str, account: Account | None) -> None:
        if not self._is_admin(account):
            return
        user = unquote(cast(re.Match[str], CONTROL.match(path))["user"])
        if not front.directory.has_user(user):
            return self._error(404, "NO_SUCH_USER", f"the stand-in has no user {user!r}")
        if self.command == "PUT":
            try:
                doc = self._json_body()
                if not isinstance(doc, dict) or "id" not in doc or not isinstance(doc["id"], str | None):
                    raise Invalid('expected {"id": "<content cache id>"} or {"id": null}')
                front.directory.set_cache(user, doc["id"])
            except Invalid as exc:
                return self._error(400, "INVALID_SETTING", str(exc))
        elif self.command != "GET":
            return self._not_allowed("GET, PUT")
        chosen = front.directory.cache_of(user)
        return self._json(200, {"user": user, "id": chosen.id if chosen else None})

    def _is_admin(self, account: Account | None) -> bool:
        if account is None:
            self._unauthorized()
        elif not account.admin:
            self._error(403, "FORBIDDEN", f"{account.name} is not an admin")
        return bool(account and account.admin)

    # -- answers of the front's own -----------------------------------------------

    def _answer(self, status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
            if name == "Location" and 300 <= status < 400:
                self._location = value
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self._skip_body()
        body = b"" if self.command == "HEAD" else body
        self._status, self._sent = status, len(body)
        self._record()
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, status: int, doc: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
        body = json.dumps(doc).encode()
        self._answer(status, body, [("Content-Type", "application/json"), *headers])

    def _error(self, status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        self._json(status, {"errors": [{"code": code, "message": message}]}, headers)

    def _unauthorized(self) -> None:
        self._error(
            401,
            "UNAUTHORIZED",
            "authentication required",
            [("WWW-Authenticate", f'Basic realm="{REALM}"'), API_VERSION],
        )

    def _not_allowed(self, allowed: str) -> None:
        self._error(405, "METHOD_NOT_ALLOWED", f"{self.command} is not allowed here", [("Allow", allowed)])

    def _no_cache(self, cache_id: str) -> None:
        self._error(404, "NO_SUCH_CONTENT_CACHE", f"no content cache has id {cache_id!r}")

    # -- request bodies ------------------------------------------------------------

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _body_pending(self) -> bool:
        return not self._body_read and (self._chunked() or self._length() > 0)

    def _skip_body(self) -> None:
        """Before answering a request whose body was not read: a small one is read
        and dropped (closing on unread data would reset the connection before the
        client reads the answer); otherwise the connection closes after the answer,
        or the rest of the body would be read as the next request."""
        if not self._body_pending():
            return
        if not self._chunked() and self._length() <= MAX_SKIPPED_BODY:
            for _ in self._body():
                pass
            return
        self.close_connection = True
        self.send_header("Connection", "close")

    def _json_body(self) -> Any:
        if self._chunked():
            raise Invalid("send the JSON body with a Content-Length")
        length = self._length()
        if length > MAX_API_BODY:
            raise Invalid(f"the body is over {MAX_API_BODY} bytes")
        data = self.rfile.read(length)
        self._body_read = True
        try:
            return json.loads(data or b"null")
        except ValueError as exc:
            raise Invalid(f"the body is not JSON: {exc}") from None

    def _body(self) -> Iterator[bytes]:
        """The request body as it arrives (chunked or sized), without its framing."""
        self._body_read = True
        if self._chunked():
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass  # trailers
                    return
                yield from self._exactly(size)
                self.rfile.readline(8)
        else:
            yield from self._exactly(self._length())

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            data = self.rfile.read(min(size, CHUNK))
            if not data:
                raise ConnectionResetError("the client closed the connection in the middle of a body")
            size -= len(data)
            yield data

    # -- the registry behind -------------------------------------------------------

    def _proxy(self, front: Front) -> None:
        """The request to the registry and its answer back, both streamed; Location
        pointing at the registry is rewritten to the address the client used."""
        public = self.headers.get("Host") or "{}:{}".format(*front.settings.listen)
        backend = http.client.HTTPConnection(*front.settings.backend, timeout=BACKEND_TIMEOUT_S)
        try:
            try:
                resp = self._forward(backend, public)
            except (OSError, http.client.HTTPException) as exc:
                self.close_connection = True
                return self._error(
                    502, "UNAVAILABLE", "the registry behind the MSR stand-in did not answer: " + str(exc)
                )
            self._relay(resp, front, public)
        finally:
            backend.close()

    def _forward(self, backend: http.client.HTTPConnection, public: str) -> http.client.HTTPResponse:
        chunked, length = self._chunked(), self._length()
        backend.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in HOP_BY_HOP | {"authorization", "content-length", "host"}:
                backend.putheader(name, value)
        # The registry builds upload URLs from these: the client's address, over TLS.
        backend.putheader("Host", public)
        backend.putheader("X-Forwarded-Proto", "https")
        backend.putheader("X-Forwarded-For", self.client_address[0])
        if chunked:
            backend.putheader("Transfer-Encoding", "chunked")
        elif length or self.command in ("POST", "PUT", "PATCH"):
            backend.putheader("Content-Length", str(length))
        backend.endheaders()
        for data in self._body():
            backend.send(b"%X\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            backend.send(b"0\r\n\r\n")
        return backend.getresponse()

    def _relay(self, resp: http.client.HTTPResponse, front: Front, public: str) -> None:
        inner = "http://{}:{}".format(*front.settings.backend)
        self.send_response_only(resp.status, resp.reason)
        length: int | None = None
        for name, value in resp.getheaders():
            lower = name.lower()
            if lower in HOP_BY_HOP:
                continue
            if lower == "location" and value.startswith(inner):
                value = f"https://{public}{value[len(inner) :]}"
            if lower == "location" and 300 <= resp.status < 400:
                self._location = value
            if lower == "content-length":
                length = int(value)
            self.send_header(name, value)
        bodiless = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        chunked = not bodiless and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self._skip_body()
        self._status = resp.status
        if bodiless or length == 0:
            self._record()
            self.end_headers()
            return
        self.end_headers()
        try:
            while data := resp.read1(CHUNK):
                self._sent += len(data)
                if length is not None and self._sent >= length:
                    self._record()
                self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data) if chunked else data)
        except (OSError, http.client.HTTPException) as exc:
            # Mid-body: the status is gone; only closing tells the client.
            self.close_connection = True
            _say(f"{self.command} {self.path}: the registry's answer broke off: {exc}")
            return
        if chunked:
            self._record()
            self.wfile.write(b"0\r\n\r\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """The access log (JSON lines) records every request instead."""

    def log_error(self, format: str, *args: Any) -> None:
        _say(f"{self.client_address[0]}: " + format % args)


def _say(message: str) -> None:
    print(f"msr-front: {message}", file=sys.stderr, flush=True)


def serve(settings: Settings) -> Front:
    """A bound front, not yet serving: call serve_forever (the tests do, in a thread)."""
    return Front(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal.msr_front", description="The MSR stand-in's front (a stand-in, not MSR)."
    )
    parser.add_argument("--config", required=True, type=Path, help="the front's JSON config")
    parser.add_argument("--instance", default="msr-front", help="a label, to find this process by")
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(args.config)
        front = serve(settings)
    except (ValueError, OSError, ssl.SSLError) as exc:
        _say(f"error: {exc}")
        return 1
    if settings.pid_file:
        settings.pid_file.write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    users = ", ".join(f"{a.name}{' (admin)' if a.admin else ''}" for a in settings.accounts)
    _say(
        "{} STAND-IN for MSR on https://{}:{} -> registry http://{}:{}; users: {}; "
        "anonymous manifest reads: {}".format(
            args.instance, *settings.listen, *settings.backend, users,
            "on" if settings.anonymous_manifests else "off",
        )
    )  # fmt: skip
    try:
        front.serve_forever()
    finally:
        front.server_close()
        if settings.pid_file:
            with contextlib.suppress(OSError):
                settings.pid_file.unlink()
        _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
