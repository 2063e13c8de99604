"""The Swarm secrets and config the cache mounts.

- `cache.cert.pem`, `cache.key.pem` and, when MSR's CA must be trusted,
  `dtr.cert.pem` as Swarm secrets;
- `config.yml`, with a random `http.secret`, as a Swarm secret too, mounted at
  /config.yml: the documented stack file makes it a Swarm config, but any API
  client can read a config's data (`docker config inspect`), and Swarm mounts
  a secret at an absolute path as well.

Swarm objects are immutable: new content means a new object. Names are left
to Pulumi's auto-naming (logical name + random suffix), so a change creates the
new object first, the service is updated in place to use it, and only then is
the old one deleted; a fixed name would force delete-first, which Swarm refuses
while the service still uses the object.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_random as random

from components.registry_config import (
    CACHE_CERT,
    CACHE_KEY,
    CONFIG_PATH,
    GCS_KEYFILE,
    MSR_CA,
    UPSTREAM_CA,
    CacheConfig,
    render_config,
)

HTTP_SECRET_LENGTH = 48


def b64(text: str) -> str:
    """Standard base64, which the docker provider expects for secret/config data."""
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True)
class SecretMount:
    """One Swarm secret and the file it becomes under /run/secrets."""

    secret_id: pulumi.Output[str]
    secret_name: pulumi.Output[str]
    file_name: str


@dataclass
class CacheFilesArgs:
    cert_pem: pulumi.Input[str]
    """The cache certificate (leaf + intermediates)."""
    key_pem: pulumi.Input[str]
    """The cache private key; stored only as a Swarm secret."""
    msr_ca_pem: str | None
    """MSR's CA, when the cache fetches from MSR; None when MSR's certificate is
    publicly trusted or the cache fetches from a parent cache."""
    cache_url: str
    """http.host: the URL clients use."""
    upstreams: list[str]
    """MSR (or a parent cache) as https://host:port."""
    blob_ttl: str
    log_level: str
    labels: dict[str, str] = field(default_factory=dict)
    """Labels put on every Swarm object, to find them by stack."""
    upstream_ca_pem: pulumi.Input[str] | None = None
    """The parent cache's CA (or its certificate), when the upstream is a cache
    not publicly trusted: `cas` lists it, as the docs ask for the next hop."""
    storage_driver: dict[str, Any] | None = None
    """Distribution's object-storage section (registry_config.storage_driver);
    None for the filesystem."""
    gcs_keyfile: str | None = None
    """The gcs driver's service account key (JSON), mounted for config.yml."""


class CacheFiles(pulumi.ComponentResource):
    """Secrets and config.yml for one cache."""

    secrets: list[SecretMount]
    """The PEM files, under /run/secrets."""
    config: SecretMount
    """config.yml, mounted at its absolute path (the path the entrypoint is given)."""
    config_yml: pulumi.Output[str]
    """The rendered config.yml (secret: it holds http.secret)."""

    def __init__(self, name: str, args: CacheFilesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("msrcache:index:CacheFiles", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = [docker.SecretLabelArgs(label=k, value=v) for k, v in sorted(args.labels.items())]

        def secret(role: str, file_name: str, pem: pulumi.Input[str]) -> SecretMount:
            res = docker.Secret(
                f"{name}-{role}",
                # Secret from the start: an invalid value would otherwise be
                # echoed by the provider, and Secret.data must never be plain.
                data=pulumi.Output.secret(pem).apply(b64),
                labels=labels,
                opts=child,
            )
            return SecretMount(res.id, res.name, file_name)

        self.secrets = [
            secret("cache-cert", CACHE_CERT, args.cert_pem),
            secret("cache-key", CACHE_KEY, args.key_pem),
        ]
        if args.msr_ca_pem:
            self.secrets.append(secret("msr-ca", MSR_CA, args.msr_ca_pem))
        if args.upstream_ca_pem is not None:
            self.secrets.append(secret("upstream-ca", UPSTREAM_CA, args.upstream_ca_pem))
        if args.gcs_keyfile is not None:
            self.secrets.append(secret("gcs-keyfile", GCS_KEYFILE, args.gcs_keyfile))

        # Signs the cache's upload state; Distribution wants it random and shared
        # by all replicas, so it is generated once and kept in the state.
        http_secret = random.RandomPassword(
            f"{name}-http-secret", length=HTTP_SECRET_LENGTH, special=False, opts=child
        )
        trust = bool(args.msr_ca_pem)
        # Storage credentials go only into this text, which is a secret.
        rendered = http_secret.result.apply(
            lambda value: render_config(
                CacheConfig(
                    cache_url=args.cache_url,
                    upstreams=args.upstreams,
                    http_secret=value,
                    trust_msr_ca=trust,
                    blob_ttl=args.blob_ttl,
                    log_level=args.log_level,
                    trust_upstream_ca=args.upstream_ca_pem is not None,
                    storage_driver=args.storage_driver,
                )
            )
        )
        # Already secret through http_secret.result; said explicitly, as it matters.
        self.config_yml = pulumi.Output.secret(rendered)
        # A secret, not a ServiceConfig: it holds http.secret (see the module
        # docstring). Stacks deployed as a config upgrade in place: this secret
        # is created, the service updated to mount it, then the config deleted.
        self.config = secret("config-yml", CONFIG_PATH, self.config_yml)

        self.register_outputs(
            {
                "secretNames": [s.secret_name for s in self.secrets],
                "configName": self.config.secret_name,
                "configYml": self.config_yml,
            }
        )
