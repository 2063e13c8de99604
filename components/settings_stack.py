"""Several caches in one stack: `msr-cache:caches`.

Each entry of `caches` is one cache: its `name` plus any per-cache key
(`ENTRY_KEYS`); every key it leaves out is the stack's top-level value. Object
keys (`tls`, `storage`) merge field by field, unless the entry sets the
object's `mode`: a different mode has other fields, so the entry's object then
replaces the stack's. An entry's `cacheNode` replaces the stack's `nodes`, and
its `nodes` the stack's `cacheNode`.

Each entry is validated as the stack's one cache is (settings.py), and its
problems are named after the entry (`caches[1].cachePort`) when the entry set
the key or nobody did, after the top-level key when the value came from there.
The checks across caches (names, ports, upstreams) are here; they run on the
entries that are valid.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.settings_messages import Problem
from components.settings_model import ENTRY_KEYS, OBJECT_KEYS, Settings

CACHES = "caches"
# The docs advise against more than two levels of caches below MSR.
MAX_DEPTH = 2


@dataclass(frozen=True)
class StackSettings:
    """The validated caches of a stack, in the order the stack lists them."""

    caches: tuple[Settings, ...]
    listed: bool
    """True when the stack sets `caches`; False for the stack's one cache (the
    same resources, with the same URNs, as before `caches` existed)."""

    @property
    def single(self) -> Settings | None:
        """The one cache, when there is exactly one."""
        return self.caches[0] if len(self.caches) == 1 else None

    def export_name(self, s: Settings, stack: str) -> str:
        """The cache's key in the `caches` export: its entry name, or for the
        stack's one cache its name in MSR."""
        return s.name or s.effective_cache_name(stack)

    def build_order(self) -> list[Settings]:
        """Parents before the caches that fetch from them."""
        by_name = {s.name: s for s in self.caches if s.name}
        done: list[Settings] = []

        def visit(s: Settings) -> None:
            if s in done:
                return
            parent = by_name.get(s.parent_in_stack or "")
            if parent is not None:
                visit(parent)
            done.append(s)

        for s in self.caches:
            visit(s)
        return done


def entry_shape_problems(caches: Any) -> list[Problem]:
    """`caches` must be a non-empty list of objects with a name and only
    per-cache keys."""
    if not isinstance(caches, list) or not caches:
        return [
            Problem(
                CACHES,
                "is not a non-empty list; expected a list of objects, each with name and the keys it sets "
                "for that cache (e.g. [{name: asia, cacheHost: ..., cacheNode: ...}]), or no caches key "
                "for the stack's one cache",
            )
        ]
    problems = []
    allowed = ["name", *ENTRY_KEYS]
    first: dict[str, int] = {}
    for i, entry in enumerate(caches):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if isinstance(name, str) and name in first:
            problems.append(
                Problem(
                    f"caches[{i}].name", f"is {name}, as caches[{first[name]}] is; expected a name of its own"
                )
            )
        elif isinstance(name, str):
            first[name] = i
        if not isinstance(entry, Mapping):
            problems.append(
                Problem(f"caches[{i}]", "is not an object; expected {name: <name>, <per-cache key>: ...}")
            )
            continue
        if "name" not in entry:
            problems.append(
                Problem(
                    f"caches[{i}].name",
                    "is required; expected a name of lower-case letters, digits and '-', e.g. asia",
                )
            )
        for key in sorted(set(entry) - set(allowed), key=str):
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            tip = f" (did you mean {hint[0]}?)" if hint else ""
            problems.append(
                Problem(
                    f"caches[{i}].{key}",
                    f"is not a per-cache setting{tip}; expected one of {', '.join(allowed)} "
                    "(the other keys are the stack's, set at the top level)",
                )
            )
    return problems


