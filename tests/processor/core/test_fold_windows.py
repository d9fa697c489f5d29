"""Local day bounds of the fold's day windows. The peak-window rules themselves (docs/semantics.md section 5: fixed
windows, sparse minutes, DST days, timezone changes) are contract scenarios in tests/contract/test_scenarios.py,
run against the fold, the worker's partition driver and the SQL engine alike."""

from __future__ import annotations

from processor.core.days import day_bounds
from tests.contract.strategies import utc


def test_day_bounds_of_berlin_dst_days() -> None:
    assert day_bounds("Europe/Berlin", utc(2026, 10, 25, 12)) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert day_bounds("Europe/Berlin", utc(2026, 3, 29, 12)) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))  # 23 h
    # The last ms of a day and the first of the next.
    assert day_bounds("Europe/Berlin", utc(2026, 10, 25, 23) - 1)[1] == utc(2026, 10, 25, 23)
    assert day_bounds("Europe/Berlin", utc(2026, 10, 25, 23))[0] == utc(2026, 10, 25, 23)
