"""One MSR content cache: the labelled nodes, TLS, Swarm files, the service and
its registration with MSR. It fetches from MSR, from another cache of the
stack (its parent) or from a parent cache outside the stack."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components import certs
from components.node import LabelledNode, LabelledNodeArgs
from components.registration import CacheRegistration, CacheRegistrationArgs
from components.registry_config import storage_driver
from components.service import CacheService, CacheServiceArgs
from components.settings import Settings
from components.swarm_files import CacheFiles, CacheFilesArgs
from components.tls import CacheTls, CacheTlsArgs

LABEL_PREFIX = "com.mirantis.msr-cache"


@dataclass
class MsrCacheArgs:
    settings: Settings
    """Validated stack settings."""
    stack: str
    """Stack name: names the service by default and labels every Swarm object."""
    msr_ca_pem: str | None
    """MSR's CA (given or fetched); None when MSR is publicly trusted."""
    parent: MsrCache | None = None
    """The cache of the stack this one fetches from (settings.upstream names it)."""


class MsrCache(pulumi.ComponentResource):
    """Everything the manual procedure makes, for one cache."""

    cache_url: pulumi.Output[str]
    certificate_pem: pulumi.Output[str]
    certificate_sha256: pulumi.Output[str]
    certificate_not_after: pulumi.Output[str]
    service_name: pulumi.Output[str]
    node: pulumi.Output[str]
    label: pulumi.Output[str]
    upstream: pulumi.Output[str]
    next_rotation: pulumi.Output[str | None]
    registration_id: pulumi.Output[str | None]
    """MSR's id of the cache's registration; None with register: false."""
    nodes: pulumi.Output[list[str]]
    replicas: pulumi.Output[int]
    serving: pulumi.Resource
    """Created once the cache's tasks run: a cache fetching from this one is
    created after it."""
    trust_pem: pulumi.Output[str]
    """What a cache fetching from this one trusts it by (its `cas` file): the
    CA for a caSigned certificate, else the certificate itself, which Go
    accepts as a trust anchor."""
    settings: Settings

    def __init__(self, name: str, args: MsrCacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("msrcache:index:MsrCache", name, None, opts)
        s = args.settings
        self.settings = s
        child = pulumi.ResourceOptions(parent=self)
        service_name = s.effective_service_name(args.stack)
        labels = {f"{LABEL_PREFIX}.stack": args.stack, f"{LABEL_PREFIX}.service": service_name}
        if s.name:
            # Only caches of `caches`: the stack's one cache keeps its labels
            # (a Swarm object's labels cannot change without replacing it).
            labels[f"{LABEL_PREFIX}.cache"] = s.name

        node = LabelledNode(
            f"{name}-node",
            LabelledNodeArgs(nodes=s.effective_nodes, label=s.placement_label, service=service_name),
            opts=child,
        )
        tls = CacheTls(
            f"{name}-tls",
            CacheTlsArgs(settings=s.tls, cache_host=s.cache_host, cache_nodes=s.effective_nodes),
            opts=child,
        )
        upstream_url, msr_ca, upstream_ca = _upstream(s, args)
        files = CacheFiles(
            f"{name}-files",
            CacheFilesArgs(
                cert_pem=tls.cert_pem,
                key_pem=tls.key_pem,
                msr_ca_pem=msr_ca,
                cache_url=s.cache_url,
                upstreams=[upstream_url],
                blob_ttl=s.blob_ttl,
                log_level=s.log_level,
                labels=labels,
                upstream_ca_pem=upstream_ca,
                storage_driver=storage_driver(s.storage),
                gcs_keyfile=s.storage.gcs.keyfile.get_secret_value()
                if s.storage.mode == "gcs" and s.storage.gcs and s.storage.gcs.keyfile
                else None,
            ),
            opts=child,
        )
        service = CacheService(
            f"{name}-service",
            CacheServiceArgs(
                service_name=service_name,
                image=s.image,
                secrets=files.secrets,
                config=files.config,
                secret_files=s.secret_files,
                constraint=node.constraint,
                cache_port=s.cache_port,
                publish_mode=s.publish_mode,
                storage=s.storage,
                volume_name=s.effective_volume_name(args.stack),
                labels=labels,
                # A volume's labels cannot change without replacing it: only the stack's.
                volume_labels={f"{LABEL_PREFIX}.stack": args.stack},
                # A chained cache's registry fetches from its parent when it
                # starts and exits if it cannot reach it: create it only once
                # the parent serves, or its first tasks fail (and the
                # rehearsal, which gives up after three failed tasks, fails).
                wait_for=[node] if args.parent is None else [node, args.parent.serving],
                replicas=s.replicas,
            ),
            opts=child,
        )

        # Registered once the service is there, so destroy removes the
        # registration first: MSR stops sending users to a cache going away.
        self.registration_id = pulumi.Output.from_input(None)
        if s.register_cache:
            registration = CacheRegistration(
                f"{name}-registration",
                CacheRegistrationArgs(
                    msr_url=s.msr_url,
                    msr_ca_pem=args.msr_ca_pem or "",
                    user=s.msr_user,
                    token=s.msr_token.get_secret_value(),
                    cache_name=s.effective_cache_name(args.stack),
                    cache_url=s.cache_url,
                    after=[service],
                ),
                opts=child,
            )
            self.registration_id = registration.registration_id

        summary = tls.cert_pem.apply(certs.summarize)
        self.cache_url = pulumi.Output.from_input(s.cache_url)
        self.certificate_pem = tls.cert_pem
        self.certificate_sha256 = summary.apply(lambda c: c.sha256)
        self.certificate_not_after = summary.apply(lambda c: c.not_after)
        self.serving = service.service
        self.service_name = service.service_name
        self.node = node.node
        self.nodes = node.nodes
        self.replicas = pulumi.Output.from_input(s.replicas)
        self.label = node.label
        self.upstream = pulumi.Output.from_input(upstream_url)
        self.next_rotation = tls.next_rotation
        self.trust_pem = (
            pulumi.Output.from_input(s.tls.ca_cert_pem) if s.tls.mode == "caSigned" and s.tls.ca_cert_pem
            else tls.cert_pem
        )  # fmt: skip
        self.register_outputs(
            {
                "cacheUrl": self.cache_url,
                "certificatePem": self.certificate_pem,
                "certificateSha256": self.certificate_sha256,
                "certificateNotAfter": self.certificate_not_after,
                "serviceName": self.service_name,
                "node": self.node,
                "label": self.label,
                "upstream": self.upstream,
                "nextRotation": self.next_rotation,
                "registrationId": self.registration_id,
            }
        )


def _upstream(s: Settings, args: MsrCacheArgs) -> tuple[str, str | None, pulumi.Input[str] | None]:
    """(URL the cache fetches from, MSR's CA to trust, a parent cache's CA to
    trust): `cas` holds the CA of the next hop only."""
    if args.parent is not None:
        return args.parent.settings.cache_url, None, args.parent.trust_pem
    if s.upstream:
        return s.upstream.rstrip("/"), None, s.upstream_ca_pem or None
    return s.msr_url, args.msr_ca_pem, None
