"""A stack file's configuration, pointed at the local swarm for a rehearsal.

What changes and why (each change is reported), for the stack's one cache and
for every entry of `msr-cache:caches` alike:
- msrHost/msrPort/msrCaCert: the upstream stand-in and its private CA
  (fetchMsrCa off: the CA is given); a parent cache outside the stack
  (`upstream: https://...`) cannot be reached from here: the stand-in too;
- cacheNode/nodes: nodes of the local swarm (place_caches): the cache node
  (msrc-cache) first, then more workers (msrc-node4, ...), then the manager;
  never the msr node, which runs the stand-ins. A cache with several replicas
  gets one node per task; two caches publishing the same port get different
  nodes, caches on different ports may share one;
- publishMode host (no routing mesh here);
- image: the content-cache stand-in (the real image cannot be pulled here);
- TLS material stored encrypted (`secure:`, which only the Pulumi CLI can
  decrypt) is replaced by test material of the same kind: a test CA for
  caSigned, a test leaf for the cache's own names (cacheHost, dnsNames,
  ipAddresses) signed by one test intermediate for provided. What is in plain
  text was checked as written before (a provided certificate's expiry, SANs
  and chain);
- object storage (s3, azure, gcs, swift): the S3 stand-in (moto,
  rehearsal/object_store.py), the bucket and root directory kept apart per
  bucket of the stack. Debian's registry has no azure or gcs driver and no
  Swift server runs here, so those become S3 on the stand-in as well: shared
  object storage still, as replicas need;
- an encrypted cacheHost: a stand-in name; other encrypted top-level values:
  their defaults; encrypted storage driver options: a local volume; any other
  encrypted value: left out.
The stack file is checked as written (tools.stack_file) before any of this:
a stack `pulumi up` would refuse never reaches here.
Everything else (cacheHost, cachePort, tls mode/key type/SANs/validity,
volumes, label, log level, TTL, service and MSR names, chaining) is the
stack's own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from components.settings import is_ip, project_defaults
from components.settings_model import OBJECT_STORAGE_MODES
from components.settings_stack import CACHES, entry_raw
from rehearsal import pki
from tools.stack_file import encrypted_paths, holds_encrypted, is_encrypted

if TYPE_CHECKING:
    from rehearsal.object_store import ObjectStore
    from rehearsal.upstream import Upstream


class Unrehearsable(ValueError):
    """The stack cannot be rehearsed as it is; the message says why and what to do."""


class NotEnoughNodes(Unrehearsable):
    """The stack's caches need more nodes than the local swarm has for them."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


@dataclass(frozen=True)
class RehearsedCache:
    """One cache of the rehearsed stack: where it runs and how it is verified."""

    name: str | None
    """Its `caches` entry's name; None for the stack's one cache."""
    cache_host: str
    cache_port: int
    nodes: tuple[str, ...]
    """The local swarm's nodes it runs on (hostnames), one per task."""
    client_ca_pem: str | None
    """PEM that verifies its certificate; None for selfSigned (the certificate
    itself is the trust anchor, known only after apply)."""
    parent: str | None = None
    """The name of the stack's cache it fetches from (chained), if any."""

    @property
    def label(self) -> str:
        return self.name or "the cache"


@dataclass
class RehearsalConfig:
    config: dict[str, Any]
    secret_keys: tuple[str, ...]
    client_ca_pem: str | None
    """PEM that verifies the (first) cache's certificate; None for selfSigned
    (the certificate itself is the trust anchor, known only after apply)."""
    notes: list[str] = field(default_factory=list)
    caches: list[RehearsedCache] = field(default_factory=list)
    """Every cache, in the order the stack lists them (one without `caches`)."""

    @property
    def listed(self) -> bool:
        """Whether the stack has a `caches` list."""
        return CACHES in self.config


# Stand-ins for top-level values the rehearsal cannot read (encrypted) and must have.
_UNREADABLE_STAND_INS = {"cacheHost": "rehearsal-cache.example.com"}
# The stack-wide keys the rehearsal sets itself.
_REPLACED = {
    "msrHost", "msrPort", "msrCaCert", "fetchMsrCa", "cacheNode", "nodes", "publishMode", "image",
    "register", "msrUser", "msrToken", CACHES,
}  # fmt: skip


