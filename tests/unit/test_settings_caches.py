"""`msr-cache:caches`, `nodes`, `replicas`, `upstream` and object storage: what is
accepted, and every refusal naming the entry's key (`caches[1].cachePort`)."""

from __future__ import annotations

from typing import Any

import pytest

from components.registry_config import storage_driver
from components.settings import SettingsError, parse_stack, problems_as_written
from components.settings_model import StorageSettings
from rehearsal import pki

TOP: dict[str, Any] = {"msrHost": "msr.example.com", "register": False, "publishMode": "host"}


def entry(name: str, **keys: Any) -> dict[str, Any]:
    return {"name": name, "cacheHost": f"{name}.example.com", "cacheNode": f"node-{name}", **keys}


def problems(raw: dict[str, Any], secret_keys: frozenset[str] = frozenset()) -> dict[str, str]:
    with pytest.raises(SettingsError) as err:
        parse_stack(raw, secret_keys)
    return {p.key: p.message for p in err.value.problems}


def caches(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {**TOP, **top, "caches": list(entries)}


# --- accepted ------------------------------------------------------------------


def test_two_sites_are_two_caches_in_the_order_given() -> None:
    stack = parse_stack(caches(entry("asia"), entry("europe")))
    assert stack.listed and [s.name for s in stack.caches] == ["asia", "europe"]


def test_without_caches_the_stack_has_its_one_unnamed_cache() -> None:
    stack = parse_stack({**TOP, "cacheHost": "c.example.com", "cacheNode": "n1"})
    assert not stack.listed and stack.single is not None and stack.single.name is None


def test_parents_are_built_before_their_children() -> None:
    stack = parse_stack(caches(entry("site", upstream="hub"), entry("hub")))
    assert [s.name for s in stack.build_order()] == ["hub", "site"]


def test_the_same_host_port_on_different_nodes_is_accepted_in_host_mode() -> None:
    parse_stack(caches(entry("a"), entry("b")))


def test_an_entrys_tls_fields_merge_over_the_stacks() -> None:
    stack = parse_stack(caches(entry("a", tls={"keyAlgorithm": "ECDSA"}), tls={"validityHours": 2000}))
    tls = stack.caches[0].tls
    assert (tls.key_algorithm, tls.validity_hours) == ("ECDSA", 2000)


def test_an_entrys_tls_mode_replaces_the_stacks_tls() -> None:
    ca = pki.make_ca()
    top_tls = {"mode": "caSigned", "caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}
    stack = parse_stack(
        caches(entry("a", tls={"mode": "selfSigned"}), entry("b"), tls=top_tls), frozenset({"tls"})
    )
    assert [s.tls.mode for s in stack.caches] == ["selfSigned", "caSigned"]


def test_an_entrys_nodes_replace_the_stacks_cache_node() -> None:
    stack = parse_stack(
        caches({"name": "a", "cacheHost": "a.example.com", "nodes": ["x", "y"]}, cacheNode="n1")
    )
    assert stack.caches[0].effective_nodes == ["x", "y"]


def test_defaults_name_service_and_msr_registration_after_stack_and_cache() -> None:
    s = parse_stack(caches(entry("asia")), stack="prod").caches[0]
    assert (s.effective_service_name("prod"), s.effective_cache_name("prod"), s.placement_label) == (
        "msr-cache-prod-asia", "prod-asia", "dtr.cache.asia"
    )  # fmt: skip


# --- refused, each naming the entry's key ----------------------------------------


def test_a_port_published_twice_on_one_node_names_the_second_entrys_cache_port() -> None:
    found = problems(caches(entry("a"), entry("b", cacheNode="node-a")))
    assert "caches[1].cachePort" in found and "node-a" in found["caches[1].cachePort"]


def test_ingress_takes_a_port_on_every_node() -> None:
    found = problems(caches(entry("a", publishMode="ingress"), entry("b")))
    assert "every node" in found["caches[1].cachePort"]


def test_a_name_given_twice_is_refused() -> None:
    assert "caches[0]" in problems(caches(entry("a"), entry("a", cachePort=444)))["caches[1].name"]


@pytest.mark.parametrize("name", ["Asia", "a_b", "-a", "a" * 33, ""])
def test_a_name_unusable_in_swarm_object_names_is_refused(name: str) -> None:
    assert "lower-case" in problems(caches(entry(name)))["caches[0].name"]


def test_a_missing_name_is_refused() -> None:
    bad = entry("a")
    del bad["name"]
    assert "is required" in problems(caches(bad))["caches[0].name"]


def test_a_stack_wide_key_in_an_entry_is_refused_with_a_hint() -> None:
    found = problems(caches(entry("a", msrHost="other.example.com"), entry("b", cachPort=1)))
    assert "top level" in found["caches[0].msrHost"]
    assert "did you mean cachePort" in found["caches[1].cachPort"]


def test_a_bad_value_in_an_entry_names_the_entry() -> None:
    assert "1 to 65535" in problems(caches(entry("a", cachePort=0)))["caches[0].cachePort"]


def test_a_bad_top_level_value_is_named_once_at_the_top_level() -> None:
    found = problems(caches(entry("a"), entry("b"), blobTtl="forever"))
    assert "blobTtl" in found and not any(k.endswith("].blobTtl") for k in found)


def test_a_missing_node_names_the_entry() -> None:
    found = problems(caches({"name": "a", "cacheHost": "a.example.com"}))
    assert "is required" in found["caches[0].cacheNode"]


def test_an_empty_caches_list_is_refused() -> None:
    assert "non-empty list" in problems({**TOP, "caches": []})["caches"]


def test_an_entry_that_is_not_an_object_is_refused() -> None:
    assert "not an object" in problems(caches("asia"))["caches[0]"]  # type: ignore[arg-type]


def test_an_upstream_naming_no_cache_lists_the_caches() -> None:
    found = problems(caches(entry("a", upstream="hub"), entry("b")))
    assert "the stack has: b" in found["caches[0].upstream"]


def test_a_cycle_is_refused() -> None:
    found = problems(caches(entry("a", upstream="b"), entry("b", upstream="a")))
    assert "cycle (a -> b -> a)" in found["caches[0].upstream"]


def test_a_cache_upstream_of_itself_is_a_cycle() -> None:
    assert "cycle" in problems(caches(entry("a", upstream="a")))["caches[0].upstream"]


def test_a_third_level_is_refused() -> None:
    found = problems(caches(entry("a"), entry("b", upstream="a"), entry("c", upstream="b")))
    assert "MSR <- a <- b <- c" in found["caches[2].upstream"] and len(found) == 1


def test_a_parent_outside_the_stack_counts_as_a_level() -> None:
    found = problems(caches(entry("a", upstream="https://parent.example.com"), entry("b", upstream="a")))
    assert "MSR <- https://parent.example.com <- a <- b" in found["caches[1].upstream"]


def test_the_stacks_one_cache_cannot_name_a_parent() -> None:
    found = problems({**TOP, "cacheHost": "c.example.com", "cacheNode": "n1", "upstream": "hub"})
    assert "no caches list" in found["upstream"]


@pytest.mark.parametrize("upstream", ["http://parent.example.com", "parent.example.com:443", "Hub!"])
def test_an_upstream_of_another_form_is_refused(upstream: str) -> None:
    assert "https:// URL" in problems(caches(entry("a", upstream=upstream)))["caches[0].upstream"]


def test_an_upstream_ca_without_an_upstream_url_is_refused() -> None:
    found = problems(caches(entry("a", upstreamCaPem=pki.make_ca().cert_pem)))
    assert "not a parent cache's URL" in found["caches[0].upstreamCaPem"]


def test_more_replicas_than_nodes_is_refused() -> None:
    storage = {"mode": "s3", "s3": {"bucket": "b", "region": "r"}}
    found = problems(caches(entry("a", replicas=3, cacheNode=None, nodes=["x", "y"], storage=storage)))
    assert "2 labelled nodes" in found["caches[0].replicas"] and "at most 2" in found["caches[0].replicas"]


def test_replicas_without_shared_storage_are_refused() -> None:
    found = problems(caches(entry("a", replicas=2, cacheNode=None, nodes=["x", "y"])))
    assert "storage.mode s3, azure, gcs or swift" in found["caches[0].replicas"]


def test_replicas_on_an_nfs_volume_are_accepted() -> None:
    storage = {"mode": "volume", "driverOpts": {"type": "nfs", "o": "addr=10.0.0.9", "device": ":/c"}}
    parse_stack(caches(entry("a", replicas=2, cacheNode=None, nodes=["x", "y"], storage=storage)))


def test_a_node_listed_twice_is_refused() -> None:
    assert "twice" in problems(caches(entry("a", cacheNode=None, nodes=["x", "x"])))["caches[0].nodes"]


def test_cache_node_and_nodes_together_are_refused() -> None:
    assert "only one of the two" in problems(caches(entry("a", nodes=["x"])))["caches[0].nodes"]


# --- object storage ------------------------------------------------------------


def test_an_object_storage_mode_needs_its_object() -> None:
    found = problems(caches(entry("a", storage={"mode": "s3"})))
    assert "bucket and region" in found["caches[0].storage.s3"]


def test_another_modes_object_is_refused() -> None:
    storage = {"mode": "container", "s3": {"bucket": "b", "region": "r"}}
    assert "storage.mode s3" in problems(caches(entry("a", storage=storage)))["caches[0].storage.s3"]


def test_one_s3_key_without_the_other_is_refused() -> None:
    storage = {"mode": "s3", "s3": {"bucket": "b", "region": "r", "accessKey": "AKIA"}}
    found = problems(caches(entry("a", storage=storage)), frozenset({"caches"}))
    assert "or neither" in found["caches[0].storage.s3.secretKey"]


@pytest.mark.parametrize(
    ("mode", "fields", "secret"),
    [
        ("s3", {"bucket": "b", "region": "r", "accessKey": "AKIA", "secretKey": "sekret-1234"}, "secretKey"),
        ("azure", {"accountName": "acct", "accountKey": "sekret-1234", "container": "c"}, "accountKey"),
        ("gcs", {"bucket": "b", "keyfile": '{"k": "sekret-1234"}'}, "keyfile"),
        (
            "swift",
            {"username": "u", "password": "sekret-1234", "authUrl": "https://k", "container": "c"},
            "password",
        ),
    ],
)
def test_a_storage_credential_in_plain_text_is_refused_unquoted(
    mode: str, fields: dict[str, str], secret: str
) -> None:
    found = problems(caches(entry("a", storage={"mode": mode, mode: fields})))
    key = f"caches[0].storage.{mode}.{secret}"
    assert f"--path '{key}'" in found[key]
    assert not any("sekret-1234" in m for m in found.values())


def test_a_plain_top_level_storage_credential_names_the_top_level_key() -> None:
    storage = {
        "mode": "s3",
        "s3": {"bucket": "b", "region": "r", "accessKey": "k", "secretKey": "sekret-1234"},
    }
    found = problems(caches(entry("a"), storage=storage))
    assert "--path storage.s3.secretKey" in found["storage.s3.secretKey"]


def test_an_encrypted_entry_credential_counts_as_present_in_a_stack_file() -> None:
    storage = {"mode": "s3", "s3": {"bucket": "b", "region": "r", "accessKey": "[enc]", "secretKey": "[enc]"}}
    raw = caches(entry("a", storage=storage))
    encrypted = frozenset({"caches.0.storage.s3.accessKey", "caches.0.storage.s3.secretKey"})
    assert problems_as_written(raw, encrypted) == []


@pytest.mark.parametrize(
    ("mode", "fields", "expected"),
    [
        (
            "s3",
            {"bucket": "b", "region": "r", "regionEndpoint": "http://10.0.0.9:9000", "secure": False,
             "chunkSize": 5242880, "rootDirectory": "/cache"},
            {"bucket": "b", "region": "r", "regionendpoint": "http://10.0.0.9:9000", "encrypt": False,
             "secure": False, "v4auth": True, "chunksize": 5242880, "rootdirectory": "/cache"},
        ),
        (
            "azure",
            {"accountName": "acct", "accountKey": "k", "container": "layers"},
            {"accountname": "acct", "accountkey": "k", "container": "layers"},
        ),
        ("gcs", {"bucket": "b"}, {"bucket": "b"}),
        (
            "swift",
            {"username": "u", "password": "p", "authUrl": "https://keystone:5000/v3", "container": "c"},
            {"username": "u", "password": "p", "authurl": "https://keystone:5000/v3", "container": "c"},
        ),
    ],
)  # fmt: skip
def test_each_object_storage_renders_distributions_documented_keys(
    mode: str, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert storage_driver(StorageSettings.model_validate({"mode": mode, mode: fields})) == {mode: expected}


def test_the_filesystem_modes_render_no_driver() -> None:
    assert storage_driver(StorageSettings()) is None


@pytest.mark.parametrize("endpoint", ["10.0.0.9:9000", "ftp://x", "https://x/path"])
def test_an_s3_endpoint_of_another_form_is_refused(endpoint: str) -> None:
    storage = {"mode": "s3", "s3": {"bucket": "b", "region": "r", "regionEndpoint": endpoint}}
    assert (
        "http(s):// URL"
        in problems(caches(entry("a", storage=storage)))["caches[0].storage.s3.regionEndpoint"]
    )


def test_a_chunk_size_below_distributions_minimum_is_refused() -> None:
    storage = {"mode": "s3", "s3": {"bucket": "b", "region": "r", "chunkSize": 1024}}
    assert "caches[0].storage.s3.chunkSize" in problems(caches(entry("a", storage=storage)))
