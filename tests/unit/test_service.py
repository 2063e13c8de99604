"""The cache's service and volume as the engine would change them on the next `pulumi up`.

The program runs under the mocks twice (the deployed settings, then the new ones), and
each registration's resource options are recorded (MockResourceArgs carries none of
them). What the engine would do with a resource follows from three facts, each from the
provider's schema or the engine's documented rules, not from this program:

- the inputs whose change replaces the resource (pulumi-docker: every input of a
  Volume; a Service's name, mode and auth; everything else of a Service is updated in
  place), less the inputs listed in ``ignore_changes``;
- ``delete_before_replace``: without it the engine creates the replacement first and
  deletes the old resource at the end of the update;
- ``retain_on_delete``: the engine drops the resource from the state without asking the
  provider to delete it (on destroy, and for the old half of a replacement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pulumi.runtime.mocks import MockMonitor

from rehearsal.engine import Run, run_program

SERVICE = "docker:index/service:Service"
SECRET = "docker:index/secret:Secret"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
VOLUME = "docker:index/volume:Volume"
SVC, VOL, CFG = "msr-cache-service-service", "msr-cache-service-data", "msr-cache-files-config-yml"

# Inputs whose change replaces the resource (pulumi-docker 5: the bridged schema's ForceNew).
REPLACED_ON = {
    VOLUME: {"name", "driver", "driverOpts", "labels"},
    SERVICE: {"name", "mode", "auth"},
}


@dataclass
class Options:
    ignore_changes: list[str]
    retain_on_delete: bool
    delete_before_replace: bool


@dataclass
class Deployment:
    run: Run
    options: dict[str, Options]

    def inputs(self, name: str) -> dict[str, Any]:
        return self.run.named(name).plain


def deploy(config: dict[str, Any], stack: str = "dev") -> Deployment:
    seen: dict[str, Options] = {}
    original = MockMonitor.RegisterResource

    def spy(self: MockMonitor, request: Any) -> Any:
        seen[request.name] = Options(
            list(request.ignoreChanges), bool(request.retainOnDelete), bool(request.deleteBeforeReplace)
        )
        return original(self, request)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MockMonitor, "RegisterResource", spy)
        run = run_program(config=config, stack=stack)
    return Deployment(run, seen)


def step(typ: str, old: dict[str, Any], new: dict[str, Any], options: Options) -> str:
    """What the engine does with a resource registered again: same, update, or replace
    (create-first or delete-first)."""
    keys = (set(old) | set(new)) - set(options.ignore_changes)
    changed = {k for k in keys if old.get(k) != new.get(k)}
    if not changed:
        return "same"
    if changed & REPLACED_ON.get(typ, set()):
        return "replace, delete first" if options.delete_before_replace else "replace, create first"
    return "update in place"


def volume(**storage: Any) -> dict[str, Any]:
    return {"storage": {"mode": "volume", **storage}}


# --- point 1: the volume ----------------------------------------------------------

NFS = {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports/cache"}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # A new service name with the volume named by the operator: the labels carried it.
        (volume(volumeName="cache-data"), {**volume(volumeName="cache-data"), "serviceName": "dtr-cache"}),
        (volume(volumeName="cache-data"), volume(volumeName="cache-data", driverOpts=NFS)),
        (volume(volumeName="cache-data", driverOpts=NFS), volume(volumeName="cache-data")),
        (volume(volumeName="cache-data"), volume(volumeName="cache-data", driver="rexray/efs")),
    ],
    ids=["serviceName", "driverOpts-added", "driverOpts-removed", "driver"],
)
def test_a_setting_that_keeps_the_volume_name_never_replaces_the_volume(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    """A replacement of a volume with the same name would "create" the existing volume
    and then delete it, under the running cache."""
    old, new = deploy(before), deploy(after)
    assert old.inputs(VOL)["name"] == new.inputs(VOL)["name"] == "cache-data"
    assert step(VOLUME, old.inputs(VOL), new.inputs(VOL), new.options[VOL]) == "same"


def test_a_volume_deployed_with_the_service_name_in_its_labels_is_not_replaced() -> None:
    """Stacks deployed before this change have the service's label on the volume too."""
    new = deploy(volume())
    deployed = dict(new.inputs(VOL))
    deployed["labels"] = sorted(
        [*deployed["labels"], {"label": "com.mirantis.msr-cache.service", "value": "msr-cache-dev"}],
        key=lambda item: item["label"],
    )
    assert deployed["labels"] != new.inputs(VOL)["labels"]
    assert step(VOLUME, deployed, new.inputs(VOL), new.options[VOL]) == "same"


def test_volume_labels_do_not_follow_settings() -> None:
    assert deploy(volume()).inputs(VOL)["labels"] == [
        {"label": "com.mirantis.msr-cache.stack", "value": "dev"}
    ]


