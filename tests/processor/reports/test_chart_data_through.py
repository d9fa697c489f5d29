"""The chart stops at data_through: no series after it, a marked line, and the billable overage of the known part."""

from __future__ import annotations

from pathlib import Path

from processor.core.model import Plan, UsageChange
from processor.reports.chart import chart_data, data_through_label, render_chart

H = 3_600_000
PLANS = [Plan(at_ms=0, licenses=2, overage_allowance=1, grace_minutes=30)]
CHANGES = [UsageChange("a", 0, 3, 2), UsageChange("a", H, 5, 2), UsageChange("a", 3 * H, 1, 2)]


def test_series_stop_at_data_through() -> None:
    data = chart_data(CHANGES, PLANS, 0, 24 * H, data_through_ms=2 * H)
    assert data.times_ms == [0, H] and data.usage == [3, 5] and data.known_end_ms == 2 * H
    assert data.end_ms == 24 * H  # the axis still spans the whole range
    assert data.billable_overage == 3 and data.billable_stretches == [(H, 2 * H)]  # 3 over for 1 h, until 2 h
    assert data_through_label(data) == "data through 1970-01-01 02:00 UTC"


def test_everything_or_nothing_known() -> None:
    full = chart_data(CHANGES, PLANS, 0, 24 * H)  # by default the whole range is known: no line
    assert full.known_end_ms == 24 * H and full.usage == [3, 5, 1] and data_through_label(full) is None
    assert chart_data(CHANGES, PLANS, 0, 24 * H, data_through_ms=30 * H).usage == [3, 5, 1]
    before = chart_data(CHANGES, PLANS, 5 * H, 24 * H, data_through_ms=2 * H)
    assert before.times_ms == [] and before.known_end_ms == 5 * H and before.billable_overage == 0
    unknown = chart_data(CHANGES, PLANS, 0, 24 * H, data_through_ms=None)
    assert unknown.times_ms == [] and data_through_label(unknown) == "no data yet"


def test_png_with_the_data_through_line(tmp_path: Path) -> None:
    data = chart_data(CHANGES, PLANS, 0, 24 * H, data_through_ms=4 * H)
    out = render_chart(data, tmp_path / "partial.png", "acct a: partial")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5_000
    empty = render_chart(chart_data(CHANGES, PLANS, 0, 24 * H, data_through_ms=None), tmp_path / "none.png", "none")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
