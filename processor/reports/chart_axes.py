"""What every chart shares: account-local time axes, whole-user ticks, the data_through marker and atomic saving.

Instants are drawn as timezone-aware datetimes and the axis locators and formatters carry the account's zone, so
ticks read in local time (DST-correct: a local day may be 23 or 25 hours wide) and the axis label names the zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from processor.core.model import NEVER

SVG_SETTINGS = {"svg.hashsalt": "ccmeter", "svg.fonttype": "none"}  # stable ids; text stays text
DATA_THROUGH_GID = "data-through"  # the id of the marker in an SVG (and `gid` of its artists)
NOT_KNOWN_COLOR = "0.92"


def local_dt(ms: int, zone: str) -> datetime:
    """The instant `ms` as an aware datetime in `zone`."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(zone))


def local_text(ms: int, zone: str) -> str:
    """`YYYY-MM-DD HH:MM ABBR` of the instant `ms` in `zone` (e.g. `2026-10-31 09:48 AEDT`)."""
    moment = local_dt(ms, zone)
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()}"


def zone_label(zone: str, start_ms: int, end_ms: int) -> str:
    """The zone named with its abbreviations over `[start_ms, end_ms)`, e.g. `Australia/Sydney (AEST/AEDT)`."""
    names: list[str] = []
    for ms in (start_ms, max(start_ms, end_ms - 1)):
        name = local_dt(ms, zone).tzname() or ""
        if name and name not in names:
            names.append(name)
    shown = "/".join(names)
    return zone if not shown or shown == zone else f"{zone} ({shown})"


def setup_time_axis(ax: Any, zone: str, label: str) -> None:
    """Local-time ticks (locator and concise formatter in `zone`) and the axis label."""
    import matplotlib.dates as mdates

    tz = ZoneInfo(zone)
    locator = mdates.AutoDateLocator(tz=tz, minticks=4, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz, show_offset=False))
    ax.set_xlabel(label)


def whole_ticks(ax: Any, top: float) -> None:
    """Integer ticks only on the y axis, from 0 to at least `top` (and at least 1: never fractional users)."""
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=2))
    ax.set_ylim(0, max(1.0, top))


def mark_data_through(
    ax: Any, data_through_ms: int | None, start_ms: int, end_ms: int, zone: str, say: bool = True
) -> str:
    """Mark `data_through` on `ax` and return the marker's text (written on the axes when `say`).

    Inside the range: a vertical line and a grey band over the part that is not known yet. Nothing known: the band
    covers the whole range. At or after the range's end: the range is complete, said in the top-right corner.
    """
    if data_through_ms is not None and data_through_ms >= end_ms:
        if data_through_ms >= NEVER:  # everything is known (a chart of a whole file): nothing to mark
            return ""
        text = f"complete: data through {local_text(data_through_ms, zone)}"
        if say:
            ax.annotate(text, xy=(1.0, 1.0), xycoords="axes fraction", xytext=(-4, -4), textcoords="offset points",
                        ha="right", va="top", fontsize="small", color="dimgray", gid=DATA_THROUGH_GID)  # fmt: skip
        return text
    at = start_ms if data_through_ms is None else max(start_ms, data_through_ms)
    text = "nothing known yet" if data_through_ms is None else f"data through {local_text(data_through_ms, zone)}"
    ax.axvspan(local_dt(at, zone), local_dt(end_ms, zone), color=NOT_KNOWN_COLOR, lw=0, zorder=0,
               label="not known yet (after data through)" if say else None)  # fmt: skip
    ax.axvline(local_dt(at, zone), color="black", lw=1.3, ls="-.", gid=DATA_THROUGH_GID)
    if say:
        ax.annotate(text, xy=(local_dt(at, zone), 1.0), xycoords=("data", "axes fraction"), xytext=(-4, -4),
                    textcoords="offset points", ha="right" if at > start_ms else "left", va="top",
                    fontsize="small", color="black", gid=DATA_THROUGH_GID)  # fmt: skip
    return text


def say_in_middle(ax: Any, text: str) -> None:
    """A large grey note in the middle of the axes (an empty state: no usage, nothing known)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize="x-large", color="dimgray",
            gid="empty-state")  # fmt: skip


def chart_format(out: str | Path) -> str:
    """The file format of a chart by its suffix: `png` or `svg` (ValueError for anything else)."""
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in ("png", "svg"):
        raise ValueError(f"a chart is a .png or .svg file, not {str(out)!r}")
    return suffix


def save_figure(fig: Any, out: str | Path) -> Path:
    """Write `fig` to `out` (PNG or SVG by suffix) atomically; an SVG keeps text as text and is reproducible."""
    import matplotlib

    fmt = chart_format(out)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp.{fmt}")
    metadata = {"Date": None} if fmt == "svg" else None  # no timestamp: the same data gives the same file
    with matplotlib.rc_context(SVG_SETTINGS):
        fig.savefig(tmp, format=fmt, bbox_inches="tight", metadata=metadata)
    tmp.replace(target)
    return target


def new_figure(rows: int = 1, height_ratios: list[float] | None = None, height: float = 4.5) -> tuple[Any, Any]:
    """A figure (Agg backend) with `rows` axes sharing the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kwargs = {"height_ratios": height_ratios} if height_ratios else {}
    return plt.subplots(rows, 1, figsize=(12, height), dpi=100, sharex=True, squeeze=False, gridspec_kw=kwargs)


def close(fig: Any) -> None:
    """Release the figure."""
    import matplotlib.pyplot as plt

    plt.close(fig)


def draw_limits(ax: Any, edges: list[Any], licenses: list[int], ceiling: list[int]) -> None:
    """Licenses (solid) and licenses + allowance (dashed) as steps over `edges`; when they are equal (allowance 0)
    the dashed line is lifted a few points so that both stay visible, and the legend says so."""
    from matplotlib.transforms import offset_copy

    if not licenses:
        return
    ax.stairs(licenses, edges, baseline=None, color="tab:green", lw=2.2, label=f"licenses ({_levels(licenses)})",
              zorder=4)  # fmt: skip
    same = licenses == ceiling
    label = "licenses + allowance " + ("(allowance 0: same level)" if same else f"({_levels(ceiling)})")
    lift = offset_copy(ax.transData, fig=ax.figure, y=3 if same else 0, units="points")
    ax.stairs(ceiling, edges, baseline=None, color="darkorange", lw=1.8, ls=(0, (5, 3)), label=label, zorder=5,
              transform=lift)  # fmt: skip


def _levels(values: list[int]) -> str:
    """`5`, or `5 -> 7` when the level changes."""
    distinct = list(dict.fromkeys(values))
    return " -> ".join(str(v) for v in distinct[:4]) + (" ..." if len(distinct) > 4 else "")


def grace_rule(minutes: int, mode: str) -> str:
    """What is billable under the grace settings, in one phrase."""
    if minutes == 0:
        return "billable overage = the highest excess over licenses at any instant (no grace period)"
    if mode == "cumulative":
        return f"billable overage = the highest excess over licenses held for {minutes} min in total (cumulative grace)"
    return f"billable overage = the highest excess over licenses held {minutes} min without a break (contiguous grace)"
