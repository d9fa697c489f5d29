"""The period chart of one account (PNG or SVG): a licenses usage report drawn as one bar per account-local day.

Top: each day's peak (the part above the licenses in red) against licenses and licenses + allowance, and the billed
level (licenses + billable overage). Bottom: what the grace period makes of the stretches over licenses: per day the
longest unbroken stretch (contiguous grace) or the minutes over licenses and their running total (cumulative
grace), against the grace period. Days that start at or after `data_through` have no bar; a line marks it. The
numbers are the report's (`processor.core.billing.build_report`), so the chart and `ccmeter report` agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

from processor.core.billing import known_plans, plan_at, usage_segments
from processor.core.model import Plan, UsageChange
from processor.core.periods import local_midnight_ms
from processor.reports.chart import known_end, stretches
from processor.reports.chart_axes import (
    chart_format,
    close,
    draw_limits,
    grace_rule,
    local_dt,
    mark_data_through,
    new_figure,
    save_figure,
    say_in_middle,
    setup_time_axis,
    whole_ticks,
    zone_label,
)
from schemas.events import parse_timestamp, to_ms
from schemas.outputs import Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class DayBar:
    """One account-local day: `[start_ms, end_ms)`, its peak (None: nothing known of it) and limits."""

    day: date
    start_ms: int
    end_ms: int
    peak: int | None
    licenses: int
    ceiling: int  # licenses + overage_allowance
    complete: bool
    minutes_over: float  # minutes with usage above the licenses
    longest_over: float  # minutes of the longest stretch over licenses that starts on this day


@dataclass(frozen=True)
class PeriodChart:
    """What the period chart draws: the report's days and summary, and the stretches over licenses."""

    account_id: str
    timezone: str
    from_date: date
    to_date: date
    days: list[DayBar]
    start_ms: int
    end_ms: int
    data_through_ms: int | None
    peak_usage: int
    billable_overage: int
    over_allowance: int
    grace_minutes: int
    grace_mode: str
    over_stretches: list[tuple[int, int]]

    @property
    def known_days(self) -> list[DayBar]:
        """The days with a bar: those that start before data_through."""
        return [day for day in self.days if day.peak is not None]


def period_chart(report: Report, changes: Sequence[UsageChange], plans: Sequence[Plan]) -> PeriodChart:
    """The period chart of `report`, with its stretches over licenses from the account's usage steps and plans."""
    through = None if report.data_through is None else to_ms(parse_timestamp(report.data_through))
    zone = report.timezone
    first, last = date.fromisoformat(report.from_), date.fromisoformat(report.to)
    start_ms, end_ms = local_midnight_ms(first, zone), local_midnight_ms(last + timedelta(days=1), zone)
    known = known_plans(plans, through)
    segments = usage_segments(changes, known, start_ms, known_end(start_ms, end_ms, through))
    runs = stretches(segments, 1)
    final = plan_at(known, end_ms - 1)
    days = []
    for row in report.days:
        day = date.fromisoformat(row.date)
        lo, hi = local_midnight_ms(day, zone), local_midnight_ms(day + timedelta(days=1), zone)
        longest = max((end - start for start, end in runs if lo <= start < hi), default=0)
        days.append(
            DayBar(day, lo, hi, row.peak_usage, row.licenses, row.licenses + row.overage_allowance, row.complete,
                   (row.seconds_over_licenses or 0.0) / 60, longest / 60_000)
        )  # fmt: skip
    return PeriodChart(
        report.account_id, zone, first, last, days, start_ms, end_ms, through, report.peak_usage,
        report.billable_overage, report.over_allowance, final.grace_minutes, final.grace_mode, runs,
    )  # fmt: skip


def _title(chart: PeriodChart) -> str:
    head = (f"{chart.account_id}: {chart.from_date} to {chart.to_date} - peak {chart.peak_usage}, billable overage "
            f"{chart.billable_overage}, over allowance {chart.over_allowance}")  # fmt: skip
    return f"{head}\n{grace_rule(chart.grace_minutes, chart.grace_mode)}"


def render_period_chart(chart: PeriodChart, out: str | Path) -> Path:
    """Draw the period chart into a PNG or SVG file (by the suffix of `out`, written atomically); returns its path."""
    chart_format(out)
    fig = draw_period_chart(chart)
    try:
        return save_figure(fig, out)
    finally:
        close(fig)


def draw_period_chart(chart: PeriodChart) -> Figure:
    """The period chart as a matplotlib figure: the daily peaks on top, the grace panel below (close it after use)."""
    fig, axes = new_figure(2, [3.0, 1.4], height=7.0)
    top, grace = axes[0][0], axes[1][0]
    _draw_peaks(top, chart)
    _draw_grace(grace, chart)
    for ax in (top, grace):
        mark_data_through(ax, chart.data_through_ms, chart.start_ms, chart.end_ms, chart.timezone, ax is top)
        ax.set_xlim(local_dt(chart.start_ms, chart.timezone), local_dt(chart.end_ms, chart.timezone))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    top.set_title(_title(chart), fontsize="medium")
    zone = zone_label(chart.timezone, chart.start_ms, chart.end_ms)
    setup_time_axis(grace, chart.timezone, f"account-local date, {zone}")
    return fig


