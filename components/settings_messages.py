"""What the operator reads when settings are refused: one line per problem,
naming the key and the expected form, with no secret value in it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

NAMESPACE = "msr-cache"

# Keys whose values may be echoed in an error (never the tls object: it holds keys).
ECHO_SAFE = {
    "msrHost", "msrPort", "fetchMsrCa", "cacheHost", "cachePort", "cacheNode", "nodeLabel",
    "image", "blobTtl", "logLevel", "publishMode", "serviceName",
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


def _secret_texts(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _secret_texts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _secret_texts(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def redacted(problems: list[Problem], raw: Mapping[str, Any], secret_keys: frozenset[str]) -> list[Problem]:
    """Problems with every value stored as a secret blanked out, wherever a
    message came to quote it (a cross-check naming cacheHost, say)."""
    texts = sorted(
        {t for key in secret_keys for t in _secret_texts(raw.get(key)) if len(t) >= 4}, key=len, reverse=True
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
            message, form = "is not a known field", _FORMS.get(str(err["loc"][0]))
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
        shown = _lookup(values, key) if key in ECHO_SAFE and key.split(".")[0] not in secret_keys else None
        if shown is not None:
            message += f" ({_echo(str(shown))})"
        problems.append(Problem(key, message))
    return problems


def _echo(text: str) -> str:
    """What an error may show of a value: never PEM text (a key pasted into the
    wrong setting), at most 80 characters of anything else."""
    if "-----" in text or "PRIVATE KEY" in text.upper():
        return "got PEM text, not shown"
    return f"got {text[:80]!r}"


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
