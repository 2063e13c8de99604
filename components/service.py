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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

from components.registry_config import CONTAINER_PORT, STORAGE_ROOT
from components.settings import StorageSettings
from components.swarm_files import SecretMount

SECRET_FILE_MODE = 0o400
# Swarm's own defaults, written out: the provider otherwise reports a "0s"
# change on every run (pulumi-docker #1285).
RESTART_DELAY = "5s"
RESTART_WINDOW = "0s"
# `pulumi up` waits until the task runs, so a cache that cannot start fails
# the update instead of being reported as created.
CONVERGE_DELAY = "5s"
CONVERGE_TIMEOUT = "5m"


@dataclass
class CacheServiceArgs:
    service_name: str
    """Swarm service name, fixed so a replacement deletes the old service first."""
    image: str
    secrets: list[SecretMount]
    config_id: pulumi.Input[str]
    config_name: pulumi.Input[str]
    config_file: str
    """Where config.yml is mounted; also the entrypoint's argument."""
    constraint: pulumi.Input[str]
    """Placement constraint selecting the labelled node."""
    cache_port: int
    publish_mode: str
    """ingress (routing mesh) or host (only on the cache node)."""
    storage: StorageSettings
    volume_name: str
    """Named volume for /var/lib/registry when storage.mode is volume."""
    labels: dict[str, str] = field(default_factory=dict)
    wait_for: list[pulumi.Resource] = field(default_factory=list)
    """Resources the service must not be created before (the node label: without
    it the task has nowhere to run and would never converge)."""


class CacheService(pulumi.ComponentResource):
    """One replica of the content cache on the labelled node."""

    service_name: pulumi.Output[str]
    service_id: pulumi.Output[str]
    volume_name: pulumi.Output[str | None]

    def __init__(self, name: str, args: CacheServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("msrcache:index:CacheService", name, None, opts)
        mounts: list[docker.ServiceTaskSpecContainerSpecMountArgs] = []
        self.volume_name = pulumi.Output.from_input(None)
        if args.storage.mode == "volume":
            # Driver options can carry credentials (a CIFS password in `o`): kept
            # secret in the state whether or not the operator stored them as one.
            driver_opts = pulumi.Output.secret(args.storage.driver_opts) if args.storage.driver_opts else None
            volume = docker.Volume(
                f"{name}-data",
                name=args.volume_name,
                driver=args.storage.driver,
                driver_opts=driver_opts,
                labels=[docker.VolumeLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())],
                # Keep cached layers when only labels or options change; losing
                # them costs a full re-fetch over the WAN.
                opts=pulumi.ResourceOptions(parent=self),
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
                    commands=["/start.sh", args.config_file],
                    configs=[
                        docker.ServiceTaskSpecContainerSpecConfigArgs(
                            config_id=args.config_id,
                            config_name=args.config_name,
                            file_name=args.config_file,
                        )
                    ],
                    secrets=[
                        docker.ServiceTaskSpecContainerSpecSecretArgs(
                            secret_id=s.secret_id,
                            secret_name=s.secret_name,
                            file_name=s.file_name,
                            file_mode=SECRET_FILE_MODE,
                        )
                        for s in args.secrets
                    ],
                    mounts=mounts or None,
                ),
                placement=docker.ServiceTaskSpecPlacementArgs(constraints=[args.constraint]),
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(
                    condition="on-failure", delay=RESTART_DELAY, window=RESTART_WINDOW
                ),
            ),
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
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
            # One replica owns the published port: the old task must stop
            # before the new one can bind it.
            update_config=docker.ServiceUpdateConfigArgs(order="stop-first", parallelism=1),
            converge_config=docker.ServiceConvergeConfigArgs(delay=CONVERGE_DELAY, timeout=CONVERGE_TIMEOUT),
            # A fixed name and port cannot exist twice: replace by deleting first.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True, depends_on=args.wait_for),
        )
        self.service_name = service.name
        self.service_id = service.id
        self.register_outputs(
            {"serviceName": self.service_name, "serviceId": self.service_id, "volumeName": self.volume_name}
        )
