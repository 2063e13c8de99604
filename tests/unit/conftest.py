"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pulumi
import pytest

from rehearsal import engine as program


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every resource run_program's mocks are asked to create, as `type::name`."""
    seen: list[str] = []

    class SpyMocks(program.RecordingMocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
            seen.append(f"{args.typ}::{args.name}")
            return super().new_resource(args)

    monkeypatch.setattr(program, "RecordingMocks", SpyMocks)
    return seen
