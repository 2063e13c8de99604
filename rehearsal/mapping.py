"""Table-driven translation of Pulumi resource inputs into what we hand to
Docker or `cryptography`, refusing any input the table does not map.

A shape is a dict from input key (camelCase, as the Python SDK sends it) to a
`Field`: where the value goes (a dotted target path, or None when the applier
consumes it itself) and how to convert it (a function, a nested shape, or a
one-element list holding the shape of each item). An input the shape does not
name is an error: the rehearsal must never drop what the program asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

Convert: TypeAlias = Callable[[Any], Any] | dict[str, "Field"] | list[Any]


class UnmappedInput(Exception):
    """The program sent an input the rehearsal cannot apply."""


@dataclass(frozen=True)
class Field:
    target: str | None
    convert: Convert = lambda v: v


def translate(value: dict[str, Any], shape: dict[str, Field], where: str) -> dict[str, Any]:
    """`value` rewritten by `shape`; raises UnmappedInput naming the first unknown input."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in shape:
            raise UnmappedInput(f"{where}.{key} is not mapped by the rehearsal; map it in rehearsal")
        spec = shape[key]
        if spec.target is None or item is None:
            continue
        _put(out, spec.target, _convert(item, spec.convert, f"{where}.{key}"))
    return out


def _convert(item: Any, convert: Convert, where: str) -> Any:
    if isinstance(convert, dict):
        if not isinstance(item, dict):
            raise UnmappedInput(f"{where} should be an object, got {type(item).__name__}")
        return translate(item, convert, where)
    if isinstance(convert, list):
        if not isinstance(item, list):
            raise UnmappedInput(f"{where} should be a list, got {type(item).__name__}")
        return [_convert(v, convert[0], f"{where}[{i}]") for i, v in enumerate(item)]
    return convert(item)


def _put(out: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        out = out.setdefault(part, {})
    out[last] = value


def consumed(value: dict[str, Any], key: str) -> Any:
    """An input the applier uses itself (target None in its shape)."""
    return value.get(key)


# -- converters shared by the tables ----------------------------------------

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def nanoseconds(text: str) -> int:
    """A Go duration as the provider sends it ("5s", "1m30s", "0s") in nanoseconds."""
    total, number = 0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = text[i : i + 2] if text[i : i + 2] in _UNITS else ch
        if unit not in _UNITS or not number:
            raise UnmappedInput(f"duration {text!r} is not a Go duration")
        total += int(float(number) * _UNITS[unit])
        number = ""
        i += len(unit)
    if number:
        raise UnmappedInput(f"duration {text!r} has a number without a unit")
    return total


def integer(value: Any) -> int:
    """Numbers arrive as floats from the Pulumi runtime."""
    if float(value) != int(value):
        raise UnmappedInput(f"{value!r} is not a whole number")
    return int(value)


def ratio(value: Any) -> float:
    """A fraction the provider sends as a string ("0.0" .. "1.0")."""
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise UnmappedInput(f"{value!r} is not a fraction from 0 to 1")
    return number


def label_list(items: list[dict[str, str]]) -> dict[str, str]:
    """[{label, value}] (the provider's form) as Docker's label map."""
    out = {}
    for item in items:
        unknown = set(item) - {"label", "value"}
        if unknown:
            raise UnmappedInput(f"label entry has unmapped keys {sorted(unknown)}")
        out[item["label"]] = item["value"]
    return out


def one_of(*allowed: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise UnmappedInput(f"{value!r} is not one of {allowed}")
        return value

    return check
