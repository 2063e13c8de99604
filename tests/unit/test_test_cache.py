"""tools/test_cache.py (`make test-cache ENV=<env>`) without the Pulumi CLI.

The pure parts (stack name, config plan, smoke target) are checked directly;
the orchestration is driven with a fake Backend to show that clean-up always
runs; the real smoke check runs against a local HTTPS registry stub; the real
Automation API backend is driven with fake stacks and the SDK's own errors.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import re
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

import tools.test_cache as tc
from components.settings import _SECRET_VALUES, problems_as_written
from components.settings_model import _SERVICE_RE
from rehearsal import pki
from rehearsal.engine import run_program
from tools.smoke import SmokeError, SmokeResult, smoke_check
from tools.stack_file import encrypted_paths, problems, project_values

ROOT = Path(__file__).resolve().parents[2]
STACK_FILES = sorted(
    p for p in (ROOT / "stacks").glob("Pulumi.*.yaml") if not p.name.startswith("Pulumi.test-")
)
NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
STACK = "test-dev-20250304050607-a1b2c3"


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------
# The stack name
# ---------------------------------------------------------------------------


def test_stack_name_has_the_env_the_utc_time_and_a_token() -> None:
    assert tc.unique_stack_name("dev", now=NOW, token="a1b2c3") == STACK
    local = dt.datetime(2025, 3, 4, 7, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert tc.unique_stack_name("dev", now=local, token="a1b2c3") == STACK


def test_stack_names_are_valid_unique_and_usable_as_service_names() -> None:
    # 200 names in the same second: 32 random bits make a collision a 1-in-200,000 event.
    names = {tc.unique_stack_name("staging") for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert re.fullmatch(r"test-staging-\d{14}-[0-9a-f]{8}", name)
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", name)  # Pulumi stack name characters
        assert _SERVICE_RE.match(name)


def test_stack_name_of_an_odd_or_long_env_stays_valid() -> None:
    name = tc.unique_stack_name("eu west/" + "x" * 80, now=NOW, token="ffffffff")
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", name) and "eu-west-" in name
    assert len(name) <= 63 and _SERVICE_RE.match(name)


# ---------------------------------------------------------------------------
# The config plan
# ---------------------------------------------------------------------------


def by_key(plan: tc.ConfigPlan) -> dict[str, tc.Setting]:
    return {s.key: s for s in plan.settings}


def test_dev_plan_sets_every_key_with_objects_as_paths() -> None:
    plan = tc.plan_config(load(ROOT / "stacks/Pulumi.dev.yaml"), env="dev", stack=STACK)
    S = tc.Setting
    assert list(plan.settings) == [
        S("msr-cache:msrHost", "msr.dev.example.com", False, False),
        S("msr-cache:msrPort", "443", False, False),
        S("msr-cache:cacheHost", "localhost", False, False),
        S("msr-cache:cachePort", "5443", False, False),
        S("msr-cache:cacheNode", "self", False, False),
        S("msr-cache:publishMode", "host", False, False),
        S("msr-cache:logLevel", "debug", False, False),
        S("msr-cache:tls.mode", "selfSigned", False, True),
        S("msr-cache:tls.ipAddresses[0]", "127.0.0.1", False, True),
        S("msr-cache:register", "false", False, False),
        S("msr-cache:serviceName", STACK, False, False),
        S("msr-cache:nodeLabel", "msr-cache-test.a1b2c3", False, False),
        S("msr-cache:cacheName", STACK, False, False),
    ]
    assert plan.tls_mode == "selfSigned" and plan.copied_keys == []
    assert any("pass --port N" in n and "self" in n and "5443" in n for n in plan.notes)


def test_the_environments_service_name_and_label_are_never_used() -> None:
    doc = {"config": {"msr-cache:serviceName": "dtr-cache", "msr-cache:nodeLabel": "msr.cache"}}
    settings = by_key(tc.plan_config(doc, env="prod", stack=STACK))
    assert settings["msr-cache:serviceName"].value == STACK
    assert settings["msr-cache:nodeLabel"].value == "msr-cache-test.a1b2c3"
    labelled = by_key(tc.plan_config(doc, env="prod", stack=STACK, label="dtr.cache"))
    assert labelled["msr-cache:nodeLabel"].value == "dtr.cache"


def test_prod_plan_gives_each_cache_its_own_service_and_msr_name() -> None:
    plan = tc.plan_config(load(ROOT / "stacks/Pulumi.prod.yaml"), env="prod", stack=STACK)
    keys = by_key(plan)
    S = tc.Setting
    assert [s for s in plan.settings if s.key.startswith("msr-cache:caches")] == [
        S("msr-cache:caches[0].name", "asia", False, True),
        S("msr-cache:caches[0].cacheHost", "cache-asia.example.com", False, True),
        S("msr-cache:caches[0].cacheNode", "cache-asia-01.example.com", False, True),
        S("msr-cache:caches[0].serviceName", f"{STACK}-asia", False, True),
        S("msr-cache:caches[0].cacheName", f"{STACK}-asia", False, True),
        S("msr-cache:caches[1].name", "europe", False, True),
        S("msr-cache:caches[1].cacheHost", "cache-europe.example.com", False, True),
        S("msr-cache:caches[1].cacheNode", "cache-europe-01.example.com", False, True),
        S("msr-cache:caches[1].serviceName", f"{STACK}-europe", False, True),
        S("msr-cache:caches[1].cacheName", f"{STACK}-europe", False, True),
    ]
    # Every cache's default: they would collide, and each entry has its own.
    assert "msr-cache:serviceName" not in keys and "msr-cache:cacheName" not in keys
    assert keys["msr-cache:nodeLabel"].value == "msr-cache-test.a1b2c3"
    assert keys["msr-cache:storage.mode"].value == "volume"
    assert plan.caches == (
        tc.CachePlan("asia", "provided", None),
        tc.CachePlan("europe", "provided", None),
    )
    assert any(f"each cache's serviceName and cacheName are {STACK}-<name>" in n for n in plan.notes)
    assert any(
        "asia: node cache-asia-01.example.com, port 443; europe: node cache-europe-01.example.com, port 443"
        in n
        and "cache i gets port N+i" in n
        for n in plan.notes
    )


def test_prod_plan_drops_the_shared_volume_names() -> None:
    doc = load(ROOT / "stacks/Pulumi.prod.yaml")
    doc["config"]["msr-cache:storage"]["volumeName"] = "dtr-cache-layers"
    doc["config"]["msr-cache:caches"][1]["storage"] = {"volumeName": "europe-layers", "retain": True}
    plan = tc.plan_config(doc, env="prod", stack=STACK)
    keys = by_key(plan)
    assert not any("volumeName" in k for k in keys)
    assert keys["msr-cache:caches[1].storage.retain"].value == "true"
    assert any(n.startswith("msr-cache:storage.volumeName: not copied") for n in plan.notes)
    assert any(n.startswith("msr-cache:caches[1].storage.volumeName: not copied") for n in plan.notes)


def test_port_gives_each_cache_its_own_port() -> None:
    doc = load(ROOT / "stacks/Pulumi.prod.yaml")
    doc["config"]["msr-cache:caches"][1]["cachePort"] = 8443
    plan = tc.plan_config(doc, env="prod", stack=STACK, port=6443)
    keys = by_key(plan)
    assert keys["msr-cache:caches[0].cachePort"].value == "6443"
    assert keys["msr-cache:caches[1].cachePort"].value == "6444"
    assert "msr-cache:cachePort" not in keys
    assert any("msr-cache:caches[i].cachePort: 6443+i" in n for n in plan.notes)
    with pytest.raises(tc.ConfigError, match=r"caches\[1\]\.cachePort: --port 65535 gives it 65536"):
        tc.plan_config(doc, env="prod", stack=STACK, port=65535)


def test_an_encrypted_value_of_a_cache_is_copied_into_its_entry() -> None:
    doc = load(ROOT / "stacks/Pulumi.prod.yaml")
    doc["config"]["msr-cache:caches"][0]["tls"] = {"certPem": "CERT", "keyPem": {"secure": "v1:k"}}
    plan = tc.plan_config(doc, env="prod", stack=STACK)
    keys = by_key(plan)
    assert keys["msr-cache:caches[0].tls.keyPem"] == tc.Setting(
        "msr-cache:caches[0].tls.keyPem", None, True, True
    )
    assert plan.copied_keys == ["msr-cache:caches[0].tls.keyPem"]


@pytest.mark.parametrize(
    ("caches", "message"),
    [
        ({"secure": "v1:all"}, r"msr-cache:caches: is encrypted as a whole"),
        (
            [{"name": {"secure": "v1:n"}, "cacheHost": "a.example.com"}],
            r"caches\[0\]\.name: is not a plain name",
        ),
        ([{"name": "a", "storage": {"secure": "v1:s"}}], r"caches\[0\]\.storage: is encrypted as a whole"),
        ([{"name": "x" * 32}], r"caches\[0\]: the test cache's service name .* longer than 63"),
    ],
)
def test_caches_the_test_cannot_rename_are_refused(caches: Any, message: str) -> None:
    stack = "test-production-20250304050607-a1b2c3d4"  # not cut for its caches' names (main does)
    with pytest.raises(tc.ConfigError, match=message):
        tc.plan_config({"config": {"msr-cache:caches": caches}}, env="production", stack=stack)


def test_the_stack_name_leaves_room_for_the_longest_cache_name() -> None:
    name = "n" * 32
    stack = tc.unique_stack_name("production-" + "x" * 40, now=NOW, token="ffffffff", reserve=len(name) + 1)
    assert len(f"{stack}-{name}") <= 63 and _SERVICE_RE.match(f"{stack}-{name}")
    assert stack.startswith("test-p-")
    doc = {"config": {"msr-cache:caches": [{"name": name}, {"name": "asia"}]}}
    assert tc.cache_entry_names(doc) == [name, "asia"]
    plan = tc.plan_config(doc, env="production", stack=stack)
    assert by_key(plan)["msr-cache:caches[0].serviceName"].value == f"{stack}-{name}"
    assert tc.unique_stack_name("prod", now=NOW, token="ffffffff", reserve=6) == (
        "test-prod-20250304050607-ffffffff"
    )


def test_port_override_replaces_cache_port() -> None:
    plan = tc.plan_config(load(ROOT / "stacks/Pulumi.dev.yaml"), env="dev", stack=STACK, port=6443)
    assert [s.value for s in plan.settings if s.key == "msr-cache:cachePort"] == ["6443"]
    assert not any("pass --port N" in n for n in plan.notes)


def test_secure_values_are_copied_with_the_cli_and_never_read() -> None:
    doc = {
        "secretsprovider": "awskms://alias/x?region=eu-west-1",
        "config": {
            "msr-cache:msrCaCert": {"secure": "v1:AAA"},
            "msr-cache:tls": {
                "mode": "caSigned",
                "caCertPem": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
                "caKeyPem": {"secure": "v1:BBB"},
            },
        },
    }
    plan = tc.plan_config(doc, env="staging", stack=STACK)
    keys = by_key(plan)
    assert keys["msr-cache:msrCaCert"] == tc.Setting("msr-cache:msrCaCert", None, True, False)
    assert keys["msr-cache:tls.caKeyPem"] == tc.Setting("msr-cache:tls.caKeyPem", None, True, True)
    assert plan.copied_keys == ["msr-cache:msrCaCert", "msr-cache:tls.caKeyPem"]
    assert plan.ca_cert_pem is not None and "CA" in plan.ca_cert_pem
    assert plan.secrets_provider == "awskms://alias/x?region=eu-west-1"
    assert "v1:" not in repr(plan.settings)


BASE = {
    "msr-cache:msrHost": "msr.example.com",
    "msr-cache:cacheHost": "cache.example.com",
    "msr-cache:cacheNode": "node1",
    "msr-cache:register": False,
}


def accepted(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc`, after checking that it passes the stack-file check main runs before plan_config."""
    assert problems(project_values(doc, Path("Pulumi.x.yaml"))) == []
    return doc


