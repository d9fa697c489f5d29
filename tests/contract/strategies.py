"""Hypothesis strategies of histories for the contract: composite strategies of events that shrink.

A history is one partition: a few accounts (event ids repeat across accounts), each with plans (timezone changes
mid-history), desktop sessions with heartbeats around the device timeout, portal and api activity and stray
events (orphans), on a coarse time grid (many ties) with millisecond near-misses, across local midnights and the
2026 DST changes of America/New_York and Europe/Berlin. Then exact and conflicting copies, and an arrival order:
each event delayed by less than the allowed lateness, some accounts' producers lagging the others, a few events
hours late (too late on a stream). Everything shrinks towards fewer events, sorted arrival and no copies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from processor.core.model import Settings
from schemas.events import format_ms, to_ms
from tests.contract.implementations import History

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z (a Monday)
MINUTE = 60_000
DEVICE_TYPES = (
    "desktop.signed_in",
    "desktop.signed_out",
    "desktop.heartbeat",
    "work_session.started",
    "work_session.ended",
)
PAGES = ("cc.inbox", "cc.dashboard", "usage_reports.contact_center", "meetings.list", "settings.profile")
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")

SECOND = 1_000
HOUR = 60 * MINUTE


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Epoch ms of a UTC date-time."""
    return to_ms(datetime(year, month, day, hour, minute, tzinfo=UTC))


# Where a history starts: a plain Monday, or a couple of hours before the local midnight of a 2026 DST change.
STARTS = {
    "plain": T0,  # 2026-11-02T00:00Z
    "New York falls back": utc(2026, 11, 1, 2),  # local midnight 04:00Z, clocks back at 06:00Z
    "New York springs forward": utc(2026, 3, 8, 3),  # local midnight 05:00Z, clocks forward at 07:00Z
    "Berlin falls back": utc(2026, 10, 24, 20),  # local midnight 22:00Z, clocks back at 01:00Z
    "Berlin springs forward": utc(2026, 3, 28, 21),  # local midnight 23:00Z, clocks forward at 01:00Z
}
GRID = 30 * SECOND  # coarse: many events share an instant
JITTER = (0, 0, 0, 1, 250)  # ms: same-instant collisions and near misses
GAPS = (1, 30 * SECOND, 60 * SECOND, 179_999, 180_000, 240_000)  # around the 180 s device timeout
LATENESS_BOUND = 9 * MINUTE  # arrival jitter, below the default allowed lateness (10 min)
LAGS = (0, 0, 0, 30 * MINUTE, 150 * MINUTE)  # a producer behind the others (150 min: beyond the idle lateness)
TOO_LATE = (3 * HOUR, 6 * HOUR)

Draw = Any  # hypothesis' draw function


