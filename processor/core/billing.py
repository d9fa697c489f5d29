"""Billing math of the licenses usage report (SPEC section 4, docs/semantics.md section 6).

Pure functions over an account's usage step function (its `UsageChange`s), its counted user intervals, its presence
intervals and its plans, up to its `data_through` (nothing after it is counted). All instants are integer milliseconds
since the Unix epoch (UTC).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import date, timedelta
from typing import NamedTuple

from processor.core.model import DEFAULT_PLAN, NEVER, Plan, PresenceInterval, UsageChange, UserInterval
from processor.core.periods import local_midnight_ms, report_timezone
from schemas.events import format_ms
from schemas.outputs import PeakUser, Report, ReportDay

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
GRACE_MODES = ("contiguous", "cumulative")


class Segment(NamedTuple):
    """A piece `[start_ms, end_ms)` of the step function with constant usage and licenses."""

    start_ms: int
    end_ms: int
    usage: int
    licenses: int

    @property
    def excess(self) -> int:
        """`max(0, usage - licenses)` on this piece."""
        return max(0, self.usage - self.licenses)

    @property
    def duration_ms(self) -> int:
        """Length of the piece in ms."""
        return self.end_ms - self.start_ms


def known_plans(plans: Sequence[Plan], data_through_ms: int | None) -> Sequence[Plan]:
    """The plans that took effect before `data_through_ms` (a later one is not known yet; None: none is)."""
    if data_through_ms is None:
        return ()
    if not plans or plans[-1].at_ms < data_through_ms:
        return plans
    return [plan for plan in plans if plan.at_ms < data_through_ms]


def plan_at(plans: Sequence[Plan], at_ms: int) -> Plan:
    """The plan in effect at `at_ms` (plans in application order; DEFAULT_PLAN before the first)."""
    index = bisect_right(plans, at_ms, key=lambda plan: plan.at_ms)
    return plans[index - 1] if index else DEFAULT_PLAN


def usage_segments(changes: Sequence[UsageChange], plans: Sequence[Plan], start_ms: int, end_ms: int) -> list[Segment]:
    """The step function of usage and licenses on `[start_ms, end_ms)` as consecutive, non-empty pieces.

    Usage is 0 before the first change; licenses come from the plan in effect (`plan_at`). Pieces split at usage
    changes and plan changes; neighbours with equal usage and licenses are merged. `changes` are in event-time order
    (of several changes at one ms the last wins). The pieces cover `[start_ms, end_ms)` without gaps.
    """
    segments: list[Segment] = []
    if end_ms <= start_ms:
        return segments
    index = bisect_right(changes, start_ms, key=lambda change: change.at_ms)
    usage = changes[index - 1].usage if index else 0
    plan_index = bisect_right(plans, start_ms, key=lambda plan: plan.at_ms)
    licenses = plans[plan_index - 1].licenses if plan_index else DEFAULT_PLAN.licenses
    n_changes, n_plans = len(changes), len(plans)
    at = start_ms
    while at < end_ms:
        next_change = changes[index].at_ms if index < n_changes else end_ms
        next_plan = plans[plan_index].at_ms if plan_index < n_plans else end_ms
        upto = min(next_change, next_plan, end_ms)
        if upto > at:
            if segments and segments[-1].usage == usage and segments[-1].licenses == licenses:
                last = segments[-1]
                segments[-1] = Segment(last.start_ms, upto, usage, licenses)
            else:
                segments.append(Segment(at, upto, usage, licenses))
            at = upto
        while index < n_changes and changes[index].at_ms <= at:
            usage = changes[index].usage
            index += 1
        while plan_index < n_plans and plans[plan_index].at_ms <= at:
            licenses = plans[plan_index].licenses
            plan_index += 1
    return segments


def _contiguous(excess: list[int], duration: list[int], grace_ms: int) -> int:
    """Largest E >= 1 such that a run of consecutive pieces, all with excess >= E, lasts >= grace_ms."""
    # For each piece as the minimum of a run, extend the run as far as the excess stays >= its own
    # (monotonic stack, O(n)); its level is billable when that maximal run is long enough.
    n = len(excess)
    prefix = [0] * (n + 1)
    for i, d in enumerate(duration):
        prefix[i + 1] = prefix[i] + d
    left = [0] * n  # first index of the maximal run around i with excess >= excess[i]
    stack: list[int] = []
    for i in range(n):
        while stack and excess[stack[-1]] >= excess[i]:
            stack.pop()
        left[i] = stack[-1] + 1 if stack else 0
        stack.append(i)
    best = 0
    stack.clear()
    for i in range(n - 1, -1, -1):
        while stack and excess[stack[-1]] >= excess[i]:
            stack.pop()
        right = stack[-1] if stack else n  # one past the run
        stack.append(i)
        if excess[i] > best and prefix[right] - prefix[left[i]] >= grace_ms:
            best = excess[i]
    return best


def _cumulative(excess: list[int], duration: list[int], grace_ms: int) -> int:
    """Largest E >= 1 whose total time with excess >= E is >= grace_ms."""
    by_level: dict[int, int] = {}
    for e, d in zip(excess, duration, strict=True):
        if e > 0:
            by_level[e] = by_level.get(e, 0) + d
    total = 0
    for level in sorted(by_level, reverse=True):
        total += by_level[level]
        if total >= grace_ms:
            return level
    return 0


def billable_overage(segments: Sequence[Segment], grace_minutes: int, mode: str) -> int:
    """Billable overage of the pieces (semantics section 6): `contiguous` or `cumulative`; G = 0 gives max excess.

    Empty pieces are ignored. Two pieces are one unbroken stretch only when they touch (`end == next start`); the
    pieces are expected in time order.
    """
    if mode not in GRACE_MODES:
        raise ValueError(f"grace mode must be one of {GRACE_MODES}, got {mode!r}")
    if grace_minutes < 0:
        raise ValueError(f"grace minutes must be >= 0, got {grace_minutes}")
    excess: list[int] = []
    duration: list[int] = []
    previous_end: int | None = None
    for segment in segments:
        if segment.end_ms <= segment.start_ms:
            continue
        if previous_end is not None and segment.start_ms != previous_end:
            excess.append(0)  # a gap breaks any stretch
            duration.append(0)
        excess.append(segment.excess)
        duration.append(segment.duration_ms)
        previous_end = segment.end_ms
    if grace_minutes == 0:
        return max(excess, default=0)
    grace_ms = grace_minutes * MS_PER_MINUTE
    if mode == "contiguous":
        return _contiguous(excess, duration, grace_ms)
    return _cumulative(excess, duration, grace_ms)


class _Tally:
    """Running totals of one span (a day or the whole period)."""

    __slots__ = ("peak", "peak_at", "over_ms", "license_ms", "max_excess")

    def __init__(self) -> None:
        self.peak = 0
        self.peak_at: int | None = None
        self.over_ms = 0
        self.license_ms = 0
        self.max_excess = 0

    def add(self, start_ms: int, end_ms: int, usage: int, licenses: int) -> None:
        length = end_ms - start_ms
        if usage > self.peak:
            self.peak, self.peak_at = usage, start_ms
        if usage > licenses:
            self.over_ms += length
            if usage - licenses > self.max_excess:
                self.max_excess = usage - licenses
        self.license_ms += usage * length


def known_end_ms(period_start: int, period_end: int, data_through_ms: int | None) -> int:
    """End of the known part `[period_start, known_end)` of a period: `min(end, data_through)`, never before start
    (the start itself when nothing is known)."""
    if data_through_ms is None:
        return period_start
    return max(period_start, min(period_end, data_through_ms))


def _format_data_through(data_through_ms: int | None) -> str | None:
    if data_through_ms is None:
        return None
    try:
        return format_ms(data_through_ms)
    except (OverflowError, ValueError):
        raise ValueError(f"data_through_ms {data_through_ms} is not an instant between years 1 and 9999") from None


def peak_users(
    at_ms: int | None, intervals: Sequence[UserInterval], presences: Sequence[PresenceInterval]
) -> list[PeakUser]:
    """The users counted at `at_ms` (a counted interval contains it), sorted, each with the presences active then.

    A presence given twice (open with end NEVER, then closed) counts with its earliest end (the closed copy)."""
    if at_ms is None:
        return []
    users = sorted({i.user_id for i in intervals if i.start_ms <= at_ms < i.end_ms})
    ends: dict[tuple[str, str, str | None, int], int] = {}
    for p in presences:
        key = (p.user_id, p.kind, p.device_id, p.start_ms)
        ends[key] = min(p.end_ms, ends.get(key, p.end_ms))
    active: dict[str, list[tuple[str, str | None]]] = {}
    for (user, kind, device, start), end in ends.items():
        if start <= at_ms < end:
            active.setdefault(user, []).append((kind, device))
    result = []
    for user in users:
        mine = active.get(user, [])
        devices = sorted({device for kind, device in mine if kind == "desktop" and device is not None})
        kinds = {kind for kind, _ in mine}
        result.append(PeakUser(user_id=user, devices=devices, portal="portal" in kinds, api="api" in kinds))
    return result


def _day_row(day: date, tally: _Tally, users: int, plan: Plan, known: bool, complete: bool) -> ReportDay:
    """One day's row: its metrics, or nulls when nothing of the day is known (it starts at or after data_through)."""
    return ReportDay(
        date=day.isoformat(),
        peak_usage=tally.peak if known else None,
        peak_at=format_ms(tally.peak_at) if known and tally.peak_at is not None else None,
        licenses=plan.licenses,
        overage_allowance=plan.overage_allowance,
        seconds_over_licenses=tally.over_ms / 1000 if known else None,
        max_excess=tally.max_excess if known else None,
        license_hours=tally.license_ms / MS_PER_HOUR if known else None,
        distinct_users=users if known else None,
        complete=complete,
    )


