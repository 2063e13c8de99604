"""Stack configuration, validated into one typed `Settings` object.

Every key lives in the `msr-cache:` namespace. Scalar keys and their defaults are
declared once, in Pulumi.yaml (the Pulumi CLI enforces their types); they are
read from there (stack_config.py), so the program, the tests and the CLI agree.
The object keys `tls`, `storage` and `secretFiles` cannot be declared in
Pulumi.yaml, so their defaults are the model's field defaults (settings_model.py).

All problems are collected and reported together, each naming its key and the
expected form (settings_messages.py), before any resource is registered; the
checks across fields are in settings_checks.py. Secret values (private keys) are
held as `SecretStr` and never appear in an error.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from components.rules import CREDENTIAL_OPTION, is_ip
from components.settings_checks import cross_checks, valid_parts
from components.settings_messages import NAMESPACE, Problem, SettingsError, from_pydantic, redacted
from components.settings_model import (
    DEFAULT_RENEW_BEFORE_HOURS,
    LIST_KEYS,
    OBJECT_KEYS,
    SecretFilesSettings,
    Settings,
    StorageSettings,
    TlsSettings,
    is_fqdn,
    object_fields,
)
from components.settings_stack import (
    CACHES,
    StackSettings,
    cross_cache_problems,
    entry_encrypted,
    entry_problem,
    entry_raw,
    entry_secret_keys,
    entry_shape_problems,
    single_problems,
)
from components.stack_config import known_keys, project_defaults, raw_from_pulumi_config

__all__ = [
    "DEFAULT_RENEW_BEFORE_HOURS",
    "NAMESPACE",
    "Problem",
    "SecretFilesSettings",
    "Settings",
    "SettingsError",
    "StackSettings",
    "StorageSettings",
    "TlsSettings",
    "is_fqdn",
    "is_ip",
    "known_keys",
    "load_settings",
    "parse_settings",
    "parse_stack",
    "problems_as_written",
    "project_defaults",
]


def parse_stack(
    raw: Mapping[str, Any],
    secret_keys: frozenset[str] = frozenset(),
    now: dt.datetime | None = None,
    stack: str = "dev",
) -> StackSettings:
    """Validate raw stack values (key -> value, without namespace) into the
    stack's caches: the entries of `caches`, or the stack's one cache.

    `secret_keys` are the keys the operator stored as Pulumi secrets; private keys
    given in plain text are refused so they never sit unencrypted in a stack file.
    `stack` names the defaults (service names, MSR names) that must not collide.
    Raises SettingsError listing every problem.
    """
    settings, problems = _validate_stack(raw, secret_keys, now, frozenset(), stack)
    if problems:
        raise SettingsError(problems)
    assert settings is not None
    return settings


def parse_settings(
    raw: Mapping[str, Any],
    secret_keys: frozenset[str] = frozenset(),
    now: dt.datetime | None = None,
) -> Settings:
    """The settings of a stack's one cache (no `caches`); see parse_stack."""
    stack = parse_stack(raw, secret_keys, now)
    if stack.listed:
        raise ValueError("parse_settings reads a stack without caches; use parse_stack")
    return stack.caches[0]


def problems_as_written(
    raw: Mapping[str, Any],
    encrypted: frozenset[str],
    now: dt.datetime | None = None,
    stack: str = "dev",
) -> list[Problem]:
    """Every problem `pulumi up` would report for a stack file as it is written,
    where the values at the dotted paths in `encrypted` (`tls.keyPem`,
    `storage.driverOpts.o`, `msrHost`, `tls.dnsNames.0`) are `secure:` values
    that only the Pulumi CLI can decrypt.

    An encrypted value counts as present and is not checked itself; everything
    that can be checked without it is (a provided certificate's expiry, SANs and
    chain when only its key is encrypted). A top-level key holding an encrypted
    value is a secret key, as the CLI marks it. For the operator tools
    (rehearsal, test caches), which must refuse what `up` refuses before they
    start anything.
    """
    secret_keys = frozenset(path.split(".")[0] for path in encrypted)
    return _validate_stack(raw, secret_keys, now, encrypted, stack)[1]