def test_a_new_volume_name_creates_the_new_volume_then_moves_the_service_to_it() -> None:
    """A new name is a new volume: created first, the service updated in place to mount
    it (the old task stops), and only then the old volume deleted, when nothing uses it.
    Deleting first would fail on a volume the running cache still mounts."""
    old, new = deploy(volume(volumeName="cache-a")), deploy(volume(volumeName="cache-b"))
    assert step(VOLUME, old.inputs(VOL), new.inputs(VOL), new.options[VOL]) == "replace, create first"
    assert step(SERVICE, old.inputs(SVC), new.inputs(SVC), new.options[SVC]) == "update in place"
    (mount,) = new.inputs(SVC)["taskSpec"]["containerSpec"]["mounts"]
    assert mount["source"] == "cache-b"
    # The service waits for the new volume, so the engine makes the volume first.
    assert new.run.urn_of(VOL) in new.run.dependencies_of(SVC)


def test_a_new_service_name_deletes_the_old_service_before_it_makes_the_new_one() -> None:
    """The default volume name follows the service name: both are new, and the service
    (fixed name and port) is deleted first."""
    old, new = deploy(volume()), deploy({**volume(), "serviceName": "dtr-cache"})
    assert (old.inputs(VOL)["name"], new.inputs(VOL)["name"]) == ("msr-cache-dev-data", "dtr-cache-data")
    assert step(VOLUME, old.inputs(VOL), new.inputs(VOL), new.options[VOL]) == "replace, create first"
    assert step(SERVICE, old.inputs(SVC), new.inputs(SVC), new.options[SVC]) == "replace, delete first"


@pytest.mark.parametrize(("retain", "kept"), [(None, False), (True, True), (False, False)])
def test_storage_retain_decides_whether_the_engine_deletes_the_volume(
    retain: bool | None, kept: bool
) -> None:
    storage = {} if retain is None else {"retain": retain}
    assert deploy(volume(**storage)).options[VOL].retain_on_delete is kept


def test_the_mount_still_tells_swarm_how_to_make_the_volume_on_the_cache_node() -> None:
    """The volume API reaches the manager only; Swarm makes the cache node's volume
    from the mount's options (README, "storage")."""
    (mount,) = deploy(volume(driverOpts=NFS)).inputs(SVC)["taskSpec"]["containerSpec"]["mounts"]
    assert mount["volumeOptions"] == {"driverName": "local", "driverOptions": NFS}


# --- point 4: a failed update rolls back ----------------------------------------------


def test_a_failed_update_rolls_back_after_watching_the_new_task() -> None:
    service = deploy({}).inputs(SVC)
    assert service["updateConfig"] == {
        "order": "stop-first",
        "parallelism": 1,
        "failureAction": "rollback",
        "monitor": "10s",
    }
    # One replica owns the published port: the rollback stops the new task first too.
    assert service["rollbackConfig"] == {
        "order": "stop-first",
        "parallelism": 1,
        "failureAction": "pause",
        "monitor": "10s",
    }


# --- point 7: config.yml as a secret, and the upgrade of deployed stacks ---------------

# What stacks deployed before config.yml moved to a secret hold for the service: the
# inputs the provider replaces a service on, and its URN.
DEPLOYED_SERVICE_URN = (
    "urn:pulumi:dev::msr-cache::msrcache:index:MsrCache$msrcache:index:CacheService"
    "$docker:index/service:Service::msr-cache-service-service"
)
DEPLOYED_SERVICE = {"name": "msr-cache-dev", "mode": {"replicated": {"replicas": 1}}}


def test_deployed_stacks_update_the_service_in_place_to_mount_config_yml_as_a_secret() -> None:
    new = deploy({})
    service = new.inputs(SVC)
    assert new.run.engine_urn(SVC) == DEPLOYED_SERVICE_URN
    assert {k: service[k] for k in DEPLOYED_SERVICE} == DEPLOYED_SERVICE
    assert "auth" not in service
    # The config.yml secret is new, and the service depends on it: the engine creates it
    # before it updates the service; the ServiceConfig, registered no more, is deleted
    # at the end, when the service no longer mounts it.
    assert new.run.urn_of(CFG) in new.run.dependencies_of(SVC)
    assert new.run.of_type(CONFIG) == []
    container = service["taskSpec"]["containerSpec"]
    assert "configs" not in container
    (mount,) = [m for m in container["secrets"] if m["fileName"] == "/config.yml"]
    assert mount["secretName"] == new.run.named(CFG).state["name"]


# --- point 8: every mounted secret file gets secretFiles' mode and owner ----------------


@pytest.mark.parametrize(
    ("secret_files", "expected"),
    [
        (None, (0o444, "0", "0")),
        ({"mode": "0400", "uid": 1000, "gid": 1000}, (0o400, "1000", "1000")),
        ({"mode": "440", "gid": 65534}, (0o440, "0", "65534")),
    ],
)
def test_every_mounted_secret_file_has_the_configured_mode_and_owner(
    secret_files: dict[str, Any] | None, expected: tuple[int, str, str]
) -> None:
    from rehearsal import pki

    config: dict[str, Any] = {"msrCaCert": pki.make_ca().cert_pem}
    if secret_files is not None:
        config["secretFiles"] = secret_files
    secrets = deploy(config).inputs(SVC)["taskSpec"]["containerSpec"]["secrets"]
    assert len(secrets) == 4  # cache.cert.pem, cache.key.pem, dtr.cert.pem, /config.yml
    assert {(s["fileMode"], s["fileUid"], s["fileGid"]) for s in secrets} == {expected}
