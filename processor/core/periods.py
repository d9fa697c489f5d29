"""Account-local days and billing periods (SPEC section 4, docs/semantics.md section 6).

Pure calendar math: dates are account-local `datetime.date`s, instants are integer milliseconds since the Unix epoch
(UTC). Day boundaries are DST-correct: a local day may last 23 h, 25 h, or (when a zone skips a date) 0 h.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from processor.core.model import Plan
from schemas.events import from_ms, to_ms

ONE_DAY = timedelta(days=1)


def _zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(timezone)


def local_date(at_ms: int, timezone: str) -> date:
    """The account-local date of the instant `at_ms` in `timezone`."""
    return from_ms(at_ms).astimezone(_zone(timezone)).date()


@lru_cache(maxsize=4096)
def local_midnight_ms(day: date, timezone: str) -> int:
    """First instant (ms, UTC) of the local date `day` in `timezone`.

    DST-correct: when local midnight occurs twice, the earlier one; when it does not exist (a gap at midnight), the
    first instant that exists on that date, i.e. the transition instant. A date the zone skips entirely gets the
    transition instant too, so it is an empty day (its midnight equals the next day's).
    """
    zone = _zone(timezone)
    valid: list[int] = []
    candidates: list[int] = []
    for fold in (0, 1):
        wall = datetime(day.year, day.month, day.day, tzinfo=zone, fold=fold)
        ms = to_ms(wall.astimezone(UTC))
        candidates.append(ms)
        back = from_ms(ms).astimezone(zone)
        if back.date() == day and back.hour == 0 and back.minute == 0 and back.second == 0 and back.microsecond == 0:
            valid.append(ms)
    if valid:
        return min(valid)
    # Midnight falls into a gap: the first existing instant of `day` is the transition, between the two readings.
    lo, hi = min(candidates), max(candidates)
    if local_date(lo, timezone) >= day or local_date(hi, timezone) < day:  # pragma: no cover - zoneinfo invariant
        lo, hi = lo - 2 * 86_400_000, hi + 2 * 86_400_000
    while hi - lo > 1:  # invariant: local_date(lo) < day <= local_date(hi)
        mid = (lo + hi) // 2
        if local_date(mid, timezone) >= day:
            hi = mid
        else:
            lo = mid
    return hi


def _add_months(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1


def _check_anchor(anchor_day: int) -> None:
    if not 1 <= anchor_day <= 28:
        raise ValueError(f"billing anchor day must be 1..28, got {anchor_day}")


def billing_period(anchor_day: int, month: str) -> tuple[date, date]:
    """The billing period that starts in `month` ('YYYY-MM'): (anchor day of that month, next anchor - 1 day)."""
    _check_anchor(anchor_day)
    try:
        year_text, month_text = month.split("-")
        year, mon = int(year_text), int(month_text)
        start = date(year, mon, anchor_day)
    except ValueError as exc:
        raise ValueError(f"month must look like YYYY-MM, got {month!r}") from exc
    next_year, next_month = _add_months(year, mon, 1)
    return start, date(next_year, next_month, anchor_day) - ONE_DAY


def period_containing(anchor_day: int, day: date) -> tuple[date, date]:
    """The billing period (from, to inclusive) that contains the local date `day`."""
    _check_anchor(anchor_day)
    year, month = (day.year, day.month) if day.day >= anchor_day else _add_months(day.year, day.month, -1)
    return billing_period(anchor_day, f"{year:04d}-{month:02d}")


def current_and_previous(anchor_day: int, timezone: str, now_ms: int) -> tuple[tuple[date, date], tuple[date, date]]:
    """The billing period containing the local date of `now_ms`, and the one before it."""
    current = period_containing(anchor_day, local_date(now_ms, timezone))
    previous = period_containing(anchor_day, current[0] - ONE_DAY)
    return current, previous


def report_timezone(plans: Sequence[Plan], to_date: date) -> str:
    """Timezone of a report ending on `to_date` (semantics section 6).

    The timezone of the latest plan `p` (plans in application order) with
    `p.at_ms < local_midnight(to_date + 1 day, p.timezone)`; 'UTC' if there is none.
    """
    after = to_date + ONE_DAY
    for plan in reversed(plans):
        if plan.at_ms < local_midnight_ms(after, plan.timezone):
            return plan.timezone
    return "UTC"