def needs_object_store(stack: Mapping[str, Any]) -> bool:
    """Whether a cache of the stack keeps its layers in object storage, which
    the rehearsal puts on the S3 stand-in (started before for_local_swarm)."""
    return any(_storage_mode(raw) in OBJECT_STORAGE_MODES for raw in _cache_values(stack))


def refuse_unreadable(stack: Mapping[str, Any]) -> None:
    """Raise Unrehearsable when the rehearsal cannot read what it must place."""
    if is_encrypted(stack.get(CACHES)):
        raise Unrehearsable(
            "msr-cache:caches is encrypted whole in the stack file: only the Pulumi CLI can read it, so the "
            "rehearsal cannot know the caches; store only the secret values encrypted "
            "(pulumi config set --secret --path 'caches[0].tls.keyPem' ...)"
        )


def for_local_swarm(
    stack: dict[str, Any],
    upstream: Upstream,
    node: str,
    overrides: dict[str, Any] | None = None,
    *,
    image: str,
    nodes: Sequence[str] | None = None,
    store: ObjectStore | None = None,
) -> RehearsalConfig:
    """`stack`: the stack file's values (tools.stack_file.read_stack), already
    checked as written; `node`: the cache node's hostname; `nodes`: the nodes
    caches may run on, in order of preference (default: `node` only);
    `image`: the content-cache stand-in; `store`: the S3 stand-in, needed when
    needs_object_store(stack). Every value swapped is said in `notes`.
    Raises Unrehearsable (NotEnoughNodes when the caches need more nodes)."""
    refuse_unreadable(stack)
    candidates = list(nodes or [node])
    if node in candidates:
        candidates.remove(node)
    candidates.insert(0, node)
    placed = place_caches(stack, candidates)
    if needs_object_store(stack) and store is None:
        raise Unrehearsable("the stack keeps layers in object storage: start the S3 stand-in first")

    config = copy.deepcopy(stack)
    notes: list[str] = []
    for key in sorted(k for k, v in config.items() if is_encrypted(v) and k not in _REPLACED):
        if key in _UNREADABLE_STAND_INS:
            config[key] = _UNREADABLE_STAND_INS[key]
            notes.append(
                f"{key} -> {config[key]} (encrypted in the stack file: only the Pulumi CLI reads it)"
            )
        else:
            del config[key]
            notes.append(f"{key} is encrypted in the stack file (only the Pulumi CLI reads it): its default")
    config |= {
        "msrHost": upstream.host,
        "msrPort": upstream.port,
        "msrCaCert": upstream.ca_pem,
        "fetchMsrCa": False,
        "publishMode": "host",
        "image": image,
        # The stand-in is MSR here: the rehearsal always registers the cache
        # with it, as its admin, whatever the stack says of register.
        "register": True,
        "msrUser": upstream.admin_user,
        "msrToken": upstream.admin_token,
    }
    notes.append(f"msrHost/msrPort/msrCaCert -> the MSR stand-in {upstream.url} (private test CA)")
    notes.append(
        f"register -> true; msrUser/msrToken -> the MSR stand-in's {upstream.admin_user} "
        f"(was register: {str(stack.get('register', True)).lower()})"
    )
    test_material = _TestMaterial()
    if CACHES not in config:
        return _single(config, stack, placed[0], notes, overrides, image, store, test_material)
    return _listed(config, stack, placed, notes, overrides, image, store, test_material)


