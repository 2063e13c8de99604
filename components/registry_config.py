"""The cache's config.yml, rendered from settings by a pure function.

The format is Docker Distribution's configuration file plus the `downstream`
registry middleware that only the content-cache image has. With default
settings the result is the file from the MSR documentation, except that
`http.secret` is a real random value and the placeholders are filled in.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

# Where the service mounts things; config.yml names these paths, so the service
# and the rendered file must agree. One definition for both.
CONTAINER_PORT = 443
CONFIG_PATH = "/config.yml"
SECRETS_DIR = "/run/secrets"
CACHE_CERT = "cache.cert.pem"
CACHE_KEY = "cache.key.pem"
MSR_CA = "dtr.cert.pem"
STORAGE_ROOT = "/var/lib/registry"


@dataclass(frozen=True)
class CacheConfig:
    """The values config.yml is made of."""

    cache_url: str
    upstreams: list[str]
    http_secret: str
    trust_msr_ca: bool
    blob_ttl: str = "24h"
    log_level: str = "info"


def render_config(cfg: CacheConfig) -> str:
    """config.yml text for the content cache."""
    options: dict[str, object] = {"blobttl": cfg.blob_ttl, "upstreams": list(cfg.upstreams)}
    if cfg.trust_msr_ca:
        options["cas"] = [f"{SECRETS_DIR}/{MSR_CA}"]
    document = {
        "version": 0.1,
        "log": {"level": cfg.log_level},
        "storage": {
            # blobttl needs deletes enabled: the cache expires layers by deleting them.
            "delete": {"enabled": True},
            "filesystem": {"rootdirectory": STORAGE_ROOT},
        },
        "http": {
            "addr": f"0.0.0.0:{CONTAINER_PORT}",
            "secret": cfg.http_secret,
            "host": cfg.cache_url,
            "tls": {
                "certificate": f"{SECRETS_DIR}/{CACHE_CERT}",
                "key": f"{SECRETS_DIR}/{CACHE_KEY}",
            },
        },
        "middleware": {"registry": [{"name": "downstream", "options": options}]},
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def files_named(config_text: str) -> list[str]:
    """Absolute paths config.yml expects to exist in the container."""
    doc = yaml.safe_load(config_text)
    tls = doc["http"]["tls"]
    paths = [tls["certificate"], tls["key"]]
    for entry in doc.get("middleware", {}).get("registry", []):
        paths.extend(entry.get("options", {}).get("cas", []))
    return paths