def entry_raw(top: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The raw values of one cache: the stack's, overlaid with the entry's."""
    merged = {k: v for k, v in top.items() if k != CACHES}
    # A null in an entry is no value: the stack's stands.
    entry = {k: v for k, v in entry.items() if v is not None}
    for key, value in entry.items():
        base = merged.get(key)
        if (
            key in OBJECT_KEYS
            and isinstance(value, Mapping)
            and isinstance(base, Mapping)
            and "mode" not in value
        ):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    if "cacheNode" in entry and "nodes" not in entry:
        merged.pop("nodes", None)
    if "nodes" in entry and "cacheNode" not in entry:
        merged.pop("cacheNode", None)
    return merged


def entry_encrypted(encrypted: frozenset[str], i: int, entry: Mapping[str, Any]) -> frozenset[str]:
    """The encrypted paths of entry `i`'s merged values: its own, and the
    stack's that it inherits."""
    prefix = f"{CACHES}.{i}."
    own = {path[len(prefix) :] for path in encrypted if path.startswith(prefix)}
    inherited = set()
    for path in encrypted:
        if path.startswith(f"{CACHES}."):
            continue
        parts = path.split(".")
        given = entry.get(parts[0])
        if parts[0] not in entry or (
            parts[0] in OBJECT_KEYS
            and isinstance(given, Mapping)
            and "mode" not in given
            and len(parts) > 1
            and parts[1] not in given
        ):
            inherited.add(path)
    return frozenset(own | inherited)


def entry_secret_keys(secret_keys: frozenset[str], entry: Mapping[str, Any]) -> frozenset[str]:
    """Keys whose merged value may hold a secret: the stack's secret keys, and
    everything an entry sets when `caches` holds a secret (the CLI marks the
    whole list)."""
    if CACHES in secret_keys:
        return secret_keys | frozenset(str(k) for k in entry)
    return secret_keys


def entry_problem(problem: Problem, i: int, entry: Mapping[str, Any], top: Mapping[str, Any]) -> Problem:
    """A problem of entry `i`'s merged values, named where the value is set:
    the stack's top-level key when the value came from there, else the
    entry's key (a per-cache value given nowhere belongs in the entry)."""
    path = problem.key.split(".")
    if path[0] not in ("name", *ENTRY_KEYS):
        return problem
    if _given(top, path) and not _given(entry, path):
        return problem
    key = f"caches[{i}].{problem.key}"
    return Problem(key, problem.message.replace(f"--path {problem.key} ", f"--path '{key}' "))


def _given(values: Mapping[str, Any], path: list[str]) -> bool:
    node: Any = values
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return node is not None


def cross_cache_problems(entries: list[tuple[int, Settings]], stack: str) -> list[Problem]:
    """What no single cache can see: shared names and ports, and upstreams."""
    problems: list[Problem] = []
    problems.extend(_unique(entries, "serviceName", lambda s: s.effective_service_name(stack)))
    problems.extend(_unique(entries, "cacheName", lambda s: s.effective_cache_name(stack)))
    problems.extend(_unique(entries, "cacheHost", lambda s: s.cache_url, what="URL"))
    problems.extend(
        _unique(
            entries,
            "storage.volumeName",
            lambda s: s.effective_volume_name(stack) if s.storage.mode == "volume" else "",
            what="volume",
        )
    )
    problems.extend(_ports(entries))
    problems.extend(_upstreams(entries))
    return problems


def single_problems(s: Settings) -> list[Problem]:
    """The stack's one cache can fetch from MSR or a parent cache's URL only."""
    if s.parent_in_stack:
        return [
            Problem(
                "upstream",
                f"names a cache ({s.upstream}), but the stack has no caches list; expected the https:// URL "
                "of a parent cache (with upstreamCaPem), or empty for MSR",
            )
        ]
    return []


def _unique(
    entries: list[tuple[int, Settings]], key: str, value_of: Any, what: str = "name"
) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for i, s in entries:
        value = value_of(s)
        if not value:
            continue
        if value in first:
            problems.append(
                Problem(
                    f"caches[{i}].{key}",
                    f"gives the {what} {value}, which caches[{first[value]}] has too; "
                    "expected one of its own",
                )
            )
        else:
            first[value] = i
    return problems


def _ports(entries: list[tuple[int, Settings]]) -> list[Problem]:
    """Two caches cannot publish the same port on one node. Ingress (the
    routing mesh) takes the port on every node of the swarm."""
    problems = []
    for n, (j, b) in enumerate(entries):
        for i, a in entries[:n]:
            if a.cache_port != b.cache_port:
                continue
            if "ingress" in (a.publish_mode, b.publish_mode):
                where = "on every node (publishMode ingress takes the port swarm-wide)"
            else:
                shared = sorted(set(a.effective_nodes) & set(b.effective_nodes))
                if not shared:
                    continue
                where = f"on node {', '.join(shared)}"
            problems.append(
                Problem(
                    f"caches[{j}].cachePort",
                    f"{b.cache_port} is also published by caches[{i}] ({a.name}) {where}; expected another "
                    "port, or (with publishMode host on both) another node",
                )
            )
            break
    return problems


def _upstreams(entries: list[tuple[int, Settings]]) -> list[Problem]:
    """Every parent named exists; no cycle; at most MAX_DEPTH levels below MSR."""
    index = {s.name: (i, s) for i, s in entries if s.name}
    problems = []
    for i, s in entries:
        parent = s.parent_in_stack
        if parent is None:
            continue
        if parent not in index:
            names = ", ".join(sorted(n for n in index if n != s.name)) or "none"
            problems.append(
                Problem(
                    f"caches[{i}].upstream",
                    f"names {parent}, which is no cache of the stack; expected the name of another cache "
                    f"(the stack has: {names}), an https:// URL, or empty for MSR",
                )
            )
            continue
        path = [s.name or ""]
        node: Settings | None = s
        cycle = False
        while node is not None and node.parent_in_stack:
            nxt = node.parent_in_stack
            if nxt in path:
                path.append(nxt)
                cycle = True
                break
            path.append(nxt)
            node = index.get(nxt, (0, None))[1]
        if cycle:
            problems.append(
                Problem(
                    f"caches[{i}].upstream",
                    f"makes a cycle ({' -> '.join(path)}); expected the chain to end at MSR (a cache with no "
                    "upstream)",
                )
            )
            continue
        # Levels below MSR: the chain in the stack, plus one when the top of
        # it fetches from a parent outside the stack.
        top = node
        depth = len(path) + (1 if top is not None and top.upstream.startswith("https://") else 0)
        if depth > MAX_DEPTH:
            outside = [top.upstream] if top is not None and top.upstream.startswith("https://") else []
            chain = " <- ".join(["MSR", *outside, *reversed(path)])
            problems.append(
                Problem(
                    f"caches[{i}].upstream",
                    f"puts {s.name} {depth} levels below MSR ({chain}); expected at most {MAX_DEPTH} levels, "
                    "as the MSR docs advise: a cache fetching from MSR or from a cache that does",
                )
            )
    return problems