def _validate_stack(
    raw: Mapping[str, Any],
    secret_keys: frozenset[str],
    now: dt.datetime | None,
    encrypted: frozenset[str],
    stack: str,
) -> tuple[StackSettings | None, list[Problem]]:
    """The stack's caches (None when any problem) and every problem, redacted."""
    problems = _unknown_keys(raw)
    caches = raw.get(CACHES)
    if caches is None or CACHES in encrypted:
        # The stack's one cache, as before `caches` existed. (A `caches` stored
        # whole as one secret cannot be read outside the CLI: nothing to check.)
        settings, found = _validate(
            {k: v for k, v in raw.items() if k != CACHES}, secret_keys, now, encrypted
        )
        if settings is not None:
            found.extend(redacted(single_problems(settings), raw, secret_keys))
        problems.extend(found)
        if problems or settings is None:
            return None, problems
        settings._secret_keys = secret_keys
        return StackSettings((settings,), listed=False), problems

    shape = entry_shape_problems(caches)
    problems.extend(shape)
    if not isinstance(caches, list) or any(
        p.key in (CACHES, *(f"caches[{i}]" for i in range(len(caches)))) for p in shape
    ):
        return None, problems
    valid: list[tuple[int, Settings]] = []
    for i, entry in enumerate(caches):
        entry_enc = entry_encrypted(encrypted, i, entry)
        # A stack file says which values are encrypted; at run time the CLI
        # marks the whole `caches` key secret when any value in it is.
        keys = (
            frozenset(p.split(".")[0] for p in entry_enc)
            if encrypted
            else entry_secret_keys(secret_keys, entry)
        )
        settings, found = _validate(entry_raw(raw, entry), keys, now, entry_enc)
        problems.extend(entry_problem(p, i, entry, raw) for p in found)
        if settings is not None:
            settings._secret_keys = keys
            valid.append((i, settings))
    # They quote names and URLs: none of a value stored as a secret.
    problems.extend(redacted(cross_cache_problems(valid, stack), raw, secret_keys))
    # A value the stack gives every cache is reported once, not per cache.
    problems = list(dict.fromkeys(problems))
    if problems:
        return None, problems
    return StackSettings(tuple(s for _, s in valid), listed=True), problems


def _unknown_keys(raw: Mapping[str, Any]) -> list[Problem]:
    problems = []
    known = known_keys()
    for key in sorted(set(raw) - known):
        hint = difflib.get_close_matches(key, sorted(known), n=1)
        tip = f" (did you mean {hint[0]}?)" if hint else ""
        problems.append(
            Problem(
                key,
                f"is not a setting of this program{tip}; expected one of {', '.join(sorted(known))}",
            )
        )
    return problems


def _validate(
    raw: Mapping[str, Any],
    secret_keys: frozenset[str],
    now: dt.datetime | None,
    encrypted: frozenset[str],
) -> tuple[Settings | None, list[Problem]]:
    """The Settings of one cache (None when invalid) and every problem of its
    values, redacted; unknown keys are reported by the caller."""
    problems: list[Problem] = []
    known = known_keys() | {"name"}

    readable = _without_encrypted(raw, encrypted)
    values = {**project_defaults(), **{k: v for k, v in readable.items() if k in known}}
    for key in (*OBJECT_KEYS, *LIST_KEYS):
        if values.get(key) is None:
            values.pop(key, None)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(values, context={"now": now})
    except ValidationError as exc:
        # An encrypted value is there, only unreadable: what is said of it being
        # missing or malformed is not known (a misspelt field name still is).
        problems.extend(
            p for p in from_pydantic(exc, values, secret_keys) if not _about_encrypted(p, encrypted)
        )
    # Cross-field checks run on whatever parts are valid, so one run lists
    # every problem, not only the field errors; they skip what is encrypted.
    problems.extend(cross_checks(valid_parts(values, settings, now), now, encrypted))
    problems.extend(_plain_text_secrets(raw, secret_keys))
    problems.extend(_plain_text_credentials(raw, secret_keys))
    return settings, redacted(problems, raw, secret_keys)