def test_a_plaintext_private_key_up_refuses_never_reaches_the_plan(tmp_path: Path) -> None:
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"])
    tls = {"mode": "provided", "certPem": leaf.cert_pem, "keyPem": leaf.key_pem}
    text = yaml.safe_dump({"config": {**BASE, "msr-cache:tls": tls}})
    with pytest.raises(tc.Refusal, match=r"msr-cache:tls\.keyPem: is stored in plain text"):
        tc.checked_document("asia", root=_project(tmp_path, text))


@pytest.mark.parametrize("in_entry", [False, True])
def test_a_plaintext_private_key_up_accepts_is_set_as_a_secret(in_entry: bool) -> None:
    """A plain key is accepted (as `up` accepts it) when another value of its key is
    encrypted: the CLI then treats the whole key as secret."""
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"])
    tls = {"mode": "provided", "certPem": {"secure": "v1:cert"}, "keyPem": leaf.key_pem}
    config: dict[str, Any] = {**BASE, "msr-cache:tls": tls}
    key = "msr-cache:tls.keyPem"
    if in_entry:
        config = {**BASE, "msr-cache:caches": [{"name": "asia", "tls": tls}]}
        key = "msr-cache:caches[0].tls.keyPem"
    plan = tc.plan_config(accepted({"config": config}), env="prod", stack=STACK)
    keys = by_key(plan)
    assert keys[key].secret and keys[key].value == leaf.key_pem
    assert any(n.startswith(f"{key}: is in plain text") for n in plan.notes)
    assert not any("PRIVATE KEY" in n for n in plan.notes)
    assert "PRIVATE KEY" not in repr(plan.settings)


def test_every_value_up_wants_secret_is_a_secret_leaf() -> None:
    wanted = {path for path in _SECRET_VALUES if "." in path}
    assert wanted == set(tc.SECRET_LEAVES)


def test_a_key_without_its_namespace_is_refused() -> None:
    with pytest.raises(tc.ConfigError, match="config key 'cacheHost' has no namespace"):
        tc.plan_config({"config": {"cacheHost": "c.example.com"}}, env="e", stack=STACK)
    # The CLI's older form, msr-cache:config:<name>, is the same key.
    doc = {"config": {"msr-cache:config:serviceName": "dtr-cache", "msr-cache:config:cacheHost": "c"}}
    keys = by_key(tc.plan_config(doc, env="e", stack=STACK))
    assert keys["msr-cache:serviceName"].value == STACK and keys["msr-cache:cacheHost"].value == "c"


