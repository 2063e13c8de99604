"""The example stacks in stacks/ run, once the material the README tells the
operator to add with `pulumi config set` is there."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rehearsal import pki
from rehearsal.engine import ROOT, run_program

# Throwaway stacks of make test-cache (Pulumi.test-*.yaml) are not environments.
STACKS = sorted(p for p in (ROOT / "stacks").glob("Pulumi.*.yaml") if not p.name.startswith("Pulumi.test-"))


def stack_config(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    return {k.removeprefix("msr-cache:"): v for k, v in doc["config"].items()}


def test_the_three_environments_exist() -> None:
    assert [p.name for p in STACKS] == ["Pulumi.dev.yaml", "Pulumi.prod.yaml", "Pulumi.staging.yaml"]


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_stack_runs_with_the_documented_secrets(path: Path) -> None:
    config = stack_config(path)
    tls = dict(config.get("tls", {}))
    if tls.get("mode") == "caSigned":
        ca = pki.make_ca("Corp CA")
        tls |= {"caCertPem": ca.cert_pem, "caKeyPem": ca.key_pem}
    elif tls.get("mode") == "provided":
        inter = pki.make_ca("Intermediate", issuer=pki.make_ca("Root"))
        tls |= {"chainPem": inter.cert_pem}
        # Each site's own certificate, or the one cache's.
        for entry in config.get("caches") or [config]:
            leaf = pki.make_leaf(entry["cacheHost"], dns=[entry["cacheHost"]], issuer=inter)
            own = {"certPem": leaf.cert_pem, "keyPem": leaf.key_pem}
            if "caches" in config:
                entry["tls"] = own
            else:
                tls |= own
    secret_keys: tuple[str, ...] = ("tls", "caches")
    if path.name != "Pulumi.dev.yaml":
        config["msrCaCert"] = pki.make_ca("MSR CA").cert_pem
        config |= {"msrUser": "admin", "msrToken": "an-access-token"}
        secret_keys += ("msrToken",)
    run = run_program(config={**config, "tls": tls}, secret_keys=secret_keys, base={}, stack=path.stem)
    for entry in config.get("caches") or [config]:
        urls = [c["cacheUrl"] for c in run.exports["caches"].values()]
        assert any(url.startswith(f"https://{entry['cacheHost']}") for url in urls)


def test_prod_shows_two_sites_each_registered_under_its_region_name() -> None:
    config = stack_config(ROOT / "stacks/Pulumi.prod.yaml")
    assert [(c["name"], c["cacheName"]) for c in config["caches"]] == [
        ("asia", "region-asia"), ("europe", "region-europe")
    ]  # fmt: skip


@pytest.mark.parametrize("path", [p for p in STACKS if "dev" not in p.name], ids=lambda p: p.name)
def test_stack_without_its_secrets_is_refused_with_the_key_to_set(path: Path) -> None:
    import pulumi

    with pytest.raises(
        pulumi.RunError, match=r"msr-cache:(caches\[0\]\.)?tls\.(caCertPem|certPem): is required"
    ):
        run_program(config=stack_config(path), base={})


def test_dev_stack_publishes_on_the_host_with_a_self_signed_certificate() -> None:
    run = run_program(config=stack_config(ROOT / "stacks/Pulumi.dev.yaml"), base={})
    assert run.service["endpointSpec"]["ports"][0]["publishMode"] == "host"
    assert run.of_type("tls:index/selfSignedCert:SelfSignedCert")