class _Period(NamedTuple):
    """The report's local days and their boundaries in its timezone: the period is `[midnights[0], midnights[-1])`,
    day `j` is `[midnights[j], midnights[j + 1])`; `known_end` = `min(end, data_through)` (never before the start)
    and `data_through` is -NEVER when nothing is known."""

    timezone: str
    days: list[date]
    midnights: list[int]
    known_end: int
    data_through: int

    @property
    def start(self) -> int:
        """The period's first instant: local midnight of `from`."""
        return self.midnights[0]

    @property
    def end(self) -> int:
        """One past the period's last instant: local midnight of `to + 1 day`."""
        return self.midnights[-1]

    def complete(self, end_ms: int) -> bool:
        """A span ending at `end_ms` is complete: data_through is at or after its end (never when it is null)."""
        return self.data_through >= end_ms


def _period(from_date: date, to_date: date, plans: Sequence[Plan], data_through_ms: int | None) -> _Period:
    """The days `from_date`..`to_date` and their local midnights in the report's timezone (`report_timezone`: that of
    the latest plan that took effect before midnight(to + 1)), and how much of the period is known."""
    timezone = report_timezone(plans, to_date)
    n_days = (to_date - from_date).days + 1
    days = [from_date + timedelta(days=k) for k in range(n_days)]
    midnights = [local_midnight_ms(from_date + timedelta(days=k), timezone) for k in range(n_days + 1)]
    known_end = known_end_ms(midnights[0], midnights[-1], data_through_ms)
    return _Period(timezone, days, midnights, known_end, -NEVER if data_through_ms is None else data_through_ms)