def test_docker_keys_are_copied_and_other_namespaces_named() -> None:
    doc = {
        "config": {"docker:host": "ssh://ops@manager", "aws:region": "eu-west-1", "pulumi:tags": {"a": "b"}}
    }
    plan = tc.plan_config(doc, env="prod", stack=STACK)
    assert by_key(plan)["docker:host"] == tc.Setting("docker:host", "ssh://ops@manager", False, False)
    assert any("aws:region, pulumi:tags" in n for n in plan.notes)


def test_map_keys_that_need_quoting_are_quoted() -> None:
    doc = {
        "config": {"msr-cache:storage": {"mode": "volume", "driverOpts": {"com.x/y": "1k", "type": "nfs"}}}
    }
    keys = by_key(tc.plan_config(doc, env="e", stack=STACK))
    assert keys['msr-cache:storage.driverOpts["com.x/y"]'].value == "1k"
    assert keys["msr-cache:storage.driverOpts.type"].value == "nfs"


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"dnsNames": ["true"]}, r"tls\.dnsNames\[0\]: is the string 'true'"),
        ({"validityHours": "720"}, r"tls\.validityHours: is the string '720'"),
        ({"ratio": 1.5}, r"tls\.ratio: a float value"),
        ({"dnsNames": [{"secure": "v1:x"}]}, r"tls\.dnsNames\[0\]: a list item that is encrypted or empty"),
        (
            {"dnsNames": [None, "a.example.com"]},
            r"tls\.dnsNames\[0\]: a list item that is encrypted or empty",
        ),
        ({'a"b': "x"}, r"cannot be written as a config path"),
    ],
)
def test_values_that_would_not_survive_the_copy_are_refused(tls: dict, message: str) -> None:
    with pytest.raises(tc.ConfigError, match=message):
        tc.plan_config({"config": {"msr-cache:tls": tls}}, env="e", stack=STACK)


def test_strings_with_leading_zeros_stay_strings_and_are_allowed() -> None:
    keys = by_key(tc.plan_config({"config": {"msr-cache:tls": {"x": "0123"}}}, env="e", stack=STACK))
    assert keys["msr-cache:tls.x"].value == "0123"


# A model of what `pulumi config set[-all] [--path]` and `config cp [--path]`
# store (pulumi/pulumi sdk/go/common/resource/config: adjustObjectValue and
# parseKeyPath): the plan must rebuild the stack file's config.
_SEGMENT = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_]*)|\["([^"]*)"\]|\[(\d+)\]')


def _cli_store(config: dict[str, Any], setting: tc.Setting, source: dict[str, Any]) -> None:
    ns, name = setting.key.split(":", 1)
    segments: list[str | int] = []
    for m in _SEGMENT.finditer(name if setting.path else ""):
        segments.append(m.group(1) or m.group(2) if m.group(3) is None else int(m.group(3)))
    if not setting.path:
        segments = [name]
    value: Any
    if setting.value is None:  # config cp: the source's (encrypted) value, unchanged
        value = source[f"{ns}:{segments[0]}"]
        for seg in segments[1:]:
            value = value[seg]
    elif not setting.path:
        value = setting.value
    elif setting.value in ("true", "false"):
        value = setting.value == "true"
    elif len(setting.value) > 1 and setting.value[0] == "0":
        value = setting.value
    elif re.fullmatch(r"[+-]?\d+", setting.value):
        value = int(setting.value)
    else:
        value = setting.value
    key, rest = f"{ns}:{segments[0]}", segments[1:]
    if not rest:
        config[key] = value
        return
    node = config.setdefault(key, [] if isinstance(rest[0], int) else {})
    for seg, nxt in zip(rest, [*rest[1:], None], strict=True):
        if nxt is None:
            if isinstance(node, list):
                assert seg == len(node), "list items are set in order"
                node.append(value)
            else:
                node[str(seg)] = value
        else:
            empty: Any = [] if isinstance(nxt, int) else {}
            if isinstance(node, list):
                assert isinstance(seg, int)
                if seg == len(node):
                    node.append(empty)
                node = node[seg]
            else:
                node = node.setdefault(str(seg), empty)


def _as_stored(config: dict[str, Any]) -> dict[str, Any]:
    """Top-level scalars are strings in a stack's config (config.Value), objects keep their types."""

    def text(v: Any) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    return {k: v if isinstance(v, dict | list) else text(v) for k, v in config.items()}


def _as_the_backend_sets_it(plan: tc.ConfigPlan, source: dict[str, Any]) -> dict[str, Any]:
    """The test stack's config after AutomationBackend.set_config: plain values,
    then plain paths, then the encrypted values copied with `config cp`."""
    rebuilt: dict[str, Any] = {}
    plain = [s for s in plan.settings if s.value is not None]
    for setting in [
        *(s for s in plain if not s.path),
        *(s for s in plain if s.path),
        *(s for s in plan.settings if s.value is None),
    ]:
        _cli_store(rebuilt, setting, source)
    return rebuilt


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_the_plan_rebuilds_each_stack_files_config(path: Path) -> None:
    doc = load(path)
    config = doc["config"]
    config["msr-cache:tls"]["caKeyPem"] = {"secure": "v1:encrypted"}  # as after `config set --secret`
    config["msr-cache:storage"] = {
        "mode": "volume",
        "driverOpts": {"o": "addr=10.0.0.1", "type": "nfs"},
    }
    caches = config.get("msr-cache:caches")
    if caches:  # each site's own key, as README "Stacks" sets it
        caches[0]["tls"] = {"keyPem": {"secure": "v1:asia-key"}, "dnsNames": ["asia.example.com"]}
    plan = tc.plan_config(doc, env=path.stem, stack=STACK, port=7443)
    rebuilt = _as_the_backend_sets_it(plan, config)
    expected = _as_stored(config)
    expected["msr-cache:nodeLabel"] = "msr-cache-test.a1b2c3"
    if caches:
        expected["msr-cache:caches"] = [
            {
                **{k: v for k, v in entry.items() if k != "cacheName"},
                "serviceName": f"{STACK}-{entry['name']}",
                "cacheName": f"{STACK}-{entry['name']}",
                "cachePort": 7443 + i,
            }
            for i, entry in enumerate(caches)
        ]
    else:
        expected |= {
            "msr-cache:serviceName": STACK,
            "msr-cache:cacheName": STACK,
            "msr-cache:cachePort": "7443",
        }
    assert _as_stored(rebuilt) == expected


def test_the_test_stack_of_each_stack_file_passes_the_programs_checks() -> None:
    """The test stack's config, as the CLI would hold it, is what `up` accepts: no
    service, MSR name or port shared between its caches, names Swarm takes."""
    for path in STACK_FILES:
        doc = load(path)
        config = doc["config"]
        config["msr-cache:register"] = False
        ca = pki.make_ca("Corp CA")
        entries = config.get("msr-cache:caches") or [{}]
        for entry in entries:
            host = entry.get("cacheHost") or config.get("msr-cache:cacheHost")
            leaf = pki.make_leaf(host, dns=[host], issuer=ca)
            mode = config["msr-cache:tls"].get("mode")
            if mode == "provided":
                tls = {"certPem": leaf.cert_pem, "keyPem": {"secure": "v1:key"}}
            elif mode == "caSigned":
                tls = {"caCertPem": ca.cert_pem, "caKeyPem": {"secure": "v1:key"}}
            else:
                tls = {}
            (entry.setdefault("tls", {}) if "msr-cache:caches" in config else config["msr-cache:tls"]).update(
                tls
            )
        name = max((e.get("name", "") for e in entries), key=len)
        stack = tc.unique_stack_name(path.stem, reserve=len(name) + 1 if name else 0)
        plan = tc.plan_config(doc, env=path.stem, stack=stack, port=7443)
        rebuilt = _as_the_backend_sets_it(plan, config)
        values = {k.split(":", 1)[1]: v for k, v in rebuilt.items() if k.startswith("msr-cache:")}
        assert problems_as_written(values, encrypted_paths(values), stack=stack) == [], path.name


