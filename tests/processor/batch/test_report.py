"""Reports of the SQL engine by hand: peak, time over licenses, license hours, grace-aware billable overage, plans and
DST days. data_through, complete and peak_users of a period, for every implementation alike, are contract scenarios
(tests/contract/test_scenarios.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from schemas.outputs import PeakUser, Report, ReportDay

from .helpers import ACCOUNT, DAY, HOUR, MINUTE, T0, ev, load, plan, portal_span

NOV2 = date(2026, 11, 2)


def settled(events: list[dict]) -> list[dict]:
    """The events plus one of another account 10 days later: by the idle rule (W_p - 2 h) every instant of the
    account before then is known, so the reports below are complete."""
    return [*events, ev("api.request", T0 + 10 * DAY, account="later", user_id="x")]


def excess_profile(at: int) -> list[dict]:
    """Usage on 2026-11-02 (UTC), with licenses 1 the excess is usage - 1:

    09:00-09:10 2 | 09:10-09:15 3 | 09:15-09:30 2 | 09:30-10:00 1 | 10:00-10:08 2 | 10:08-10:30 1 |
    10:30-10:38 3 | 10:38-10:45 2 | 10:45-12:00 1
    """
    return [
        *portal_span("u1", at + 9 * HOUR, at + 12 * HOUR),
        *portal_span("u2", at + 9 * HOUR, at + 9 * HOUR + 30 * MINUTE),
        *portal_span("u3", at + 9 * HOUR + 10 * MINUTE, at + 9 * HOUR + 15 * MINUTE),
        *portal_span("u3", at + 10 * HOUR, at + 10 * HOUR + 8 * MINUTE),
        *portal_span("u2", at + 10 * HOUR + 30 * MINUTE, at + 10 * HOUR + 45 * MINUTE),
        *portal_span("u3", at + 10 * HOUR + 30 * MINUTE, at + 10 * HOUR + 38 * MINUTE),
    ]


def test_contiguous_grace(tmp_path: Path) -> None:
    events = [plan(T0 - DAY, licenses=1, overage=1, grace=10, mode="contiguous"), *excess_profile(T0)]
    report = load(tmp_path, settled(events)).report(ACCOUNT, NOV2, NOV2)
    # excess >= 2 lasts 5 and 8 minutes (< 10): not billable; excess >= 1 holds 09:00-09:30 (30 minutes)
    day = ReportDay(
        date="2026-11-02",
        peak_usage=3,
        peak_at="2026-11-02T09:10:00.000Z",
        licenses=1,
        overage_allowance=1,
        seconds_over_licenses=3180.0,  # 30 + 8 + 15 minutes
        max_excess=2,
        license_hours=4.1,  # 180 + 30 + 5 + 8 + 15 + 8 = 246 minutes
        distinct_users=3,
        complete=True,
    )
    assert report == Report(
        account_id=ACCOUNT,
        from_="2026-11-02",
        to="2026-11-02",
        timezone="UTC",
        licenses=1,
        overage_allowance=1,
        peak_usage=3,
        peak_at="2026-11-02T09:10:00.000Z",
        peak_users=[PeakUser(user_id=u, devices=[], portal=True, api=False) for u in ("u1", "u2", "u3")],
        billable_overage=1,
        over_allowance=0,
        seconds_over_licenses=3180.0,
        license_hours=4.1,
        distinct_users=3,
        data_through="2026-11-11T22:00:00.000Z",
        complete=True,
        days=[day],
    )


@pytest.mark.parametrize(("grace", "billable"), [(10, 2), (13, 2), (14, 1), (0, 2), (113, 1), (114, 0)])
def test_cumulative_grace_with_a_plan_change_mid_period(tmp_path: Path, grace: int, billable: int) -> None:
    events = [
        plan(T0 - DAY, licenses=1, overage=1, grace=999, mode="contiguous"),
        *excess_profile(T0),
        # from 11:00 licenses 0: u1 alone is one over; the grace settings of the period's end apply throughout
        plan(T0 + 11 * HOUR, licenses=0, overage=1, grace=grace, mode="cumulative"),
    ]
    report = load(tmp_path, settled(events)).report(ACCOUNT, NOV2, NOV2)
    # excess >= 2: 5 + 8 = 13 minutes; excess >= 1: 30 + 8 + 15 + 60 = 113 minutes
    assert report.billable_overage == billable
    assert report.over_allowance == max(0, billable - 1)
    assert (report.licenses, report.overage_allowance) == (0, 1)
    assert report.seconds_over_licenses == 6780.0  # 53 minutes under the first plan, 60 under the second
    assert report.days[0].licenses == 0
    assert report.days[0].max_excess == 2
    assert report.peak_usage == 3


def test_contiguous_stretches_are_cut_at_the_period_edges(tmp_path: Path) -> None:
    # excess 1 from 23:50 on Nov 2 to 00:20 on Nov 3 (30 minutes, 10 on Nov 2)
    events = [plan(T0 - DAY, licenses=0, grace=15), *portal_span("u1", T0 + DAY - 10 * MINUTE, T0 + DAY + 20 * MINUTE)]
    engine = load(tmp_path, settled(events))
    assert engine.report(ACCOUNT, NOV2, NOV2).billable_overage == 0
    assert engine.report(ACCOUNT, NOV2, date(2026, 11, 3)).billable_overage == 1
    assert engine.report(ACCOUNT, date(2026, 11, 3), date(2026, 11, 3)).billable_overage == 1


def test_empty_days_and_peak_at_clipped_to_the_period_start(tmp_path: Path) -> None:
    events = [plan(T0 - DAY, licenses=5, zone="UTC"), *portal_span("u1", T0 - HOUR, T0 + HOUR)]
    report = load(tmp_path, settled(events)).report(ACCOUNT, NOV2, date(2026, 11, 3))
    assert report.peak_at == "2026-11-02T00:00:00.000Z"  # usage 1 already held at the period's start
    assert report.license_hours == 1.0
    assert [d.peak_usage for d in report.days] == [1, 0]
    assert report.days[1].peak_at is None
    assert report.days[1].distinct_users == 0
    assert report.distinct_users == 1
    nothing = load(tmp_path, [plan(T0, licenses=2)]).report(ACCOUNT, NOV2, NOV2)
    assert (nothing.peak_usage, nothing.peak_at, nothing.billable_overage, nothing.license_hours) == (0, None, 0, 0.0)
    with pytest.raises(ValueError):
        load(tmp_path, []).report(ACCOUNT, NOV2, date(2026, 11, 1))


def test_report_days_follow_dst_in_the_report_timezone(tmp_path: Path) -> None:
    nov1 = T0 - DAY
    events = [
        plan(T0 - 30 * DAY, licenses=0, zone="America/New_York"),
        # 2026-11-02T04:30Z-05:30Z: the last half hour of the 25-hour local Nov 1, the first of Nov 2
        *portal_span("u1", T0 + 4 * HOUR + 30 * MINUTE, T0 + 5 * HOUR + 30 * MINUTE),
        *portal_span("u2", nov1 + 3 * HOUR, nov1 + 5 * HOUR),  # 23:00-01:00 EDT/EST across local midnight
    ]
    engine = load(tmp_path, settled(events))
    report = engine.report(ACCOUNT, date(2026, 10, 31), date(2026, 11, 1))
    assert report.timezone == "America/New_York"
    assert [(d.date, d.license_hours, d.distinct_users) for d in report.days] == [
        ("2026-10-31", 1.0, 1),
        ("2026-11-01", 1.5, 2),
    ]
    assert report.license_hours == 2.5
    assert report.days[1].peak_at == "2026-11-01T04:00:00.000Z"


def test_report_timezone_rule(tmp_path: Path) -> None:
    events = [
        plan(T0 - 10 * DAY, licenses=1, zone="Europe/Berlin"),
        # Asia/Tokyo from 2026-11-02T20:00Z = Nov 3 05:00 local
        plan(T0 + 20 * HOUR, licenses=2, zone="Asia/Tokyo"),
    ]
    unsettled = load(tmp_path, events)  # data_through is 10 minutes before the Tokyo plan: it is not known yet
    assert unsettled.report(ACCOUNT, NOV2, date(2026, 11, 3)).timezone == "Europe/Berlin"
    assert unsettled.report(ACCOUNT, NOV2, NOV2).licenses == 1
    engine = load(tmp_path, settled(events))
    # to = Nov 2: midnight of Nov 3 in Tokyo is 2026-11-02T15:00Z < 20:00Z, so the Tokyo plan does not count
    assert engine.report(ACCOUNT, NOV2, NOV2).timezone == "Europe/Berlin"
    assert engine.report(ACCOUNT, NOV2, date(2026, 11, 3)).timezone == "Asia/Tokyo"
    assert engine.report("unknown", NOV2, NOV2).timezone == "UTC"
    # the Berlin day Nov 2 ends at 23:00Z; the plan in effect 1 ms before is the Tokyo one (from 20:00Z)
    assert engine.report(ACCOUNT, NOV2, NOV2).licenses == 2
    assert engine.report(ACCOUNT, date(2026, 11, 1), date(2026, 11, 1)).licenses == 1