def _tally_usage(segments: Sequence[Segment], midnights: Sequence[int]) -> tuple[_Tally, list[_Tally]]:
    """Peak, time over licenses, max excess and license time of the period and of each day (a piece that crosses
    midnight counts on both sides)."""
    total = _Tally()
    day_tallies = [_Tally() for _ in range(len(midnights) - 1)]
    k = 0
    for start, end, usage, licenses in segments:
        total.add(start, end, usage, licenses)
        at = start
        while at < end:
            while midnights[k + 1] <= at:  # skips empty days too
                k += 1
            upto = min(end, midnights[k + 1])
            day_tallies[k].add(at, upto, usage, licenses)
            at = upto
    return total, day_tallies


def _distinct_users(intervals: Sequence[UserInterval], period: _Period) -> tuple[set[str], list[set[str]]]:
    """The users with a counted interval overlapping the known part of the period, and of each day, by >= 1 ms."""
    midnights = period.midnights
    n_days = len(period.days)
    user_sets: list[set[str]] = [set() for _ in range(n_days)]
    all_users: set[str] = set()
    for interval in intervals:
        start, end = max(interval.start_ms, period.start), min(interval.end_ms, period.known_end)
        if start >= end:
            continue
        all_users.add(interval.user_id)
        first = bisect_right(midnights, start) - 1
        for j in range(first, n_days):
            if midnights[j] >= end:
                break
            if max(start, midnights[j]) < min(end, midnights[j + 1]):  # overlaps the day by >= 1 ms
                user_sets[j].add(interval.user_id)
    return all_users, user_sets


