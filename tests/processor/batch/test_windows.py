"""Peak windows by hand: epoch-aligned 1m/15m/1h, account-local days (a 25-hour DST day, a timezone change)."""

from __future__ import annotations

from pathlib import Path

from processor.core.model import PeakWindow

from .helpers import ACCOUNT, DAY, HOUR, MINUTE, SECOND, T0, ev, load, plan, portal_span


def windows(engine, kind: str) -> list[tuple[int, int, int, int, int, int]]:
    """(start - T0, end - T0, max_usage, max_at - T0, over_ms, license_ms) of one kind."""
    return [
        (w.start_ms - T0, w.end_ms - T0, w.max_usage, w.max_at_ms - T0, w.over_licenses_ms, w.license_ms)
        for w in engine.peak_windows()
        if w.kind == kind
    ]


def test_one_api_presence_cut_into_windows(tmp_path: Path) -> None:
    engine = load(tmp_path, [ev("api.request", T0 + 30 * SECOND, user_id="u1")])  # counted [0:30, 5:30)
    m = MINUTE
    # 1m windows only where usage changed (SPEC 5): the minutes of 0:30 and 5:30; the three between are quiet.
    assert windows(engine, "1m") == [
        (0, m, 1, 30_000, 30_000, 30_000),
        (5 * m, 6 * m, 1, 5 * m, 30_000, 30_000),
    ]
    assert windows(engine, "15m") == [(0, 15 * m, 1, 30_000, 300_000, 300_000)]
    assert windows(engine, "1h") == [(0, HOUR, 1, 30_000, 300_000, 300_000)]
    assert windows(engine, "1d") == [(0, DAY, 1, 30_000, 300_000, 300_000)]  # no plan: UTC days
    first = engine.peak_windows()[0]
    assert first == PeakWindow(ACCOUNT, "15m", T0, T0 + 15 * m, 1, T0 + 30_000, 300_000, 300_000)
    # ordered by kind as text, then start
    assert [w.kind for w in engine.peak_windows()] == ["15m", "1d", "1h"] + ["1m"] * 2


def test_max_at_and_time_over_licenses(tmp_path: Path) -> None:
    events = [
        plan(T0 - HOUR, licenses=1),
        ev("api.request", T0, user_id="u1"),  # [0, 5) min
        ev("api.request", T0 + 2 * MINUTE, user_id="u2"),  # [2, 7) min
    ]
    engine = load(tmp_path, events)
    m = MINUTE
    assert windows(engine, "15m") == [(0, 15 * m, 2, 2 * m, 3 * m, 10 * m)]
    # Changes at 0, 2, 5 and 7 min; the windows of minutes 1, 3, 4 and 6 are implied by them.
    assert windows(engine, "1m") == [
        (0, m, 1, 0, 0, m),
        (2 * m, 3 * m, 2, 2 * m, m, 2 * m),
        (5 * m, 6 * m, 1, 5 * m, 0, m),
    ]


def test_windows_with_no_usage_are_not_emitted(tmp_path: Path) -> None:
    engine = load(tmp_path, [plan(T0, licenses=3), ev("portal.signed_out", T0 + HOUR, user_id="u1")])
    assert engine.peak_windows() == []
    assert engine.usage_changes() == []


def test_local_day_windows_across_the_25_hour_dst_day(tmp_path: Path) -> None:
    # New York: 2026-11-01 runs from 04:00Z (EDT) to 2026-11-02 05:00Z (EST), 25 hours.
    nov1 = T0 - DAY  # 2026-11-01T00:00Z
    events = [
        plan(T0 - 30 * DAY, licenses=5, zone="America/New_York"),
        *portal_span("u1", nov1 + 3 * HOUR + 30 * MINUTE, nov1 + 4 * HOUR + 30 * MINUTE),
        *portal_span("u2", T0 + 4 * HOUR + 30 * MINUTE, T0 + 5 * HOUR + 30 * MINUTE),
    ]
    engine = load(tmp_path, events)
    h = HOUR
    assert windows(engine, "1d") == [
        (-DAY - 20 * h, -20 * h, 1, -DAY + 3 * h + 30 * MINUTE, 0, 30 * MINUTE),
        (-20 * h, 5 * h, 1, -20 * h, 0, 60 * MINUTE),  # 25 hours long
        (5 * h, DAY + 5 * h, 1, 5 * h, 0, 30 * MINUTE),
    ]
    assert windows(engine, "1h") == [
        (-DAY + 3 * h, -DAY + 4 * h, 1, -DAY + 3 * h + 30 * MINUTE, 0, 30 * MINUTE),
        (-DAY + 4 * h, -DAY + 5 * h, 1, -DAY + 4 * h, 0, 30 * MINUTE),
        (4 * h, 5 * h, 1, 4 * h + 30 * MINUTE, 0, 30 * MINUTE),
        (5 * h, 6 * h, 1, 5 * h, 0, 30 * MINUTE),
    ]


def test_timezone_change_mid_day_leaves_two_overlapping_day_windows(tmp_path: Path) -> None:
    events = [
        plan(T0 - DAY, licenses=0, zone="UTC"),
        plan(T0 + 12 * HOUR, licenses=0, zone="Asia/Kolkata"),  # 17:30 local: the day began at 18:30Z before
        *portal_span("u1", T0 + 11 * HOUR, T0 + 13 * HOUR),
    ]
    engine = load(tmp_path, events)
    h = HOUR
    assert windows(engine, "1d") == [
        (-5 * h - 30 * MINUTE, 18 * h + 30 * MINUTE, 1, 12 * h, h, h),
        (0, DAY, 1, 11 * h, h, h),
    ]
