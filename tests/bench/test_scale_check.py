"""bench/scale_check.py: the scale points' outputs against the batch engine's. On a small point of the same
synthetic traffic they are equal, and a difference in the inputs shows."""

from __future__ import annotations

import pytest

import bench.scale_check as scale_check
from bench.scale_bench import traffic


def test_a_small_point_equals_the_batch_engine() -> None:
    result = scale_check.check(list(traffic(20, 60, 14)), batch=500)
    assert result["usage_changes_equal"] and result["peak_windows_equal"], result
    assert result["usage_changes_got"] > 0 and result["peak_windows_got"] > 0


def test_a_difference_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = scale_check.engine_outputs
    without_user_7 = lambda values: engine([v for v in values if b"user-7-" not in v])  # noqa: E731
    monkeypatch.setattr(scale_check, "engine_outputs", without_user_7)
    result = scale_check.check(list(traffic(20, 60, 14)), batch=500)
    assert not result["usage_changes_equal"] and result["usage_changes_expected"] < result["usage_changes_got"]
