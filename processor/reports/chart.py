"""The step chart of one account (PNG or SVG), for short ranges such as one account-local day (`chart --day`):
usage steps at their exact instants against licenses and licenses + allowance, the stretches over licenses shaded
(those that outlast the grace period darker), on an account-local time axis.

Only what is known is drawn: the series stop at the account's `data_through`, which a vertical line marks. The
period chart (daily peaks of a billing period) is `processor/reports/period_chart.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from processor.core.billing import Segment, billable_overage, plan_at, usage_segments
from processor.core.model import NEVER, Plan, UsageChange
from processor.reports.chart_axes import (
    SVG_SETTINGS,
    chart_format,
    close,
    draw_limits,
    grace_rule,
    local_dt,
    local_text,
    mark_data_through,
    new_figure,
    save_figure,
    say_in_middle,
    setup_time_axis,
    whole_ticks,
    zone_label,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SVG_SETTINGS", "ChartData", "chart_data", "chart_format", "render_chart", "data_through_label"]


@dataclass(frozen=True)
class ChartData:
    """The series a chart draws on `[start_ms, end_ms)`: steps starting at `times_ms[i]`, the last one ending at
    `known_end_ms` (= min(end_ms, data_through), start_ms when nothing is known)."""

    times_ms: list[int]
    usage: list[int]
    licenses: list[int]
    ceiling: list[int]  # licenses + overage_allowance
    end_ms: int
    billable_overage: int
    billable_stretches: list[tuple[int, int]]
    start_ms: int = 0
    known_end_ms: int = 0
    data_through_ms: int | None = NEVER  # NEVER: everything is known; None: nothing is
    timezone: str = "UTC"
    over_stretches: list[tuple[int, int]] = field(default_factory=list)  # every maximal run with excess > 0
    grace_minutes: int = 30
    grace_mode: str = "contiguous"


def known_end(start_ms: int, end_ms: int, data_through_ms: int | None) -> int:
    """Where the known part of `[start_ms, end_ms)` ends: at data_through, clamped to the range."""
    if data_through_ms is None:
        return start_ms
    return max(start_ms, min(end_ms, data_through_ms))


def stretches(segments: Sequence[Segment], level: int, grace_ms: int = 0, mode: str = "") -> list[tuple[int, int]]:
    """Maximal runs with excess >= level (>= 1); for `contiguous` only those lasting at least `grace_ms`."""
    runs: list[tuple[int, int]] = []
    for segment in segments:
        if segment.excess < max(1, level):
            continue
        if runs and runs[-1][1] == segment.start_ms:
            runs[-1] = (runs[-1][0], segment.end_ms)
        else:
            runs.append((segment.start_ms, segment.end_ms))
    if mode == "contiguous":
        runs = [run for run in runs if run[1] - run[0] >= grace_ms]
    return runs


def chart_data(
    changes: Sequence[UsageChange],
    plans: Sequence[Plan],
    start_ms: int,
    end_ms: int,
    *,
    data_through_ms: int | None = NEVER,
    timezone: str = "UTC",
) -> ChartData:
    """The chart's series on `[start_ms, end_ms)` up to `data_through_ms` (None: nothing known; default: all), with
    the grace settings of the plan in effect at the end; `timezone` is the zone of the axis."""
    upto = known_end(start_ms, end_ms, data_through_ms)
    segments = usage_segments(changes, plans, start_ms, upto)
    breaks = sorted({s.start_ms for s in segments} | {p.at_ms for p in plans if start_ms < p.at_ms < upto})
    times, usage, licenses, ceiling = [], [], [], []
    index = 0
    for moment in breaks:
        while index + 1 < len(segments) and segments[index + 1].start_ms <= moment:
            index += 1
        plan = plan_at(plans, moment)
        times.append(moment)
        usage.append(segments[index].usage)
        licenses.append(plan.licenses)
        ceiling.append(plan.licenses + plan.overage_allowance)
    final = plan_at(plans, end_ms - 1)
    grace_ms = final.grace_minutes * 60_000
    billable = billable_overage(segments, final.grace_minutes, final.grace_mode)
    billed = stretches(segments, billable, grace_ms, final.grace_mode) if billable else []
    return ChartData(
        times, usage, licenses, ceiling, end_ms, billable, billed, start_ms, upto, data_through_ms, timezone,
        stretches(segments, 1), final.grace_minutes, final.grace_mode,
    )  # fmt: skip


def data_through_label(data: ChartData) -> str | None:
    """The label of the data_through line, or None when the whole range is known (no line)."""
    if data.data_through_ms is None:
        return "no data yet"
    if data.data_through_ms >= data.end_ms:
        return None
    return f"data through {local_text(data.data_through_ms, data.timezone)}"


def _minutes(ms: int) -> str:
    minutes = ms / 60_000
    return f"{minutes:.0f} min" if minutes >= 10 else f"{minutes:.1f} min"


def render_chart(data: ChartData, out: str | Path, title: str) -> Path:
    """Draw the step chart into a PNG or SVG file (by the suffix of `out`) and return its path (written atomically;
    an SVG keeps its text as text and is byte-for-byte reproducible)."""
    chart_format(out)
    fig = draw_chart(data, title)
    try:
        return save_figure(fig, out)
    finally:
        close(fig)


def draw_chart(data: ChartData, title: str) -> Figure:
    """The step chart as a matplotlib figure (close it after use)."""
    zone = data.timezone
    fig, axes = new_figure()
    ax = axes[0][0]
    grace_ms = data.grace_minutes * 60_000
    each = data.grace_mode == "contiguous" and data.grace_minutes > 0  # the length of each stretch decides
    labelled: set[str] = set()
    for start, end in data.over_stretches:
        outlasts = not each or end - start >= grace_ms
        if not each:
            label = "over licenses" + (f" (counts toward the {data.grace_minutes}-min grace)" if grace_ms else "")
        elif outlasts:
            label = f"over licenses >= {data.grace_minutes} min"
        else:
            label = f"over licenses < {data.grace_minutes} min (within grace)"
        ax.axvspan(local_dt(start, zone), local_dt(end, zone), color="tab:red", alpha=0.28 if outlasts else 0.1,
                   lw=0, label=None if label in labelled else label, zorder=1)  # fmt: skip
        labelled.add(label)
    if data.times_ms:
        edges = [local_dt(ms, zone) for ms in [*data.times_ms, data.known_end_ms]]
        ax.stairs(data.usage, edges, baseline=0, fill=True, color="tab:blue", alpha=0.25, lw=0, zorder=2)
        ax.stairs(data.usage, edges, baseline=None, color="tab:blue", lw=1.3, label="usage (exact steps)",
                  zorder=3)  # fmt: skip
        draw_limits(ax, edges, data.licenses, data.ceiling)
    if data.billable_overage:
        ax.plot(
            [],
            [],
            color="tab:purple",
            lw=2,
            ls=":",
            label=f"licenses + billable overage ({data.billable_overage}) of this range alone",
        )
        level = [lic + data.billable_overage for lic in data.licenses]
        edges = [local_dt(ms, zone) for ms in [*data.times_ms, data.known_end_ms]]
        ax.stairs(level, edges, baseline=None, color="tab:purple", lw=2, ls=":", zorder=5)
    mark_data_through(ax, data.data_through_ms, data.start_ms, data.end_ms, zone)
    if data.start_ms < data.end_ms:
        ax.set_xlim(local_dt(data.start_ms, zone), local_dt(data.end_ms, zone))
    if data.data_through_ms is None or data.known_end_ms <= data.start_ms:
        say_in_middle(ax, "nothing known yet")
    elif not any(data.usage):
        say_in_middle(ax, "no usage")
    longest = max((end - start for start, end in data.over_stretches), default=0)
    over = (f"{len(data.over_stretches)} stretches over licenses, longest {_minutes(longest)}"
            if data.over_stretches else "never over licenses")  # fmt: skip
    ax.set_title(f"{title}\n{over}; {grace_rule(data.grace_minutes, data.grace_mode)}", fontsize="medium")
    ax.set_ylabel("concurrent users")
    setup_time_axis(ax, zone, f"local time, {zone_label(zone, data.start_ms, data.end_ms)}")
    whole_ticks(ax, max([*data.usage, *data.ceiling, 0]) + 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize="small", frameon=False)
    return fig