def _single(
    config: dict[str, Any],
    stack: dict[str, Any],
    nodes: tuple[str, ...],
    notes: list[str],
    overrides: dict[str, Any] | None,
    image: str,
    store: ObjectStore | None,
    material: _TestMaterial,
) -> RehearsalConfig:
    """The stack's one cache (no `caches`)."""
    notes.append(f"{_place(config, nodes)}; publishMode -> host; image -> {image} (stand-in)")
    notes.extend(_outside_parent(config, ""))
    notes.extend(_storage(config, "", store, config))
    config |= overrides or {}
    tls = dict(config.get("tls") or {})
    mode = tls.get("mode", "selfSigned")
    host = str(config.get("cacheHost") or "")
    tls, client_ca, said = material.swap(tls, host, "")
    notes.extend(said)
    tls = {k: v for k, v in tls.items() if not is_encrypted(v)}
    config["tls"] = tls
    notes.extend(_leftovers(config))
    # Every encrypted value is gone or replaced by now; what is left to keep
    # secret is the stand-in's token and the private key material put in.
    secret_keys: tuple[str, ...] = ("msrToken", "tls") if mode != "selfSigned" else ("msrToken",)
    if _storage_mode(config) == "s3":
        secret_keys += ("storage",)
    port = int(config.get("cachePort") or project_defaults()["cachePort"])
    cache = RehearsedCache(None, host, port, nodes, client_ca, None)
    return RehearsalConfig(config, secret_keys, client_ca, notes, [cache])


def _listed(
    config: dict[str, Any],
    stack: dict[str, Any],
    placed: list[tuple[str, ...]],
    notes: list[str],
    overrides: dict[str, Any] | None,
    image: str,
    store: ObjectStore | None,
    material: _TestMaterial,
) -> RehearsalConfig:
    """A stack with `caches`: each entry's values are its own over the stack's
    (components.settings_stack.entry_raw); what the rehearsal swaps is written
    into the entry, whole, so the entry's merged values are what was checked,
    with the stand-ins in."""
    # The stack's defaults for the entries; an entry's own value replaces it.
    for key in ("cacheNode", "nodes"):
        config.pop(key, None)
    config |= overrides or {}
    top = {k: v for k, v in config.items() if k != CACHES}
    entries: list[dict[str, Any]] = [dict(e) for e in config[CACHES]]
    caches: list[RehearsedCache] = []
    notes.append(f"publishMode -> host; image -> {image} (stand-in), for every cache")
    private = False
    for i, (entry, nodes) in enumerate(zip(entries, placed, strict=True)):
        where = f"caches[{i}] ({entry.get('name')})"
        merged = entry_raw(top, entry)
        for key in ("publishMode", "image"):
            entry.pop(key, None)
        said = [_place(entry, nodes, merged)]
        for key in sorted(k for k, v in entry.items() if is_encrypted(v)):
            if key == "cacheHost":
                entry[key] = f"rehearsal-{entry.get('name')}.example.com"
                said.append(f"cacheHost -> {entry[key]} (encrypted in the stack file)")
            else:
                del entry[key]
                said.append(f"{key} is encrypted in the stack file: the stack's value or the default")
        merged = entry_raw(top, entry)
        said.extend(_outside_parent(entry, "", merged))
        storage_said = _storage(entry, "", store, merged)
        if storage_said:
            private = private or _storage_mode(entry) == "s3"
            said.extend(storage_said)
        merged = entry_raw(top, entry)
        tls = dict(merged.get("tls") or {})
        host = str(merged.get("cacheHost") or "")
        swapped, client_ca, tls_said = material.swap(tls, host, "")
        if tls_said:
            # Whole, with its mode: the entry's tls replaces the stack's (the
            # merged object, with the test material in).
            entry["tls"] = {k: v for k, v in swapped.items() if not is_encrypted(v)}
            said.extend(tls_said)
            private = True
        elif isinstance(entry.get("tls"), dict):
            private = private or any(entry["tls"].get(k) for k in ("keyPem", "caKeyPem"))
        notes.extend(f"{where}: {s}" for s in said)
        merged = entry_raw(top, entry)
        port = int(merged.get("cachePort") or project_defaults()["cachePort"])
        parent = merged.get("upstream") or None
        if parent is not None and str(parent).startswith("https://"):
            parent = None
        caches.append(RehearsedCache(entry.get("name"), host, port, nodes, client_ca, parent))
    config[CACHES] = entries
    # The stack's own values the entries no longer need, or that nothing can read.
    top_tls = config.get("tls")
    if isinstance(top_tls, dict):
        config["tls"] = {k: v for k, v in top_tls.items() if not is_encrypted(v)}
    # The stack's storage is each entry's default: an entry that took it has it
    # swapped in whole by now, so the stack's own is swapped without a word.
    _storage(config, "", store, config)
    notes.extend(_leftovers(config))
    secret_keys: tuple[str, ...] = ("msrToken",)
    if any((config.get("tls") or {}).get(k) for k in ("keyPem", "caKeyPem")):
        secret_keys += ("tls",)
    if _storage_mode(config) == "s3":
        secret_keys += ("storage",)
    if private:
        # The CLI marks the whole list secret when any value in it is.
        secret_keys += (CACHES,)
    first = caches[0].client_ca_pem if len(caches) == 1 else None
    return RehearsalConfig(config, secret_keys, first, notes, caches)


