"""The period chart (one bar per account-local day) and the step chart of a day: their structure, not their pixels."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from processor.core.billing import build_report
from processor.core.model import Plan, UsageChange
from processor.core.periods import local_midnight_ms
from processor.reports.chart import chart_data, draw_chart, render_chart
from processor.reports.chart_axes import DATA_THROUGH_GID
from processor.reports.period_chart import draw_period_chart, period_chart, render_period_chart

ZONE = "Australia/Sydney"  # DST starts on 2026-10-04: that local day has 23 hours
TZ = ZoneInfo(ZONE)
M = 60_000
PLANS = [Plan(at_ms=0, licenses=3, overage_allowance=0, timezone=ZONE, grace_minutes=30)]


def at(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 10, day, hour, minute, tzinfo=TZ).timestamp() * 1000)


CHANGES = [
    UsageChange("a", at(1, 9), 2, 3),
    UsageChange("a", at(2, 10), 5, 3),  # 2 over for 45 min: longer than the grace, billable 2
    UsageChange("a", at(2, 10, 45), 1, 3),
    UsageChange("a", at(3, 14), 7, 3),  # 4 over for 10 min: within the grace
    UsageChange("a", at(3, 14, 10), 0, 3),
    UsageChange("a", at(5, 8), 3, 3),
    UsageChange("a", at(5, 9), 0, 3),
]
THROUGH = at(6, 12)


def chart(changes: list[UsageChange] = CHANGES, through: int | None = THROUGH):  # noqa: ANN201
    report = build_report("a", date(2026, 10, 1), date(2026, 10, 10), changes, [], PLANS, data_through_ms=through)
    return report, period_chart(report, changes, PLANS)


def labels(ax) -> list[str]:  # noqa: ANN001
    return ax.get_legend_handles_labels()[1]


def test_one_bar_per_known_local_day_with_the_reports_peaks() -> None:
    report, data = chart()
    assert report.billable_overage == 2 and report.peak_usage == 7
    assert [d.peak for d in data.known_days] == [2, 5, 7, 0, 3, 0]  # day 6 is partial, days 7..10 unknown
    assert [d.day.day for d in data.days if d.peak is None] == [7, 8, 9, 10]
    assert data.days[3].end_ms - data.days[3].start_ms == 23 * 3_600_000  # the DST day
    assert [round(d.longest_over) for d in data.known_days] == [0, 45, 10, 0, 0, 0]
    fig = draw_period_chart(data)
    try:
        top, grace = fig.axes
        within = [p for p in top.patches if p.get_gid() == "daily-peak"]
        over = [p for p in top.patches if p.get_gid() == "daily-peak-over"]
        assert len(within) == len(over) == 6
        assert [round(p.get_height()) for p in over] == [0, 2, 4, 0, 0, 0]
        assert within[5].get_hatch() == "//" and not within[4].get_hatch()  # the day data_through cuts
        # nothing after data_through: every bar starts before it
        assert all(mdates.num2date(p.get_x()) < datetime.fromtimestamp(THROUGH / 1000, TZ) for p in within)
        ticks = top.get_yticks()
        assert all(float(t).is_integer() for t in ticks) and top.get_ylim()[1] >= 8
        assert "Australia/Sydney (AEST/AEDT)" in grace.get_xlabel()
        marker = [line for line in top.lines if line.get_gid() == DATA_THROUGH_GID]
        assert len(marker) == 1
        assert mdates.num2date(top.convert_xunits(marker[0].get_xdata()[0])) == datetime.fromtimestamp(
            THROUGH / 1000, TZ
        )
        assert any(t.get_text() == "data through 2026-10-06 12:00 AEDT" for t in top.texts)
        names = labels(top)
        assert "licenses (3)" in names and "licenses + allowance (allowance 0: same level)" in names
        assert "billed level: licenses + billable overage (2)" in names
        assert "contiguous grace" in top.get_title() and "billable overage 2" in top.get_title()
        bars = [p for p in grace.patches if p.get_gid() == "longest-over"]
        assert [p.get_facecolor()[:3] for p in bars][1] != [p.get_facecolor()[:3] for p in bars][2]  # red vs grey
        assert any(line.get_ydata()[0] == 30 for line in grace.lines)  # the grace period
    finally:
        plt.close(fig)


def test_allowance_line_stays_visible_when_it_equals_the_licenses() -> None:
    _, data = chart()
    fig = draw_period_chart(data)
    try:
        top = fig.axes[0]
        lines = {p.get_label(): p for p in top.patches if p.get_label().startswith("licenses")}
        lifted = lines["licenses + allowance (allowance 0: same level)"].get_transform()
        plain = lines["licenses (3)"].get_transform()
        assert lifted.transform((0, 3))[1] > plain.transform((0, 3))[1]  # a few points higher on the canvas
    finally:
        plt.close(fig)


def test_no_usage_and_nothing_known_are_said_with_whole_user_ticks() -> None:
    for changes, through, text in (([], THROUGH, "no usage in this period"), ([], None, "nothing known yet")):
        _, data = chart(changes, through)
        fig = draw_period_chart(data)
        try:
            top = fig.axes[0]
            assert any(t.get_text() == text for t in top.texts)
            ticks = [t for t in top.get_yticks() if 0 <= t <= top.get_ylim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks) and top.get_ylim()[1] >= 1
        finally:
            plt.close(fig)


def test_cumulative_grace_shows_the_minutes_over_and_their_total(tmp_path: Path) -> None:
    plans = [Plan(at_ms=0, licenses=3, timezone=ZONE, grace_minutes=50, grace_mode="cumulative")]
    report = build_report("a", date(2026, 10, 1), date(2026, 10, 10), CHANGES, [], plans, data_through_ms=THROUGH)
    data = period_chart(report, CHANGES, plans)
    assert report.billable_overage == 2  # 45 + 10 minutes at excess >= 2
    fig = draw_period_chart(data)
    try:
        grace = fig.axes[1]
        assert "running total (55 min)" in labels(grace) and "grace period 50 min (cumulative)" in labels(grace)
        assert "cumulative grace" in fig.axes[0].get_title()
    finally:
        plt.close(fig)


def test_svg_names_the_zone_and_marks_data_through(tmp_path: Path) -> None:
    _, data = chart()
    svg = render_period_chart(data, tmp_path / "period.svg").read_text()
    assert "Australia/Sydney" in svg and "data through 2026-10-06 12:00 AEDT" in svg
    assert f'id="{DATA_THROUGH_GID}' in svg and 'id="daily-peak' in svg
    png = render_period_chart(data, tmp_path / "period.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_day_chart_has_a_local_time_axis() -> None:
    start, end = local_midnight_ms(date(2026, 10, 2), ZONE), local_midnight_ms(date(2026, 10, 3), ZONE)
    data = chart_data(CHANGES, PLANS, start, end, data_through_ms=THROUGH, timezone=ZONE)
    assert data.over_stretches == [(at(2, 10), at(2, 10, 45))]
    fig = draw_chart(data, "a on 2026-10-02")
    try:
        ax = fig.axes[0]
        assert "local time, Australia/Sydney (AEST)" == ax.get_xlabel()
        left, right = (mdates.num2date(x, TZ) for x in ax.get_xlim())
        assert (left.hour, left.day, right.hour, right.day) == (0, 2, 0, 3)  # local midnight to local midnight
        ticks = [mdates.num2date(t, TZ) for t in ax.get_xticks()]
        assert ticks and all(t.minute == 0 for t in ticks)
        assert all(float(t).is_integer() for t in ax.get_yticks())
        assert "over licenses >= 30 min" in labels(ax)
        assert any(t.get_text().startswith("complete: data through") for t in ax.texts)
    finally:
        plt.close(fig)


def test_day_chart_png(tmp_path: Path) -> None:
    start, end = local_midnight_ms(date(2026, 10, 6), ZONE), local_midnight_ms(date(2026, 10, 7), ZONE)
    data = chart_data(CHANGES, PLANS, start, end, data_through_ms=THROUGH, timezone=ZONE)
    out = render_chart(data, tmp_path / "day.png", "a on 2026-10-06")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
