"""A stack file (`stacks/Pulumi.<env>.yaml`) read the way the Pulumi CLI reads
it, and checked the way `pulumi up` checks it, for the operator tools
(rehearsal, test caches) that must refuse what `up` refuses before they start
anything.

Reading: a bad YAML file, a key given twice, or a config key without its
namespace is refused with the file and the line (the CLI's go-yaml reader and
config.ParseKey refuse them too), never ignored or silently overridden.

Checking: the program's own validation (components.settings) on the values as
written. `secure:` values, which only the CLI can decrypt, count as present and
are not checked themselves; everything else is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from components.settings import Problem, SettingsError, problems_as_written

PROJECT = "msr-cache"


class StackFileError(ValueError):
    """The stack file cannot be read as the Pulumi CLI reads it; says where and why."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping, as the Pulumi CLI's
    YAML reader (go-yaml v3) does, instead of letting the last one win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise StackFileError(
                    f"line {line}: key {key!r} is already defined at line {seen[key]}; "
                    "expected each key once (the Pulumi CLI refuses the file too)"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _config_name(key: Any) -> tuple[str, str]:
    """(namespace, name) of a stack config key, as the Pulumi CLI parses it
    (config.ParseKey): `<namespace>:<name>`, or the old `<namespace>:config:<name>`."""
    text = str(key)
    parts = text.split(":")
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    if len(parts) == 3 and parts[1] == "config" and parts[0] and parts[2]:
        return parts[0], parts[2]
    hint = f"; write it as {PROJECT}:{text}" if len(parts) == 1 and text else ""
    raise StackFileError(
        f"config key {text!r}: could not parse it as a configuration key (configuration keys should be "
        f"of the form `<namespace>:<name>`{hint}); the Pulumi CLI refuses the file too"
    )


def read_document(path: Path) -> dict[str, Any]:
    """The whole stack file (`config:`, `secretsprovider:`, ...), read as the Pulumi
    CLI reads it: a bad YAML file or a key given twice is refused (StackFileError
    naming the file and the line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackFileError(f"{path}: cannot read it: {exc.strerror}") from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except StackFileError as exc:
        raise StackFileError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        tabs = " (YAML does not allow tabs for indentation)" if "'\\t'" in str(exc) else ""
        raise StackFileError(f"{path}: {where}not valid YAML: {problem}{tabs}") from None
    if not isinstance(doc, dict):
        raise StackFileError(f"{path}: expected a mapping with a `config:` key, got {type(doc).__name__}")
    return doc


def project_values(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """The document's msr-cache: keys (project prefix removed); a config key
    without its namespace, or one key in both of its forms, is refused, never
    ignored or silently overridden."""
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise StackFileError(f"{path}: `config:` must be a mapping of `<namespace>:<name>` keys")
    found: dict[str, Any] = {}
    for key, value in config.items():
        try:
            namespace, name = _config_name(key)
        except StackFileError as exc:
            raise StackFileError(f"{path}: {exc}") from None
        if namespace != PROJECT:
            continue  # another namespace (docker:host, ...): not this program's setting
        if name in found:
            raise StackFileError(
                f"{path}: {PROJECT}:{name} is given twice (also as {PROJECT}:config:{name}); expected it once"
            )
        found[name] = value
    return found


def read_stack(path: Path) -> dict[str, Any]:
    """The stack file's msr-cache: keys (project prefix removed), read as the
    Pulumi CLI reads it (read_document, project_values)."""
    return project_values(read_document(path), path)


def is_encrypted(value: Any) -> bool:
    """A `secure:` value as `pulumi config set --secret` writes it."""
    return isinstance(value, dict) and set(value) == {"secure"}


def _encrypted_in(prefix: str, value: Any) -> Iterator[str]:
    """Dotted paths of the `secure:` values in `value`, below `prefix`."""
    if is_encrypted(value):
        yield prefix
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _encrypted_in(f"{prefix}.{key}", child)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _encrypted_in(f"{prefix}.{i}", child)


def encrypted_paths(values: dict[str, Any]) -> frozenset[str]:
    """Dotted paths of the `secure:` values (`tls.keyPem`, `tls.dnsNames.0`)."""
    return frozenset(path for key, value in values.items() for path in _encrypted_in(str(key), value))


def holds_encrypted(value: Any) -> bool:
    """Whether `value` is, or holds anywhere, a `secure:` value."""
    return next(_encrypted_in("", value), None) is not None


def problems(values: dict[str, Any]) -> list[Problem]:
    """What `pulumi up` would refuse in these stack values (read_stack's result),
    every problem at once; no secret value is quoted."""
    return problems_as_written(values, encrypted_paths(values))


def check(values: dict[str, Any]) -> None:
    """Raise SettingsError listing every problem `pulumi up` would refuse."""
    found = problems(values)
    if found:
        raise SettingsError(found)