# ---------------------------------------------------------------------------
# The smoke check's target
# ---------------------------------------------------------------------------

PLAN_SELF = tc.ConfigPlan((), (), "selfSigned", None, None)
OUTS = {"cacheUrl": "https://cache.example.com:5443", "certificatePem": "LEAF"}


def test_target_is_cache_urls_host_and_port() -> None:
    t = tc.smoke_target(OUTS, PLAN_SELF)
    assert (t.address, t.server_name, t.ca_pem, t.expected_cert_pem) == (
        ("cache.example.com", 5443), "cache.example.com", "LEAF", "LEAF",
    )  # fmt: skip
    assert tc.smoke_target({**OUTS, "cacheUrl": "https://c.example.com"}, PLAN_SELF).address == (
        "c.example.com", 443,
    )  # fmt: skip
    assert tc.smoke_target({**OUTS, "cacheUrl": "https://[::1]:8443"}, PLAN_SELF).address == ("::1", 8443)


def test_target_address_override_keeps_the_server_name() -> None:
    t = tc.smoke_target(OUTS, PLAN_SELF, address=("10.0.0.7", 443))
    assert t.address == ("10.0.0.7", 443) and t.server_name == "cache.example.com"


def test_target_ca_by_tls_mode() -> None:
    ca_signed = tc.ConfigPlan((), (), "caSigned", "CA", None)
    assert tc.smoke_target(OUTS, ca_signed).ca_pem == "CA"
    provided = tc.smoke_target(OUTS, tc.ConfigPlan((), (), "provided", None, None))
    assert provided.ca_pem == "LEAF" and "--ca-file" in provided.ca_source
    given = tc.smoke_target(OUTS, ca_signed, ca_file=Path("/etc/corp-root.pem"))
    assert given.ca_file == Path("/etc/corp-root.pem") and given.ca_pem is None


def test_target_without_outputs_is_a_step_error() -> None:
    with pytest.raises(tc.StepError, match="no cacheUrl"):
        tc.smoke_target({}, PLAN_SELF)


def test_host_port_parsing() -> None:
    assert tc.parse_host_port("127.0.0.1:5443") == ("127.0.0.1", 5443)
    assert tc.parse_host_port("[::1]:443") == ("::1", 443)
    for bad in ("nohost", ":443", "h:0", "h:x"):
        with pytest.raises(ValueError):
            tc.parse_host_port(bad)


def test_cli_error_line_picks_the_error() -> None:
    text = (
        "\n code: 255\n stdout: Updating (x)\n  lots of output\n"
        " stderr: error: no stack named 'staging' found"
    )
    assert tc.cli_error_line(text) == "no stack named 'staging' found"
    assert tc.cli_error_line("\n code: 1\n stdout: \n stderr: boom") == "stderr: boom"


# ---------------------------------------------------------------------------
# The orchestration with a fake backend
# ---------------------------------------------------------------------------


class FakeBackend:
    def __init__(self, outs: dict[str, Any] | None = None, **failures: BaseException) -> None:
        self.calls: list[str] = []
        self.failures = failures
        self._outputs = outs or {"cacheUrl": "https://localhost:5443", "certificatePem": "LEAF"}
        self.settings: Sequence[tc.Setting] = ()

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.failures:
            raise self.failures[name]

    def create(self, stack: str, secrets_provider: str | None) -> None:
        self._call("create")

    def set_config(self, settings: Sequence[tc.Setting], environments: Sequence[str] = ()) -> None:
        self.settings = settings
        self._call("set_config")

    def up(self, on_output: tc.OnOutput) -> None:
        on_output("Updating (test stack)")
        self._call("up")

    def outputs(self) -> dict[str, Any]:
        self._call("outputs")
        return self._outputs

    def destroy(self, on_output: tc.OnOutput) -> None:
        self._call("destroy")

    def remove(self) -> None:
        self._call("remove")


class FakeSmoke:
    def __init__(self, error: BaseException | Callable[[str], BaseException | None] | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self, address: tuple[str, int], server_name: str, ca_file: str | None, **kw: Any
    ) -> SmokeResult:
        ca = None if ca_file is None else Path(ca_file).read_text()
        self.calls.append({"address": address, "server_name": server_name, "ca": ca, **kw})
        error = self.error(server_name) if callable(self.error) else self.error
        if error:
            raise error
        return SmokeResult(1.5, "ab" * 32, None)


def a_run(**kw: Any) -> tc.CacheTest:
    plan = tc.plan_config(load(ROOT / "stacks/Pulumi.dev.yaml"), env="dev", stack=STACK)
    return tc.CacheTest(env="dev", stack=STACK, plan=plan, root=ROOT, **kw)


ALL_STEPS = ["create", "set_config", "up", "outputs", "destroy", "remove"]


def test_success_runs_every_step_then_cleans_up(capsys: pytest.CaptureFixture[str]) -> None:
    backend, smoke = FakeBackend(), FakeSmoke()
    assert tc.run_test(a_run(pull=("library/busybox", "1.36")), backend, smoke) == tc.EXIT_OK
    assert backend.calls == ALL_STEPS
    (call,) = smoke.calls
    assert call["address"] == ("localhost", 5443) and call["server_name"] == "localhost"
    assert call["ca"] == "LEAF" and call["expected_cert_pem"] == "LEAF"
    assert call["pull"] == ("library/busybox", "1.36") and call["timeout"] == 90
    out = capsys.readouterr().out
    assert "Updating (test stack)" in out and "PASSED" in out and f"removed stack {STACK}" in out