class _TestMaterial:
    """Test certificates, made once per rehearsal: one test CA (caSigned) and one
    test root and intermediate (provided) for all caches of the stack."""

    def __init__(self) -> None:
        self._ca: pki.Issued | None = None
        self._chain: tuple[pki.Issued, pki.Issued] | None = None

    def swap(
        self, tls: dict[str, Any], host: str, where: str
    ) -> tuple[dict[str, Any], str | None, list[str]]:
        """(tls with test material where its own is unreadable, the PEM that
        verifies the cache, what was said)."""
        tls = dict(tls)
        mode = tls.get("mode", "selfSigned")
        if mode == "caSigned":
            if _readable(tls, "caCertPem", "caKeyPem"):
                return tls, tls["caCertPem"], []
            why = _why(tls, "caCertPem", "caKeyPem")
            if self._ca is None:
                self._ca = pki.make_ca("msr-cache rehearsal CA")
            tls |= {"caCertPem": self._ca.cert_pem, "caKeyPem": self._ca.key_pem}
            return tls, self._ca.cert_pem, [f"{where}tls.caCertPem/caKeyPem -> a test CA ({why})"]
        if mode == "provided" and not _readable(tls, "certPem", "keyPem", "chainPem"):
            # The stack's own certificate was checked as written (expiry, SANs,
            # chain); without its key it cannot be served, so a test leaf with the
            # same names is.
            why = _why(tls, "certPem", "keyPem", "chainPem")
            if self._chain is None:
                root = pki.make_ca("msr-cache rehearsal root")
                self._chain = (root, pki.make_ca("msr-cache rehearsal intermediate", issuer=root))
            root, inter = self._chain
            names = [host, *_plain_list(tls.get("dnsNames"))]
            dns = [n for n in names if not is_ip(n)]
            ips = [n for n in names if is_ip(n)] + _plain_list(tls.get("ipAddresses"))
            leaf = pki.make_leaf(host, dns=dns, ips=ips, issuer=inter)
            tls |= {"certPem": leaf.cert_pem, "keyPem": leaf.key_pem, "chainPem": inter.cert_pem}
            return (
                tls,
                root.cert_pem,
                [f"{where}tls.certPem/keyPem/chainPem -> a test leaf for {host} and intermediate ({why})"],
            )
        return tls, None, []


def _plain_list(value: Any) -> list[str]:
    """The readable items of a list value (an encrypted item is left out)."""
    return [str(v) for v in value if not is_encrypted(v)] if isinstance(value, list) else []


# --- where the caches run ---------------------------------------------------------


