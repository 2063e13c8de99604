"""The cache's Swarm service: the documented docker-stack.yml as a resource.

services:
  cache:
    image: mirantis/dtr-content-cache:2.8.2
    entrypoint: [/start.sh, /config.yml]
    ports: [443:443]
    deploy: {replicas: 1, placement: {constraints: [node.labels.dtr.cache == true]},
             restart_policy: {condition: on-failure}}
    configs: [config.yml]
    secrets: [dtr.cert.pem, cache.cert.pem, cache.key.pem]

Where it departs from that file:
- config.yml is mounted as a Swarm *secret* at /config.yml, not a config: it
  holds http.secret, and `docker config inspect` shows a config's data to any
  API client (Swarm honours an absolute target for a secret);
- the secret files' mode and owner come from `secretFiles` (Swarm's 0444,
  uid 0 and gid 0 by default, as the documented file gets);
- a failed update rolls back instead of pausing (Swarm's default), and
  `storage: volume` adds a named volume for the cached layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from components.registry_config import CONTAINER_PORT, STORAGE_ROOT
from components.settings import SecretFilesSettings, StorageSettings
from components.swarm_files import SecretMount

# Swarm's own defaults, written out: the provider otherwise reports a "0s"
# change on every run (pulumi-docker #1285).
RESTART_DELAY = "5s"
RESTART_WINDOW = "0s"
# `pulumi up` waits until the task runs, so a cache that cannot start fails
# the update instead of being reported as created.
CONVERGE_DELAY = "5s"
CONVERGE_TIMEOUT = "5m"
# After each task update Swarm watches the new task this long; a task that
# fails in that time (image not found, config.yml or key refused, crash at
# start) fails the update, and the update rolls back to the previous spec
# instead of pausing (Swarm's default failure action) with the cache down.
# `pulumi up` then reports the update as failed ("rollback completed").
UPDATE_MONITOR = "10s"
UPDATE_FAILURE_ACTION = "rollback"
# A rollback that fails too stops where it is (Swarm's default, written out).
ROLLBACK_FAILURE_ACTION = "pause"
# The volume's triggers of replacement that a setting can change: Docker
# cannot change a volume's driver or options in place, and the provider
# would replace the volume under the same name (see CacheService).
VOLUME_IGNORED_CHANGES = ["labels", "driver", "driverOpts"]


@dataclass
class CacheServiceArgs:
    service_name: str
    """Swarm service name, fixed so a replacement deletes the old service first."""
    image: str
    secrets: list[SecretMount]
    """The PEM files, under /run/secrets."""
    config: SecretMount
    """config.yml, a Swarm secret mounted at its absolute path (config.file_name),
    which is also the entrypoint's argument."""
    secret_files: SecretFilesSettings
    """Mode and owner of every mounted secret file."""
    constraint: pulumi.Input[str]
    """Placement constraint selecting the labelled node."""
    cache_port: int
    publish_mode: str
    """ingress (routing mesh) or host (only on the cache node)."""
    storage: StorageSettings
    volume_name: str
    """Named volume for /var/lib/registry when storage.mode is volume."""
    labels: dict[str, str] = field(default_factory=dict)
    volume_labels: dict[str, str] = field(default_factory=dict)
    """Labels of the volume: only ones no setting changes (the stack's)."""
    wait_for: list[pulumi.Resource] = field(default_factory=list)
    """Resources the service must not be created before (the node label: without
    it the task has nowhere to run and would never converge)."""
    replicas: int = 1
    """Tasks, at most one per labelled node (settings check there are enough
    nodes and shared storage when more than one)."""


