"""Shared pytest setup: the project root on sys.path, and the markers."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Every test's captured output is scanned for private keys and secrets (tests/support/leakscan.py).
pytest_plugins = ["tests.support.leakscan"]
