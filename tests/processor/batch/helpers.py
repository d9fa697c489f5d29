"""Small builders for hand-written batch-engine scenarios: wire events at millisecond instants, files, engines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import count
from pathlib import Path

from processor.batch.engine import BatchEngine
from processor.core.model import Settings
from schemas.events import format_ms

T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z, a Monday
SECOND = 1_000
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
ACCOUNT = "acct"

_ids = count(1)


def ev(kind: str, at: int, account: str = ACCOUNT, event_id: str | None = None, **fields: object) -> dict:
    """One wire event (a dict) of type `kind` at `at` ms."""
    event = {
        "event_id": event_id or f"e{next(_ids)}",
        "type": kind,
        "account_id": account,
        "occurred_at": format_ms(at),
    }
    event.update(fields)
    return event


def dev(kind: str, at: int, user: str = "u1", device: str = "d1", **extra: object) -> dict:
    """A desktop or work_session event of one device."""
    return ev(kind, at, user_id=user, device_id=device, **extra)


def session(user: str, device: str, start: int, end: int, beat: int = MINUTE) -> list[dict]:
    """Sign in and start a work session at `start`, heartbeat every `beat`, end the session at `end`."""
    events = [dev("desktop.signed_in", start, user, device), dev("work_session.started", start, user, device)]
    events += [dev("desktop.heartbeat", t, user, device) for t in range(start + beat, end, beat)]
    events.append(dev("work_session.ended", end, user, device))
    return events


def plan(
    at: int,
    licenses: int,
    overage: int = 0,
    zone: str = "UTC",
    grace: int = 30,
    mode: str = "contiguous",
    account: str = ACCOUNT,
) -> dict:
    """An account.plan_changed event."""
    return ev(
        "account.plan_changed",
        at,
        account=account,
        licenses=licenses,
        overage_allowance=overage,
        billing_anchor_day=1,
        timezone=zone,
        grace_minutes=grace,
        grace_mode=mode,
    )


def write_jsonl(path: Path, events: Iterable[dict | str | bytes]) -> Path:
    """One line per event (dicts as JSON, strings and bytes as they are)."""
    with path.open("wb") as out:
        for item in events:
            if isinstance(item, dict):
                out.write(json.dumps(item).encode())
            elif isinstance(item, str):
                out.write(item.encode())
            else:
                out.write(item)
            out.write(b"\n")
    return path


def load(tmp_path: Path, events: Iterable[dict | str | bytes], settings: Settings = Settings()) -> BatchEngine:
    """A fresh engine with `events` loaded from a .jsonl file."""
    engine = BatchEngine(settings)
    engine.load(write_jsonl(tmp_path / "events.jsonl", events))
    return engine


def changes(engine: BatchEngine) -> list[tuple[int, int]]:
    """(at - T0, usage) of every usage change."""
    return [(c.at_ms - T0, c.usage) for c in engine.usage_changes()]


def intervals(engine: BatchEngine) -> list[tuple[str, int, int]]:
    """(user, start - T0, end - T0) of every counted interval."""
    return [(i.user_id, i.start_ms - T0, i.end_ms - T0) for i in engine.user_intervals()]


def portal_span(user: str, start: int, end: int) -> list[dict]:
    """A portal presence of exactly [start, end): Contact Center views every 10 min, then another page at `end`."""
    views = [ev("portal.page_viewed", t, user_id=user, page="cc.inbox") for t in range(start, end, 10 * MINUTE)]
    return [*views, ev("portal.page_viewed", end, user_id=user, page="settings.profile")]