# Stands in for an encrypted value where one must stay (a driver option, a list
# item, a misspelt field) so that its key is still checked.
_UNREADABLE = "[encrypted]"


def _without_encrypted(raw: Mapping[str, Any], encrypted: frozenset[str]) -> dict[str, Any]:
    """`raw` without the encrypted values: a top-level key or a known field of an
    object key is left out (its default stands in while the checks that need
    it are skipped); anything else is replaced by a placeholder string."""
    out: dict[str, Any] = copy.deepcopy(dict(raw))
    for path in sorted(encrypted):
        parts = path.split(".")
        if len(parts) == 1:
            out.pop(path, None)
            continue
        parent: Any = out
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.get(part)
        leaf = parts[-1]
        if len(parts) == 2 and parts[0] in OBJECT_KEYS and leaf in object_fields(parts[0]):
            parent.pop(leaf, None)
        elif isinstance(parent, list):
            parent[int(leaf)] = _UNREADABLE
        else:
            parent[leaf] = _UNREADABLE
    return out


def _about_encrypted(problem: Problem, encrypted: frozenset[str]) -> bool:
    if problem.message.startswith("is not a known field"):
        return False
    return any(problem.key == path or problem.key.startswith(f"{path}.") for path in encrypted)


def load_settings() -> StackSettings:
    """The running stack's caches; raises pulumi.RunError (no traceback) when invalid."""
    import pulumi

    raw, secret_keys = raw_from_pulumi_config()
    try:
        return parse_stack(raw, secret_keys, stack=pulumi.get_stack())
    except SettingsError as exc:
        raise pulumi.RunError(str(exc)) from None


# Values that must be stored as Pulumi secrets, and the command that does it.
_SECRET_VALUES = {
    "tls.caKeyPem": "pulumi config set --secret --path tls.caKeyPem < key.pem",
    "tls.keyPem": "pulumi config set --secret --path tls.keyPem < key.pem",
    "msrToken": "pulumi config set --secret msrToken",
    "storage.s3.accessKey": "pulumi config set --secret --path storage.s3.accessKey <key id>",
    "storage.s3.secretKey": "pulumi config set --secret --path storage.s3.secretKey <secret key>",
    "storage.azure.accountKey": "pulumi config set --secret --path storage.azure.accountKey <key>",
    "storage.gcs.keyfile": "pulumi config set --secret --path storage.gcs.keyfile < key.json",
    "storage.swift.password": "pulumi config set --secret --path storage.swift.password <password>",
}


def _plain_text_secrets(raw: Mapping[str, Any], secret_keys: frozenset[str]) -> list[Problem]:
    """A private key, the MSR token or a storage credential in plain text is
    refused: it would sit unencrypted in the repository. The value is never
    quoted. (In a `caches` entry the command's path starts with caches[i].)"""
    problems = []
    for path, command in _SECRET_VALUES.items():
        parts = path.split(".")
        value: Any = raw
        for part in parts:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value and parts[0] not in secret_keys:
            problems.append(Problem(path, f"is stored in plain text; expected a Pulumi secret: {command}"))
    return problems


def _plain_text_credentials(raw: Mapping[str, Any], secret_keys: frozenset[str]) -> list[Problem]:
    """Credentials in plain text in the stack file are refused, as private keys are:
    they would sit unencrypted in the repository. The value is never quoted."""
    storage = raw.get("storage")
    if "storage" in secret_keys or not isinstance(storage, Mapping):
        return []
    opts = storage.get("driverOpts")
    if not isinstance(opts, Mapping):
        return []
    problems = []
    for name, value in sorted(opts.items(), key=lambda kv: str(kv[0])):
        found = CREDENTIAL_OPTION.search(str(value)) if isinstance(value, str) else None
        if found:
            problems.append(
                Problem(
                    f"storage.driverOpts.{name}",
                    f"holds a credential ({found.group(1)}=...) in plain text; expected a Pulumi secret: "
                    f"pulumi config set --secret --path storage.driverOpts.{name} '<value>'",
                )
            )
    return problems
