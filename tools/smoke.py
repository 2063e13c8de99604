"""The smoke check of a deployed cache, and a registry client with real trust checks.

`smoke_check` is what `make rehearse` and `make test-cache` run against a
cache: it answers /v2/ over TLS verified for its name, presents the expected
certificate (given whole, or by its SHA-256 as the `caches` output has it),
and (optionally) serves an image. Given only the SHA-256 and no CA, it trusts
the certificate the cache serves once that certificate has this SHA-256 (a
self-signed cache of `caches`, whose certificate no output holds).

The Docker engine treats registries on 127.0.0.0/8 as insecure and would
accept any certificate, so it cannot prove the TLS chain. This client can:
it connects to an address (host:port) while verifying the certificate for a
server name (SNI and hostname check) against a given CA file, the way a
client that dials `cacheHost` through DNS would.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from tools.redact import redact

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class _Connection(http.client.HTTPSConnection):
    """HTTPS to `address`, verifying the certificate for `server_name`."""

    def __init__(
        self, address: tuple[str, int], server_name: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(server_name, address[1], context=context, timeout=timeout)
        self._address = address
        self._context = context

    def connect(self) -> None:
        raw = socket.create_connection(self._address, self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def context_for(ca_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def handshake(
    address: tuple[str, int], server_name: str, ca_file: str, timeout: float = 5
) -> x509.Certificate:
    """Complete a verified TLS handshake with SNI `server_name`; the peer's certificate."""
    with (
        socket.create_connection(address, timeout) as raw,
        context_for(ca_file).wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def served_certificate(address: tuple[str, int], server_name: str, timeout: float = 90) -> x509.Certificate:
    """The certificate a server presents for `server_name`, NOT verified: only to be
    compared with a known SHA-256 before it is trusted. Waits up to `timeout`
    seconds for the server to answer; raises RegistryError with the last error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # read, then pinned by the caller: nothing is trusted here
    start = time.monotonic()
    last: Any = None
    while True:
        try:
            with (
                socket.create_connection(address, 5) as raw,
                ctx.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
            if der:
                return x509.load_der_x509_certificate(der)
            last = "no certificate"
        except (OSError, ValueError) as exc:
            last = exc
        if time.monotonic() - start >= timeout:
            raise RegistryError(
                f"{server_name} at {address[0]}:{address[1]} did not complete a TLS handshake: {last}"
            )
        time.sleep(0.2)


def sha256_hex(fingerprint: str) -> str:
    """A SHA-256 fingerprint as lower-case hex without colons (`certificateSha256`
    is `AB:CD:...`, as openssl prints it)."""
    return fingerprint.replace(":", "").lower()


@dataclass
class Image:
    """A one-layer image: its manifest and the blobs it names."""

    manifest: bytes
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @classmethod
    def from_layer(cls, layer_gzip: bytes, diff_id: str) -> Image:
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/bin/busybox", "true"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
        ).encode()
        blobs = {_digest(config): config, _digest(layer_gzip): layer_gzip}
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_V2,
                "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": _digest(config)},
                "layers": [{"mediaType": LAYER_GZIP, "size": len(layer_gzip), "digest": _digest(layer_gzip)}],
            },
            sort_keys=True,
        ).encode()
        return cls(manifest, blobs)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryError(Exception):
    """What a registry said or a connection raised; quoted by the tools, so redacted here."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class Registry:
    """The registry API v2 at `address`, verified for `server_name` against `ca_file`;
    with `auth` (user, password), every request carries HTTP basic credentials."""

    def __init__(
        self,
        address: tuple[str, int],
        server_name: str,
        ca_file: str,
        timeout: float = 30,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.address = address
        self.server_name = server_name
        self.context = context_for(ca_file)
        self.timeout = timeout
        self._authorization = (
            "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else None
        )

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        if self._authorization and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = self._authorization
        conn = _Connection(self.address, self.server_name, self.context, self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def wait_ready(self, timeout: float) -> float:
        """Seconds until GET /v2/ answers 200 over verified TLS; raises with the last error."""
        start = time.monotonic()
        last: Any = None
        while time.monotonic() - start < timeout:
            try:
                status, _, _ = self.request("GET", "/v2/")
                if status == 200:
                    return time.monotonic() - start
                last = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            time.sleep(0.2)
        raise RegistryError(
            f"{self.server_name} at {self.address[0]}:{self.address[1]} did not answer: {last}"
        )

    def push(self, repo: str, tag: str, image: Image) -> None:
        for digest, data in image.blobs.items():
            status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
            if status != 202:
                raise RegistryError(f"upload start: HTTP {status} {body[:200]!r}")
            location = headers["location"]
            path = location.split("://", 1)[-1].split("/", 1)[-1]
            sep = "&" if "?" in path else "?"
            status, _, body = self.request(
                "PUT", f"/{path}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"}
            )
            if status != 201:
                raise RegistryError(f"upload {digest}: HTTP {status} {body[:200]!r}")
        status, _, body = self.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", image.manifest, {"Content-Type": MANIFEST_V2}
        )
        if status != 201:
            raise RegistryError(f"manifest {repo}:{tag}: HTTP {status} {body[:200]!r}")

    def pull(self, repo: str, ref: str) -> Image:
        """Manifest and every blob, each checked against its digest."""
        status, _, manifest = self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_V2}
        )
        if status != 200:
            raise RegistryError(f"manifest {repo}:{ref}: HTTP {status} {manifest[:200]!r}")
        doc = json.loads(manifest)
        blobs = {}
        for entry in [doc["config"], *doc["layers"]]:
            status, _, data = self.request("GET", f"/v2/{repo}/blobs/{entry['digest']}")
            if status != 200:
                raise RegistryError(f"blob {entry['digest']}: HTTP {status}")
            if _digest(data) != entry["digest"]:
                raise RegistryError(f"blob {entry['digest']} came back with digest {_digest(data)}")
            blobs[entry["digest"]] = data
        return Image(manifest, blobs)