def place_caches(stack: Mapping[str, Any], candidates: Sequence[str]) -> list[tuple[str, ...]]:
    """The local nodes of each cache of the stack (in its order): one per task,
    the candidates in order of preference, two caches on one node only when they
    publish different ports. Raises NotEnoughNodes saying how many it needs."""
    wanted = [(_tasks(raw), _port(raw)) for raw in _cache_values(stack)]
    placed = _greedy(wanted, list(candidates))
    if placed is not None:
        return placed
    needed = nodes_needed(stack)
    names = [str(raw.get("name") or "the cache") for raw in _cache_values(stack)]
    shown = ", ".join(
        f"{n} ({t} task{'s' if t > 1 else ''} on port {p})" for n, (t, p) in zip(names, wanted, strict=True)
    )
    raise NotEnoughNodes(
        f"the stack's caches need {needed} nodes of the local swarm ({shown}: one node per task, and caches "
        f"publishing the same port on nodes of their own), and it has {len(candidates)} for them "
        f"({', '.join(candidates)}; the msr node runs the MSR stand-in)",
        needed,
    )


def nodes_needed(stack: Mapping[str, Any]) -> int:
    """How many nodes the stack's caches take on the local swarm (place_caches)."""
    wanted = [(_tasks(raw), _port(raw)) for raw in _cache_values(stack)]
    most = sum(t for t, _ in wanted)
    placed = _greedy(wanted, [f"n{i}" for i in range(most)])
    assert placed is not None
    return len({n for nodes in placed for n in nodes})


def _greedy(wanted: list[tuple[int, int]], candidates: list[str]) -> list[tuple[str, ...]] | None:
    ports: dict[str, set[int]] = {c: set() for c in candidates}
    placed = []
    for tasks, port in wanted:
        free = [c for c in candidates if port not in ports[c]][:tasks]
        if len(free) < tasks:
            return None
        for c in free:
            ports[c].add(port)
        placed.append(tuple(free))
    return placed


