"""Billing math: plans over time, usage pieces, billable overage and the usage report (semantics section 6)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.billing import Segment, billable_overage, build_report, known_end_ms, plan_at, usage_segments
from processor.core.model import DEFAULT_PLAN, NEVER, Plan, PresenceInterval, UsageChange, UserInterval
from processor.core.periods import local_midnight_ms
from schemas.events import parse_timestamp, to_ms
from schemas.outputs import PeakUser, Report

MIN = 60_000
HOUR = 3_600_000
ACCOUNT = "acct-1"


def ms(text: str) -> int:
    return to_ms(parse_timestamp(text))


def change(at_ms: int, usage: int) -> UsageChange:
    return UsageChange(ACCOUNT, at_ms, usage, 0)


def steps(*pieces: tuple[int, int], start: int = 0, licenses: int = 0) -> list[Segment]:
    """Touching pieces from (minutes, usage) pairs."""
    out: list[Segment] = []
    at = start
    for minutes, usage in pieces:
        out.append(Segment(at, at + minutes * MIN, usage, licenses))
        at += minutes * MIN
    return out


def interval(user: str, start: int, end: int) -> UserInterval:
    return UserInterval(ACCOUNT, user, start, end)


class TestPlanAt:
    def test_default_before_the_first(self) -> None:
        plans = [Plan(at_ms=1000, licenses=5)]
        assert plan_at([], 0) is DEFAULT_PLAN
        assert plan_at(plans, 999) is DEFAULT_PLAN
        assert plan_at(plans, 1000) is plans[0]
        assert plan_at(plans, 10**12) is plans[0]

    def test_later_arrival_wins_at_the_same_ms(self) -> None:
        plans = [Plan(at_ms=0, licenses=1), Plan(at_ms=1000, licenses=2), Plan(at_ms=1000, licenses=3)]
        assert plan_at(plans, 999).licenses == 1
        assert plan_at(plans, 1000).licenses == 3


class TestUsageSegments:
    def test_splits_at_changes_and_plans(self) -> None:
        changes = [change(10 * MIN, 2), change(20 * MIN, 5), change(30 * MIN, 0)]
        plans = [Plan(at_ms=0, licenses=1), Plan(at_ms=25 * MIN, licenses=3)]
        assert usage_segments(changes, plans, 5 * MIN, 40 * MIN) == [
            Segment(5 * MIN, 10 * MIN, 0, 1),
            Segment(10 * MIN, 20 * MIN, 2, 1),
            Segment(20 * MIN, 25 * MIN, 5, 1),
            Segment(25 * MIN, 30 * MIN, 5, 3),
            Segment(30 * MIN, 40 * MIN, 0, 3),
        ]

    def test_clipped_start_takes_the_state_in_effect(self) -> None:
        changes = [change(10 * MIN, 2), change(20 * MIN, 5), change(30 * MIN, 0)]
        plans = [Plan(at_ms=0, licenses=1), Plan(at_ms=25 * MIN, licenses=3)]
        assert usage_segments(changes, plans, 15 * MIN, 27 * MIN) == [
            Segment(15 * MIN, 20 * MIN, 2, 1),
            Segment(20 * MIN, 25 * MIN, 5, 1),
            Segment(25 * MIN, 27 * MIN, 5, 3),
        ]
        assert usage_segments(changes, plans, 20 * MIN, 21 * MIN) == [Segment(20 * MIN, 21 * MIN, 5, 1)]

    def test_no_changes_no_plans(self) -> None:
        assert usage_segments([], [], 0, 100) == [Segment(0, 100, 0, 0)]
        assert usage_segments([], [], 100, 100) == []

    def test_equal_neighbours_merge_and_last_change_at_an_instant_wins(self) -> None:
        changes = [change(10, 1), change(20, 3), change(20, 2), change(30, 2)]
        plans = [Plan(at_ms=15, licenses=0), Plan(at_ms=25, licenses=0, timezone="Europe/Berlin")]
        assert usage_segments(changes, plans, 0, 40) == [
            Segment(0, 10, 0, 0),
            Segment(10, 20, 1, 0),
            Segment(20, 40, 2, 0),
        ]


class TestBillableOverage:
    def test_short_spike_is_not_billed_long_stretch_is(self) -> None:
        # excess 1 for 2 h, with a 10 min spike to 3 in the middle
        segs = steps((60, 1), (10, 3), (50, 1))
        assert billable_overage(segs, 30, "contiguous") == 1
        assert billable_overage(segs, 10, "contiguous") == 3
        assert billable_overage(segs, 11, "contiguous") == 1
        assert billable_overage(segs, 120, "contiguous") == 1
        assert billable_overage(segs, 121, "contiguous") == 0
        assert billable_overage(segs, 0, "contiguous") == 3
        assert billable_overage(segs, 0, "cumulative") == 3

    def test_cumulative_adds_up_broken_stretches(self) -> None:
        segs = steps((20, 2), (5, 0), (20, 2))
        assert billable_overage(segs, 30, "contiguous") == 0
        assert billable_overage(segs, 20, "contiguous") == 2
        assert billable_overage(segs, 30, "cumulative") == 2
        assert billable_overage(segs, 40, "cumulative") == 2
        assert billable_overage(segs, 41, "cumulative") == 0

    def test_cumulative_levels(self) -> None:
        # excess 5 for 10 min, 3 for 15 min, 1 for 30 min, apart from each other
        segs = steps((10, 5), (1, 0), (15, 3), (1, 0), (30, 1))
        # time with excess >= 5: 10, >= 3: 25, >= 1: 55
        assert billable_overage(segs, 10, "cumulative") == 5
        assert billable_overage(segs, 11, "cumulative") == 3
        assert billable_overage(segs, 25, "cumulative") == 3
        assert billable_overage(segs, 26, "cumulative") == 1
        assert billable_overage(segs, 55, "cumulative") == 1
        assert billable_overage(segs, 56, "cumulative") == 0
        assert billable_overage(segs, 15, "contiguous") == 3
        assert billable_overage(segs, 16, "contiguous") == 1
        assert billable_overage(segs, 31, "contiguous") == 0

    def test_contiguous_nested_levels(self) -> None:
        segs = steps((10, 2), (10, 4), (15, 3), (10, 1))
        assert billable_overage(segs, 10, "contiguous") == 4
        assert billable_overage(segs, 25, "contiguous") == 3  # 4 then 3: 25 min with excess >= 3
        assert billable_overage(segs, 26, "contiguous") == 2
        assert billable_overage(segs, 35, "contiguous") == 2
        assert billable_overage(segs, 36, "contiguous") == 1
        assert billable_overage(segs, 45, "contiguous") == 1
        assert billable_overage(segs, 46, "contiguous") == 0

    def test_licenses_are_subtracted(self) -> None:
        segs = steps((60, 3), licenses=2) + steps((60, 6), start=60 * MIN, licenses=5)
        assert billable_overage(segs, 120, "contiguous") == 1
        assert billable_overage(steps((60, 1), licenses=2), 0, "contiguous") == 0

    def test_gap_between_pieces_breaks_a_stretch(self) -> None:
        segs = [Segment(0, 20 * MIN, 2, 0), Segment(21 * MIN, 41 * MIN, 2, 0)]
        assert billable_overage(segs, 30, "contiguous") == 0
        assert billable_overage(segs, 30, "cumulative") == 2

    def test_empty(self) -> None:
        assert billable_overage([], 30, "contiguous") == 0
        assert billable_overage([], 0, "cumulative") == 0

    def test_bad_mode_or_grace(self) -> None:
        with pytest.raises(ValueError):
            billable_overage(steps((10, 1)), 30, "rolling")
        with pytest.raises(ValueError):
            billable_overage(steps((10, 1)), -1, "contiguous")


def _reference(segs: list[Segment], grace_minutes: int, mode: str) -> int:
    """Literal reading of semantics section 6: try every E from the top."""
    top = max((s.excess for s in segs), default=0)
    grace = grace_minutes * MIN
    for level in range(top, 0, -1):
        if mode == "cumulative":
            if sum(s.duration_ms for s in segs if s.excess >= level) >= grace:
                return level
        else:
            run = 0
            for s in segs:
                run = run + s.duration_ms if s.excess >= level else 0
                if run >= grace:
                    return level
    return 0


pieces = st.lists(st.tuples(st.integers(1, 90), st.integers(0, 7), st.integers(0, 3)), max_size=25).map(
    lambda items: [
        Segment(sum(m for m, _, _ in items[:i]) * MIN, sum(m for m, _, _ in items[: i + 1]) * MIN, u, lic)
        for i, (_, u, lic) in enumerate(items)
    ]
)


class TestBillableOverageProperties:
    @settings(max_examples=300, deadline=None)
    @given(segs=pieces, g1=st.integers(0, 300), g2=st.integers(0, 300))
    def test_monotone_in_grace(self, segs: list[Segment], g1: int, g2: int) -> None:
        low, high = min(g1, g2), max(g1, g2)
        for mode in ("contiguous", "cumulative"):
            assert billable_overage(segs, high, mode) <= billable_overage(segs, low, mode)

    @settings(max_examples=300, deadline=None)
    @given(segs=pieces, grace=st.integers(0, 300))
    def test_cumulative_at_least_contiguous(self, segs: list[Segment], grace: int) -> None:
        assert billable_overage(segs, grace, "cumulative") >= billable_overage(segs, grace, "contiguous")

    @settings(max_examples=200, deadline=None)
    @given(segs=pieces)
    def test_grace_zero_is_max_excess(self, segs: list[Segment]) -> None:
        top = max((s.excess for s in segs), default=0)
        assert billable_overage(segs, 0, "contiguous") == top
        assert billable_overage(segs, 0, "cumulative") == top

    @settings(max_examples=300, deadline=None)
    @given(segs=pieces, grace=st.integers(0, 300))
    def test_matches_the_literal_definition(self, segs: list[Segment], grace: int) -> None:
        for mode in ("contiguous", "cumulative"):
            assert billable_overage(segs, grace, mode) == _reference(segs, grace, mode)

    @settings(max_examples=200, deadline=None)
    @given(
        moves=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 6)), max_size=20),
        plan_moves=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 4)), max_size=5),
        start=st.integers(0, 100),
        length=st.integers(0, 60),
    )
    def test_usage_segments_agree_with_pointwise_lookup(
        self,
        moves: list[tuple[int, int]],
        plan_moves: list[tuple[int, int]],
        start: int,
        length: int,
    ) -> None:
        changes = [change(at, u) for at, u in sorted(moves, key=lambda m: m[0])]
        plans = [Plan(at_ms=at, licenses=lic) for at, lic in sorted(plan_moves, key=lambda m: m[0])]
        segs = usage_segments(changes, plans, start, start + length)
        covered = [t for s in segs for t in range(s.start_ms, s.end_ms)]
        assert covered == list(range(start, start + length))
        for s in segs:
            for t in range(s.start_ms, s.end_ms):
                upto = [c.usage for c in changes if c.at_ms <= t]
                assert s.usage == (upto[-1] if upto else 0)
                assert s.licenses == plan_at(plans, t).licenses
        for a, b in zip(segs, segs[1:], strict=False):
            assert (a.usage, a.licenses) != (b.usage, b.licenses)


KNOWN = ms("2027-01-01T00:00:00Z")  # data_through long after every period below: everything is known


def known_report(*args: object, **kwargs: object) -> Report:
    """`build_report` with data through long after the period (a complete report)."""
    return build_report(*args, data_through_ms=KNOWN, **kwargs)  # type: ignore[arg-type]


UTC_PLAN = Plan(at_ms=ms("2026-01-01T00:00:00Z"), licenses=2, overage_allowance=1, grace_minutes=30)


class TestBuildReport:
    def _spike_changes(self) -> list[UsageChange]:
        return [
            change(ms("2026-03-02T09:00:00Z"), 1),
            change(ms("2026-03-02T10:00:00Z"), 3),
            change(ms("2026-03-02T10:10:00Z"), 5),
            change(ms("2026-03-02T10:15:00Z"), 3),
            change(ms("2026-03-02T11:00:00Z"), 1),
            change(ms("2026-03-02T12:00:00Z"), 0),
        ]

    def test_summary_and_days(self) -> None:
        report = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 3), self._spike_changes(), [], [UTC_PLAN])
        assert report.account_id == ACCOUNT
        assert (report.from_, report.to, report.timezone) == ("2026-03-02", "2026-03-03", "UTC")
        assert (report.licenses, report.overage_allowance) == (2, 1)
        assert report.peak_usage == 5
        assert report.peak_at == "2026-03-02T10:10:00.000Z"
        # excess 1 for 10:00-11:00 (spike to 3 for 5 min): contiguous G=30 bills 1, within the allowance
        assert report.billable_overage == 1
        assert report.over_allowance == 0
        assert report.seconds_over_licenses == 3600.0
        # 1*60 + 3*10 + 5*5 + 3*45 + 1*60 = 310 user-minutes
        assert report.license_hours == 18_600_000 / 3_600_000
        assert [d.date for d in report.days] == ["2026-03-02", "2026-03-03"]
        first, second = report.days
        assert (first.peak_usage, first.peak_at, first.max_excess) == (5, "2026-03-02T10:10:00.000Z", 3)
        assert (first.licenses, first.overage_allowance) == (2, 1)
        assert first.seconds_over_licenses == 3600.0
        assert first.license_hours == report.license_hours
        assert (second.peak_usage, second.peak_at, second.max_excess, second.license_hours) == (0, None, 0, 0.0)
        assert second.seconds_over_licenses == 0.0
        assert set(report.to_json_dict()) >= {"from", "to", "days"}

    def test_over_allowance_and_grace_settings_of_the_end_plan(self) -> None:
        plans = [Plan(at_ms=UTC_PLAN.at_ms, licenses=2, overage_allowance=0, grace_minutes=5)]
        report = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), self._spike_changes(), [], plans)
        assert report.billable_overage == 3  # excess 3 for exactly 5 min
        assert report.over_allowance == 3
        plans = [Plan(at_ms=UTC_PLAN.at_ms, licenses=2, overage_allowance=2, grace_minutes=0)]
        report = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), self._spike_changes(), [], plans)
        assert (report.billable_overage, report.over_allowance) == (3, 1)
        # a plan from before the period, changed mid-period to grace 120 cumulative: the end plan's settings apply
        plans = [
            Plan(at_ms=UTC_PLAN.at_ms, licenses=2, grace_minutes=0),
            Plan(at_ms=ms("2026-03-02T18:00:00Z"), licenses=2, grace_minutes=60, grace_mode="cumulative"),
        ]
        report = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), self._spike_changes(), [], plans)
        assert report.billable_overage == 1

    def test_plan_change_mid_period_changes_the_excess(self) -> None:
        changes = [change(ms("2026-03-02T08:00:00Z"), 4), change(ms("2026-03-02T16:00:00Z"), 0)]
        plans = [
            Plan(at_ms=UTC_PLAN.at_ms, licenses=3, overage_allowance=0, grace_minutes=60),
            Plan(at_ms=ms("2026-03-02T12:00:00Z"), licenses=1, overage_allowance=2, grace_minutes=60),
            Plan(at_ms=ms("2026-03-03T00:00:00Z"), licenses=100, overage_allowance=50),  # after the period
        ]
        report = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), changes, [], plans)
        # excess 1 for 08:00-12:00, then 3 for 12:00-16:00
        assert (report.licenses, report.overage_allowance) == (1, 2)
        assert report.billable_overage == 3
        assert report.over_allowance == 1
        assert report.seconds_over_licenses == 8 * 3600.0
        assert report.license_hours == 32.0  # 4 users for 8 h
        assert report.days[0].max_excess == 3
        assert (report.days[0].licenses, report.days[0].overage_allowance) == (1, 2)

    def test_raising_licenses_mid_period_ends_the_excess(self) -> None:
        changes = [change(ms("2026-03-02T08:00:00Z"), 4)]
        plans = [
            Plan(at_ms=UTC_PLAN.at_ms, licenses=3),
            Plan(at_ms=ms("2026-03-02T08:20:00Z"), licenses=4),
        ]
        report = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), changes, [], plans)
        assert report.seconds_over_licenses == 1200.0
        assert report.billable_overage == 0  # 20 min < 30 min grace
        assert report.days[0].max_excess == 1
        assert report.peak_at == "2026-03-02T08:00:00.000Z"

    def test_stretches_crossing_the_edges_are_cut(self) -> None:
        changes = [change(ms("2026-03-01T23:45:00Z"), 3), change(ms("2026-03-02T00:15:00Z"), 0)]
        plans = [Plan(at_ms=UTC_PLAN.at_ms, licenses=2, grace_minutes=30)]
        inside_only = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), changes, [], plans)
        assert inside_only.billable_overage == 0
        assert inside_only.seconds_over_licenses == 900.0
        assert inside_only.peak_at == "2026-03-02T00:00:00.000Z"  # held at the period's start
        both = known_report(ACCOUNT, date(2026, 3, 1), date(2026, 3, 2), changes, [], plans)
        assert both.billable_overage == 1
        assert [d.seconds_over_licenses for d in both.days] == [900.0, 900.0]
        before_only = known_report(ACCOUNT, date(2026, 3, 1), date(2026, 3, 1), changes, [], plans)
        assert before_only.billable_overage == 0
        cumulative = [Plan(at_ms=UTC_PLAN.at_ms, licenses=2, grace_minutes=30, grace_mode="cumulative")]
        assert known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), changes, [], cumulative).billable_overage == 0

    def test_25h_and_23h_days(self) -> None:
        berlin = Plan(at_ms=ms("2026-01-01T00:00:00Z"), licenses=0, timezone="Europe/Berlin", grace_minutes=0)
        changes = [change(ms("2026-03-20T00:00:00Z"), 1)]  # one user, counted from then on
        report = known_report(ACCOUNT, date(2026, 10, 24), date(2026, 10, 25), changes, [], [berlin])
        assert report.timezone == "Europe/Berlin"
        assert [d.license_hours for d in report.days] == [24.0, 25.0]
        assert [d.seconds_over_licenses for d in report.days] == [86_400.0, 90_000.0]
        assert [d.peak_at for d in report.days] == ["2026-10-23T22:00:00.000Z", "2026-10-24T22:00:00.000Z"]
        assert report.license_hours == 49.0
        assert report.peak_at == "2026-10-23T22:00:00.000Z"
        assert report.billable_overage == 1
        short = known_report(ACCOUNT, date(2026, 3, 29), date(2026, 3, 29), changes, [], [berlin])
        assert short.days[0].license_hours == 23.0
        assert short.days[0].peak_at == "2026-03-28T23:00:00.000Z"

    def test_distinct_users(self) -> None:
        m0, m1, m2 = ms("2026-03-02T00:00:00Z"), ms("2026-03-03T00:00:00Z"), ms("2026-03-04T00:00:00Z")
        intervals = [
            interval("u1", m0 + 9 * HOUR, m0 + 10 * HOUR),
            interval("u2", m1 - HOUR, m1 + HOUR),  # both days
            interval("u1", m1 + 9 * HOUR, m1 + 10 * HOUR),
            interval("u3", m0 - HOUR, m0),  # ends at the period start: not inside
            interval("u4", m2, m2 + HOUR),  # starts at the period end: not inside
            interval("u5", m0 - 1000, m0 + 1),  # 1 ms inside
            interval("u6", m1 - HOUR, m1),  # ends exactly at day 2's start: day 1 only
        ]
        report = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 3), [], intervals, [UTC_PLAN])
        assert report.distinct_users == 4  # u1, u2, u5, u6
        assert [d.distinct_users for d in report.days] == [4, 2]

    def test_peak_at_first_instant_and_none_at_zero(self) -> None:
        changes = [
            change(ms("2026-03-02T09:00:00Z"), 3),
            change(ms("2026-03-02T10:00:00Z"), 1),
            change(ms("2026-03-02T11:00:00Z"), 3),
            change(ms("2026-03-03T11:00:00Z"), 2),
        ]
        report = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 3), changes, [], [UTC_PLAN])
        assert (report.peak_usage, report.peak_at) == (3, "2026-03-02T09:00:00.000Z")
        assert report.days[1].peak_at == "2026-03-03T00:00:00.000Z"  # 3 already held at the day's start
        empty = known_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 3), [], [], [])
        assert (empty.peak_usage, empty.peak_at, empty.billable_overage, empty.timezone) == (0, None, 0, "UTC")
        assert (empty.licenses, empty.license_hours, empty.distinct_users) == (0, 0.0, 0)
        assert all(d.peak_at is None for d in empty.days)

    def test_report_timezone_sets_the_day_boundaries(self) -> None:
        plans = [
            Plan(at_ms=0, licenses=0, timezone="America/New_York"),
            Plan(at_ms=ms("2026-03-10T00:00:00Z"), licenses=0, timezone="Asia/Tokyo"),  # after the report
        ]
        changes = [change(ms("2026-03-08T03:00:00Z"), 1), change(ms("2026-03-08T06:00:00Z"), 0)]
        report = known_report(ACCOUNT, date(2026, 3, 7), date(2026, 3, 8), changes, [], plans)
        assert report.timezone == "America/New_York"
        # 03:00-05:00Z is 03-07 22:00-24:00 EST, 05:00-06:00Z is 03-08 00:00-01:00 EST
        assert [d.license_hours for d in report.days] == [2.0, 1.0]
        assert [d.peak_at for d in report.days] == ["2026-03-08T03:00:00.000Z", "2026-03-08T05:00:00.000Z"]

    def test_to_before_from(self) -> None:
        with pytest.raises(ValueError):
            build_report(ACCOUNT, date(2026, 3, 2), date(2026, 3, 1), [], [], [], data_through_ms=None)

    def test_days_add_up_to_the_summary(self) -> None:
        changes = [change(ms("2026-03-01T00:00:00Z") + k * 7 * MIN, (k * 5) % 9) for k in range(2000)]
        plans = [Plan(at_ms=0, licenses=4, timezone="Europe/Berlin")]
        report = known_report(ACCOUNT, date(2026, 3, 1), date(2026, 3, 14), changes, [], plans)
        assert len(report.days) == 14
        assert sum(d.license_hours for d in report.days) == pytest.approx(report.license_hours)
        assert sum(d.seconds_over_licenses for d in report.days) == pytest.approx(report.seconds_over_licenses)
        assert max(d.peak_usage for d in report.days) == report.peak_usage == 8

    def test_a_month_of_100k_changes(self) -> None:
        start = local_midnight_ms(date(2026, 3, 1), "Europe/Berlin")
        changes = [change(start + k * 26_000, (k * 7919) % 40) for k in range(100_000)]
        intervals = [interval(f"u{k % 500}", start + k * 26_000, start + k * 26_000 + 600_000) for k in range(20_000)]
        plans = [
            Plan(at_ms=0, licenses=30, timezone="Europe/Berlin", grace_mode="cumulative"),
            Plan(at_ms=start + 10 * 86_400_000, licenses=25, timezone="Europe/Berlin"),
        ]
        report = known_report(ACCOUNT, date(2026, 3, 1), date(2026, 3, 31), changes, intervals, plans)
        assert len(report.days) == 31
        assert report.days[28].license_hours > 0  # 2026-03-29 (23 h) is covered


def presence(user: str, kind: str, start: int, end: int, device: str | None = None) -> PresenceInterval:
    return PresenceInterval(ACCOUNT, user, kind, device, start, end)  # type: ignore[arg-type]


class TestDataThrough:
    """Nothing at or after data_through is counted; days and periods say whether they are complete (SPEC 4)."""

    M2 = ms("2026-03-02T00:00:00Z")
    PLAN = Plan(at_ms=ms("2026-01-01T00:00:00Z"), licenses=1, grace_minutes=10)

    def _changes(self) -> list[UsageChange]:
        # usage 1 from 09:00, 3 from 10:00 to 10:30, back to 1; 3 again from 14:30 to 16:00 (excess 2 for 90 min)
        m = self.M2
        return [
            change(m + 9 * HOUR, 1),
            change(m + 10 * HOUR, 3),
            change(m + 10 * HOUR + 30 * MIN, 1),
            change(m + 14 * HOUR + 30 * MIN, 3),
            change(m + 16 * HOUR, 0),
        ]

    def _intervals(self) -> list[UserInterval]:
        m = self.M2
        return [
            interval("u1", m + 9 * HOUR, m + 16 * HOUR),
            interval("u2", m + 10 * HOUR, m + 10 * HOUR + 30 * MIN),
            interval("u3", m + 10 * HOUR, m + 10 * HOUR + 30 * MIN),
            interval("u4", m + 14 * HOUR + 30 * MIN, m + 16 * HOUR),
            interval("u5", m + 14 * HOUR + 30 * MIN, m + 16 * HOUR),
        ]

    def _report(self, start: date, end: date, data_through_ms: int | None) -> Report:
        return build_report(
            ACCOUNT, start, end, self._changes(), self._intervals(), [self.PLAN], data_through_ms=data_through_ms
        )

    def test_a_period_running_past_data_through_counts_nothing_after_it(self) -> None:
        cut = self.M2 + 14 * HOUR + 35 * MIN  # 5 minutes into the second excess
        report = self._report(date(2026, 3, 2), date(2026, 3, 4), cut)
        assert (report.data_through, report.complete) == ("2026-03-02T14:35:00.000Z", False)
        # 1 user 09:00-10:00, 3 for 30 min, 1 for 4 h, 3 for 5 min: 60 + 90 + 240 + 15 = 405 user-minutes
        assert report.license_hours == 405 * MIN / HOUR
        assert report.seconds_over_licenses == 35 * 60.0
        assert report.distinct_users == 5
        # excess 2 for 30 min then 5 min before the cut: 2 (the 90 min after the cut would not change it)
        assert report.billable_overage == 2
        partial, after, last = report.days
        assert (partial.complete, partial.license_hours, partial.max_excess) == (False, report.license_hours, 2)
        for day in (after, last):
            assert (day.peak_usage, day.peak_at, day.license_hours, day.seconds_over_licenses) == (None,) * 4
            assert (day.max_excess, day.distinct_users, day.complete) == (None, None, False)
            assert (day.licenses, day.overage_allowance) == (1, 0)  # plan terms are known: not null

    def test_billable_overage_only_on_excess_before_data_through(self) -> None:
        plans = [Plan(at_ms=self.PLAN.at_ms, licenses=1, grace_minutes=45)]
        cut = self.M2 + 14 * HOUR + 35 * MIN
        args = (ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), self._changes(), self._intervals(), plans)
        assert build_report(*args, data_through_ms=cut).billable_overage == 0  # excess 2 for 5 of 90 minutes
        assert build_report(*args, data_through_ms=KNOWN).billable_overage == 2

    def test_data_through_exactly_at_a_day_boundary(self) -> None:
        report = self._report(date(2026, 3, 1), date(2026, 3, 3), self.M2 + 86_400_000)
        first, second, third = report.days
        assert (first.complete, second.complete, third.complete, report.complete) == (True, True, False, False)
        assert (first.peak_usage, first.peak_at, second.peak_usage, third.peak_usage) == (0, None, 3, None)
        assert report.license_hours == second.license_hours == 11.0  # 60 + 90 + 240 + 3 * 90 = 660 user-minutes
        only = self._report(date(2026, 3, 2), date(2026, 3, 2), self.M2 + 86_400_000)
        assert only.complete and only.days[0].complete

    def test_a_period_entirely_before_data_through_is_complete(self) -> None:
        assert self._report(date(2026, 3, 2), date(2026, 3, 2), KNOWN) == known_report(
            ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), self._changes(), self._intervals(), [self.PLAN]
        )
        report = self._report(date(2026, 3, 2), date(2026, 3, 2), KNOWN)
        assert report.complete and report.days[0].complete and report.data_through == "2027-01-01T00:00:00.000Z"

    def test_a_period_entirely_after_data_through_and_no_data_at_all(self) -> None:
        for data_through in (self.M2 - HOUR, None):
            report = self._report(date(2026, 3, 2), date(2026, 3, 3), data_through)
            assert (report.peak_usage, report.peak_at, report.peak_users, report.billable_overage) == (0, None, [], 0)
            assert (report.license_hours, report.seconds_over_licenses, report.distinct_users) == (0.0, 0.0, 0)
            assert not report.complete
            assert all(d.peak_usage is None and d.distinct_users is None and not d.complete for d in report.days)
        assert self._report(date(2026, 3, 2), date(2026, 3, 2), None).data_through is None

    def test_a_day_cut_at_its_start_plus_one_ms_is_known(self) -> None:
        report = self._report(date(2026, 3, 2), date(2026, 3, 2), self.M2 + 1)
        day = report.days[0]
        assert (day.peak_usage, day.peak_at, day.license_hours, day.distinct_users) == (0, None, 0.0, 0)

    def test_unrepresentable_data_through_is_a_clear_error(self) -> None:
        with pytest.raises(ValueError, match="data_through_ms"):
            self._report(date(2026, 3, 2), date(2026, 3, 2), NEVER)

    def test_known_end(self) -> None:
        assert known_end_ms(10, 20, None) == 10
        assert known_end_ms(10, 20, 5) == 10
        assert known_end_ms(10, 20, 15) == 15
        assert known_end_ms(10, 20, 25) == 20


class TestPeakUsers:
    """The users counted at peak_at, with the presences active at that instant (SPEC 4)."""

    M2 = ms("2026-03-02T00:00:00Z")

    def test_a_user_on_two_devices_and_the_portal_and_ties_at_the_peak_instant(self) -> None:
        m = self.M2
        at = m + 10 * HOUR
        intervals = [interval("u2", at, at + HOUR), interval("u1", m + 9 * HOUR, m + 12 * HOUR),
                     interval("u3", at, at + 5 * MIN)]  # fmt: skip
        presences = [
            presence("u1", "desktop", m + 9 * HOUR, m + 12 * HOUR, "laptop-1"),
            presence("u1", "desktop", m + 9 * HOUR + 30 * MIN, at, "phone-1"),  # ended at the peak: half-open
            presence("u1", "desktop", at, m + 11 * HOUR, "desk-9"),
            presence("u1", "portal", m + 9 * HOUR + 45 * MIN, NEVER),  # still open
            presence("u2", "api", at, at + HOUR),
            presence("u3", "portal", at, at + 5 * MIN),
            presence("u3", "api", at - HOUR, at),  # ended at the peak
        ]
        changes = [change(m + 9 * HOUR, 1), change(at, 3), change(at + 5 * MIN, 2), change(m + 11 * HOUR, 3),
                   change(m + 12 * HOUR, 0)]  # fmt: skip
        report = build_report(
            ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), changes, intervals, [UTC_PLAN],
            presences=presences, data_through_ms=KNOWN,
        )  # fmt: skip
        assert (report.peak_usage, report.peak_at) == (3, "2026-03-02T10:00:00.000Z")  # the first of two peaks
        assert report.peak_users == [
            PeakUser(user_id="u1", devices=["desk-9", "laptop-1"], portal=True, api=False),
            PeakUser(user_id="u2", devices=[], portal=False, api=True),
            PeakUser(user_id="u3", devices=[], portal=True, api=False),
        ]
        assert report.to_json_dict()["peak_users"][0] == {
            "user_id": "u1", "devices": ["desk-9", "laptop-1"], "portal": True, "api": False
        }  # fmt: skip

    def test_a_closed_copy_supersedes_the_open_one(self) -> None:
        m = self.M2
        presences = [
            presence("u1", "desktop", m, NEVER, "laptop-1"),  # as it opened
            presence("u1", "desktop", m, m + HOUR, "laptop-1"),  # closed at 01:00
            presence("u1", "api", m + 2 * HOUR, m + 3 * HOUR),
        ]
        changes = [change(m, 1), change(m + HOUR, 0), change(m + 2 * HOUR, 1), change(m + 3 * HOUR, 0)]
        intervals = [interval("u1", m, m + HOUR), interval("u1", m + 2 * HOUR, m + 3 * HOUR)]
        report = build_report(
            ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), changes, intervals, [UTC_PLAN],
            presences=presences, data_through_ms=m + 2 * HOUR + MIN,
        )  # fmt: skip
        assert report.peak_at == "2026-03-02T00:00:00.000Z"
        assert report.peak_users == [PeakUser(user_id="u1", devices=["laptop-1"], portal=False, api=False)]
        later = build_report(
            ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), changes[2:], intervals[1:], [UTC_PLAN],
            presences=presences, data_through_ms=KNOWN,
        )  # fmt: skip
        assert later.peak_users == [PeakUser(user_id="u1", devices=[], portal=False, api=True)]

    def test_peak_zero_has_no_peak_at_and_no_peak_users(self) -> None:
        presences = [presence("u1", "api", self.M2 - HOUR, self.M2)]  # before the period
        report = build_report(
            ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), [change(self.M2 - HOUR, 1), change(self.M2, 0)],
            [interval("u1", self.M2 - HOUR, self.M2)], [UTC_PLAN], presences=presences, data_through_ms=KNOWN,
        )  # fmt: skip
        assert (report.peak_usage, report.peak_at, report.peak_users) == (0, None, [])

    def test_without_presences_the_counted_users_are_listed_bare(self) -> None:
        report = known_report(
            ACCOUNT, date(2026, 3, 2), date(2026, 3, 2), [change(self.M2, 1)], [interval("u1", self.M2, NEVER)],
            [UTC_PLAN],
        )  # fmt: skip
        assert report.peak_users == [PeakUser(user_id="u1", devices=[], portal=False, api=False)]
