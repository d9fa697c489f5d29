"""Usage chart of one account (PNG or SVG): usage steps against licenses and licenses + allowance, billable overage
shaded.

Only what is known is drawn: the series stop at the account's `data_through`, which a vertical line marks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.core.billing import Segment, billable_overage, plan_at, usage_segments
from processor.core.model import NEVER, Plan, UsageChange

SVG_SETTINGS = {"svg.hashsalt": "ccmeter", "svg.fonttype": "none"}  # stable ids; text stays text


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


def known_end(start_ms: int, end_ms: int, data_through_ms: int | None) -> int:
    """Where the known part of `[start_ms, end_ms)` ends: at data_through, clamped to the range."""
    if data_through_ms is None:
        return start_ms
    return max(start_ms, min(end_ms, data_through_ms))


def _stretches(segments: Sequence[Segment], level: int, grace_ms: int, mode: str) -> list[tuple[int, int]]:
    """Maximal runs with excess >= level; for `contiguous` only those lasting at least the grace period."""
    runs: list[tuple[int, int]] = []
    for segment in segments:
        if segment.excess < level:
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
) -> ChartData:
    """The chart's series on `[start_ms, end_ms)` up to `data_through_ms` (None: nothing known; default: all), with
    the grace settings of the plan in effect at the end."""
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
    billable = billable_overage(segments, final.grace_minutes, final.grace_mode)
    stretches = _stretches(segments, billable, final.grace_minutes * 60_000, final.grace_mode) if billable else []
    return ChartData(times, usage, licenses, ceiling, end_ms, billable, stretches, start_ms, upto, data_through_ms)


def chart_format(out: str | Path) -> str:
    """The file format of a chart by its suffix: `png` or `svg` (ValueError for anything else)."""
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in ("png", "svg"):
        raise ValueError(f"a chart is a .png or .svg file, not {str(out)!r}")
    return suffix


def render_chart(data: ChartData, out: str | Path, title: str) -> Path:
    """Draw the chart into a PNG or SVG file (by the suffix of `out`) and return its path (written atomically; an
    SVG keeps its text as text and is byte-for-byte reproducible)."""
    fmt = chart_format(out)
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def as_dt(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    xs = [as_dt(ms) for ms in [*data.times_ms, data.known_end_ms]]
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=100)
    try:
        for start, end in data.billable_stretches:
            ax.axvspan(as_dt(start), as_dt(end), color="tab:red", alpha=0.18, lw=0)
        if data.times_ms:
            ax.stairs(data.usage, xs, label="usage", color="tab:blue", lw=1.2, baseline=None)
            ax.stairs(data.licenses, xs, label="licenses", color="tab:green", lw=1.5, ls="--", baseline=None)
            ax.stairs(
                data.ceiling, xs, label="licenses + allowance", color="tab:orange", lw=1.2, ls=":", baseline=None
            )
        _mark_data_through(ax, data, as_dt)
        if data.start_ms < data.end_ms:
            ax.set_xlim(as_dt(data.start_ms), as_dt(data.end_ms))
        if data.billable_stretches:
            ax.plot([], [], color="tab:red", alpha=0.3, lw=8, label=f"billable overage ({data.billable_overage})")
        ax.set_title(title)
        ax.set_ylabel("concurrent users")
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="small")
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp.{fmt}")
        metadata = {"Date": None} if fmt == "svg" else None  # no timestamp: the same data gives the same file
        with matplotlib.rc_context(SVG_SETTINGS):
            fig.savefig(tmp, format=fmt, bbox_inches="tight", metadata=metadata)
        tmp.replace(target)
    finally:
        plt.close(fig)
    return target


def data_through_label(data: ChartData) -> str | None:
    """The label of the data_through line, or None when the whole range is known (no line)."""
    from schemas.events import format_ms

    if data.data_through_ms is None:
        return "no data yet"
    if data.data_through_ms >= data.end_ms:
        return None
    return f"data through {format_ms(data.data_through_ms)[:16].replace('T', ' ')} UTC"


def _mark_data_through(ax: Any, data: ChartData, as_dt: Callable[[int], Any]) -> None:
    """A vertical line at data_through (at the range's start when nothing is known of it), labelled at the top."""
    label = data_through_label(data)
    if label is None:
        return
    at = as_dt(data.known_end_ms)
    ax.axvline(at, color="dimgray", lw=1.2, ls="-.")
    ax.annotate(
        label,
        xy=(at, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(4, -4),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize="small",
        color="dimgray",
    )
