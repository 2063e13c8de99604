"""Shared pytest setup: the project root on sys.path, and the markers."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Every test's captured output is scanned for private keys and secrets (tests/support/leakscan.py).
pytest_plugins = ["tests.support.leakscan"]


@pytest.fixture(autouse=True)
def _forget_known_secrets() -> Iterator[None]:
    """The operator tools' redaction (tools/redact.py) is process-wide, as it is
    in a tool's run; each test starts with nothing known, and its excepthook
    does not outlive the test that installed it."""
    from tools.redact import REDACT

    hook = sys.excepthook
    REDACT.clear()
    yield
    REDACT.clear()
    sys.excepthook = hook
