"""The SQL engine's own interface around the counting rules: refused settings, load statistics over several files,
an invalid plan, per-account filters. The rules themselves (docs/semantics.md sections 1-4: presences, liveness,
unions, same-instant events, copies, plans, usage changes) are the contract scenarios of
tests/contract/test_scenarios.py, run against the fold, the worker's partition driver and this engine alike."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from processor.batch.engine import BatchEngine
from processor.core.model import Plan, Settings

from .helpers import ACCOUNT, HOUR, MINUTE, SECOND, T0, dev, ev, intervals, load, plan, session, write_jsonl


def test_timeouts_must_be_positive() -> None:
    for name in ("device_timeout_ms", "portal_idle_timeout_ms", "api_activity_window_ms"):
        with pytest.raises(ValueError, match=name):
            BatchEngine(Settings(**{name: 0}))  # type: ignore[arg-type]


def test_load_statistics_count_copies_within_and_across_files(tmp_path: Path) -> None:
    started = dev("work_session.started", T0, event_id="start")
    ended = dev("work_session.ended", T0 + 150 * SECOND, event_id="end")
    events = [
        dev("desktop.signed_in", T0, event_id="in"),
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
    assert engine.accounts() == ["acct", "other"]
    # loading a second file: its copies of known ids are duplicates too
    again = engine.load(write_jsonl(tmp_path / "e.jsonl", [ended, {**started, "user_id": "u9"}]))
    assert (again.rows, again.duplicates, again.duplicate_conflicts) == (2, 1, 1)
    assert intervals(engine) == [("u1", 0, 150_000)]


def test_an_invalid_plan_is_rejected_and_ignored(tmp_path: Path) -> None:
    events = [
        plan(T0 - HOUR, licenses=5, overage=2, zone="Europe/Berlin", grace=15, mode="cumulative"),
        *session("u1", "d1", T0, T0 + 2 * HOUR),
        ev(
            "account.plan_changed",
            T0 + 90 * MINUTE,
            licenses=-1,
            overage_allowance=0,
            billing_anchor_day=1,
            timezone="UTC",
        ),  # fmt: skip
    ]
    engine = load(tmp_path, events)
    assert engine.plans(ACCOUNT) == [Plan(T0 - HOUR, 5, 2, 1, "Europe/Berlin", 15, "cumulative")]
    assert engine.plans("nobody") == []
    assert engine.rejected() == [(len(events) - 1, "invalid_field:licenses")]
    assert [c.licenses for c in engine.usage_changes(ACCOUNT)] == [5, 5]


def test_queries_filter_by_account(tmp_path: Path) -> None:
    engine = load(tmp_path, [ev("api.request", T0, user_id="u1"), ev("api.request", T0, account="b", user_id="u1")])
    assert [c.account_id for c in engine.usage_changes()] == ["acct", "acct", "b", "b"]
    assert [c.at_ms for c in engine.usage_changes("b")] == [T0, T0 + 5 * MINUTE]
    first = engine.usage_changes("b")[0]
    assert first.change_id == hashlib.sha256(f"b|{T0}|1".encode()).hexdigest()[:16]
    assert [i.account_id for i in engine.user_intervals("b")] == ["b"]
    assert [p.account_id for p in engine.presence_intervals("b")] == ["b"]
