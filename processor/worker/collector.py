"""The cyclic garbage collector's thresholds in a worker process (docs/performance.md, "Fewer garbage collections").

Every event allocates short-lived tuples and dicts; with Python's default young-generation threshold (700) the
collector runs every few events and, at many accounts, walks the survivors (folds, buffered records) again and
again. The worker collects less often; the in-process benches use the same thresholds, so that they measure what
the worker does.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (50_000, 20, 100)  # allocations between young collections; young, middle collections between older ones


def tune_collector() -> None:
    """Set the worker's collector thresholds for this process."""
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def tuned_collector() -> Iterator[None]:
    """The worker's collector thresholds within the block, the previous ones after it."""
    before = gc.get_threshold()
    tune_collector()
    try:
        yield
    finally:
        gc.set_threshold(*before)
