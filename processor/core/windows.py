"""Peak-window accumulators of one account (docs/semantics.md section 5).

Usage is fed in as constant pieces `[a, b)`; each piece is split over the windows of the four kinds that it
touches. A window is closed (and emitted if its `license_ms > 0`) as soon as a piece reaches its end.

1-minute windows are sparse (SPEC 5): only a minute that the fold `mark`s, because usage changed or a plan took
effect in it, gets a window. A quiet minute is implied by the change points (its level is the last change's, its
licenses the plan's in effect), so the work and the output grow with changes, not with minutes.
"""

from __future__ import annotations

from typing import Any

from processor.core.days import day_bounds
from processor.core.model import NEVER, WINDOW_KINDS, PeakWindow

_FIXED_SIZES: tuple[int, ...] = (60_000, 900_000, 3_600_000)
MINUTE = 60_000
DAY = 3  # index of the "1d" kind in WINDOW_KINDS
KIND_INDEX: dict[str, int] = {kind: index for index, kind in enumerate(WINDOW_KINDS)}

# An open window is a list: [start, end, max_usage, max_at, over_licenses_ms, license_ms]
Acc = list[int]


def _new(start: int, end: int) -> Acc:
    # Usage 0 held from the window's start until the first piece that was fed in (or the window's start).
    return [start, end, 0, start, 0, 0]


class PeakWindows:
    """Open windows of the four kinds, keyed by `(start, end)` per kind."""

    __slots__ = ("account_id", "open", "last_day", "marks")

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.open: tuple[dict[tuple[int, int], Acc], ...] = ({}, {}, {}, {})
        self.last_day: Acc | None = None  # most recently closed 1d window (for the live view)
        self.marks: set[int] = set()  # starts of the minutes, not yet closed, in which usage or the plan changed

    def mark(self, t: int, seg_start: int, usage: int, licenses: int) -> None:
        """Usage or the plan changes at `t`: its minute gets a 1m window. `[seg_start, t)` is the running piece
        (`usage`, `licenses`), about to be fed; the minute's part before it was the same constant level (any change
        there would have marked the minute already), so it is added here."""
        start = t - t % MINUTE
        if start in self.marks:
            return
        self.marks.add(start)
        if seg_start > start:
            self._feed_minutes(start, min(seg_start, t), usage, licenses, [])

    def has_open(self) -> bool:
        """True if any window is open."""
        return any(self.open)

    def feed(self, a: int, b: int, usage: int, licenses: int, tz: str, out: list[PeakWindow]) -> None:
        """Add the piece `[a, b)` of constant `usage` (licenses, time zone of then); close windows ending <= b."""
        if a >= b:
            return
        if usage > 0:
            if b >= NEVER:
                raise RuntimeError("usage > 0 cannot last until +infinity")
            if self.marks:
                self._feed_minutes(a, b, usage, licenses, out)
            for index in (1, 2):
                self._feed_kind(index, a, b, usage, licenses, _FIXED_SIZES[index], tz, out)
            self._feed_kind(DAY, a, b, usage, licenses, 0, tz, out)
        self.close_until(b, out)

    def _feed_minutes(self, a: int, b: int, usage: int, licenses: int, out: list[PeakWindow]) -> None:
        """Add `[a, b)` to the marked minutes it overlaps (closing those that end <= b)."""
        windows = self.open[0]
        for start in sorted(m for m in self.marks if m < b and m + MINUTE > a):
            end = start + MINUTE
            key = (start, end)
            acc = windows.get(key)
            if acc is None:
                acc = windows[key] = _new(start, end)
            x, y = max(a, start), min(b, end)
            acc[5] += usage * (y - x)
            if usage > licenses:
                acc[4] += y - x
            if usage > acc[2]:
                acc[2] = usage
                acc[3] = x
            if end <= b:
                del windows[key]
                self.marks.discard(start)
                self._emit(0, acc, out)

    def _feed_kind(
        self, index: int, a: int, b: int, usage: int, licenses: int, size: int, tz: str, out: list[PeakWindow]
    ) -> None:
        windows = self.open[index]
        over = usage > licenses
        x = a
        while x < b:
            if size:
                start = x - x % size
                end = start + size
            else:
                start, end = day_bounds(tz, x)
            key = (start, end)
            acc = windows.get(key)
            if acc is None:
                acc = windows[key] = _new(start, end)
            y = end if end < b else b
            span = y - x
            acc[5] += usage * span
            if over:
                acc[4] += span
            if usage > acc[2]:
                acc[2] = usage
                acc[3] = x
            if end <= b:
                del windows[key]
                self._emit(index, acc, out)
            x = y

    def close_until(self, horizon: int, out: list[PeakWindow]) -> None:
        """Close every open window with `end <= horizon`."""
        for index, windows in enumerate(self.open):
            if not windows:
                continue
            done = [key for key in windows if key[1] <= horizon]
            for key in done:
                self._emit(index, windows.pop(key), out)
        if self.marks:  # marked minutes without usage never opened a window
            self.marks.difference_update([m for m in self.marks if m + MINUTE <= horizon])

    def _emit(self, index: int, acc: Acc, out: list[PeakWindow]) -> None:
        if index == DAY:
            self.last_day = acc
        if acc[5] > 0:
            out.append(PeakWindow(self.account_id, WINDOW_KINDS[index], acc[0], acc[1], acc[2], acc[3], acc[4], acc[5]))

    def next_end(self, seg_start: int, usage: int, tz: str) -> int:
        """Earliest end of an open window, or of a window that the running piece from `seg_start` will open."""
        ends = [key[1] for windows in self.open for key in windows]
        if usage > 0:
            ends.extend(m + MINUTE for m in self.marks)  # the running piece extends a marked minute
            ends.append(seg_start - seg_start % _FIXED_SIZES[1] + _FIXED_SIZES[1])
            ends.append(day_bounds(tz, seg_start)[1])
        return min(ends, default=NEVER)

    def day_peak(self, at_ms: int, seg_start: int, usage: int, tz: str) -> tuple[int, int]:
        """`(max_usage, max_at)` so far of the 1d window holding `at_ms`, with the running piece from `seg_start`."""
        start, end = day_bounds(tz, at_ms)
        acc = self.open[DAY].get((start, end))
        if acc is None and self.last_day is not None and self.last_day[0] == start and self.last_day[1] == end:
            acc = self.last_day
        peak, peak_at = (acc[2], acc[3]) if acc is not None else (0, start)
        if seg_start <= at_ms and usage > peak:
            peak, peak_at = usage, max(seg_start, start)
        return peak, peak_at

    def dump(self) -> list[Any]:
        """Plain lists for msgpack."""
        rows = [[index, *acc] for index, windows in enumerate(self.open) for acc in windows.values()]
        return [rows, self.last_day, sorted(self.marks)]

    @classmethod
    def load(cls, account_id: str, data: Any) -> PeakWindows:
        """Inverse of `dump`."""
        windows = cls(account_id)
        rows, last_day = data[0], data[1]
        for index, *acc in rows:
            windows.open[index][(acc[0], acc[1])] = list(acc)
        windows.last_day = list(last_day) if last_day is not None else None
        # State written before sparse minutes has no marks: its open minute windows stay, as if marked.
        windows.marks = set(data[2]) if len(data) > 2 else {acc[0] for acc in windows.open[0].values()}
        return windows
