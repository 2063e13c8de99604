"""The program's garbage-collector settings: applied once per process."""

from __future__ import annotations

import gc

import pytest

from components import gc_tuning


@pytest.fixture
def restore_gc():
    saved = gc.get_threshold()
    gc_tuning.tune_for_program.cache_clear()
    yield
    gc.set_threshold(*saved)


def test_first_run_freezes_and_raises_the_threshold(restore_gc):
    gc.set_threshold(700, 10, 10)
    before = gc.get_freeze_count()
    alive: list[list[int]] = [[] for _ in range(100)]  # tracked containers made after any earlier freeze
    gc_tuning.tune_for_program()
    assert gc.get_threshold() == (gc_tuning.FIRST_GENERATION_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() >= before + len(alive)


def test_later_runs_change_nothing(restore_gc):
    gc_tuning.tune_for_program()
    gc.set_threshold(700, 10, 10)
    frozen = gc.get_freeze_count()
    gc_tuning.tune_for_program()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == frozen
