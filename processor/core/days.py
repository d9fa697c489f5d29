"""Account-local days: `[local midnight, next local midnight)` of an IANA time zone, in epoch milliseconds.

Local midnight is `datetime(y, m, d, tzinfo=zone)` (fold 0): when midnight falls into a DST gap it is the
transition instant, i.e. the first instant of that local date; when it is repeated, the first occurrence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# Fast path: the last day window computed per time zone (most lookups fall into the same day).
_last_day: dict[str, tuple[int, int]] = {}


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The `ZoneInfo` of an IANA name (cached)."""
    return ZoneInfo(name)


@lru_cache(maxsize=16_384)
def local_midnight_ms(tz: str, ordinal: int) -> int:
    """First instant (epoch ms) of the local date with proleptic Gregorian `ordinal` in time zone `tz`."""
    day = date.fromordinal(ordinal)
    return (datetime(day.year, day.month, day.day, tzinfo=zone(tz)) - _EPOCH) // _MS


def local_ordinal(tz: str, at_ms: int) -> int:
    """Ordinal of the local date of instant `at_ms` in time zone `tz`."""
    return (_EPOCH + timedelta(milliseconds=at_ms)).astimezone(zone(tz)).toordinal()


def day_bounds(tz: str, at_ms: int) -> tuple[int, int]:
    """The account-local day `[start, end)` (epoch ms) that contains `at_ms` in time zone `tz`."""
    last = _last_day.get(tz)
    if last is not None and last[0] <= at_ms < last[1]:
        return last
    ordinal = local_ordinal(tz, at_ms)
    start, end = local_midnight_ms(tz, ordinal), local_midnight_ms(tz, ordinal + 1)
    # Only where local midnight itself is repeated or skipped can the local date disagree with the window.
    while at_ms < start:
        ordinal -= 1
        start, end = local_midnight_ms(tz, ordinal), start
    while at_ms >= end:
        ordinal += 1
        start, end = end, local_midnight_ms(tz, ordinal + 1)
    bounds = (start, end)
    _last_day[tz] = bounds
    return bounds