def _cache_values(stack: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The merged values of each cache: the entries over the stack's, or the stack's own."""
    caches = stack.get(CACHES)
    if isinstance(caches, list) and caches:
        return [entry_raw(stack, e) for e in caches if isinstance(e, Mapping)]
    return [dict(stack)]


def _tasks(raw: Mapping[str, Any]) -> int:
    """Tasks (so nodes) of one cache: replicas with `nodes`, else one."""
    replicas = raw.get("replicas")
    count = replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 1
    return max(count, 1) if raw.get("nodes") else 1


def _port(raw: Mapping[str, Any]) -> int:
    try:
        return int(raw.get("cachePort") or project_defaults()["cachePort"])
    except (TypeError, ValueError):
        return -1


def _place(target: dict[str, Any], nodes: tuple[str, ...], merged: Mapping[str, Any] | None = None) -> str:
    """Put `nodes` in `target` (the stack's values or an entry): as `nodes` when
    the stack lists several, else as `cacheNode`; says what it was."""
    merged = target if merged is None else merged
    was = merged.get("nodes") or merged.get("cacheNode")
    shown = "encrypted" if holds_encrypted(was) else (", ".join(was) if isinstance(was, list) else was)
    if merged.get("nodes"):
        target["nodes"] = list(nodes)
        target.pop("cacheNode", None)
        return f"nodes -> {', '.join(nodes)} (was {shown}: one node per task)"
    target["cacheNode"] = nodes[0]
    target.pop("nodes", None)
    return f"cacheNode -> {nodes[0]} (was {shown})"


def _outside_parent(target: dict[str, Any], where: str, merged: Mapping[str, Any] | None = None) -> list[str]:
    """A parent cache outside the stack (`upstream: https://...`) is not reachable
    from the local swarm: the cache fetches from the MSR stand-in instead."""
    merged = target if merged is None else merged
    parent = merged.get("upstream")
    if not (isinstance(parent, str) and parent.startswith("https://")) and not is_encrypted(parent):
        return []
    target["upstream"] = ""
    target["upstreamCaPem"] = ""
    shown = "encrypted" if is_encrypted(parent) else parent
    return [
        f"{where}upstream -> the MSR stand-in (was {shown}, a parent outside the stack: not reachable here)"
    ]


# --- storage ----------------------------------------------------------------------


def _storage_mode(raw: Mapping[str, Any]) -> str:
    storage = raw.get("storage")
    return str(storage.get("mode") or "container") if isinstance(storage, Mapping) else "container"


# The bucket (or container) field of each object storage mode.
_BUCKET = {"s3": "bucket", "azure": "container", "gcs": "bucket", "swift": "container"}


def _storage(
    target: dict[str, Any], where: str, store: ObjectStore | None, merged: Mapping[str, Any]
) -> list[str]:
    """The S3 stand-in for object storage; a local volume for encrypted driver
    options. Writes the whole storage object into `target` (the stack's values
    or an entry) when it changes it."""
    storage = merged.get("storage")
    if not isinstance(storage, Mapping):
        return []
    mode = _storage_mode(merged)
    if mode in OBJECT_STORAGE_MODES:
        assert store is not None
        own = storage.get(mode) if isinstance(storage.get(mode), Mapping) else {}
        assert isinstance(own, Mapping)
        bucket = own.get(_BUCKET[mode])
        root = own.get("rootDirectory")
        # One bucket on the stand-in: each of the stack's buckets is a folder
        # of its own there, so caches that share one still share it, and
        # caches that do not, do not.
        folder = f"/{bucket}" if isinstance(bucket, str) and bucket else "/rehearsal"
        folder += root if isinstance(root, str) and root and root != "/" else ""
        s3: dict[str, Any] = {
            "bucket": store.bucket,
            "region": store.region,
            "regionEndpoint": store.endpoint,
            "accessKey": store.access_key,
            "secretKey": store.secret_key,
            "encrypt": False,
            "secure": False,
            "v4Auth": True,
            "rootDirectory": folder,
        }
        chunk = own.get("chunkSize") if mode == "s3" else None
        if isinstance(chunk, int) and not isinstance(chunk, bool):
            s3["chunkSize"] = chunk
        kept = {k: v for k, v in storage.items() if k in {"mode"} | set(_STORAGE_KEPT)}
        target["storage"] = {**kept, "mode": "s3", "s3": s3}
        why = {
            "s3": "S3 is not reachable from here",
            "azure": "Debian's registry has no azure driver",
            "gcs": "Debian's registry has no gcs driver",
            "swift": "no Swift server runs here",
        }[mode]
        extra = "; encrypt -> false (the stand-in does not encrypt)" if own.get("encrypt") is True else ""
        return [
            f"{where}storage.mode {mode} -> s3 on the S3 stand-in {store.endpoint} (moto), bucket "
            f"{store.bucket}, rootDirectory {folder}, its own test key ({why}){extra}"
        ]
    if mode == "volume" and holds_encrypted(storage):
        # An encrypted driver option (a share's credentials) cannot be read, and
        # the share is not reachable from the local swarm: a local volume of the
        # same name stands in.
        target["storage"] = {
            "mode": "volume",
            **{k: v for k, v in storage.items() if k not in {"driver", "driverOpts", "mode"}},
        }
        return [f"{where}storage.driver/driverOpts -> a local volume (encrypted in the stack file)"]
    return []


# Fields of `storage` that stay when its driver is swapped (not the mode's own).
_STORAGE_KEPT = ("retain",)


def _leftovers(config: dict[str, Any]) -> list[str]:
    """Any encrypted value still there (a list item, an unknown corner): left out."""
    said = []
    for path in sorted(encrypted_paths(config), key=lambda p: (-p.count("."), p)):
        parts = path.split(".")
        parent: Any = config
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        leaf = parts[-1]
        if isinstance(parent, list):
            del parent[int(leaf)]
        else:
            del parent[leaf]
        said.append(f"{path} is encrypted in the stack file (only the Pulumi CLI reads it): left out")
    return said


def _readable(tls: dict[str, Any], *fields: str) -> bool:
    """Every one of the mode's PEM fields that is given is readable, and the
    required ones (all but chainPem) are given."""
    if any(is_encrypted(tls.get(f)) for f in fields):
        return False
    return all(tls.get(f) for f in fields if f != "chainPem")


def _why(tls: dict[str, Any], *fields: str) -> str:
    encrypted = [f for f in fields if is_encrypted(tls.get(f))]
    if encrypted:
        return f"{', '.join(encrypted)} encrypted in the stack file; the rest was checked as written"
    return "not in the stack values given"