def _day_rows(
    period: _Period, plans: Sequence[Plan], tallies: Sequence[_Tally], user_sets: Sequence[set[str]]
) -> list[ReportDay]:
    """One row per local day with the plan terms in effect at its end - 1 ms; numbers only when the day starts before
    data_through (else null), complete when data_through is at or after its end."""
    rows = []
    midnights = period.midnights
    for j, (day, tally) in enumerate(zip(period.days, tallies, strict=True)):
        day_plan = plan_at(plans, midnights[j + 1] - 1)
        known = midnights[j] < period.data_through
        rows.append(_day_row(day, tally, len(user_sets[j]), day_plan, known, period.complete(midnights[j + 1])))
    return rows


def build_report(
    account_id: str,
    from_date: date,
    to_date: date,
    changes: Sequence[UsageChange],
    intervals: Sequence[UserInterval],
    plans: Sequence[Plan],
    *,
    presences: Sequence[PresenceInterval] = (),
    data_through_ms: int | None,
) -> Report:
    """The licenses usage report of one account for the local dates `from_date`..`to_date` (inclusive).

    `changes` is the account's usage step function (event-time order), `intervals` its counted user intervals,
    `plans` its plans in application order and `presences` its presence intervals (for `peak_users`). Day
    boundaries use `report_timezone(plans, to_date)`. Every metric covers `[start, min(end, data_through))` only, and
    only the plans that took effect before `data_through` are known; `data_through_ms` None means nothing is known yet
    (SPEC 4, docs/semantics.md section 6).
    """
    if to_date < from_date:
        raise ValueError(f"report 'to' {to_date} is before 'from' {from_date}")
    data_through = _format_data_through(data_through_ms)
    plans = known_plans(plans, data_through_ms)
    period = _period(from_date, to_date, plans, data_through_ms)
    segments = usage_segments(changes, plans, period.start, period.known_end)
    total, day_tallies = _tally_usage(segments, period.midnights)
    all_users, user_sets = _distinct_users(intervals, period)
    # The plan terms at the period's end, its grace settings for the whole period.
    end_plan = plan_at(plans, period.end - 1)
    billable = billable_overage(segments, end_plan.grace_minutes, end_plan.grace_mode)
    days = _day_rows(period, plans, day_tallies, user_sets)
    return Report(
        account_id=account_id,
        from_=from_date.isoformat(),
        to=to_date.isoformat(),
        timezone=period.timezone,
        licenses=end_plan.licenses,
        overage_allowance=end_plan.overage_allowance,
        peak_usage=total.peak,
        peak_at=format_ms(total.peak_at) if total.peak_at is not None else None,
        peak_users=peak_users(total.peak_at, intervals, presences),
        billable_overage=billable,
        over_allowance=max(0, billable - end_plan.overage_allowance),
        seconds_over_licenses=total.over_ms / 1000,
        license_hours=total.license_ms / MS_PER_HOUR,
        distinct_users=len(all_users),
        data_through=data_through,
        complete=period.complete(period.end),
        days=days,
    )
