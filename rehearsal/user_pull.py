"""A pull the way MSR users pull: from MSR, with MSR redirecting each layer
(blob) download to the content cache the user chose.

The docs: "blob requests are signed and redirected to the cache configured by
the user"; manifests always come from MSR. This client asks MSR (the stand-in)
as a user for the manifest and each blob; a redirect is followed to the cache,
whose TLS is verified for its name (the cache's address on the local swarm is
given, as a site's DNS would give it), and every blob is checked against its
digest. It records which blobs came from where, so a test or the rehearsal can
say that the cache served every layer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tools.smoke import MANIFEST_V2, Registry, RegistryError

REDIRECTS = (301, 302, 303, 307, 308)


@dataclass
class UserPull:
    digest: str
    """The manifest's digest (what `docker pull` prints)."""
    from_cache: list[str] = field(default_factory=list)
    """Blobs MSR redirected to the cache, and the cache served."""
    from_msr: list[str] = field(default_factory=list)
    """Blobs MSR served itself (a user with no cache)."""

    @property
    def blobs(self) -> list[str]:
        return self.from_cache + self.from_msr


def pull_as_user(msr: Registry, repo: str, tag: str, cache_for: Callable[[str], Registry]) -> UserPull:
    """Pull `repo:tag` from `msr` (a Registry with the user's credentials);
    `cache_for(origin)` is the verified client of the cache at `origin`
    (https://host:port) MSR redirects to, or raises when it is not the cache."""
    status, _, manifest = msr.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_V2})
    if status != 200:
        raise RegistryError(f"MSR: manifest {repo}:{tag}: HTTP {status} {manifest[:200]!r}")
    doc = json.loads(manifest)
    pulled = UserPull("sha256:" + hashlib.sha256(manifest).hexdigest())
    for entry in [doc["config"], *doc["layers"]]:
        digest = entry["digest"]
        status, headers, data = msr.request("GET", f"/v2/{repo}/blobs/{digest}")
        if status in REDIRECTS:
            target = urlsplit(headers.get("location", ""))
            path = target.path + (f"?{target.query}" if target.query else "")
            status, _, data = cache_for(f"{target.scheme}://{target.netloc}").request("GET", path)
            where = pulled.from_cache
            if status != 200:
                raise RegistryError(f"the cache: blob {digest} (redirected by MSR): HTTP {status}")
        elif status == 200:
            where = pulled.from_msr
        else:
            raise RegistryError(f"MSR: blob {digest}: HTTP {status}")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(f"blob {digest} came back with another digest")
        where.append(digest)
    return pulled


def cache_client(cache_url: str, address: tuple[str, int], ca_file: str) -> Callable[[str], Registry]:
    """`cache_for` for the one cache at `cache_url`, reached at `address`."""
    expected = urlsplit(cache_url)

    def cache_for(origin: str) -> Registry:
        got = urlsplit(origin)
        same_port = (got.port or 443) == (expected.port or 443)
        if (got.scheme, got.hostname, same_port) != (expected.scheme, expected.hostname, True):
            raise RegistryError(f"MSR redirected to {origin}, not to this cache ({cache_url})")
        return Registry(address, expected.hostname or "", ca_file)

    return cache_for
