"""Deterministic fault injection for the crash-point tests: `CCMETER_FAULT=POINT:N[,POINT:N...]`.

The worker exits at once (`os._exit`, no flush, no goodbye: like a SIGKILL) when it reaches POINT for the Nth time:

- `after_outputs:N`: batch N's outputs are acknowledged, its state entries not yet written;
- `after_changelog:N`: batch N's state entries are in the changelog (committed), the local store not yet updated;
- `before_commit:N`: batch N is fully applied, the group's offsets not yet committed;
- `during_recovery:N`: while a changelog recovery applies the Nth chunk of records it read.

Unset (the default) costs one attribute check per step. A malformed value stops the worker at start with one line.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

log = logging.getLogger("ccmeter.worker")

FAULT_ENV = "CCMETER_FAULT"
POINTS = ("after_outputs", "after_changelog", "before_commit", "during_recovery")
EXIT_FAULT = 86


class Faults:
    """The fault points armed by `CCMETER_FAULT` and how often each was reached."""

    def __init__(self, spec: str | None = None) -> None:
        self.armed: dict[str, int] = parse_faults(spec or "")
        self.reached: Counter[str] = Counter()

    @classmethod
    def from_env(cls) -> Faults:
        """From `$CCMETER_FAULT` (ValueError with one clear line if malformed)."""
        return cls(os.environ.get(FAULT_ENV))

    def hit(self, point: str) -> None:
        """Count one arrival at `point`; exit the process if this is the armed arrival."""
        if not self.armed:
            return
        self.reached[point] += 1
        if self.armed.get(point) == self.reached[point]:
            log.error("%s=%s:%d reached: exiting now (injected fault)", FAULT_ENV, point, self.reached[point])
            logging.shutdown()
            os._exit(EXIT_FAULT)


def parse_faults(spec: str) -> dict[str, int]:
    """`{point: n}` of `after_outputs:3,during_recovery:1`."""
    armed: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, _, count = part.partition(":")
        if point not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"${FAULT_ENV}: {part!r} is not POINT:N with POINT one of {', '.join(POINTS)}, N >= 1")
        armed[point] = int(count)
    return armed
