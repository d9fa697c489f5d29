"""Hand-worked presence, liveness, union, usage-change, duplicate and plan scenarios (docs/semantics.md 1-4)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from processor.batch.engine import BatchEngine
from processor.core.model import Plan, Settings, UsageChange

from .helpers import (
    ACCOUNT,
    HOUR,
    MINUTE,
    SECOND,
    T0,
    changes,
    dev,
    ev,
    intervals,
    load,
    plan,
    session,
    write_jsonl,
)


def test_desktop_session_counts_from_start_to_end(tmp_path: Path) -> None:
    events = [
        dev("desktop.signed_in", T0),
        dev("work_session.started", T0 + 10 * SECOND),
        *[dev("desktop.heartbeat", T0 + k * MINUTE) for k in range(1, 11)],
        dev("work_session.ended", T0 + 620 * SECOND),
    ]
    engine = load(tmp_path, events)
    assert intervals(engine) == [("u1", 10_000, 620_000)]
    assert changes(engine) == [(10_000, 1), (620_000, 0)]
    assert engine.usage_changes()[0] == UsageChange(ACCOUNT, T0 + 10_000, 1, 0)


def test_session_needs_a_signed_in_device(tmp_path: Path) -> None:
    # started before any sign-in: orphan; after a sign-out: orphan; after signing in again: counts
    events = [
        dev("work_session.started", T0),
        dev("desktop.signed_in", T0 + MINUTE),
        dev("desktop.signed_out", T0 + 2 * MINUTE),
        dev("work_session.started", T0 + 2 * MINUTE + 1),
        dev("desktop.signed_in", T0 + 3 * MINUTE),
        dev("work_session.started", T0 + 3 * MINUTE + 500),
        dev("desktop.signed_out", T0 + 4 * MINUTE),
    ]
    engine = load(tmp_path, events)
    assert intervals(engine) == [("u1", 180_500, 240_000)]


def test_sign_out_ends_the_session_and_a_second_start_is_no_change(tmp_path: Path) -> None:
    events = [
        dev("desktop.signed_in", T0),
        dev("work_session.started", T0),
        dev("work_session.started", T0 + MINUTE),  # already on: the session keeps its start
        dev("desktop.signed_out", T0 + 2 * MINUTE),
        dev("work_session.ended", T0 + 2 * MINUTE + 1),  # orphan
    ]
    assert intervals(load(tmp_path, events)) == [("u1", 0, 120_000)]


def test_heartbeat_at_exactly_last_seen_plus_timeout_does_not_save_the_device(tmp_path: Path) -> None:
    events = [
        dev("desktop.signed_in", T0),
        dev("work_session.started", T0),
        dev("desktop.heartbeat", T0 + 60 * SECOND),
        dev("desktop.heartbeat", T0 + 240 * SECOND),  # = 60 s + 180 s: the liveness timer fires first
        dev("desktop.heartbeat", T0 + 300 * SECOND),  # still signed out: no effect
        dev("work_session.started", T0 + 310 * SECOND),  # orphan: the device was signed out by the timer
    ]
    engine = load(tmp_path, events)
    assert intervals(engine) == [("u1", 0, 240_000)]
    assert changes(engine) == [(0, 1), (240_000, 0)]


def test_heartbeat_one_ms_before_expiry_saves_the_device(tmp_path: Path) -> None:
    events = [
        dev("desktop.signed_in", T0),
        dev("work_session.started", T0),
        dev("desktop.heartbeat", T0 + 60 * SECOND),
        dev("desktop.heartbeat", T0 + 240 * SECOND - 1),
    ]
    # last seen 239.999 s: the device expires at 239.999 s + 180 s
    assert intervals(load(tmp_path, events)) == [("u1", 0, 419_999)]


def test_liveness_counts_any_event_of_the_device_and_a_new_sign_in_restores_it(tmp_path: Path) -> None:
    events = [
        dev("desktop.signed_in", T0),
        dev("work_session.started", T0),
        dev("desktop.signed_in", T0 + 170 * SECOND),  # already signed in: refreshes last_seen only
        # expires at 350 s; then signs in again and starts a new session at 400 s
        dev("desktop.signed_in", T0 + 400 * SECOND),
        dev("work_session.started", T0 + 400 * SECOND),
        dev("work_session.ended", T0 + 450 * SECOND),
    ]
    assert intervals(load(tmp_path, events)) == [("u1", 0, 350_000), ("u1", 400_000, 450_000)]


def test_same_instant_events_apply_in_arrival_order(tmp_path: Path) -> None:
    # ended then started at one instant: the session restarts (touching intervals merge into one)
    restart = [
        *session("u1", "d1", T0, T0 + 5 * MINUTE)[:-1],
        dev("work_session.ended", T0 + 5 * MINUTE),
        dev("work_session.started", T0 + 5 * MINUTE),
        dev("work_session.ended", T0 + 6 * MINUTE),
    ]
    assert intervals(load(tmp_path, restart)) == [("u1", 0, 360_000)]
    # started then ended at one instant after a sign-in: a zero-length session counts nothing
    blink = [dev("desktop.signed_in", T0), dev("work_session.started", T0 + 1), dev("work_session.ended", T0 + 1)]
    (tmp_path / "b").mkdir()
    assert intervals(load(tmp_path / "b", blink)) == []


def test_sign_out_and_sign_in_at_the_same_ms_make_no_spike_and_no_dip(tmp_path: Path) -> None:
    handover = T0 + 10 * MINUTE
    events = [
        *session("u1", "d1", T0, handover),  # u1 leaves at the handover ...
        dev("desktop.signed_in", handover - 5 * SECOND, "u2", "d2"),
        dev("work_session.started", handover, "u2", "d2"),  # ... u2 starts at the same ms
        dev("work_session.ended", handover + 2 * MINUTE, "u2", "d2"),
        # the same user moving between devices at one instant stays one counted interval
        *session("u3", "d3", T0 + HOUR, T0 + HOUR + 3 * MINUTE),
        *session("u3", "d4", T0 + HOUR + 3 * MINUTE, T0 + HOUR + 5 * MINUTE),
    ]
    engine = load(tmp_path, events)
    assert changes(engine) == [(0, 1), (720_000, 0), (3_600_000, 1), (3_900_000, 0)]
    assert intervals(engine) == [
        ("u1", 0, 600_000),
        ("u2", 600_000, 720_000),
        ("u3", 3_600_000, 3_900_000),
    ]


def test_two_devices_of_one_user_count_once(tmp_path: Path) -> None:
    events = [
        *session("u1", "d1", T0, T0 + 10 * MINUTE),
        *session("u1", "d2", T0 + 5 * MINUTE, T0 + 15 * MINUTE),
        *session("u2", "d1", T0 + 2 * MINUTE, T0 + 4 * MINUTE),  # device ids are scoped to their user
    ]
    engine = load(tmp_path, events)
    assert changes(engine) == [(0, 1), (120_000, 2), (240_000, 1), (900_000, 0)]


def test_portal_presence_rules(tmp_path: Path) -> None:
    page = "portal.page_viewed"
    events = [
        # u1: CC views at 0 and 10 min; idle timer at 25 min; a later non-CC view changes nothing
        ev(page, T0, user_id="u1", page="cc.inbox"),
        ev(page, T0 + 10 * MINUTE, user_id="u1", page="reports.contact_center"),
        ev(page, T0 + 30 * MINUTE, user_id="u1", page="meetings.list"),
        # u2: a non-CC view ends the presence; a sign-out while off is an orphan
        ev(page, T0, user_id="u2", page="cc.dashboard"),
        ev(page, T0 + 5 * MINUTE, user_id="u2", page="settings.profile"),
        ev("portal.signed_out", T0 + 6 * MINUTE, user_id="u2"),
        # u3: a CC view at exactly last view + 15 min comes after the idle timer: end and restart touch
        ev(page, T0 + HOUR, user_id="u3", page="cc.admin"),
        ev(page, T0 + HOUR + 15 * MINUTE, user_id="u3", page="activity_reports.sign_in_out"),
        ev("portal.signed_out", T0 + HOUR + 20 * MINUTE, user_id="u3"),
    ]
    engine = load(tmp_path, events)
    assert intervals(engine) == [
        ("u1", 0, 1_500_000),
        ("u2", 0, 300_000),
        ("u3", 3_600_000, 4_800_000),
    ]
    assert changes(engine) == [(0, 2), (300_000, 1), (1_500_000, 0), (3_600_000, 1), (4_800_000, 0)]


def test_api_activity_window(tmp_path: Path) -> None:
    events = [
        ev("api.request", T0, user_id="u1"),
        ev("api.request", T0 + 4 * MINUTE, user_id="u1", endpoint="/v1/x"),
        ev("api.request", T0 + 9 * MINUTE, user_id="u1"),  # = 4 + 5 min: the window closed and reopens
        ev("api.request", T0 + 20 * MINUTE, user_id="u1"),
    ]
    assert intervals(load(tmp_path, events)) == [("u1", 0, 840_000), ("u1", 1_200_000, 1_500_000)]


def test_union_of_presences_per_user(tmp_path: Path) -> None:
    events = [
        *session("u1", "d1", T0, T0 + 10 * MINUTE),
        ev("api.request", T0 + 7 * MINUTE, user_id="u1"),  # [7, 12) min overlaps the session
        ev("portal.page_viewed", T0 + 12 * MINUTE, user_id="u1", page="cc.profile"),  # touches at 12 min
        ev("portal.signed_out", T0 + 13 * MINUTE, user_id="u1"),
    ]
    engine = load(tmp_path, events)
    assert intervals(engine) == [("u1", 0, 780_000)]
    assert changes(engine) == [(0, 1), (780_000, 0)]


def test_custom_settings(tmp_path: Path) -> None:
    settings = Settings(device_timeout_ms=30_000, portal_idle_timeout_ms=60_000, api_activity_window_ms=10_000)
    events = [
        dev("desktop.signed_in", T0),
        dev("work_session.started", T0),
        dev("desktop.heartbeat", T0 + 20_000),
        ev("api.request", T0 + HOUR, user_id="u2"),
        ev("portal.page_viewed", T0 + 2 * HOUR, user_id="u3", page="cc.alerts"),
    ]
    engine = load(tmp_path, events, settings)
    assert intervals(engine) == [
        ("u1", 0, 50_000),
        ("u2", 3_600_000, 3_610_000),
        ("u3", 7_200_000, 7_260_000),
    ]
    with pytest.raises(ValueError):
        BatchEngine(Settings(device_timeout_ms=0))


def test_duplicates_first_arrival_wins(tmp_path: Path) -> None:
    signed_in = dev("desktop.signed_in", T0, event_id="in")
    started = dev("work_session.started", T0, event_id="start")
    ended = dev("work_session.ended", T0 + 150 * SECOND, event_id="end")
    events = [
        signed_in,
        started,
        ended,
        started,  # exact copy: duplicate
        {**ended, "occurred_at": "2026-11-02T00:01:00.000Z"},  # same id, other payload: conflict, ignored
        {**ended, "schema_version": 2},  # schema_version is not part of the payload: duplicate
        {**ended, "occurred_at": "2026-11-02T01:02:30+01:00"},  # the same instant written otherwise
        {**ended, "account_id": "other"},  # another account: a different event
    ]
    engine = BatchEngine()
    stats = engine.load(write_jsonl(tmp_path / "d.jsonl", events))
    assert (stats.rows, stats.valid, stats.rejected) == (8, 8, 0)
    assert (stats.duplicates, stats.duplicate_conflicts) == (3, 1)
    assert intervals(engine) == [("u1", 0, 150_000)]
    assert engine.accounts() == ["acct", "other"]
    # loading a second file: its copies of known ids are duplicates too
    again = engine.load(write_jsonl(tmp_path / "e.jsonl", [ended, {**started, "user_id": "u9"}]))
    assert (again.rows, again.duplicates, again.duplicate_conflicts) == (2, 1, 1)
    assert intervals(engine) == [("u1", 0, 150_000)]


def test_plans_and_licenses_of_usage_changes(tmp_path: Path) -> None:
    events = [
        plan(T0 - HOUR, licenses=5, overage=2, zone="Europe/Berlin", grace=15, mode="cumulative"),
        *session("u1", "d1", T0, T0 + 2 * HOUR),
        plan(T0 + HOUR, licenses=7),
        plan(T0 + HOUR, licenses=8),  # same instant, later arrival: wins
        ev("api.request", T0 + HOUR, user_id="u2"),
        ev(
            "account.plan_changed",
            T0 + 90 * MINUTE,
            licenses=-1,
            overage_allowance=0,
            billing_anchor_day=1,
            timezone="UTC",
        ),  # invalid: ignored
    ]
    engine = load(tmp_path, events)
    assert engine.plans(ACCOUNT) == [
        Plan(T0 - HOUR, 5, 2, 1, "Europe/Berlin", 15, "cumulative"),
        Plan(T0 + HOUR, 7, 0, 1, "UTC", 30, "contiguous"),
        Plan(T0 + HOUR, 8, 0, 1, "UTC", 30, "contiguous"),
    ]
    assert engine.plans("nobody") == []
    assert [(c.at_ms - T0, c.usage, c.licenses) for c in engine.usage_changes(ACCOUNT)] == [
        (0, 1, 5),
        (HOUR, 2, 8),
        (HOUR + 5 * MINUTE, 1, 8),
        (2 * HOUR, 0, 8),
    ]
    assert engine.rejected() == [(len(events) - 1, "invalid_field:licenses")]


def test_change_ids_and_filters(tmp_path: Path) -> None:
    events = [ev("api.request", T0, user_id="u1"), ev("api.request", T0, account="b", user_id="u1")]
    engine = load(tmp_path, events)
    assert [c.account_id for c in engine.usage_changes()] == ["acct", "acct", "b", "b"]
    assert [c.at_ms for c in engine.usage_changes("b")] == [T0, T0 + 5 * MINUTE]
    first = engine.usage_changes("b")[0]
    assert first.change_id == hashlib.sha256(f"b|{T0}|1".encode()).hexdigest()[:16]
    assert engine.user_intervals("b")[0].account_id == "b"
