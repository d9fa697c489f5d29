"""The cyclic garbage collector's thresholds in a worker process (docs/performance.md, "Fewer garbage collections").

Every event allocates short-lived tuples and dicts; with Python's default young-generation threshold (700) the
collector runs every few events and, at many accounts, walks the survivors (folds, buffered records) again and
again. The worker collects less often; the in-process benches use the same thresholds, so that they measure what
the worker does.

The young generation's threshold counts allocations net of frees. Within a batch the objects that live until its
end (decoded records, outputs, state entries) add up to hundreds of thousands at many accounts and are freed
together at its end; a threshold below that peak collects several times per batch and walks every one of them
(50,000: 245 collections, 8 s of a 20,000-account run), one above it collects only when the state has grown
(400,000: 9 collections, 2 s). docs/performance.md, "The collector's young threshold".
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (400_000, 5, 100)  # net allocations per young collection; young, middle collections per older one


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
