"""One redaction for every message the operator tools print (issue 11).

The tools print what Docker, the registry and the Pulumi CLI say, and those can
quote a secret: a CIFS mount error quotes `username=svc,password=...`, a
failed key load quotes a line of the key. Every message therefore passes through
`redact` (the process-wide `REDACT`) on its way out: first the secret values the
tool knows, then what looks like a secret whether known or not (a private key,
a credential option).
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from components.rules import CREDENTIAL_OPTION

MASK = "[secret]"
KEY_MASK = "[private key]"

# Shorter values are too likely to occur by chance ("admin", a port): blanking
# them would garble messages without hiding anything worth hiding.
MIN_VALUE = 6
# A Docker error may quote one line of a multi-line value (a PEM key); its lines
# of this length are registered too. Shorter ones are too common to blank.
MIN_LINE = 16

# How the Pulumi SDK marks a secret in serialized values: {_SIG_KEY: _SIG_VALUE, "value": ...}.
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"

# A PEM private key (PKCS#8, RSA, EC, OPENSSH, ENCRYPTED), also when the message
# was cut before its END line: then everything after BEGIN may be key material.
_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [^\n-]*PRIVATE KEY.*?(?:-----END [^\n-]*PRIVATE KEY-*|\Z)", re.DOTALL
)


class Redactor:
    """Known secret values and secret-looking text, replaced in a message."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._known: re.Pattern[str] | None = None

    def add(self, *values: Any) -> None:
        """Register secret values: strings, or dicts/lists/tuples of them (Pulumi secrets unwrapped)."""
        for value in values:
            self._walk(value)

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(MASK, text)
        text = _PRIVATE_KEY_BLOCK.sub(KEY_MASK, text)
        return CREDENTIAL_OPTION.sub(lambda m: f"{m.group(1)}={MASK}", text)

    def clear(self) -> None:
        self._values.clear()
        self._known = None

    def _walk(self, value: Any) -> None:
        if isinstance(value, Mapping):
            if value.get(_SIG_KEY) == _SIG_VALUE and "value" in value:
                self._walk(value["value"])
            else:
                for child in value.values():
                    self._walk(child)
        elif isinstance(value, list | tuple):
            for child in value:
                self._walk(child)
        elif isinstance(value, str):
            self._register(value)

    def _register(self, value: str) -> None:
        # A value read from a file often ends in a newline that a quote of it lacks.
        found = {value, value.strip()}
        # Each line of a multi-line value (a PEM key) on its own, but not its armour.
        lines = {line.strip() for line in value.splitlines()}
        found.update(s for s in lines if len(s) >= MIN_LINE and not s.startswith(("-----BEGIN", "-----END")))
        found = {v for v in found if len(v) >= MIN_VALUE} - self._values
        if found:
            self._values |= found
            # One pattern, longest value first, so that a value containing another is
            # blanked whole rather than leaving its remainder in the message.
            ordered = sorted(self._values, key=len, reverse=True)
            self._known = re.compile("|".join(map(re.escape, ordered)))


REDACT = Redactor()
"""The process-wide redactor: a tool registers what it knows, every message passes through it."""


def redact(text: object) -> str:
    return REDACT(str(text))


def install_excepthook() -> None:
    """An uncaught exception's traceback is printed redacted too (its message may quote Docker)."""
    sys.excepthook = _excepthook


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    # The whole traceback at once, so that a key quoted over several lines is one block.
    text = "".join(traceback.format_exception(kind, exc, tb))
    print(redact(text), end="", file=sys.stderr, flush=True)
