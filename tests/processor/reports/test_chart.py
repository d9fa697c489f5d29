"""The usage chart: its series follow the step function and plans, and the PNG is written."""

from __future__ import annotations

from pathlib import Path

from processor.core.model import Plan, UsageChange
from processor.reports.chart import chart_data, render_chart

H = 3_600_000


def changes() -> list[UsageChange]:
    return [
        UsageChange("a", 0, 3, 2),
        UsageChange("a", H, 5, 2),
        UsageChange("a", 3 * H, 1, 2),
        UsageChange("a", 4 * H, 4, 3),
        UsageChange("a", 4 * H + 600_000, 0, 3),
    ]


def test_series_follow_usage_and_plans() -> None:
    plans = [
        Plan(at_ms=0, licenses=2, overage_allowance=1, grace_minutes=30),
        Plan(at_ms=2 * H, licenses=3, overage_allowance=1, grace_minutes=30),
    ]
    data = chart_data(changes(), plans, 0, 6 * H)
    assert data.times_ms == [0, H, 2 * H, 3 * H, 4 * H, 4 * H + 600_000]
    assert data.usage == [3, 5, 5, 1, 4, 0]
    assert data.licenses == [2, 2, 3, 3, 3, 3]
    assert data.ceiling == [3, 3, 4, 4, 4, 4]
    # Excess: 1 (0-1h), 3 (1-2h), 2 (2-3h), 0, 1 for 10 min. Excess >= 3 holds for 1 h >= 30 min grace: billed 3.
    assert data.billable_overage == 3
    assert data.billable_stretches == [(H, 2 * H)]


def test_cumulative_shades_every_stretch_at_the_billed_level() -> None:
    plans = [Plan(at_ms=0, licenses=3, overage_allowance=0, grace_minutes=60, grace_mode="cumulative")]
    # Excess 2 from 1 h to 3 h, then 1 for 10 min: level 2 holds 120 min >= 60, level 3 never -> billed 2.
    data = chart_data(changes(), plans, 0, 6 * H)
    assert data.billable_overage == 2
    assert data.billable_stretches == [(H, 3 * H)]


def test_no_overage_no_shading_and_png_written(tmp_path: Path) -> None:
    plans = [Plan(at_ms=0, licenses=10)]
    data = chart_data(changes(), plans, 0, 6 * H)
    assert data.billable_overage == 0 and data.billable_stretches == []
    out = render_chart(data, tmp_path / "charts" / "usage.png", "acct a")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 5_000