class CacheService(pulumi.ComponentResource):
    """The content cache's tasks on the labelled nodes: one, or several
    sharing object storage or a shared volume."""

    service_name: pulumi.Output[str]
    service_id: pulumi.Output[str]
    volume_name: pulumi.Output[str | None]
    service: docker.Service
    """The Swarm service itself: created once its tasks run (convergeConfig),
    so a resource that depends on it is made after the cache serves."""

    def __init__(self, name: str, args: CacheServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("msrcache:index:CacheService", name, None, opts)
        mounts: list[docker.ServiceTaskSpecContainerSpecMountArgs] = []
        self.volume_name = pulumi.Output.from_input(None)
        if args.storage.mode == "volume":
            # Driver options can carry credentials (a CIFS password in `o`): kept
            # secret in the state whether or not the operator stored them as one.
            driver_opts = pulumi.Output.secret(args.storage.driver_opts) if args.storage.driver_opts else None
            # Replacing this volume can only hurt: its name is fixed, so a
            # replacement "creates" the same volume (Docker answers with the
            # existing one) and then deletes it, in use by the cache. So no
            # setting but the name may replace it:
            # - labels carry only the stack; ignore_changes also keeps stacks
            #   deployed with the service name in the labels from a replacement;
            # - driver and driverOpts apply when a volume is made (by Docker
            #   here, by Swarm on the cache node from the mount below); a change
            #   is not applied to an existing volume: set a new storage.volumeName
            #   to move the cache to a volume with other options;
            # - a new name is a new volume: created first, the service moved to
            #   it, then the old one deleted (no longer in use), so the default
            #   create-before-delete is the right order, not delete_before_replace.
            # storage.retain (default true) keeps the volume and its layers when
            # the stack is destroyed or the volume is renamed.
            volume = docker.Volume(
                f"{name}-data",
                name=args.volume_name,
                driver=args.storage.driver,
                driver_opts=driver_opts,
                labels=[
                    docker.VolumeLabelArgs(label=k, value=v) for k, v in sorted(args.volume_labels.items())
                ],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    retain_on_delete=args.storage.retain,
                    ignore_changes=VOLUME_IGNORED_CHANGES,
                ),
            )
            self.volume_name = volume.name
            mounts.append(
                docker.ServiceTaskSpecContainerSpecMountArgs(
                    target=STORAGE_ROOT,
                    source=volume.name,
                    type="volume",
                    # The volume API reaches only the manager Pulumi talks to.
                    # With these options Swarm creates the same volume on the
                    # cache node when that is another node.
                    volume_options=docker.ServiceTaskSpecContainerSpecMountVolumeOptionsArgs(
                        driver_name=args.storage.driver,
                        driver_options=driver_opts,
                    ),
                )
            )

        service = docker.Service(
            f"{name}-service",
            name=args.service_name,
            labels=[docker.ServiceLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())],
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=args.image,
                    commands=["/start.sh", args.config.file_name],
                    secrets=[
                        docker.ServiceTaskSpecContainerSpecSecretArgs(
                            secret_id=s.secret_id,
                            secret_name=s.secret_name,
                            file_name=s.file_name,
                            file_mode=args.secret_files.mode_bits,
                            file_uid=str(args.secret_files.uid),
                            file_gid=str(args.secret_files.gid),
                        )
                        for s in [*args.secrets, args.config]
                    ],
                    mounts=mounts or None,
                ),
                placement=docker.ServiceTaskSpecPlacementArgs(
                    constraints=[args.constraint],
                    # Spread: two tasks on one node would fight for a host-mode
                    # port and share a fate. Left unset for one task, so that
                    # deployed stacks see no change.
                    max_replicas=1 if args.replicas > 1 else None,
                ),
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(
                    condition="on-failure", delay=RESTART_DELAY, window=RESTART_WINDOW
                ),
            ),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=args.replicas)),
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                ports=[
                    docker.ServiceEndpointSpecPortArgs(
                        target_port=CONTAINER_PORT,
                        published_port=args.cache_port,
                        protocol="tcp",
                        publish_mode=args.publish_mode,
                    )
                ]
            ),
            # A task owns its node's published port: the old task must stop
            # before the new one can bind it. One task at a time, so the
            # other replicas keep serving during an update.
            update_config=docker.ServiceUpdateConfigArgs(
                order="stop-first",
                parallelism=1,
                failure_action=UPDATE_FAILURE_ACTION,
                monitor=UPDATE_MONITOR,
            ),
            rollback_config=docker.ServiceRollbackConfigArgs(
                order="stop-first",
                parallelism=1,
                failure_action=ROLLBACK_FAILURE_ACTION,
                monitor=UPDATE_MONITOR,
            ),
            converge_config=docker.ServiceConvergeConfigArgs(delay=CONVERGE_DELAY, timeout=CONVERGE_TIMEOUT),
            # A fixed name and port cannot exist twice: replace by deleting first.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True, depends_on=args.wait_for),
        )
        self.service = service
        self.service_name = service.name
        self.service_id = service.id
        self.register_outputs(
            {"serviceName": self.service_name, "serviceId": self.service_id, "volumeName": self.volume_name}
        )
