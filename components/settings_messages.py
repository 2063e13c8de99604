"""What the operator reads when settings are refused: one line per problem,
naming the key and the expected form, with no secret value in it."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from components.settings_model import Settings

NAMESPACE = "msr-cache"

# Keys whose values may be echoed in an error (never a tls.*Pem field: it holds
# keys; never storage.driverOpts: it may hold credentials). The fields below an
# object key are enumerations, numbers and names, not key material: a number or
# a near-miss choice is shown even when the object key is a secret (tls is one
# whenever tls.keyPem is encrypted, the normal layout); see _may_show.
ECHO_SAFE = {
    "msrHost", "msrPort", "fetchMsrCa", "cacheHost", "cachePort", "cacheNode", "nodeLabel",
    "image", "blobTtl", "logLevel", "publishMode", "serviceName", "register", "cacheName", "msrUser",
    "tls.mode", "tls.keyAlgorithm", "tls.rsaBits", "tls.validityHours", "tls.rotateEvery",
    "tls.renewBeforeHours",
    "storage.mode", "storage.volumeName", "storage.driver", "storage.retain",
    "secretFiles.mode", "secretFiles.uid", "secretFiles.gid",
}  # fmt: skip

# The expected form per key, for pydantic's own errors (missing, wrong type,
# not one of the choices), which do not know our vocabulary.
_FORMS = {
    "msrHost": "MSR's host name or IP address, e.g. msr.example.com",
    "msrPort": "an integer from 1 to 65535",
    "cachePort": "an integer from 1 to 65535",
    "fetchMsrCa": "true or false",
    "cacheHost": "the host name clients use for the cache, e.g. cache-asia.example.com",
    "cacheNode": "the hostname of the Swarm node that runs the cache (see docker node ls), or self",
    "logLevel": "one of error, warn, info, debug",
    "publishMode": "one of ingress, host",
    "register": "true or false",
    "msrUser": "the MSR admin user that registers the cache",
    "msrToken": "that user's access token or password, set as a secret",
    "tls": "an object with mode selfSigned, caSigned or provided (see README)",
    "tls.mode": "one of selfSigned, caSigned, provided",
    "tls.keyAlgorithm": "one of RSA, ECDSA",
    "tls.rsaBits": "one of 2048, 3072, 4096",
    "tls.validityHours": "an integer number of hours from 24 to 87600",
    "tls.rotateEvery": "a period in whole hours or days, e.g. 2160h or 90d, 24h+ below tls.validityHours",
    "tls.renewBeforeHours": "a whole number of hours from 1 to below half of tls.validityHours, e.g. 720",
    "tls.dnsNames": "a list of DNS names",
    "tls.ipAddresses": "a list of IP addresses",
    "storage": "an object with mode container or volume (see README)",
    "storage.mode": "one of container, volume",
    "storage.driver": "a Docker volume driver name, e.g. local",
    "storage.driverOpts": "a map of option names to string values",
    "storage.retain": "true or false",
    "secretFiles": 'an object with mode (e.g. "0444"), uid and gid (see README)',
    "secretFiles.mode": 'a quoted octal file mode, e.g. "0444" or "0400"',
    "secretFiles.uid": "a numeric user ID, e.g. 0",
    "secretFiles.gid": "a numeric group ID, e.g. 0",
}


@dataclass(frozen=True)
class Problem:
    key: str  # path below the namespace, e.g. "tls.mode"
    message: str

    def __str__(self) -> str:
        # A key comes from the operator (an unknown field's name): one line per problem.
        return f"{NAMESPACE}:{_printable(self.key)}: {self.message}"


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


class SettingsError(Exception):
    """The stack configuration is invalid; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(
            f"The stack configuration is invalid ({len(problems)} {noun}):\n{lines}\n"
            f"Set values with `pulumi config set <key> <value>` (or --path for tls.* and "
            f"storage.*); README.md lists every key."
        )


