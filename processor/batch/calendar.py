"""Local midnights from the IANA database that zoneinfo reads (the same rules as the rest of ccmeter).

A small generated table replaces DuckDB's ICU time zones, whose tz data version may differ from Python's.
Local midnight of date d in zone z: `datetime(d, 00:00, tzinfo=ZoneInfo(z))` (fold 0, so a midnight that falls in
a DST gap maps to the instant the gap starts) converted to UTC milliseconds.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.events import to_ms

EPOCH_DATE = date(1970, 1, 1)


def local_midnight_ms(zone: str, day: date) -> int:
    """UTC milliseconds of 00:00 local time of `day` in `zone`."""
    return to_ms(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)))


def calendar_rows(zone: str, utc_days: list[int]) -> list[tuple[str, int, int, int]]:
    """`(zone, idx, start_ms, end_ms)` of every non-empty local day whose date is one of `utc_days` (days since
    1970-01-01); idx is that date. Callers pass the UTC days an instant touches with two days of margin on each
    side, which covers the local day of the instant under any UTC offset.
    """
    midnights: dict[int, int] = {}

    def midnight(idx: int) -> int:
        if idx not in midnights:
            midnights[idx] = local_midnight_ms(zone, EPOCH_DATE + timedelta(days=idx))
        return midnights[idx]

    rows: list[tuple[str, int, int, int]] = []
    first, last = (date(1, 1, 2) - EPOCH_DATE).days, (date(9999, 12, 30) - EPOCH_DATE).days
    for idx in sorted(set(utc_days)):
        if first <= idx <= last:
            start, end = midnight(idx), midnight(idx + 1)
            if end > start:
                rows.append((zone, idx, start, end))
    return rows