def _instant(draw: Draw, start: int, span: int) -> int:
    return start + draw(st.integers(0, span // GRID)) * GRID + draw(st.sampled_from(JITTER))


def _plan(draw: Draw, at: int, zone: str) -> dict[str, Any]:
    return {
        "type": "account.plan_changed",
        "occurred_at": at,
        "licenses": draw(st.integers(0, 3)),
        "overage_allowance": draw(st.integers(0, 2)),
        "billing_anchor_day": draw(st.integers(1, 28)),
        "timezone": zone,
        "grace_minutes": draw(st.sampled_from((0, 1, 5, 30))),
        "grace_mode": draw(st.sampled_from(("contiguous", "cumulative"))),
    }


def _desktop(draw: Draw, at: int) -> list[dict[str, Any]]:
    """A sign-in and a work session on one device, then heartbeats, ends and restarts, maybe a sign-out."""
    who = {"user_id": f"u{draw(st.integers(0, 3))}", "device_id": f"d{draw(st.integers(0, 1))}"}
    events = [{**who, "type": "desktop.signed_in", "occurred_at": at}]
    at += draw(st.sampled_from((0, 0, 1, GRID)))
    events.append({**who, "type": "work_session.started", "occurred_at": at})
    steps = st.tuples(
        st.sampled_from(GAPS),
        st.sampled_from(("desktop.heartbeat", "desktop.heartbeat", "work_session.ended", "work_session.started")),
    )
    for gap, kind in draw(st.lists(steps, max_size=6)):
        at += gap
        events.append({**who, "type": kind, "occurred_at": at})
    if draw(st.booleans()):
        at += draw(st.sampled_from((0, GRID, 60 * SECOND)))
        events.append({**who, "type": "desktop.signed_out", "occurred_at": at})
    return events


def _portal(draw: Draw, at: int) -> list[dict[str, Any]]:
    """Page views (Contact Center or not) and sign-outs of one user, around the 15 min idle timeout."""
    user = f"u{draw(st.integers(0, 3))}"
    events = []
    for gap, page in draw(st.lists(st.tuples(st.sampled_from((0, GRID, 5 * MINUTE, 15 * MINUTE)),
                                             st.sampled_from((*PAGES, None))), min_size=1, max_size=4)):  # fmt: skip
        at += gap
        if page is None:
            events.append({"type": "portal.signed_out", "user_id": user, "occurred_at": at})
        else:
            events.append({"type": "portal.page_viewed", "user_id": user, "page": page, "occurred_at": at})
    return events


def _api(draw: Draw, at: int) -> list[dict[str, Any]]:
    """Requests of one user, around the 5 min activity window."""
    user = f"u{draw(st.integers(0, 3))}"
    events = []
    for gap in draw(st.lists(st.sampled_from((0, GRID, 4 * MINUTE, 5 * MINUTE)), min_size=1, max_size=3)):
        at += gap
        events.append({"type": "api.request", "user_id": user, "occurred_at": at})
    return events


def _stray(draw: Draw, at: int) -> list[dict[str, Any]]:
    """One event of any kind on its own (an orphan end, a heartbeat of a signed-out device, ...)."""
    kind = draw(st.sampled_from((*DEVICE_TYPES, "portal.signed_out", "api.request")))
    event: dict[str, Any] = {"type": kind, "user_id": f"u{draw(st.integers(0, 3))}", "occurred_at": at}
    if kind in DEVICE_TYPES:
        event["device_id"] = f"d{draw(st.integers(0, 1))}"
    return [event]


STORIES = {"desktop": _desktop, "portal": _portal, "api": _api, "stray": _stray}


@st.composite
def _account(draw: Draw, account: str, start: int, span: int, zones: tuple[str, ...]) -> list[dict[str, Any]]:
    """One account's events in event-time order of their stories (ids `e1`, `e2`, ... per account)."""
    events: list[dict[str, Any]] = []
    zone = draw(st.sampled_from(zones))
    for n in range(draw(st.integers(0, 3))):
        if n:
            zone = draw(st.sampled_from(zones))  # a timezone change mid-history
        events.append(_plan(draw, _instant(draw, start - HOUR, span), zone))
    for story in draw(st.lists(st.sampled_from(sorted(STORIES)), max_size=7)):
        events += STORIES[story](draw, _instant(draw, start, span))
    return [{"event_id": f"e{n}", "account_id": account, **event} for n, event in enumerate(events, 1)]


def _copy(event: dict[str, Any], how: str) -> dict[str, Any]:
    """A re-sent copy: exact, the same payload written otherwise, or a conflicting one (same id, other payload)."""
    if how == "same":
        return dict(event)
    if how == "same payload":
        return {**event, "schema_version": 2}  # not part of the payload
    if how == "other time":
        return {**event, "occurred_at": event["occurred_at"] + SECOND}
    if "user_id" in event:
        return {**event, "user_id": event["user_id"] + "x"}
    return {**event, "licenses": event["licenses"] + 1}


@st.composite
def histories(draw: Draw, max_accounts: int = 3, too_late: bool = True, settings: Settings = Settings()) -> History:
    """A partition's history in arrival order (see the module docstring); `too_late=False`: no producer beyond the
    idle lateness and no event hours late, so nothing is too late on a stream."""
    start = STARTS[draw(st.sampled_from(sorted(STARTS)))]
    span = draw(st.sampled_from((2 * HOUR, 10 * HOUR, 30 * HOUR)))
    zones = ZONES if start == T0 else ("UTC", "Europe/Berlin", "America/New_York")
    events: list[dict[str, Any]] = []
    lags: dict[str, int] = {}
    for a in range(draw(st.integers(1, max_accounts))):
        account = f"acct-{a}"
        events += draw(_account(account, start, span, zones))
        lags[account] = draw(st.sampled_from(LAGS if too_late else LAGS[:-1])) if a else 0
    if not events:
        events = [{"event_id": "e1", "account_id": "acct-0", "type": "api.request", "user_id": "u0",
                   "occurred_at": start}]  # fmt: skip
    n = len(events)
    copies = st.tuples(st.integers(0, n - 1), st.sampled_from(("same", "same payload", "conflict", "other time")))
    for index, how in draw(st.lists(copies, max_size=max(1, n // 10))):
        events.append(_copy(events[index], how))
    delays = draw(st.lists(st.integers(0, LATENESS_BOUND), min_size=len(events), max_size=len(events)))
    hours_late = st.tuples(st.integers(0, len(events) - 1), st.integers(*TOO_LATE))
    late = dict(draw(st.lists(hours_late, max_size=3 if too_late else 0)))
    arrival = sorted(
        range(len(events)),
        key=lambda i: (events[i]["occurred_at"] + delays[i] + lags[events[i]["account_id"]] + late.get(i, 0), i),
    )
    wire = tuple({**events[i], "occurred_at": format_ms(events[i]["occurred_at"])} for i in arrival)
    return History(wire, batch_size=draw(st.sampled_from((1, 7, 50, 10_000))), settings=settings)
