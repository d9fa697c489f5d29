"""Local days, DST, billing periods and the report timezone rule (semantics section 6)."""

from __future__ import annotations

from datetime import date

import pytest

from processor.core.model import Plan
from processor.core.periods import (
    billing_period,
    current_and_previous,
    local_date,
    local_midnight_ms,
    period_containing,
    report_timezone,
)
from schemas.events import parse_timestamp, to_ms

HOUR = 3_600_000


def ms(text: str) -> int:
    return to_ms(parse_timestamp(text))


def day_hours(day: date, timezone: str) -> float:
    next_day = date.fromordinal(day.toordinal() + 1)
    return (local_midnight_ms(next_day, timezone) - local_midnight_ms(day, timezone)) / HOUR


class TestLocalMidnight:
    def test_utc(self) -> None:
        assert local_midnight_ms(date(1970, 1, 1), "UTC") == 0
        assert local_midnight_ms(date(2026, 3, 2), "UTC") == ms("2026-03-02T00:00:00Z")

    def test_berlin_spring_forward_is_23h(self) -> None:
        # 2026-03-29: 02:00 CET -> 03:00 CEST; midnight is still CET (+01:00), the next one CEST (+02:00)
        assert local_midnight_ms(date(2026, 3, 29), "Europe/Berlin") == ms("2026-03-28T23:00:00Z")
        assert local_midnight_ms(date(2026, 3, 30), "Europe/Berlin") == ms("2026-03-29T22:00:00Z")
        assert day_hours(date(2026, 3, 29), "Europe/Berlin") == 23
        assert day_hours(date(2026, 3, 28), "Europe/Berlin") == 24

    def test_berlin_fall_back_is_25h(self) -> None:
        assert local_midnight_ms(date(2026, 10, 25), "Europe/Berlin") == ms("2026-10-24T22:00:00Z")
        assert local_midnight_ms(date(2026, 10, 26), "Europe/Berlin") == ms("2026-10-25T23:00:00Z")
        assert day_hours(date(2026, 10, 25), "Europe/Berlin") == 25

    def test_new_york(self) -> None:
        assert local_midnight_ms(date(2026, 3, 8), "America/New_York") == ms("2026-03-08T05:00:00Z")
        assert local_midnight_ms(date(2026, 3, 9), "America/New_York") == ms("2026-03-09T04:00:00Z")
        assert day_hours(date(2026, 3, 8), "America/New_York") == 23
        assert local_midnight_ms(date(2026, 11, 1), "America/New_York") == ms("2026-11-01T04:00:00Z")
        assert local_midnight_ms(date(2026, 11, 2), "America/New_York") == ms("2026-11-02T05:00:00Z")
        assert day_hours(date(2026, 11, 1), "America/New_York") == 25

    def test_santiago_midnight_does_not_exist(self) -> None:
        # 2026-09-06: clocks jump from 00:00 (-04:00) to 01:00 (-03:00); the day starts at 01:00 -03:00 = 04:00Z
        first = local_midnight_ms(date(2026, 9, 6), "America/Santiago")
        assert first == ms("2026-09-06T04:00:00Z")
        assert local_date(first, "America/Santiago") == date(2026, 9, 6)
        assert local_date(first - 1, "America/Santiago") == date(2026, 9, 5)
        assert day_hours(date(2026, 9, 6), "America/Santiago") == 23

    def test_havana_gap_and_double_midnight(self) -> None:
        # 2026-03-08: 00:00 CST (-05:00) jumps to 01:00 CDT (-04:00) -> first instant 05:00Z
        assert local_midnight_ms(date(2026, 3, 8), "America/Havana") == ms("2026-03-08T05:00:00Z")
        assert day_hours(date(2026, 3, 8), "America/Havana") == 23
        # 2026-11-01: 01:00 CDT falls back to 00:00 CST: midnight happens twice (04:00Z and 05:00Z); the first counts
        assert local_midnight_ms(date(2026, 11, 1), "America/Havana") == ms("2026-11-01T04:00:00Z")
        assert day_hours(date(2026, 11, 1), "America/Havana") == 25

    def test_skipped_date_is_an_empty_day(self) -> None:
        # Samoa skipped 2011-12-30 entirely (23:59:59 -10:00 on the 29th -> 00:00 +14:00 on the 31st)
        skipped = local_midnight_ms(date(2011, 12, 30), "Pacific/Apia")
        assert skipped == ms("2011-12-30T10:00:00Z")
        assert skipped == local_midnight_ms(date(2011, 12, 31), "Pacific/Apia")

    def test_local_date(self) -> None:
        assert local_date(ms("2026-10-24T21:59:59.999Z"), "Europe/Berlin") == date(2026, 10, 24)
        assert local_date(ms("2026-10-24T22:00:00Z"), "Europe/Berlin") == date(2026, 10, 25)
        assert local_date(ms("2026-10-25T22:59:59.999Z"), "Europe/Berlin") == date(2026, 10, 25)
        assert local_date(ms("2026-10-25T23:00:00Z"), "Europe/Berlin") == date(2026, 10, 26)
        assert local_date(-1, "UTC") == date(1969, 12, 31)


