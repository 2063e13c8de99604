"""Garbage-collector settings for a program that registers hundreds of resources.

Measured with `python -m bench.program_cost` (50 caches, 650 resources): a
quarter of the evaluation was CPython's cyclic garbage collector. Every
registration allocates outputs, futures, tasks and protobuf messages by the
hundred, so the default first-generation threshold (700 allocations) started
about 400 collections, and the few full ones each walked the ~125,000 objects
of the imported Pulumi and provider SDKs.

`gc.freeze()` moves the objects alive after the imports into the permanent
generation, which collections skip; a first-generation threshold of 100,000
makes collections rare while the program builds its resources. Nearly all of
what the program allocates is freed by reference counting as usual; only
cyclic garbage waits longer. Peak memory for 50 caches stayed at ~120 MB,
and evaluation took ~1.03 s instead of ~1.35 s.
"""

from __future__ import annotations

import gc
from functools import cache

FIRST_GENERATION_THRESHOLD = 100_000
"""Allocations between first-generation collections (CPython's default: 700)."""


@cache
def tune_for_program() -> None:
    """Freeze what is alive now (the imported SDKs) and make collections rare.

    Once per process: the unit tests run the program hundreds of times in one
    interpreter, and freezing on every run would keep each run's cyclic garbage
    for ever.
    """
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION_THRESHOLD, second, third)
