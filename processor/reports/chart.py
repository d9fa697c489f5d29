"""Usage chart of one account: usage steps against licenses and licenses + allowance, billable overage shaded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from processor.core.billing import Segment, billable_overage, plan_at, usage_segments
from processor.core.model import Plan, UsageChange


@dataclass(frozen=True)
class ChartData:
    """The series a chart draws: steps starting at `times_ms[i]`, the last one ending at `end_ms`."""

    times_ms: list[int]
    usage: list[int]
    licenses: list[int]
    ceiling: list[int]  # licenses + overage_allowance
    end_ms: int
    billable_overage: int
    billable_stretches: list[tuple[int, int]]


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


def chart_data(changes: Sequence[UsageChange], plans: Sequence[Plan], start_ms: int, end_ms: int) -> ChartData:
    """The chart's series on `[start_ms, end_ms)`, with the grace settings of the plan in effect at the end."""
    segments = usage_segments(changes, plans, start_ms, end_ms)
    breaks = sorted({s.start_ms for s in segments} | {p.at_ms for p in plans if start_ms < p.at_ms < end_ms})
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
    return ChartData(times, usage, licenses, ceiling, end_ms, billable, stretches)


def render_chart(data: ChartData, out: str | Path, title: str) -> Path:
    """Draw the chart into a PNG file and return its path (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def as_dt(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    xs = [as_dt(ms) for ms in [*data.times_ms, data.end_ms]]
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=100)
    try:
        for start, end in data.billable_stretches:
            ax.axvspan(as_dt(start), as_dt(end), color="tab:red", alpha=0.18, lw=0)
        ax.stairs(data.usage, xs, label="usage", color="tab:blue", lw=1.2, baseline=None)
        ax.stairs(data.licenses, xs, label="licenses", color="tab:green", lw=1.5, ls="--", baseline=None)
        ax.stairs(data.ceiling, xs, label="licenses + allowance", color="tab:orange", lw=1.2, ls=":", baseline=None)
        if data.billable_stretches:
            ax.plot([], [], color="tab:red", alpha=0.3, lw=8, label=f"billable overage ({data.billable_overage})")
        ax.set_title(title)
        ax.set_ylabel("concurrent users")
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp.png")
        fig.savefig(tmp, bbox_inches="tight")
        tmp.replace(target)
    finally:
        plt.close(fig)
    return target
