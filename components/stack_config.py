"""Where the settings' raw values come from: Pulumi.yaml's declared scalar keys and
defaults, and the running stack's `msr-cache:` config."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from components.settings_messages import NAMESPACE
from components.settings_model import LIST_KEYS, OBJECT_KEYS

PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"


@cache
def _declared() -> dict[str, Any]:
    """Pulumi.yaml's `config:` block, read once per process."""
    with PROJECT_FILE.open(encoding="utf-8") as fh:
        return dict((yaml.safe_load(fh) or {}).get("config", {}))


def project_defaults() -> dict[str, Any]:
    """Defaults declared in Pulumi.yaml's `config:` block, by key."""
    return {key: spec["default"] for key, spec in _declared().items() if "default" in spec}


def known_keys() -> set[str]:
    return set(_declared()) | set(OBJECT_KEYS) | set(LIST_KEYS)


def raw_from_pulumi_config() -> tuple[dict[str, Any], frozenset[str]]:
    """Every `msr-cache:` key the stack sets (decoded), and which are secrets.

    Read raw rather than through typed getters so that a wrong type becomes one
    of the listed problems instead of the first exception.
    """
    import contextlib
    import json

    from pulumi.runtime import config as rc

    merged = {**rc.get_config_env(), **rc.CONFIG.get()}
    # A program run gets its secret keys in PULUMI_CONFIG_SECRET_KEYS; the mocks
    # (set_all_config) keep them in-process. Both count.
    secret_env = set(rc.get_config_secret_keys_env())
    prefix = f"{NAMESPACE}:"
    raw: dict[str, Any] = {}
    secret: set[str] = set()
    for full_key in merged:
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        value = rc.get_config(full_key)
        if key in (*OBJECT_KEYS, *LIST_KEYS) and isinstance(value, str):
            # Not JSON: left as text, which validation reports as not an object or list.
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        raw[key] = value
        if full_key in secret_env or rc.is_config_secret(full_key):
            secret.add(key)
    return raw, frozenset(secret)
