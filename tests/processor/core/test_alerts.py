"""Alert rules (processor/core/alerts.py): thresholds, grace deadlines, ids, incremental == one-shot."""

from __future__ import annotations

from fractions import Fraction

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.alerts import AlertTracker, alert_id, alerts_for, parse_share
from processor.core.model import Plan, UsageChange

A = "acct"
MIN = 60_000


def usage(*steps: tuple[int, int]) -> list[UsageChange]:
    return [UsageChange(A, at, value, 0) for at, value in steps]


def plan(at: int, licenses: int, allowance: int = 0, grace: int = 30) -> Plan:
    return Plan(at_ms=at, licenses=licenses, overage_allowance=allowance, grace_minutes=grace)


def summary(alerts) -> list[tuple[str, str, int]]:
    return [(a.kind, a.state, a.at_ms) for a in alerts]


def test_near_capacity_raises_at_share_and_resolves_with_the_same_id():
    alerts = alerts_for(A, usage((10, 8), (20, 9), (30, 8)), [plan(0, 10, grace=0)])
    assert summary(alerts) == [("near_capacity", "raised", 20), ("near_capacity", "resolved", 30)]
    assert alerts[0].alert_id == alerts[1].alert_id == alert_id(A, "near_capacity", 20)
    assert alerts[0].to_record().at == "1970-01-01T00:00:00.020Z"


def test_share_is_exact():
    # 0.9 * 10 is 9.000000000000002 in floating point; 9 users must still reach 90 % of 10 licenses.
    assert summary(alerts_for(A, usage((5, 9)), [plan(0, 10)], share=parse_share("0.9")))[0][:2] == (
        "near_capacity",
        "raised",
    )
    assert parse_share("75%") == Fraction(3, 4)
    with pytest.raises(ValueError):
        parse_share("1.5")
    with pytest.raises(ValueError):
        parse_share("abc")


def test_levels_nest_and_resolve_before_raising():
    alerts = alerts_for(A, usage((10, 2), (20, 4), (30, 1)), [plan(0, 2, allowance=1, grace=60)])
    assert summary(alerts) == [
        ("near_capacity", "raised", 10),
        ("over_licenses", "raised", 20),
        ("over_allowance", "raised", 20),
        ("near_capacity", "resolved", 30),
        ("over_licenses", "resolved", 30),
        ("over_allowance", "resolved", 30),
    ]


def test_no_plan_means_zero_licenses():
    alerts = alerts_for(A, usage((10, 1), (20, 0)), [])
    assert summary(alerts) == [
        ("over_licenses", "raised", 10),
        ("over_allowance", "raised", 10),
        ("over_licenses", "resolved", 20),
        ("over_allowance", "resolved", 20),
    ]
    # default grace (30 min) not reached, and near_capacity needs licenses > 0


def test_grace_exactly_reached_raises_then_resolves_at_the_same_instant():
    alerts = alerts_for(A, usage((0, 3), (5 * MIN, 1)), [plan(0, 2, allowance=5, grace=5)])
    assert summary(alerts) == [
        ("near_capacity", "raised", 0),
        ("over_licenses", "raised", 0),
        ("over_grace", "raised", 5 * MIN),
        ("near_capacity", "resolved", 5 * MIN),
        ("over_licenses", "resolved", 5 * MIN),
        ("over_grace", "resolved", 5 * MIN),
    ]


def test_grace_not_reached_when_the_stretch_breaks():
    changes = usage((0, 3), (5 * MIN - 1, 2), (5 * MIN, 3))
    kinds = {a.kind for a in alerts_for(A, changes, [plan(0, 2, allowance=5, grace=5)], horizon=9 * MIN)}
    assert "over_grace" not in kinds


def test_grace_deadline_waits_for_the_horizon():
    tracker = AlertTracker()
    first = tracker.advance(A, usage((0, 3)), [plan(0, 2, allowance=5, grace=5)], horizon=5 * MIN)
    assert "over_grace" not in {a.kind for a in first}
    assert summary(tracker.advance(A, [], [], horizon=5 * MIN + 1)) == [("over_grace", "raised", 5 * MIN)]
    assert tracker.advance(A, [], [], horizon=10 * MIN) == []


def test_zero_grace_raises_immediately():
    alerts = alerts_for(A, usage((7, 3)), [plan(0, 2, allowance=5, grace=0)])
    assert ("over_grace", "raised", 7) in summary(alerts)


def test_plan_change_alone_raises_and_moves_the_deadline():
    changes = usage((0, 3))
    plans = [plan(0, 5, grace=30), plan(MIN, 2, allowance=9, grace=30), plan(2 * MIN, 2, allowance=9, grace=0)]
    assert summary(alerts_for(A, changes, plans, horizon=3 * MIN)) == [
        ("near_capacity", "raised", MIN),
        ("over_licenses", "raised", MIN),
        ("over_grace", "raised", 2 * MIN),
    ]


def test_state_round_trips_through_msgpack():
    tracker = AlertTracker()
    tracker.advance(A, usage((0, 3)), [plan(0, 2, grace=5)], horizon=MIN)
    again = AlertTracker.from_state(msgpack.unpackb(msgpack.packb(tracker.to_state()), strict_map_key=False))
    assert again == tracker
    assert AlertTracker.from_state(None) == AlertTracker()


steps = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6)), max_size=25)
plan_steps = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 4), st.integers(0, 2), st.sampled_from((0, 1, 3))), max_size=5
)


@settings(max_examples=200, deadline=None)
@given(steps, plan_steps, st.lists(st.integers(0, 45), max_size=4))
def test_incremental_equals_one_shot_and_pairs_match(raw_usage, raw_plans, cuts):
    changes = sorted((UsageChange(A, at * MIN // 4, value, 0) for at, value in raw_usage), key=lambda c: c.at_ms)
    plans = sorted(
        (Plan(at_ms=t * MIN // 4, licenses=lic, overage_allowance=al, grace_minutes=g) for t, lic, al, g in raw_plans),
        key=lambda p: p.at_ms,
    )
    final = 50 * MIN
    whole = alerts_for(A, changes, plans, horizon=final)
    # Simple, explicit split: feed items in windows [low, horizon).
    tracker = AlertTracker()
    pieces = []
    low = -1
    for horizon in [*sorted({c * MIN // 4 for c in cuts}), final]:
        pieces += tracker.advance(
            A,
            [c for c in changes if low <= c.at_ms < horizon],
            [p for p in plans if low <= p.at_ms < horizon],
            horizon,
        )
        low = max(low, horizon)
    assert pieces == whole
    open_ids: dict[str, str] = {}
    for alert in whole:
        if alert.state == "raised":
            assert alert.kind not in open_ids
            open_ids[alert.kind] = alert.alert_id
        else:
            assert open_ids.pop(alert.kind) == alert.alert_id
