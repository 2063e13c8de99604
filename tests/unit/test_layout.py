"""The layout: operator tools live outside tests/, and nothing outside tests/ imports it."""

from __future__ import annotations

import ast
from pathlib import Path

from rehearsal.engine import ROOT

OUTSIDE_TESTS = ["__main__.py", "components", "rehearsal", "tools", "bench", "policy"]


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files() -> list[Path]:
    files: list[Path] = []
    for entry in OUTSIDE_TESTS:
        path = ROOT / entry
        files += [path] if path.is_file() else [p for p in path.rglob("*.py") if "venv" not in p.parts]
    return files


def test_nothing_outside_tests_imports_tests() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "tests")
        for path in python_files()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_an_import_of_tests(tmp_path: Path) -> None:
    """The scan above can fail: it finds both import forms."""
    module = tmp_path / "m.py"
    module.write_text("import tests.support\nfrom tests.unit import x\n")
    assert imported_modules(module) == {"tests.support", "tests.unit"}


def test_the_operator_tools_are_not_under_tests() -> None:
    assert (ROOT / "rehearsal/__main__.py").is_file()
    assert (ROOT / "rehearsal/images/build.sh").is_file()
    assert (ROOT / "tools/smoke.py").is_file() and (ROOT / "tools/test_cache.py").is_file()
    assert not (ROOT / "tests/rehearsal").exists() and not (ROOT / "tests/images").exists()
