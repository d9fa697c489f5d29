"""Random event histories for property tests: wire-format dicts in an arrival order that respects the lateness bound."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from hypothesis import strategies as st

from schemas.events import format_ms

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


@dataclass(frozen=True)
class HistoryShape:
    """How big and how dense a generated history is."""

    accounts: int = 2
    users: int = 4
    devices: int = 2
    events: int = 120
    span_minutes: int = 240
    grid_ms: int = 30_000  # coarse grid: many events share an instant
    lateness_ms: int = 9 * MINUTE  # arrival shuffle bound, below the default allowed lateness (10 min)
    start_ms: int = T0  # first instant of the history
    lag_minutes: tuple[int, ...] = ()  # per account (by index): how far its producer runs behind the others
    too_late: int = 0  # events delivered far later than the lateness bound (too late on a stream)
    zones: tuple[str, ...] = ()  # time zones to pick from (default ZONES)


def generate(seed: int, shape: HistoryShape = HistoryShape()) -> list[dict]:
    """A history in arrival order, with duplicates and shuffling within the lateness bound."""
    rng = random.Random(seed)
    events: list[dict] = []
    t0 = shape.start_ms
    for a in range(shape.accounts):
        account = f"acct-{a}"
        zone = rng.choice(shape.zones or ZONES)
        counter = 0

        def next_id(account: str = account) -> str:
            nonlocal counter
            counter += 1
            return f"{account}-e{counter}"

        for _ in range(rng.randint(0, 3)):
            at = t0 + rng.randrange(0, shape.span_minutes * MINUTE, shape.grid_ms)
            events.append(
                {
                    "event_id": next_id(),
                    "type": "account.plan_changed",
                    "account_id": account,
                    "occurred_at": at,
                    "licenses": rng.randint(0, 3),
                    "overage_allowance": rng.randint(0, 2),
                    "billing_anchor_day": rng.randint(1, 28),
                    "timezone": zone,
                    "grace_minutes": rng.choice((0, 1, 5, 30)),
                    "grace_mode": rng.choice(("contiguous", "cumulative")),
                }
            )
        # Sessions: a few realistic sign-in / session / heartbeat runs, plus random noise events.
        for _ in range(shape.events // 10):
            user = f"u{rng.randrange(shape.users)}"
            device = f"d{rng.randrange(shape.devices)}"
            at = t0 + rng.randrange(0, shape.span_minutes * MINUTE, shape.grid_ms)
            base = {"account_id": account, "user_id": user, "device_id": device}
            events.append({**base, "event_id": next_id(), "type": "desktop.signed_in", "occurred_at": at})
            events.append({**base, "event_id": next_id(), "type": "work_session.started", "occurred_at": at})
            for _ in range(rng.randint(0, 6)):
                at += rng.choice((60_000, 120_000, 150_000, 180_000, 240_000))
                kind = rng.choice(
                    ("desktop.heartbeat", "desktop.heartbeat", "work_session.ended", "work_session.started")
                )
                events.append({**base, "event_id": next_id(), "type": kind, "occurred_at": at})
            if rng.random() < 0.6:
                at += rng.choice((0, 30_000, 60_000))
                events.append({**base, "event_id": next_id(), "type": "desktop.signed_out", "occurred_at": at})
        for _ in range(shape.events):
            user = f"u{rng.randrange(shape.users)}"
            at = t0 + rng.randrange(0, shape.span_minutes * MINUTE, shape.grid_ms) + rng.choice((0, 0, 0, 1, 250))
            kind = rng.choice(
                (*DEVICE_TYPES, "portal.page_viewed", "portal.page_viewed", "portal.signed_out", "api.request")
            )
            event = {"event_id": next_id(), "type": kind, "account_id": account, "occurred_at": at, "user_id": user}
            if kind in DEVICE_TYPES:
                event["device_id"] = f"d{rng.randrange(shape.devices)}"
            elif kind == "portal.page_viewed":
                event["page"] = rng.choice(PAGES)
            events.append(event)
    # Duplicates: exact copies, and a few conflicting copies (same id, other payload).
    for event in rng.sample(events, k=len(events) // 20):
        copy = dict(event)
        if rng.random() < 0.3 and "user_id" in copy:
            copy["user_id"] = copy["user_id"] + "x"
        events.append(copy)
    # Arrival order: sort by event time plus a jitter below the lateness bound, plus the account's producer lag; a few
    # events arrive hours late.
    lags = {f"acct-{a}": minutes * MINUTE for a, minutes in enumerate(shape.lag_minutes)}
    late = set(rng.sample(range(len(events)), k=min(shape.too_late, len(events))))
    keyed = [
        (
            event["occurred_at"]
            + rng.randrange(shape.lateness_ms)
            + lags.get(event["account_id"], 0)
            + (rng.randrange(3 * 60, 6 * 60) * MINUTE if i in late else 0),
            i,
            event,
        )
        for i, event in enumerate(events)
    ]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [{**event, "occurred_at": format_ms(event["occurred_at"])} for _, _, event in keyed]


def to_jsonl(history: list[dict]) -> bytes:
    """The history as a `.jsonl` file body."""
    return b"".join(json.dumps(event, separators=(",", ":")).encode() + b"\n" for event in history)


seeds = st.integers(min_value=0, max_value=2**32 - 1)
