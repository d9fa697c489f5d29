"""Compact, msgpack-friendly form of a buffered event.

A record is a tuple `(at_ms, arrival, seq, code, user_id, key, plan, event_id)`:
- `key` is the `device_id` (desktop and work-session events), the `page` (portal page view), the `endpoint`
  (api request, may be None) or None;
- `plan` is `(licenses, overage_allowance, billing_anchor_day, timezone, grace_minutes, grace_mode)` for
  `account.plan_changed`, else None;
- `seq` is the account's offer counter, so that records always compare even if two share an arrival.

Records sort in application order `(at_ms, arrival)`. Two records carry the same canonical payload (as
`schemas.events.fingerprint` defines it) exactly when `same_payload` says so.
"""

from __future__ import annotations

from typing import Any

from schemas.events import EPOCH, ONE_MS, EventBase
from schemas.fast import FastEvent, timestamp_ms

AT, ARRIVAL, SEQ, CODE, USER, KEY, PLAN, EVENT_ID = range(8)

HEARTBEAT, SIGNED_IN, SIGNED_OUT, SESSION_STARTED, SESSION_ENDED = 0, 1, 2, 3, 4
PAGE_VIEWED, PORTAL_SIGNED_OUT, API_REQUEST, PLAN_CHANGED = 5, 6, 7, 8

CODES: dict[str, int] = {
    "desktop.heartbeat": HEARTBEAT,
    "desktop.signed_in": SIGNED_IN,
    "desktop.signed_out": SIGNED_OUT,
    "work_session.started": SESSION_STARTED,
    "work_session.ended": SESSION_ENDED,
    "portal.page_viewed": PAGE_VIEWED,
    "portal.signed_out": PORTAL_SIGNED_OUT,
    "api.request": API_REQUEST,
    "account.plan_changed": PLAN_CHANGED,
}

Record = tuple[Any, ...]


def at_ms_of(event: EventBase | FastEvent) -> int:
    """`event.at_ms`: milliseconds of `occurred_at` since the Unix epoch (a fast-path event's text always has them)."""
    if isinstance(event, EventBase):
        return (event.occurred_at - EPOCH) // ONE_MS
    at_ms = timestamp_ms(event.occurred_at)
    if at_ms is None:
        raise ValueError(f"not a fast-path timestamp: {event.occurred_at!r}")
    return at_ms


def to_record(event: EventBase | FastEvent, at_ms: int, arrival: int, seq: int) -> Record:
    """The record of a decoded event (`at_ms` is `event.at_ms`, passed in because it is slow to read)."""
    code = CODES[event.type]  # type: ignore[union-attr]
    e: Any = event
    if code <= SESSION_ENDED:
        return (at_ms, arrival, seq, code, e.user_id, e.device_id, None, e.event_id)
    if code == PAGE_VIEWED:
        return (at_ms, arrival, seq, code, e.user_id, e.page, None, e.event_id)
    if code == PORTAL_SIGNED_OUT:
        return (at_ms, arrival, seq, code, e.user_id, None, None, e.event_id)
    if code == API_REQUEST:
        return (at_ms, arrival, seq, code, e.user_id, e.endpoint, None, e.event_id)
    plan = (e.licenses, e.overage_allowance, e.billing_anchor_day, e.timezone, e.grace_minutes, e.grace_mode)
    return (at_ms, arrival, seq, code, None, None, plan, e.event_id)


def same_payload(a: Record, b: Record) -> bool:
    """True if two records of the same `(account_id, event_id)` have the same canonical payload."""
    return a[AT] == b[AT] and a[CODE:EVENT_ID] == b[CODE:EVENT_ID]
