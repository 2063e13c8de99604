"""The pull of an MSR user (rehearsal/user_pull.py): manifests from MSR, each
blob where MSR says, every digest checked, and where each came from."""

from __future__ import annotations

from typing import Any

import pytest

from rehearsal.upstream import sample_image
from rehearsal.user_pull import cache_client, pull_as_user
from tools.smoke import RegistryError

IMAGE = sample_image("fixed-nonce")


class FakeRegistry:
    def __init__(self, answers: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.answers, self.asked = answers, list[str]()

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        self.asked.append(path)
        return self.answers[path]


def msr_redirecting(to: str | None) -> FakeRegistry:
    answers: dict[str, tuple[int, dict[str, str], bytes]] = {"/v2/r/manifests/1": (200, {}, IMAGE.manifest)}
    for digest, data in IMAGE.blobs.items():
        path = f"/v2/r/blobs/{digest}"
        answers[path] = (307, {"location": f"{to}{path}"}, b"") if to else (200, {}, data)
    return FakeRegistry(answers)


def cache() -> FakeRegistry:
    return FakeRegistry({f"/v2/r/blobs/{d}": (200, {}, data) for d, data in IMAGE.blobs.items()})


def test_redirected_blobs_come_from_the_cache() -> None:
    the_cache = cache()
    pulled = pull_as_user(msr_redirecting("https://c.example.com:5443"), "r", "1", lambda origin: the_cache)  # type: ignore[arg-type,return-value]
    assert pulled.digest == IMAGE.digest
    assert sorted(pulled.from_cache) == sorted(IMAGE.blobs) and pulled.from_msr == []


def test_a_user_without_a_cache_gets_the_blobs_from_msr() -> None:
    pulled = pull_as_user(msr_redirecting(None), "r", "1", lambda origin: pytest.fail("no redirect"))  # type: ignore[arg-type]
    assert sorted(pulled.from_msr) == sorted(IMAGE.blobs) and pulled.from_cache == []


def test_a_blob_with_another_digest_is_an_error() -> None:
    bad = FakeRegistry({f"/v2/r/blobs/{d}": (200, {}, b"tampered") for d in IMAGE.blobs})
    with pytest.raises(RegistryError, match="another digest"):
        pull_as_user(msr_redirecting("https://c.example.com:5443"), "r", "1", lambda origin: bad)  # type: ignore[arg-type,return-value]


def test_a_redirect_to_another_host_is_not_this_cache() -> None:
    cache_for = cache_client("https://c.example.com:5443", ("10.0.0.1", 5443), "/dev/null")
    with pytest.raises(
        RegistryError, match=r"redirected to https://evil\.example\.com:5443, not to this cache"
    ):
        cache_for("https://evil.example.com:5443")
    with pytest.raises(RegistryError, match="not to this cache"):
        cache_for("https://c.example.com:443")