@pytest.mark.parametrize(
    ("failures", "steps"),
    [
        ({"set_config": tc.StepError("setting the config failed: x")}, ["create", "set_config"]),
        (
            {"up": tc.StepError("pulumi up failed: update failed (its output is above)")},
            ["create", "set_config", "up"],
        ),
        ({"outputs": tc.StepError("reading the outputs failed")}, ["create", "set_config", "up", "outputs"]),
    ],
)
def test_a_failed_step_is_one_line_and_still_cleaned_up(
    failures: dict, steps: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    backend = FakeBackend(**failures)
    assert tc.run_test(a_run(), backend, FakeSmoke()) == tc.EXIT_FAILED
    assert backend.calls == [*steps, "destroy", "remove"]
    err = capsys.readouterr().err
    assert err.count("FAILED:") == 1 and "Traceback" not in err


def test_a_failed_smoke_check_is_cleaned_up(capsys: pytest.CaptureFixture[str]) -> None:
    backend = FakeBackend()
    smoke = FakeSmoke(SmokeError("the cache does not answer over verified TLS: timed out"))
    assert tc.run_test(a_run(), backend, smoke) == tc.EXIT_FAILED
    assert backend.calls == ALL_STEPS
    assert "FAILED: the cache does not answer over verified TLS" in capsys.readouterr().err


def test_an_interrupt_during_up_is_cleaned_up(capsys: pytest.CaptureFixture[str]) -> None:
    backend = FakeBackend(up=KeyboardInterrupt())
    assert tc.run_test(a_run(), backend, FakeSmoke()) == tc.EXIT_INTERRUPTED
    assert backend.calls == ["create", "set_config", "up", "destroy", "remove"]
    assert "interrupted; cleaning up" in capsys.readouterr().err


def test_an_interrupt_during_the_smoke_check_is_cleaned_up() -> None:
    backend = FakeBackend()
    assert tc.run_test(a_run(), backend, FakeSmoke(KeyboardInterrupt())) == tc.EXIT_INTERRUPTED
    assert backend.calls == ALL_STEPS


def test_a_failed_create_has_nothing_to_clean() -> None:
    backend = FakeBackend(create=tc.StepError("creating stack failed: passphrase must be set"))
    assert tc.run_test(a_run(), backend, FakeSmoke()) == tc.EXIT_FAILED
    assert backend.calls == ["create"]


def test_keep_on_failure_keeps_the_stack_and_says_how_to_remove_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = FakeBackend(up=tc.StepError("pulumi up failed"))
    assert tc.run_test(a_run(keep_on_failure=True), backend, FakeSmoke()) == tc.EXIT_FAILED
    assert backend.calls == ["create", "set_config", "up"]
    out = capsys.readouterr().out
    assert f"pulumi destroy --stack {STACK}" in out and f"pulumi stack rm {STACK}" in out


def test_keep_on_failure_still_removes_a_passing_stack() -> None:
    backend = FakeBackend()
    assert tc.run_test(a_run(keep_on_failure=True), backend, FakeSmoke()) == tc.EXIT_OK
    assert backend.calls == ALL_STEPS


@pytest.mark.parametrize("smoke_error", [None, SmokeError("wrong certificate")])
def test_a_failed_destroy_prints_the_commands_to_finish(
    smoke_error: Exception | None, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = FakeBackend(destroy=tc.StepError("pulumi destroy failed: docker unreachable"))
    assert tc.run_test(a_run(), backend, FakeSmoke(smoke_error)) == tc.EXIT_CLEANUP_FAILED
    assert backend.calls == ["create", "set_config", "up", "outputs", "destroy"]
    err = capsys.readouterr().err
    assert "clean-up FAILED: pulumi destroy failed: docker unreachable" in err
    assert f"  pulumi destroy --stack {STACK}\n" in err and f"  pulumi stack rm {STACK}\n" in err


def test_a_failed_stack_rm_prints_only_stack_rm(capsys: pytest.CaptureFixture[str]) -> None:
    backend = FakeBackend(remove=tc.StepError("pulumi stack rm failed"))
    assert tc.run_test(a_run(), backend, FakeSmoke()) == tc.EXIT_CLEANUP_FAILED
    err = capsys.readouterr().err
    assert f"pulumi stack rm {STACK}" in err and "pulumi destroy --stack" not in err


def test_an_interrupted_destroy_prints_the_commands_to_finish(capsys: pytest.CaptureFixture[str]) -> None:
    backend = FakeBackend(destroy=KeyboardInterrupt())
    assert tc.run_test(a_run(), backend, FakeSmoke()) == tc.EXIT_CLEANUP_FAILED
    assert f"pulumi destroy --stack {STACK}" in capsys.readouterr().err


def test_an_unexpected_error_still_cleans_up_and_is_not_hidden() -> None:
    backend = FakeBackend(outputs=RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        tc.run_test(a_run(), backend, FakeSmoke())
    assert backend.calls[-2:] == ["destroy", "remove"]


def test_no_config_value_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    ca = pki.make_ca("MSR CA")
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"])
    tls = {
        "mode": "provided",
        "certPem": leaf.cert_pem,
        "keyPem": leaf.key_pem,
        "chainPem": {"secure": "v1:XYZ"},
    }
    doc = accepted({"config": {**BASE, "msr-cache:msrCaCert": ca.cert_pem, "msr-cache:tls": tls}})
    plan = tc.plan_config(doc, env="prod", stack=STACK)
    run = tc.CacheTest(env="prod", stack=STACK, plan=plan, root=ROOT)
    tc.run_test(run, FakeBackend(up=tc.StepError("pulumi up failed")), FakeSmoke())
    captured = capsys.readouterr()
    for pem in (ca.cert_pem, leaf.cert_pem, leaf.key_pem):
        body = [line for line in pem.splitlines() if not line.startswith("-----")]
        assert not any(line in captured.out + captured.err for line in body)
    assert "v1:XYZ" not in captured.out + captured.err
    assert "msr-cache:tls.keyPem" in captured.out  # keys are named, values are not


# ---------------------------------------------------------------------------
# Several caches: each one checked, from the `caches` output
# ---------------------------------------------------------------------------

TWO_SITES = {
    "config": {
        "msr-cache:msrHost": "msr.example.com",
        "msr-cache:publishMode": "host",
        "msr-cache:register": False,
        "msr-cache:tls": {"mode": "selfSigned"},
        "msr-cache:caches": [
            {"name": "asia", "cacheHost": "cache-asia.example.com", "cacheNode": "asia-1"},
            {"name": "europe", "cacheHost": "cache-europe.example.com", "cacheNode": "europe-1"},
        ],
    }
}


@pytest.fixture(scope="module")
def two_sites() -> tuple[tc.ConfigPlan, dict[str, Any]]:
    """The test stack's plan for two sites (--port 6443), and the outputs the program
    exports for that test stack's config."""
    plan = tc.plan_config(TWO_SITES, env="prod", stack=STACK, port=6443)
    config = _as_the_backend_sets_it(plan, TWO_SITES["config"])
    run = run_program({k.split(":", 1)[1]: v for k, v in config.items()}, stack=STACK, base={})
    return plan, run.exports


def test_each_cache_is_smoke_checked_from_the_caches_output(
    two_sites: tuple[tc.ConfigPlan, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    plan, outputs = two_sites
    assert "certificatePem" not in outputs  # two caches: only the map
    backend, smoke = FakeBackend(outputs), FakeSmoke()
    run = tc.CacheTest(env="prod", stack=STACK, plan=plan, root=ROOT, pull=("library/busybox", "1.36"))
    assert tc.run_test(run, backend, smoke) == tc.EXIT_OK
    assert backend.calls == ALL_STEPS
    seen = [(c["address"], c["server_name"], c["ca"], c["expected_sha256"], c["pull"]) for c in smoke.calls]
    assert seen == [
        (("cache-asia.example.com", 6443), "cache-asia.example.com", None,
         outputs["caches"]["asia"]["certificateSha256"], ("library/busybox", "1.36")),
        (("cache-europe.example.com", 6444), "cache-europe.example.com", None,
         outputs["caches"]["europe"]["certificateSha256"], ("library/busybox", "1.36")),
    ]  # fmt: skip
    out = capsys.readouterr().out
    assert (
        f"deployed cache asia: https://cache-asia.example.com:6443 (service {STACK}-asia, nodes asia-1, "
        in out
    )
    assert "label msr-cache-test.a1b2c3.asia)" in out
    assert (
        "smoke check of cache europe: https://cache-europe.example.com at cache-europe.example.com:6444"
        in out
    )
    assert "pinned by its certificateSha256 (self-signed)" in out
    assert "PASSED: all 2 caches (asia, europe)" in out and f"removed stack {STACK}" in out


def test_a_failing_cache_is_named_and_the_others_are_still_checked(
    two_sites: tuple[tc.ConfigPlan, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    plan, outputs = two_sites

    def asia_fails(server_name: str) -> BaseException | None:
        return SmokeError("the cache does not answer over TLS: timed out") if "asia" in server_name else None

    backend, smoke = FakeBackend(outputs), FakeSmoke(asia_fails)
    run = tc.CacheTest(env="prod", stack=STACK, plan=plan, root=ROOT)
    assert tc.run_test(run, backend, smoke) == tc.EXIT_FAILED
    assert len(smoke.calls) == 2 and backend.calls == ALL_STEPS
    err = capsys.readouterr().err
    assert "cache asia: FAILED: the cache does not answer over TLS: timed out" in err
    assert "FAILED: 1 of 2 caches failed the smoke check: asia (above)" in err


def test_addresses_of_caches_by_name(two_sites: tuple[tc.ConfigPlan, dict[str, Any]]) -> None:
    plan, outputs = two_sites
    address, addresses = tc.chosen_addresses([("europe", ("10.0.0.8", 443))], plan)
    targets = tc.cache_targets(outputs, plan, address, addresses)
    assert [(t.name, t.address, t.server_name) for t in targets] == [
        ("asia", ("cache-asia.example.com", 6443), "cache-asia.example.com"),
        ("europe", ("10.0.0.8", 443), "cache-europe.example.com"),
    ]
    given = tc.cache_targets(outputs, plan, ca_file=Path("/etc/corp-root.pem"))
    assert all(t.ca_file == Path("/etc/corp-root.pem") and not t.pinned for t in given)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            [(None, ("10.0.0.8", 443))],
            r"several caches \(asia, europe\); say which: --address NAME=HOST:PORT",
        ),
        ([("emea", ("10.0.0.8", 443))], r"no cache emea in the stack; its caches are: asia, europe"),
        ([("asia", ("10.0.0.8", 443))] * 2, r"--address asia=\.\.\. is given twice"),
    ],
)
def test_addresses_that_name_no_one_cache_are_refused(
    two_sites: tuple[tc.ConfigPlan, dict[str, Any]], given: list, message: str
) -> None:
    with pytest.raises(tc.Refusal, match=message):
        tc.chosen_addresses(given, two_sites[0])


def test_an_address_with_a_name_needs_caches() -> None:
    plan = tc.plan_config(load(ROOT / "stacks/Pulumi.dev.yaml"), env="dev", stack=STACK)
    with pytest.raises(tc.Refusal, match="the stack has no caches list; give --address HOST:PORT"):
        tc.chosen_addresses([("asia", ("10.0.0.8", 443))], plan)
    assert tc.chosen_addresses([(None, ("10.0.0.8", 443))], plan) == (("10.0.0.8", 443), {})
    assert tc.parse_args(["prod", "--address", "asia=[::1]:443", "--address", "10.0.0.1:5443"]).address == [
        ("asia", ("::1", 443)),
        (None, ("10.0.0.1", 5443)),
    ]


def test_each_cache_trusts_its_own_ca() -> None:
    corp, other = pki.make_ca("Corp CA"), pki.make_ca("Site CA")
    doc = {
        "config": {
            "msr-cache:tls": {"mode": "caSigned", "caCertPem": corp.cert_pem, "caKeyPem": {"secure": "v1:k"}},
            "msr-cache:caches": [
                {"name": "asia"},
                {"name": "europe", "tls": {"caCertPem": other.cert_pem, "caKeyPem": {"secure": "v1:k2"}}},
                {"name": "branch", "tls": {"mode": "selfSigned"}},
                {"name": "edge", "tls": {"mode": "provided"}},
            ],
        }
    }
    plan = tc.plan_config(doc, env="prod", stack=STACK)
    assert plan.caches == (
        tc.CachePlan("asia", "caSigned", corp.cert_pem),
        tc.CachePlan("europe", "caSigned", other.cert_pem),
        tc.CachePlan("branch", "selfSigned", None),
        tc.CachePlan("edge", "provided", None),
    )
    outputs = {
        "caches": {
            c.name: {"cacheUrl": f"https://{c.name}.example.com", "certificateSha256": "AB:CD"}
            for c in plan.caches
        }
    }
    targets = tc.cache_targets(outputs, plan)
    assert [(t.ca_pem, t.pinned) for t in targets] == [
        (corp.cert_pem, False), (other.cert_pem, False), (None, True), (None, True),
    ]  # fmt: skip
    assert "tls.mode provided: this verifies only a self-signed certificate" in targets[3].ca_source
    with pytest.raises(tc.StepError, match="the caches output has no cache edge"):
        tc.cache_targets({"caches": {k: v for k, v in outputs["caches"].items() if k != "edge"}}, plan)
    with pytest.raises(tc.StepError, match="the stack has no caches output"):
        tc.cache_targets({}, plan)


# ---------------------------------------------------------------------------
# The real smoke check against a local HTTPS registry stub
# ---------------------------------------------------------------------------


class _V2(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"{}"
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def https_v2(tmp_path: Path) -> Iterator[Any]:
    """Start a /v2/ stub on 127.0.0.1 serving the given chain: serve(leaf, chain_pem) -> port."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(leaf: pki.Issued, chain_pem: str = "") -> int:
        cert, key = tmp_path / f"c{len(servers)}.pem", tmp_path / f"k{len(servers)}.pem"
        cert.write_text(leaf.cert_pem + chain_pem)
        key.write_text(leaf.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _V2)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_real_smoke_check_passes_for_a_self_signed_cache(https_v2: Any) -> None:
    leaf = pki.make_leaf("localhost", dns=["localhost"], ips=["127.0.0.1"])
    port = https_v2(leaf)
    outputs = {"cacheUrl": f"https://localhost:{port}", "certificatePem": leaf.cert_pem}
    backend = FakeBackend(outputs)
    assert tc.run_test(a_run(address=("127.0.0.1", port), timeout=5), backend) == tc.EXIT_OK
    assert backend.calls == ALL_STEPS


def test_real_smoke_check_with_the_ca_from_a_ca_signed_stack(https_v2: Any) -> None:
    ca = pki.make_ca("Corp CA")
    leaf = pki.make_leaf("cache.site.example", dns=["cache.site.example"], issuer=ca)
    port = https_v2(leaf)
    doc = {"config": {"msr-cache:tls": {"mode": "caSigned", "caCertPem": ca.cert_pem}}}
    plan = tc.plan_config(doc, env="staging", stack=STACK)
    outputs = {"cacheUrl": "https://cache.site.example", "certificatePem": leaf.cert_pem + ca.cert_pem}
    run = tc.CacheTest(
        env="staging", stack=STACK, plan=plan, root=ROOT, address=("127.0.0.1", port), timeout=5
    )
    assert tc.run_test(run, FakeBackend(outputs)) == tc.EXIT_OK


def test_real_smoke_check_of_a_provided_cert_needs_its_ca(
    https_v2: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = pki.make_ca("Root")
    inter = pki.make_ca("Intermediate", issuer=root)
    leaf = pki.make_leaf("cache.example.com", dns=["cache.example.com"], issuer=inter)
    port = https_v2(leaf, inter.cert_pem)
    plan = tc.plan_config({"config": {"msr-cache:tls": {"mode": "provided"}}}, env="prod", stack=STACK)
    outputs = {"cacheUrl": "https://cache.example.com", "certificatePem": leaf.cert_pem + inter.cert_pem}
    run = tc.CacheTest(env="prod", stack=STACK, plan=plan, root=ROOT, address=("127.0.0.1", port), timeout=2)
    backend = FakeBackend(outputs)
    assert tc.run_test(run, backend) == tc.EXIT_FAILED  # the leaf alone is no trust anchor
    assert backend.calls[-2:] == ["destroy", "remove"]
    assert re.search(r"unable to get (local )?issuer certificate", capsys.readouterr().err)
    root_file = tmp_path / "root.pem"
    root_file.write_text(root.cert_pem)
    run.ca_file = root_file
    assert tc.run_test(run, FakeBackend(outputs)) == tc.EXIT_OK


def test_real_smoke_check_refuses_another_certificate(
    https_v2: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    served = pki.make_leaf("localhost", dns=["localhost"])
    port = https_v2(served)
    other = pki.make_leaf("localhost", dns=["localhost"])
    outputs = {"cacheUrl": f"https://localhost:{port}", "certificatePem": other.cert_pem}
    run = a_run(address=("127.0.0.1", port), timeout=2)
    assert tc.run_test(run, FakeBackend(outputs)) == tc.EXIT_FAILED
    assert "FAILED: the cache does not answer over verified TLS" in capsys.readouterr().err


def _sha256(cert_pem: str) -> str:
    """As the `caches` output has it: colon-separated upper-case hex."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(cert_pem.encode()).fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _two_self_signed(https_v2: Any, served_europe: pki.Issued | None = None) -> tuple[tc.CacheTest, dict]:
    asia = pki.make_leaf("localhost", dns=["localhost"])
    europe = pki.make_leaf("localhost", dns=["localhost"])
    ports = {"asia": https_v2(asia), "europe": https_v2(served_europe or europe)}
    doc = {"config": {"msr-cache:caches": [{"name": "asia"}, {"name": "europe"}]}}
    plan = tc.plan_config(doc, env="prod", stack=STACK)
    outputs = {
        "caches": {
            name: {
                "cacheUrl": f"https://localhost:{ports[name]}",
                "certificateSha256": _sha256(leaf.cert_pem),
            }
            for name, leaf in (("asia", asia), ("europe", europe))
        }
    }
    return tc.CacheTest(env="prod", stack=STACK, plan=plan, root=ROOT, timeout=3), outputs


def test_real_smoke_check_of_several_self_signed_caches_pins_each_served_certificate(
    https_v2: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run, outputs = _two_self_signed(https_v2)
    assert tc.run_test(run, FakeBackend(outputs)) == tc.EXIT_OK
    out = capsys.readouterr().out
    assert "cache asia answered over verified TLS" in out and "cache europe answered over verified TLS" in out


def test_real_smoke_check_refuses_a_cache_serving_another_certificate(
    https_v2: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run, outputs = _two_self_signed(https_v2, served_europe=pki.make_leaf("localhost", dns=["localhost"]))
    assert tc.run_test(run, FakeBackend(outputs)) == tc.EXIT_FAILED
    err = capsys.readouterr().err
    assert re.search(
        r"cache europe: FAILED: the cache presents certificate [0-9a-f]{64}, not the stack's", err
    )
    assert "1 of 2 caches failed the smoke check: europe" in err and "cache asia: FAILED" not in err


def test_real_smoke_check_of_a_cache_that_never_answers() -> None:
    with pytest.raises(
        SmokeError, match=r"the cache does not answer over TLS: .* did not complete a TLS handshake"
    ):
        smoke_check(("127.0.0.1", 1), "localhost", None, timeout=0.3, expected_sha256="AB:CD")
    with pytest.raises(ValueError, match="expected_sha256"):
        smoke_check(("127.0.0.1", 1), "localhost", None)


# ---------------------------------------------------------------------------
# The command line: refusals before anything is created
# ---------------------------------------------------------------------------


def no_backend(root: Path, env: str) -> tc.Backend:
    raise AssertionError("nothing may be created")


def test_missing_cli_exits_2_before_anything_else(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no command may run"))
    assert tc.main(["dev"], backend_factory=no_backend) == tc.EXIT_REFUSED
    err = capsys.readouterr().err
    assert err == (
        "test-cache: the Pulumi CLI is not installed: https://www.pulumi.com/docs/install/; "
        "make test-cache needs it\n"
    )


def test_the_stack_file_is_checked_before_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or mistaken stack file is said first, with or without the CLI."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert tc.main(["no-such-env"], backend_factory=no_backend) == tc.EXIT_REFUSED
    assert "no stacks/Pulumi.no-such-env.yaml; the stacks are: dev, prod, staging" in capsys.readouterr().err


def _project(tmp_path: Path, stack_text: str) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: msr-cache\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks/Pulumi.asia.yaml").write_text(stack_text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "named"),
    [
        # What `up` of the environment refuses, the replaced keys and secrets included.
        ("config:\n  msr-cache:msrHost: https://msr\n  msr-cache:cacheHost: c.example.com\n"
         "  msr-cache:cacheNode: n\n", "msr-cache:msrHost"),
        ("config:\n  msr-cache:msrHost: msr.example.com\n  msr-cache:cacheHost: c.example.com\n"
         "  msr-cache:cacheNode: n\n  msr-cache:storage:\n    mode: volume\n    driverOpts:\n"
         "      o: username=u,password=hunter22-tc\n", "msr-cache:storage.driverOpts.o"),
        # Read as the CLI reads it: no namespace, a key twice.
        ("config:\n  cacheHost: c.example.com\n", "write it as msr-cache:cacheHost"),
        ("config:\n  msr-cache:cachePort: 443\n  msr-cache:cachePort: 8443\n",
         "is already defined at line 2"),
    ],
)  # fmt: skip
def test_a_stack_file_up_would_refuse_is_refused_before_anything(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(tc.Refusal) as err:
        tc.checked_document("asia", root=_project(tmp_path, text))
    assert named in str(err.value)
    assert "hunter22-tc" not in str(err.value)


def test_a_good_stack_file_is_the_whole_document(tmp_path: Path) -> None:
    text = (
        "secretsprovider: passphrase\nconfig:\n  msr-cache:msrHost: msr.example.com\n"
        "  msr-cache:cacheHost: c.example.com\n  msr-cache:cacheNode: n\n  docker:host: ssh://m\n"
        "  msr-cache:register: false\n"
    )
    doc = tc.checked_document("asia", root=_project(tmp_path, text))
    assert doc["secretsprovider"] == "passphrase" and doc["config"]["docker:host"] == "ssh://m"


def whoami(rc: int) -> Any:
    def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        assert cmd == ["pulumi", "whoami"]
        return subprocess.CompletedProcess(cmd, rc, "someone\n" if rc == 0 else "", "")

    return run


def test_unknown_env_names_the_stacks_that_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/pulumi")
    monkeypatch.setattr(subprocess, "run", whoami(0))
    assert tc.main(["qa"], backend_factory=no_backend) == tc.EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.startswith("test-cache: no stacks/Pulumi.qa.yaml; the stacks are: ")
    assert all(env in err for env in ("dev", "prod", "staging"))


def test_no_login_says_pulumi_login(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/pulumi")
    monkeypatch.setattr(subprocess, "run", whoami(255))
    assert tc.main(["dev"], backend_factory=no_backend) == tc.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "`pulumi login`" in err and "`pulumi login --local`" in err


def test_missing_ca_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/pulumi")
    monkeypatch.setattr(subprocess, "run", whoami(0))
    assert tc.main(["dev", "--ca-file", str(tmp_path / "nope.pem")], backend_factory=no_backend) == 2
    assert "--ca-file" in capsys.readouterr().err


def test_main_runs_the_test_on_a_new_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/pulumi")
    monkeypatch.setattr(subprocess, "run", whoami(0))
    backends: list[FakeBackend] = []

    def factory(root: Path, env: str) -> FakeBackend:
        assert root == ROOT and env == "dev"
        backends.append(FakeBackend())
        return backends[-1]

    smoke = FakeSmoke()
    argv = ["dev", "--port", "6443", "--pull", "library/busybox:1.36", "--address", "127.0.0.1:6443"]
    assert tc.main(argv, backend_factory=factory, smoke=smoke) == tc.EXIT_OK
    (backend,) = backends
    assert backend.calls == ALL_STEPS
    service = next(s.value for s in backend.settings if s.key == "msr-cache:serviceName")
    assert service and re.fullmatch(r"test-dev-\d{14}-[0-9a-f]{8}", service)
    assert smoke.calls[0]["address"] == ("127.0.0.1", 6443) and smoke.calls[0]["pull"] == (
        "library/busybox",
        "1.36",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["dev", "--pull", "busybox"],
        ["dev", "--port", "0"],
        ["dev", "--address", "x"],
        ["dev", "--label", "Bad Label"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        tc.parse_args(argv)
    assert exc.value.code == 2


# ---------------------------------------------------------------------------
# The Automation API backend: thin, driven with fake stacks and the SDK's errors
# ---------------------------------------------------------------------------

auto = pytest.importorskip("pulumi.automation")


def command_error(stderr: str, cls: type = auto.errors.CommandError) -> Exception:
    from pulumi.automation._cmd import CommandResult

    return cls(CommandResult(stdout="Updating (x)\nlots of output", stderr=stderr, code=255))


class FakeCommand:
    def __init__(self) -> None:
        self.runs: list[tuple[list[str], str, dict]] = []

    def run(self, args: list[str], cwd: str, env: dict) -> None:
        self.runs.append((args, cwd, env))


class FakeStack:
    def __init__(self, name: str = STACK) -> None:
        self.name = name
        self.config_calls: list[tuple[dict, bool]] = []
        self.removed: list[str] = []
        self.workspace = SimpleNamespace(
            pulumi_command=FakeCommand(), work_dir=str(ROOT), env_vars={},
            remove_stack=self.removed.append, select_stack=lambda n: None,
        )  # fmt: skip
        self.destroy_errors: list[Exception] = []

    def set_all_config(self, values: dict, *, path: bool = False) -> None:
        self.config_calls.append(({k: (v.value, v.secret) for k, v in values.items()}, path))

    def up(self, **kw: Any) -> Any:
        assert kw["show_secrets"] is False
        assert kw["policy_packs"] == [str(tc.ROOT / "policy")]
        kw["on_output"]("Updating")
        return SimpleNamespace(outputs={"cacheUrl": auto.OutputValue("https://x", False)})

    def destroy(self, **kw: Any) -> None:
        if self.destroy_errors:
            raise self.destroy_errors.pop(0)


def real_backend(stack: FakeStack, env: str = "staging") -> tc.AutomationBackend:
    backend = tc.AutomationBackend(ROOT, env, auto=auto, sleep=lambda s: None)
    backend.stack = stack
    return backend


def test_backend_sets_plain_and_path_values_then_copies_encrypted_ones() -> None:
    stack = FakeStack()
    settings = [
        tc.Setting("msr-cache:msrHost", "msr.example.com", False, False),
        tc.Setting("msr-cache:tls.mode", "caSigned", False, True),
        tc.Setting("msr-cache:tls.keyPem", "KEY", True, True),
        tc.Setting("msr-cache:msrCaCert", None, True, False),
        tc.Setting("msr-cache:tls.caKeyPem", None, True, True),
    ]
    real_backend(stack).set_config(settings)
    assert stack.config_calls == [
        ({"msr-cache:msrHost": ("msr.example.com", False)}, False),
        ({"msr-cache:tls.mode": ("caSigned", False), "msr-cache:tls.keyPem": ("KEY", True)}, True),
    ]
    runs = stack.workspace.pulumi_command.runs
    assert [r[0] for r in runs] == [
        ["config", "cp", "--stack", "staging", "--dest", STACK, "msr-cache:msrCaCert"],
        ["config", "cp", "--stack", "staging", "--dest", STACK, "--path", "msr-cache:tls.caKeyPem"],
    ]
    assert runs[0][1] == str(ROOT)


def test_backend_turns_cli_errors_into_one_line() -> None:
    stack = FakeStack()

    def fail(values: dict, *, path: bool = False) -> None:
        raise command_error("error: stack 'x' has no secrets provider; PULUMI_CONFIG_PASSPHRASE is not set")

    stack.set_all_config = fail  # type: ignore[method-assign]
    with pytest.raises(tc.StepError) as exc:
        real_backend(stack).set_config([tc.Setting("msr-cache:a", "b", False, False)])
    assert str(exc.value) == (
        "setting the config failed: stack 'x' has no secrets provider; PULUMI_CONFIG_PASSPHRASE is not set"
    )


def test_backend_up_keeps_the_outputs_values() -> None:
    backend = real_backend(FakeStack())
    lines: list[str] = []
    backend.up(lines.append)
    assert lines == ["Updating"] and backend.outputs() == {"cacheUrl": "https://x"}


def test_backend_destroy_waits_for_the_lock_of_an_interrupted_update() -> None:
    stack = FakeStack()
    stack.destroy_errors = [
        command_error("the stack is currently locked by 1 lock(s)", auto.errors.ConcurrentUpdateError)
    ]
    real_backend(stack).destroy(lambda line: None)
    assert stack.destroy_errors == []
    stack.destroy_errors = [
        command_error("error: the stack is currently locked", auto.errors.ConcurrentUpdateError)
    ] * 9
    with pytest.raises(tc.StepError, match="pulumi destroy"):
        real_backend(stack).destroy(lambda line: None)


def test_backend_remove_removes_the_test_stack() -> None:
    stack = FakeStack()
    real_backend(stack).remove()
    assert stack.removed == [STACK]


@pytest.mark.skipif(shutil.which("pulumi") is not None, reason="would create a real stack")
def test_backend_without_the_cli_says_so_from_the_sdks_own_error() -> None:
    backend = tc.AutomationBackend(ROOT, "dev")
    with pytest.raises(tc.StepError, match=r"the Pulumi CLI is not installed: https://www\.pulumi\.com"):
        backend.create(STACK, None)


def test_module_runs_as_a_command_without_the_cli() -> None:
    if shutil.which("pulumi") is not None:
        pytest.skip("the CLI is installed here")
    done = subprocess.run(
        [sys.executable, "-m", "tools.test_cache", "dev"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "the Pulumi CLI is not installed: https://www.pulumi.com/docs/install/" in done.stderr
    assert json.dumps(done.stdout) == '""'
