"""The program's garbage-collector settings: applied once per process."""

from __future__ import annotations

import gc

import pytest

from components import gc_tuning


@pytest.fixture
def restore_gc():
    saved = gc.get_threshold()
    tuned = gc_tuning._tuned
    yield
    gc.set_threshold(*saved)
    gc_tuning._tuned = tuned


def test_first_run_freezes_and_raises_the_threshold(restore_gc):
    gc_tuning._tuned = False
    before = gc.get_freeze_count()
    gc.set_threshold(700, 10, 10)
    gc_tuning.tune_for_program()
    assert gc.get_threshold() == (gc_tuning.FIRST_GENERATION_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() >= before


def test_later_runs_change_nothing(restore_gc):
    gc_tuning._tuned = False
    gc_tuning.tune_for_program()
    gc.set_threshold(700, 10, 10)
    frozen = gc.get_freeze_count()
    gc_tuning.tune_for_program()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == frozen