def _bars(ax: object, days: list[DayBar], zone: str, heights: list[float], bottoms: list[float], **style) -> None:
    lefts = [local_dt(day.start_ms, zone) for day in days]
    widths = [(day.end_ms - day.start_ms) / 86_400_000 * 0.8 for day in days]
    ax.bar(lefts, heights, width=widths, bottom=bottoms, align="edge", **style)  # type: ignore[attr-defined]


def _draw_peaks(ax: object, chart: PeriodChart) -> None:
    """Daily peaks (the part above licenses in red; a partial day hatched), limits and the billed level."""
    zone, days = chart.timezone, chart.known_days
    if days:
        peaks = [day.peak or 0 for day in days]
        within = [min(peak, day.licenses) for peak, day in zip(peaks, days, strict=True)]
        above = [peak - low for peak, low in zip(peaks, within, strict=True)]
        hatch = ["//" if not day.complete else "" for day in days]
        _bars(ax, days, zone, within, [0] * len(days), color="tab:blue", alpha=0.75,
              label="daily peak within licenses", gid="daily-peak", hatch=hatch, zorder=3)  # fmt: skip
        if any(above):
            _bars(ax, days, zone, above, within, color="tab:red", alpha=0.8, label="daily peak above licenses",
                  gid="daily-peak-over", hatch=hatch, zorder=3)  # fmt: skip
        if not all(day.complete for day in days):
            ax.bar(
                [], [], facecolor="white", edgecolor="tab:blue", hatch="//", label="partial day (up to data through)"
            )
        edges = [local_dt(day.start_ms, zone) for day in days] + [local_dt(min(days[-1].end_ms, _known(chart)), zone)]
        draw_limits(ax, edges, [day.licenses for day in days], [day.ceiling for day in days])
        if chart.billable_overage:
            billed = [day.licenses + chart.billable_overage for day in days]
            ax.stairs(billed, edges, baseline=None, color="tab:purple", lw=2, ls=":", zorder=6,
                      label=f"billed level: licenses + billable overage ({chart.billable_overage})")  # fmt: skip
        else:
            ax.plot([], [], " ", label="billable overage 0: nothing billed above licenses")
    if chart.data_through_ms is None or not days:
        say_in_middle(ax, "nothing known yet")
    elif chart.peak_usage == 0:
        say_in_middle(ax, "no usage in this period")
    top = max(
        [chart.peak_usage, *(d.ceiling for d in chart.days), *(d.licenses + chart.billable_overage for d in days)]
    )
    whole_ticks(ax, top + 1)
    ax.set_ylabel("concurrent users (daily peak)")


def _known(chart: PeriodChart) -> int:
    return known_end(chart.start_ms, chart.end_ms, chart.data_through_ms)


def _draw_grace(ax: object, chart: PeriodChart) -> None:
    """Contiguous: the longest stretch over licenses per day; cumulative: minutes over licenses per day and their
    running total; both against the grace period."""
    zone, days, grace = chart.timezone, chart.known_days, chart.grace_minutes
    top = float(grace)
    if chart.grace_mode == "contiguous" and grace > 0:
        longest = [day.longest_over for day in days]
        colors = ["tab:red" if minutes >= grace else "0.55" for minutes in longest]
        if days:
            _bars(ax, days, zone, longest, [0] * len(days), color=colors, zorder=3, gid="longest-over")
        ax.bar([], [], color="tab:red", label=f"stretch >= {grace} min: billable")
        ax.bar([], [], color="0.55", label=f"stretch < {grace} min: within grace")
        ax.set_ylabel("longest stretch\nover licenses (min)", fontsize="small")
        top = max([top, *longest])
    else:
        minutes = [day.minutes_over for day in days]
        if days:
            _bars(ax, days, zone, minutes, [0] * len(days), color="0.55", zorder=3, label="minutes over licenses",
                  gid="minutes-over")  # fmt: skip
            if grace > 0:
                top = max([top, *minutes])
                running = list(accumulate(minutes))
                edges = [local_dt(day.start_ms, zone) for day in days] + [local_dt(days[-1].end_ms, zone)]
                ax.stairs(running, edges, baseline=None, color="tab:red", lw=1.6, zorder=4,
                          label=f"running total ({running[-1]:,.0f} min)")  # fmt: skip
                if running[-1] <= 4 * top:
                    top = max(top, running[-1])
                else:  # far above the grace: the axis stays readable, the total is said in the legend
                    ax.annotate("running total: off the scale", xy=(0.01, 0.95), xycoords="axes fraction",
                                ha="left", va="top", fontsize="small", color="tab:red")  # fmt: skip
        ax.set_ylabel("minutes over\nlicenses", fontsize="small")
        top = max([top, *minutes])
    if grace > 0:
        ax.axhline(
            grace, color="black", lw=1.2, ls="--", zorder=5, label=f"grace period {grace} min ({chart.grace_mode})"
        )
    else:
        ax.plot([], [], " ", label="no grace period: any excess is billed")
    whole_ticks(ax, top * 1.1 + 1)
