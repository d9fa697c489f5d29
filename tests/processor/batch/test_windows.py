"""The SQL engine's peak windows as its interface gives them: value types and order. The window rules (epoch-aligned
1m/15m/1h, sparse minutes, account-local days across DST, a timezone change mid-day) are the contract scenarios of
tests/contract/test_scenarios.py, run against the fold, the worker's partition driver and this engine alike."""

from __future__ import annotations

from pathlib import Path

from processor.core.model import PeakWindow

from .helpers import ACCOUNT, MINUTE, SECOND, T0, ev, load


def test_windows_are_peak_window_values_ordered_by_kind_as_text_then_start(tmp_path: Path) -> None:
    engine = load(tmp_path, [ev("api.request", T0 + 30 * SECOND, user_id="u1")])  # counted [0:30, 5:30)
    first = engine.peak_windows()[0]
    assert first == PeakWindow(ACCOUNT, "15m", T0, T0 + 15 * MINUTE, 1, T0 + 30_000, 300_000, 300_000)
    assert [w.kind for w in engine.peak_windows()] == ["15m", "1d", "1h"] + ["1m"] * 2
    assert engine.peak_windows("nobody") == []