class SmokeError(Exception):
    """What is wrong with the cache, for the tool to print: redacted like every message."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass
class SmokeResult:
    seconds_to_serve: float
    """From the start of the check to the first 200 on /v2/."""
    certificate_sha256: str
    """SHA-256 of the leaf the cache presented (hex, as `certificateSha256`)."""
    pulled_digest: str | None
    """Manifest digest of the pulled image, when a pull was asked for."""


def _must_present(fingerprint: str, expected: str) -> None:
    if fingerprint != expected:
        raise SmokeError(
            f"the cache presents certificate {fingerprint}, not the stack's {expected} "
            "(an old task still running?)"
        )


def smoke_check(
    address: tuple[str, int],
    server_name: str,
    ca_file: str | None,
    expected_cert_pem: str | None = None,
    pull: tuple[str, str] | None = None,
    timeout: float = 90,
    expected_sha256: str | None = None,
) -> SmokeResult:
    """Check a deployed cache; raises SmokeError saying what is wrong.

    `expected_sha256` (hex, with or without colons) is the certificate it must
    present, as `expected_cert_pem` is. With `ca_file` None, the certificate it
    serves is the trust anchor, once its SHA-256 is `expected_sha256` (then
    required): the TLS check is then verified against that certificate.
    """
    from cryptography.hazmat.primitives import hashes, serialization

    if ca_file is None:
        if not expected_sha256:
            raise ValueError("smoke_check without ca_file trusts the served certificate by expected_sha256")
        start = time.monotonic()
        try:
            served = served_certificate(address, server_name, timeout)
        except RegistryError as exc:
            raise SmokeError(f"the cache does not answer over TLS: {exc}") from None
        _must_present(served.fingerprint(hashes.SHA256()).hex(), sha256_hex(expected_sha256))
        waited = time.monotonic() - start
        with tempfile.TemporaryDirectory(prefix="msrc-smoke-") as tmp:
            pinned = Path(tmp) / "served.pem"
            pinned.write_bytes(served.public_bytes(serialization.Encoding.PEM))
            result = smoke_check(
                address, server_name, str(pinned), expected_cert_pem, pull, timeout, expected_sha256
            )
        result.seconds_to_serve = round(result.seconds_to_serve + waited, 2)
        return result

    registry = Registry(address, server_name, ca_file)
    try:
        seconds = registry.wait_ready(timeout)
        cert = handshake(address, server_name, ca_file)
    except (RegistryError, OSError) as exc:
        raise SmokeError(f"the cache does not answer over verified TLS: {exc}") from None
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    expected: list[str] = []
    if expected_cert_pem is not None:
        expected.append(
            x509.load_pem_x509_certificate(expected_cert_pem.encode()).fingerprint(hashes.SHA256()).hex()
        )
    if expected_sha256:
        expected.append(sha256_hex(expected_sha256))
    for other in expected:
        _must_present(fingerprint, other)
    digest = None
    if pull is not None:
        try:
            digest = registry.pull(*pull).digest
        except (RegistryError, OSError) as exc:
            raise SmokeError(f"pulling {pull[0]}:{pull[1]} through the cache failed: {exc}") from None
    return SmokeResult(round(seconds, 2), fingerprint, digest)
