"""The pure fold's own interface: copies and verdicts of `fold_history`, payload equality of records, intervals
reported when they open. The counting rules (docs/semantics.md sections 1-4) are the contract scenarios of
tests/contract/test_scenarios.py, run against every implementation. Helpers here serve the other fold tests.

Times: T0 is 2026-11-02T00:00:00Z; `s(x)` is T0 + x seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from processor.core.model import NEVER, FoldOutput, Metrics, Settings
from processor.core.partition import fold_history
from processor.core.records import same_payload, to_record
from schemas.events import EVENT_ADAPTER, Event, fingerprint, format_ms, to_ms

T0 = to_ms(datetime(2026, 11, 2, tzinfo=UTC))
ACCOUNT = "acme"
_ids = itertools.count()


def s(seconds: float) -> int:
    """T0 + seconds, in epoch ms."""
    return T0 + round(seconds * 1000)


def ev(kind: str, at: int, *, account: str = ACCOUNT, event_id: str | None = None, **fields: Any) -> Event:
    """A decoded event of `kind` at epoch ms `at`."""
    raw = {"event_id": event_id or f"e{next(_ids)}", "type": kind, "account_id": account, "occurred_at": format_ms(at)}
    return EVENT_ADAPTER.validate_python({**raw, **fields})


def signin(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> Event:
    return ev("desktop.signed_in", at, user_id=user, device_id=device, **kw)


def signout(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> Event:
    return ev("desktop.signed_out", at, user_id=user, device_id=device, **kw)


def hb(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> Event:
    return ev("desktop.heartbeat", at, user_id=user, device_id=device, **kw)


def start(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> Event:
    return ev("work_session.started", at, user_id=user, device_id=device, **kw)


def end(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> Event:
    return ev("work_session.ended", at, user_id=user, device_id=device, **kw)


def page(at: int, user: str = "u1", name: str = "cc.inbox", **kw: Any) -> Event:
    return ev("portal.page_viewed", at, user_id=user, page=name, **kw)


def portal_out(at: int, user: str = "u1", **kw: Any) -> Event:
    return ev("portal.signed_out", at, user_id=user, **kw)


def api(at: int, user: str = "u1", **kw: Any) -> Event:
    return ev("api.request", at, user_id=user, **kw)


def plan(at: int, licenses: int, overage: int = 0, tz: str = "UTC", **kw: Any) -> Event:
    return ev(
        "account.plan_changed",
        at,
        licenses=licenses,
        overage_allowance=overage,
        billing_anchor_day=1,
        timezone=tz,
        **kw,
    )


# The rule tests have gaps of more than 5 min of event time; the future-skew rule has its own tests.
LOOSE = Settings(max_future_skew_ms=10**12)


def run(events: Iterable[Event], settings: Settings = LOOSE) -> tuple[FoldOutput, Metrics, list[Any]]:
    """Fold a history of account ACCOUNT (arrival = position) and flush."""
    out, metrics, rejected = fold_history(list(events), settings)
    return out, metrics.get(ACCOUNT, Metrics()), rejected


def changes(out: FoldOutput) -> list[tuple[int, int]]:
    return [(c.at_ms, c.usage) for c in out.usage_changes]


# The counting rules, run against the fold, the worker's partition driver and the SQL engine alike, are the contract
# scenarios of tests/contract/test_scenarios.py; what follows is the fold's own interface.


def test_fold_history_reports_copies_by_arrival_and_counts_what_it_applied() -> None:
    first = start(s(10), event_id="x")
    same = start(s(10), event_id="x", schema_version=2)  # schema_version is not part of the payload
    conflicting = start(s(20), event_id="x")
    out, metrics, rejected = run([signin(s(0)), first, same, conflicting, end(s(30))])
    assert changes(out) == [(s(10), 1), (s(30), 0)]  # the first copy wins
    assert (metrics.duplicate, metrics.duplicate_conflict, metrics.applied) == (1, 1, 3)
    assert [(arrival, verdict) for arrival, _, verdict in rejected] == [(2, "duplicate"), (3, "duplicate_conflict")]


def test_record_payload_equality_agrees_with_fingerprint() -> None:
    base = api(s(1), event_id="k")
    variants = [
        api(s(1), event_id="k", schema_version=3),
        api(s(1), event_id="k", endpoint="/v1/x"),
        api(s(1), event_id="k", endpoint=""),
        api(s(1.001), event_id="k"),
        api(s(1), "u2", event_id="k"),
        page(s(1), event_id="k"),
        plan(s(1), 3, event_id="k"),
        plan(s(1), 3, event_id="k", grace_minutes=0),
        plan(s(1), 3, event_id="k", tz="Europe/Berlin"),
    ]
    for a, b in itertools.product([base, *variants], repeat=2):
        expected = fingerprint(a) == fingerprint(b)
        assert same_payload(to_record(a, a.at_ms, 0, 0), to_record(b, b.at_ms, 1, 1)) == expected, (a, b)


def test_counted_intervals_are_reported_when_they_open_and_again_when_they_close() -> None:
    """Live snapshots need users that are still counted: the fold reports each interval's start at once."""
    out, _, _ = fold_history([api(s(0), "u1"), api(s(100), "u1"), api(s(200), "u2")], LOOSE)
    assert [(i.user_id, i.start_ms, i.end_ms) for i in out.opened] == [("u1", s(0), NEVER), ("u2", s(200), NEVER)]
    assert sorted((i.user_id, i.start_ms, i.end_ms) for i in out.intervals) == [
        ("u1", s(0), s(400)),
        ("u2", s(200), s(500)),
    ]