def _secret_texts(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _secret_texts(v, f"{path}.{k}")
    elif isinstance(value, list):
        for v in value:
            yield from _secret_texts(v, path)
    elif value is not None and not isinstance(value, bool) and not _harmless(path, value):
        yield str(value)


def redacted(problems: list[Problem], raw: Mapping[str, Any], secret_keys: frozenset[str]) -> list[Problem]:
    """Problems with every value stored as a secret blanked out, wherever a
    message came to quote it (a cross-check naming cacheHost, say)."""
    texts = sorted(
        {t for key in secret_keys for t in _secret_texts(raw.get(key), key) if len(t) >= 4},
        key=len,
        reverse=True,
    )
    out = []
    for problem in problems:
        message = problem.message
        for text in texts:
            message = message.replace(text, "[secret]")
        out.append(Problem(problem.key, message))
    return out


def from_pydantic(
    exc: ValidationError, values: Mapping[str, Any], secret_keys: frozenset[str]
) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in err["loc"])
        base = re.sub(r"\.\d+$", "", key)  # tls.dnsNames.0 -> tls.dnsNames
        form: str | None = _FORMS.get(base)
        if err["type"] == "missing":
            message = "is required"
        elif err["type"] == "extra_forbidden":
            message, form = _unknown_field(err["loc"])
        elif err["type"] == "value_error":
            # Our validators say "expected <form>" or describe the fault themselves.
            text = str(err["msg"]).removeprefix("Value error, ")
            if text.startswith("expected "):
                message, form = "is not valid", text.removeprefix("expected ")
            else:
                message, form = text, None
        else:
            message, form = "is not valid", form or str(err["msg"])
        if form:
            message += f"; expected {form}"
        value = _lookup(values, key)
        if key in ECHO_SAFE and value is not None and _may_show(key, value, secret_keys):
            shown = _echo(str(value))
            hint = _closest(str(value), [str(c) for c in _choices(key)]) if not _is_pem(str(value)) else None
            message += f" ({shown}; did you mean {hint}?)" if hint and hint != str(value) else f" ({shown})"
        problems.append(Problem(key, message))
    return problems


def _unknown_field(loc: tuple[int | str, ...]) -> tuple[str, str | None]:
    """An unknown field of an object key: the known field it most likely meant,
    and every known one, in the model's order."""
    parent = ".".join(str(part) for part in loc[:-1])
    fields = list(_fields(_model_at(parent)))
    if not fields:
        return "is not a known field", _FORMS.get(str(loc[0]))
    hint = _closest(str(loc[-1]), fields)
    tip = f" (did you mean {hint}?)" if hint else ""
    return f"is not a known field{tip}", f"one of the fields of {parent}: {', '.join(fields)}"


def _echo(text: str) -> str:
    """What an error may show of a value: never PEM text (a key pasted into the
    wrong setting), at most 80 characters of anything else."""
    if _is_pem(text):
        return "got PEM text, not shown"
    return f"got {text[:80]!r}"


def _is_pem(text: str) -> bool:
    return "-----" in text or "PRIVATE KEY" in text.upper()


def _may_show(key: str, value: Any, secret_keys: frozenset[str]) -> bool:
    """Whether an error may quote `value` of ECHO_SAFE `key`: never when a
    top-level key is itself a secret; below a secret object key only a value of
    harmless shape (a wrong-case choice, a number), since the whole object may
    have been stored with --secret and a value like nothing expected there could
    be anything the operator pasted."""
    top, _, field = key.partition(".")
    return top not in secret_keys or (bool(field) and _harmless(key, value))


# A number, or a number and a unit: an hour count, a period ("90d"), a file mode.
_NUMBER_LIKE = re.compile(r"[+-]?(?:0[oOxX])?[0-9][0-9_.eE+-]*\s?[A-Za-z]{0,5}")


def _harmless(key: str, value: Any) -> bool:
    """`value` is one that `key` (an ECHO_SAFE field of an object key) may be
    shown with even when the object is a secret: a number, or near one of the
    field's choices. Never a name (a volume name could be anything)."""
    if key not in ECHO_SAFE or "." not in key:
        return False
    if isinstance(value, bool | int | float):
        return True
    if not isinstance(value, str) or len(value) > 24:
        return False
    return (
        bool(_NUMBER_LIKE.fullmatch(value.strip()))
        or _closest(value, [str(c) for c in _choices(key)]) is not None
    )


def _closest(text: str, names: list[str]) -> str | None:
    """The name `text` most likely meant: the same but for case, else a close spelling."""
    same = [name for name in names if name.lower() == text.strip().lower()]
    if same:
        return same[0]
    close = difflib.get_close_matches(text, names, n=1)
    return close[0] if close else None


def _fields(model: type[BaseModel] | None) -> dict[str, Any]:
    """The stack-file (camelCase) names of `model`'s fields and their types."""
    if model is None:
        return {}
    return {field.alias or name: field.annotation for name, field in model.model_fields.items()}


def _model_at(dotted: str) -> type[BaseModel] | None:
    """The model of object key `dotted` ("tls"), None for anything else."""
    node: Any = Settings
    for part in dotted.split("."):
        node = _fields(node).get(part)
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            return None
    return node


def _choices(key: str) -> tuple[Any, ...]:
    """The choices of a Literal field ("tls.mode"), () for any other key."""
    parent, _, leaf = key.rpartition(".")
    annotation = _fields(_model_at(parent) if parent else Settings).get(leaf)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
