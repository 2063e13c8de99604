"""The SDK's floor for N caches: registering the resources of N caches with none of
the program's work around them.

Each cache is the tree the program builds, with the same types and names: the five
components (`MsrCache` and, under it, `LabelledNode`, `CacheTls`, `CacheFiles`,
`CacheService`, each registering no outputs) and under them the eight custom
resources, made with the classes the program uses (the node label, the private key
and self-signed certificate, three Docker secrets, the http secret, the service)
and only the inputs they need. No settings, checks, config.yml, Outputs of the
program's own or exports. `bench.program_cost` runs it with the same mocks and the
same imports as the program, so that the two differ by the program's own work
only; a unit test keeps the tree the same as the program's.

It answers whether a bar on N caches against one can be met by any program that
registers these resources with these SDKs: the floor's own ratio is the least the
program's can be.
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker
import pulumi_random as random
import pulumi_tls as tls

from components.node_label import NodeLabel

COMPONENT_PREFIX = "msrcache:index:"
"""The type token prefix of the program's components."""


class _Component(pulumi.ComponentResource):
    def __init__(self, kind: str, name: str, parent: pulumi.Resource | None = None) -> None:
        super().__init__(f"{COMPONENT_PREFIX}{kind}", name, None, pulumi.ResourceOptions(parent=parent))
        self.register_outputs({})


def register_cache(index: int) -> None:
    """One cache's 13 resources, named as the program names entry `c<index>`."""
    name = f"msr-cache-c{index}"
    root = _Component("MsrCache", name)

    node = _Component("LabelledNode", f"{name}-node", root)
    in_node = pulumi.ResourceOptions(parent=node)
    NodeLabel(f"{name}-node-label", node=f"node{index}", label="l", service="s", opts=in_node)

    certs = _Component("CacheTls", f"{name}-tls", root)
    in_tls = pulumi.ResourceOptions(parent=certs)
    key = tls.PrivateKey(f"{name}-tls-key", algorithm="ECDSA", ecdsa_curve="P256", opts=in_tls)
    tls.SelfSignedCert(
        f"{name}-tls-cert",
        private_key_pem=key.private_key_pem,
        subject=tls.SelfSignedCertSubjectArgs(common_name=f"cache{index}.example.com"),
        dns_names=[f"cache{index}.example.com"],
        allowed_uses=["server_auth"],
        validity_period_hours=24,
        opts=in_tls,
    )

    files = _Component("CacheFiles", f"{name}-files", root)
    in_files = pulumi.ResourceOptions(parent=files)
    for role in ("cache-cert", "cache-key", "config-yml"):
        docker.Secret(f"{name}-files-{role}", data="eA==", opts=in_files)
    random.RandomPassword(f"{name}-files-http-secret", length=64, special=False, opts=in_files)

    service = _Component("CacheService", f"{name}-service", root)
    docker.Service(
        f"{name}-service-service",
        task_spec=docker.ServiceTaskSpecArgs(
            container_spec=docker.ServiceTaskSpecContainerSpecArgs(image="x")
        ),
        opts=pulumi.ResourceOptions(parent=service),
    )


def register(caches: int) -> None:
    """N caches' resources, in the order the program registers caches."""
    for index in range(caches):
        register_cache(index)
