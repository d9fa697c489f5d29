"""The pure fold, one rule per test (docs/semantics.md sections 1-4). Expected numbers are worked out by hand.

Times: T0 is 2026-11-02T00:00:00Z; `s(x)` is T0 + x seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from processor.core.model import NEVER, FoldOutput, Metrics, Settings, UsageChange
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


def intervals(out: FoldOutput) -> list[tuple[str, int, int]]:
    return [(i.user_id, i.start_ms, i.end_ms) for i in out.intervals]


# -- desktop --------------------------------------------------------------------------------------------------------


def test_session_start_needs_sign_in() -> None:
    out, metrics, _ = run([start(s(0)), signin(s(10)), start(s(20)), end(s(50))])
    # The first start has no sign-in: orphan, nothing counted. The second counts from 20 s to 50 s.
    assert changes(out) == [(s(20), 1), (s(50), 0)]
    assert metrics.orphan == 1
    assert metrics.applied == 4


def test_work_session_ended_ends_presence_but_keeps_sign_in() -> None:
    out, metrics, _ = run([signin(s(0)), start(s(10)), end(s(150)), start(s(300)), end(s(330))])
    # The end at 150 s moves last_seen, so the device is still signed in at 300 s (< 150 + 180 s):
    # counted [10, 150) and [300, 330).
    assert changes(out) == [(s(10), 1), (s(150), 0), (s(300), 1), (s(330), 0)]
    assert intervals(out) == [("u1", s(10), s(150)), ("u1", s(300), s(330))]
    assert metrics.orphan == 0


def test_desktop_sign_out_ends_session() -> None:
    out, metrics, _ = run([signin(s(0)), start(s(5)), signout(s(100)), start(s(110))])
    # Sign-out ends the session at 100 s; the start at 110 s has no sign-in -> orphan.
    assert changes(out) == [(s(5), 1), (s(100), 0)]
    assert metrics.orphan == 1


def test_liveness_expiry_at_last_seen_plus_timeout() -> None:
    events = [signin(s(0)), start(s(0)), hb(s(60)), hb(s(120)), hb(s(300)), hb(s(310)), start(s(320))]
    events += [signin(s(400)), start(s(401))]
    out, metrics, _ = run(events)
    # last_seen 120 s -> expiry at 300 s. The heartbeat at exactly 300 s comes after the timer and does not save
    # the device; the one at 310 s does not bring it back; the start at 320 s is an orphan (signed out).
    # A new sign-in + start at 400/401 s counts again until 401 + 180 = 581 s.
    assert changes(out) == [(s(0), 1), (s(300), 0), (s(401), 1), (s(581), 0)]
    assert metrics.orphan == 1


def test_heartbeat_one_ms_before_expiry_saves_the_device() -> None:
    out, _, _ = run([signin(s(0)), start(s(0)), hb(s(179.999))])
    # Expiry moves to 179.999 + 180 = 359.999 s.
    assert changes(out) == [(s(0), 1), (s(359.999), 0)]
    out, _, _ = run([signin(s(0)), start(s(0)), hb(s(0.001))])
    assert changes(out) == [(s(0), 1), (s(180.001), 0)]


def test_signed_in_device_without_session_expires_too() -> None:
    out, metrics, _ = run([signin(s(0)), start(s(180))])
    # Signed out by the liveness timer at 180 s, before the start at 180 s: orphan, no usage.
    assert changes(out) == []
    assert metrics.orphan == 1


def test_two_devices_of_one_user_count_once() -> None:
    events = [signin(s(0), device="d1"), start(s(0), device="d1"), signin(s(30), device="d2")]
    events += [start(s(30), device="d2"), end(s(60), device="d1"), end(s(90), device="d2")]
    out, _, _ = run(events)
    assert changes(out) == [(s(0), 1), (s(90), 0)]
    assert intervals(out) == [("u1", s(0), s(90))]


def test_device_id_is_scoped_to_its_user() -> None:
    events = [signin(s(0), user="u1"), start(s(0), user="u1"), signin(s(10), user="u2"), start(s(10), user="u2")]
    events += [signout(s(20), user="u2"), end(s(40), user="u1")]
    out, metrics, _ = run(events)
    # u2's sign-out of "d1" does not touch u1's "d1".
    assert changes(out) == [(s(0), 1), (s(10), 2), (s(20), 1), (s(40), 0)]
    assert metrics.orphan == 0


# -- portal and api ---------------------------------------------------------------------------------------------------


def test_portal_pages_sign_out_and_idle_timeout() -> None:
    events = [
        page(s(0)),  # on
        page(s(60), name="meetings.list"),  # non-CC page: off
        page(s(100), name="reports.contact_center"),  # on
        portal_out(s(200)),  # off
        portal_out(s(210)),  # orphan
        page(s(300)),  # on
        page(s(400), name="cc.admin"),  # refresh: idle timer now 400 + 900 = 1300 s
        page(s(1400), name="meetings.list"),  # off already: no effect, not an orphan
    ]
    out, metrics, _ = run(events)
    assert changes(out) == [(s(0), 1), (s(60), 0), (s(100), 1), (s(200), 0), (s(300), 1), (s(1300), 0)]
    assert metrics.orphan == 1


def test_api_activity_window_and_request_at_expiry_instant() -> None:
    out, _, _ = run([api(s(0)), api(s(200)), api(s(500)), api(s(2000))])
    # Window ends at 200 + 300 = 500 s; the request at 500 s starts a new presence at the same instant, so usage
    # never dips and the counted interval is unbroken until 500 + 300 = 800 s. A later request starts again.
    assert changes(out) == [(s(0), 1), (s(800), 0), (s(2000), 1), (s(2300), 0)]
    assert intervals(out) == [("u1", s(0), s(800)), ("u1", s(2000), s(2300))]


# -- same instant, orphans, duplicates -----------------------------------------------------------------------------


def test_sign_out_and_sign_in_at_same_ms_make_no_spike_or_dip() -> None:
    events = [signin(s(0), user="a"), start(s(0), user="a"), signin(s(50), user="b")]
    # At 100 s: b starts (arrives first: usage would be 2 for an instant), then a signs out.
    events += [start(s(100), user="b"), signout(s(100), user="a"), end(s(200), user="b")]
    # At 150 s: c's session ends and starts again at the same ms on one device: no dip.
    events += [signin(s(140), user="c"), start(s(140), user="c"), end(s(150), user="c"), start(s(150), user="c")]
    events += [end(s(170), user="c")]
    out, _, _ = run(events)
    assert changes(out) == [(s(0), 1), (s(140), 2), (s(170), 1), (s(200), 0)]
    assert intervals(out) == [("a", s(0), s(100)), ("c", s(140), s(170)), ("b", s(100), s(200))]
    # Minute [60 s, 120 s) changed nothing (no spike to 2 at 100 s): it has no 1m window, its level is implied.
    assert [w.start_ms for w in out.windows if w.kind == "1m"] == [s(0), s(120), s(180)]
    quarter = next(w for w in out.windows if w.kind == "15m")
    assert (quarter.max_usage, quarter.max_at_ms) == (2, s(140))


def test_zero_length_presence_counts_nothing() -> None:
    out, _, _ = run([signin(s(0)), start(s(10)), end(s(10))])
    assert changes(out) == [] and intervals(out) == [] and out.windows == []


def test_orphans_are_counted() -> None:
    events = [
        signout(s(0)),  # not signed in
        end(s(1)),  # not signed in
        start(s(2)),  # not signed in
        portal_out(s(3)),  # portal off
        signin(s(4)),
        signin(s(5)),  # already signed in: not an orphan
        end(s(6)),  # signed in, no session
        hb(s(7), device="d9"),  # heartbeat of a signed-out device: not an orphan
        page(s(8), name="home"),  # non-CC page while off: not an orphan
    ]
    out, metrics, _ = run(events)
    assert metrics.orphan == 5
    assert metrics.applied == 9
    assert changes(out) == []


def test_duplicates_and_conflicts() -> None:
    first = start(s(10), event_id="x")
    same = start(s(10), event_id="x", schema_version=2)  # schema_version is not part of the payload
    conflicting = start(s(20), event_id="x")
    events = [signin(s(0)), first, same, conflicting, end(s(30))]
    out, metrics, rejected = run(events)
    # The first copy wins: counted from 10 s.
    assert changes(out) == [(s(10), 1), (s(30), 0)]
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


# -- plans and usage changes ----------------------------------------------------------------------------------------


def test_plans_and_license_field_of_usage_changes() -> None:
    events = [
        api(s(0)),  # before any plan: licenses 0
        plan(s(100), 5),  # a plan alone makes no usage change
        api(s(150), user="u2"),
        api(s(200), user="u3"),
        plan(s(200), 7),  # same instant as u3's request: the change at 200 s reports licenses after the instant
        plan(s(250), 8),
        plan(s(250), 9),  # same ms: the later arrival wins
    ]
    out, _, _ = run(events)
    got = [(c.at_ms, c.usage, c.licenses) for c in out.usage_changes]
    # u1 ends at 300 s, u2 at 450 s, u3 at 500 s.
    assert got == [(s(0), 1, 0), (s(150), 2, 5), (s(200), 3, 7), (s(300), 2, 9), (s(450), 1, 9), (s(500), 0, 9)]
    assert [(p.at_ms, p.licenses) for _, p in out.plans] == [(s(100), 5), (s(200), 7), (s(250), 8), (s(250), 9)]


def test_change_id_is_deterministic() -> None:
    events = [api(s(0)), api(s(10), user="u2")]
    first, _, _ = run(events)
    second, _, _ = run(events)
    ids = [c.change_id for c in first.usage_changes]
    assert ids == [c.change_id for c in second.usage_changes]
    assert ids[0] == sha256(f"acme|{s(0)}|1".encode()).hexdigest()[:16]
    assert len(set(ids)) == 4
    # Licenses are not part of the id.
    assert UsageChange(ACCOUNT, s(0), 1, 5).change_id == ids[0]


# -- counted intervals ----------------------------------------------------------------------------------------------


def test_user_intervals_merge_when_touching() -> None:
    events = [
        signin(s(0)),
        start(s(0)),
        end(s(100)),  # desktop [0, 100)
        api(s(100)),  # api [100, 400): touches -> one interval
        page(s(300)),  # portal [300, 1200): overlaps
        api(s(2000)),  # api [2000, 2300): a gap -> a second interval
        api(s(2000), user="u2"),
    ]
    out, _, _ = run(events)
    assert intervals(out) == [("u1", s(0), s(1200)), ("u1", s(2000), s(2300)), ("u2", s(2000), s(2300))]
    assert changes(out) == [(s(0), 1), (s(1200), 0), (s(2000), 2), (s(2300), 0)]


def test_counted_intervals_are_reported_when_they_open_and_again_when_they_close() -> None:
    """Live snapshots need users that are still counted: the fold reports each interval's start at once."""
    out, _, _ = fold_history([api(s(0), "u1"), api(s(100), "u1"), api(s(200), "u2")], LOOSE)
    assert [(i.user_id, i.start_ms, i.end_ms) for i in out.opened] == [("u1", s(0), NEVER), ("u2", s(200), NEVER)]
    assert sorted((i.user_id, i.start_ms, i.end_ms) for i in out.intervals) == [
        ("u1", s(0), s(400)),
        ("u2", s(200), s(500)),
    ]
