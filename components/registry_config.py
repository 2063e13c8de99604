"""The cache's config.yml, rendered from settings by a pure function.

The format is Docker Distribution's configuration file plus the `downstream`
registry middleware that only the content-cache image has. With default
settings the result is the file from the MSR documentation, except that
`http.secret` is a real random value and the placeholders are filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from components.settings_model import StorageSettings

# Where the service mounts things; config.yml names these paths, so the service
# and the rendered file must agree. One definition for both.
CONTAINER_PORT = 443
CONFIG_PATH = "/config.yml"
SECRETS_DIR = "/run/secrets"
CACHE_CERT = "cache.cert.pem"
CACHE_KEY = "cache.key.pem"
MSR_CA = "dtr.cert.pem"
# The CA (or certificate) of a parent cache, when the upstream is one.
UPSTREAM_CA = "upstream.cert.pem"
# The gcs driver reads its service account key from a file.
GCS_KEYFILE = "gcs.key.json"
STORAGE_ROOT = "/var/lib/registry"


@dataclass(frozen=True)
class CacheConfig:
    """The values config.yml is made of."""

    cache_url: str
    upstreams: list[str]
    http_secret: str
    trust_msr_ca: bool
    """cas lists MSR's CA (dtr.cert.pem)."""
    blob_ttl: str = "24h"
    log_level: str = "info"
    trust_upstream_ca: bool = False
    """cas lists the parent cache's CA (upstream.cert.pem): the next hop's."""
    storage_driver: dict[str, Any] | None = None
    """Distribution's storage driver section ({"s3": {...}}); None: the filesystem."""


def render_config(cfg: CacheConfig) -> str:
    """config.yml text for the content cache."""
    options: dict[str, object] = {"blobttl": cfg.blob_ttl, "upstreams": list(cfg.upstreams)}
    cas = [name for name, on in ((MSR_CA, cfg.trust_msr_ca), (UPSTREAM_CA, cfg.trust_upstream_ca)) if on]
    if cas:
        options["cas"] = [f"{SECRETS_DIR}/{name}" for name in cas]
    storage: dict[str, Any] = {
        # blobttl needs deletes enabled: the cache expires layers by deleting them.
        "delete": {"enabled": True},
    }
    if cfg.storage_driver:
        # Served through the cache, not by redirecting clients to the object
        # store: clients reach the cache, not necessarily the bucket.
        storage["redirect"] = {"disable": True}
        storage.update(cfg.storage_driver)
    else:
        storage["filesystem"] = {"rootdirectory": STORAGE_ROOT}
    document = {
        "version": 0.1,
        "log": {"level": cfg.log_level},
        "storage": storage,
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


def storage_driver(storage: StorageSettings) -> dict[str, Any] | None:
    """Distribution's storage driver section for an object-storage mode, with
    its documented keys (credentials included: config.yml is a Swarm secret);
    None for the filesystem (modes container and volume)."""
    if storage.s3 is not None and storage.mode == "s3":
        s3 = storage.s3
        section: dict[str, Any] = {"bucket": s3.bucket, "region": s3.region}
        if s3.region_endpoint:
            section["regionendpoint"] = s3.region_endpoint
        if s3.access_key is not None and s3.secret_key is not None:
            section["accesskey"] = s3.access_key.get_secret_value()
            section["secretkey"] = s3.secret_key.get_secret_value()
        section.update({"encrypt": s3.encrypt, "secure": s3.secure, "v4auth": s3.v4_auth})
        if s3.chunk_size is not None:
            section["chunksize"] = s3.chunk_size
        if s3.root_directory:
            section["rootdirectory"] = s3.root_directory
        return {"s3": section}
    if storage.azure is not None and storage.mode == "azure":
        az = storage.azure
        return {
            "azure": {
                "accountname": az.account_name,
                "accountkey": az.account_key.get_secret_value(),
                "container": az.container,
            }
        }
    if storage.gcs is not None and storage.mode == "gcs":
        gcs = storage.gcs
        section = {"bucket": gcs.bucket}
        if gcs.keyfile is not None:
            section["keyfile"] = f"{SECRETS_DIR}/{GCS_KEYFILE}"
        if gcs.root_directory:
            section["rootdirectory"] = gcs.root_directory
        return {"gcs": section}
    if storage.swift is not None and storage.mode == "swift":
        sw = storage.swift
        return {
            "swift": {
                "username": sw.username,
                "password": sw.password.get_secret_value(),
                "authurl": sw.auth_url,
                "container": sw.container,
            }
        }
    return None