class TestBillingPeriods:
    def test_anchor_28_across_february(self) -> None:
        assert billing_period(28, "2026-01") == (date(2026, 1, 28), date(2026, 2, 27))
        assert billing_period(28, "2026-02") == (date(2026, 2, 28), date(2026, 3, 27))
        assert billing_period(28, "2024-02") == (date(2024, 2, 28), date(2024, 3, 27))

    def test_anchor_28_across_year_end(self) -> None:
        assert billing_period(28, "2026-12") == (date(2026, 12, 28), date(2027, 1, 27))
        assert period_containing(28, date(2027, 1, 5)) == (date(2026, 12, 28), date(2027, 1, 27))
        assert period_containing(28, date(2027, 1, 27)) == (date(2026, 12, 28), date(2027, 1, 27))
        assert period_containing(28, date(2027, 1, 28)) == (date(2027, 1, 28), date(2027, 2, 27))

    def test_anchor_1_is_the_calendar_month(self) -> None:
        assert billing_period(1, "2026-02") == (date(2026, 2, 1), date(2026, 2, 28))
        assert billing_period(1, "2024-02") == (date(2024, 2, 1), date(2024, 2, 29))
        assert billing_period(1, "2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
        assert period_containing(1, date(2026, 12, 31)) == (date(2026, 12, 1), date(2026, 12, 31))
        assert period_containing(1, date(2027, 1, 1)) == (date(2027, 1, 1), date(2027, 1, 31))

    def test_period_containing_edges(self) -> None:
        assert period_containing(28, date(2026, 3, 27)) == (date(2026, 2, 28), date(2026, 3, 27))
        assert period_containing(28, date(2026, 3, 28)) == (date(2026, 3, 28), date(2026, 4, 27))
        assert period_containing(15, date(2026, 1, 14)) == (date(2025, 12, 15), date(2026, 1, 14))

    @pytest.mark.parametrize("anchor", [0, 29, 31, -1])
    def test_bad_anchor(self, anchor: int) -> None:
        with pytest.raises(ValueError):
            billing_period(anchor, "2026-01")
        with pytest.raises(ValueError):
            period_containing(anchor, date(2026, 1, 1))

    @pytest.mark.parametrize("month", ["2026", "2026-13", "2026-00", "Jan", "2026-01-01"])
    def test_bad_month(self, month: str) -> None:
        with pytest.raises(ValueError):
            billing_period(1, month)

    def test_current_and_previous_uses_the_local_date(self) -> None:
        now = ms("2026-02-27T23:30:00Z")  # 2026-02-28 00:30 in Berlin, still 02-27 in UTC
        assert current_and_previous(28, "Europe/Berlin", now) == (
            (date(2026, 2, 28), date(2026, 3, 27)),
            (date(2026, 1, 28), date(2026, 2, 27)),
        )
        assert current_and_previous(28, "UTC", now) == (
            (date(2026, 1, 28), date(2026, 2, 27)),
            (date(2025, 12, 28), date(2026, 1, 27)),
        )
        assert current_and_previous(1, "UTC", ms("2026-01-10T00:00:00Z")) == (
            (date(2026, 1, 1), date(2026, 1, 31)),
            (date(2025, 12, 1), date(2025, 12, 31)),
        )


class TestReportTimezone:
    def test_no_plan_is_utc(self) -> None:
        assert report_timezone([], date(2026, 3, 31)) == "UTC"

    def test_plan_after_the_period_is_ignored(self) -> None:
        plans = [Plan(at_ms=ms("2026-05-01T00:00:00Z"), timezone="Europe/Berlin")]
        assert report_timezone(plans, date(2026, 3, 31)) == "UTC"
        assert report_timezone(plans, date(2026, 5, 1)) == "Europe/Berlin"

    def test_latest_plan_before_the_end_in_its_own_zone(self) -> None:
        tokyo_end = ms("2026-03-31T15:00:00Z")  # 2026-04-01 00:00 +09:00
        new_york = Plan(at_ms=0, timezone="America/New_York")
        assert report_timezone([new_york, Plan(at_ms=tokyo_end, timezone="Asia/Tokyo")], date(2026, 3, 31)) == (
            "America/New_York"
        )
        assert report_timezone([new_york, Plan(at_ms=tokyo_end - 1, timezone="Asia/Tokyo")], date(2026, 3, 31)) == (
            "Asia/Tokyo"
        )
        # 20:00Z is before the New York end of 03-31 (04-01T04:00Z) but after the Tokyo one: Tokyo's own zone decides
        late = Plan(at_ms=ms("2026-03-31T20:00:00Z"), timezone="Asia/Tokyo")
        assert report_timezone([new_york, late], date(2026, 3, 31)) == "America/New_York"

    def test_later_plan_at_the_same_ms_wins(self) -> None:
        plans = [Plan(at_ms=0, timezone="Europe/Berlin"), Plan(at_ms=0, timezone="Asia/Tokyo")]
        assert report_timezone(plans, date(2026, 3, 31)) == "Asia/Tokyo"
