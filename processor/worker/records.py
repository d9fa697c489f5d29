"""JSON bytes of the worker's output records (field for field the models of schemas/outputs.py).

Built from plain dicts (much cheaper than a pydantic model per record); tests check that every record validates
against its model. User intervals and plans go to the `intervals` topic (for snapshots), tagged by `record`.
Dead letters are dicts too, sent as the original key and value with headers (processor/deadletters.py).
"""

from __future__ import annotations

import json
from dataclasses import astuple
from hashlib import sha256
from typing import Any

from processor.core.model import NEVER, PeakWindow, Plan, PresenceInterval, UsageChange, UserInterval
from processor.deadletters import FORMAT, Letter
from schemas.events import format_ms

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_quote = json.encoder.encode_basestring  # a JSON string literal, as `_dumps` writes it (ensure_ascii=False)


def dumps(record: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON."""
    return _dumps(record).encode()


def usage_change(change: UsageChange) -> dict[str, Any]:
    """A UsageChangeRecord."""
    return {
        "change_id": change.change_id,
        "account_id": change.account_id,
        "at": format_ms(change.at_ms),
        "usage": change.usage,
        "licenses": change.licenses,
    }


def peak_window(window: PeakWindow) -> dict[str, Any]:
    """A PeakWindowRecord."""
    return {
        "window_id": window.window_id,
        "account_id": window.account_id,
        "kind": window.kind,
        "start": format_ms(window.start_ms),
        "end": format_ms(window.end_ms),
        "max_usage": window.max_usage,
        "max_at": format_ms(window.max_at_ms),
        "seconds_over_licenses": window.over_licenses_ms / 1000,
        "license_seconds": window.license_ms / 1000,
    }


def peak_window_json(window: PeakWindow) -> bytes:
    """`dumps(peak_window(window))`, written directly: peak windows are most of the worker's output records."""
    return (
        f'{{"window_id":"{window.window_id}","account_id":{_quote(window.account_id)},"kind":"{window.kind}",'
        f'"start":"{format_ms(window.start_ms)}","end":"{format_ms(window.end_ms)}","max_usage":{window.max_usage},'
        f'"max_at":"{format_ms(window.max_at_ms)}","seconds_over_licenses":{window.over_licenses_ms / 1000!r},'
        f'"license_seconds":{window.license_ms / 1000!r}}}'
    ).encode()


def user_interval(interval: UserInterval) -> dict[str, Any]:
    """A counted interval of one user (intervals topic, `record` = "user_interval")."""
    ident = f"{interval.account_id}|{interval.user_id}|{interval.start_ms}"
    return {
        "record": "user_interval",
        "interval_id": sha256(ident.encode()).hexdigest()[:16],
        "account_id": interval.account_id,
        "user_id": interval.user_id,
        "start": format_ms(interval.start_ms),
        "end": None if interval.end_ms >= NEVER else format_ms(interval.end_ms),  # None: still open
    }


def presence_interval(interval: PresenceInterval) -> dict[str, Any]:
    """One presence of a user (intervals topic, `record` = "presence_interval"); `end` None while it is open."""
    device = interval.device_id or ""
    ident = f"{interval.account_id}|{interval.user_id}|{interval.kind}|{device}|{interval.start_ms}"
    return {
        "record": "presence_interval",
        "interval_id": sha256(ident.encode()).hexdigest()[:16],
        "account_id": interval.account_id,
        "user_id": interval.user_id,
        "kind": interval.kind,
        "device_id": interval.device_id,
        "start": format_ms(interval.start_ms),
        "end": None if interval.end_ms >= NEVER else format_ms(interval.end_ms),
    }


def horizon(account_id: str, partition: int, data_through_ms: int, watermark_ms: int | None) -> dict[str, Any]:
    """What is known of an account (intervals topic, `record` = "horizon"): its `data_through` (SPEC 4)."""
    return {
        "record": "horizon",
        "account_id": account_id,
        "partition": partition,
        "data_through": format_ms(data_through_ms),
        "watermark": None if watermark_ms is None else format_ms(watermark_ms),
    }


def horizon_json(account_id: str, partition: int, data_through_ms: int, watermark_ms: int | None) -> bytes:
    """`dumps(horizon(...))`, written directly: at many accounts a batch sends one per touched account."""
    watermark = "null" if watermark_ms is None else f'"{format_ms(watermark_ms)}"'
    return (
        f'{{"record":"horizon","account_id":{_quote(account_id)},"partition":{partition},'
        f'"data_through":"{format_ms(data_through_ms)}","watermark":{watermark}}}'
    ).encode()


def partition_horizon(partition: int, idle_floor_ms: int) -> dict[str, Any]:
    """The floor of every horizon on an events partition (intervals topic, `record` = "partition_horizon")."""
    return {"record": "partition_horizon", "partition": partition, "idle_floor": format_ms(idle_floor_ms)}


def plan(account_id: str, value: Plan) -> dict[str, Any]:
    """A plan taking effect (intervals topic, `record` = "plan")."""
    return {
        "record": "plan",
        "plan_id": sha256(f"{account_id}|{'|'.join(map(str, astuple(value)))}".encode()).hexdigest()[:16],
        "account_id": account_id,
        "at": format_ms(value.at_ms),
        "licenses": value.licenses,
        "overage_allowance": value.overage_allowance,
        "billing_anchor_day": value.billing_anchor_day,
        "timezone": value.timezone,
        "grace_minutes": value.grace_minutes,
        "grace_mode": value.grace_mode,
    }


def dead_letter(
    reason: str,
    detail: str,
    original: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    *,
    key: bytes | None = None,
    timestamp: int | None = None,
) -> Letter:
    """A dead letter carrying the original key and value (processor/deadletters.py `encode` makes its record)."""
    return {
        "reason": reason,
        "detail": detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
        "key": key,
        "original": original,
        "size": None if original is None else len(original),
        "sha256": None,
        "line": None,
        "format": FORMAT,
    }


def too_large(
    detail: str, original: bytes, topic: str, partition: int, offset: int, *, timestamp: int | None = None
) -> Letter:
    """A `too_large` dead letter: by reference (size and SHA-256 of the value), without key or value."""
    letter = dead_letter("too_large", detail, None, topic, partition, offset, timestamp=timestamp)
    letter["size"], letter["sha256"] = len(original), sha256(original).hexdigest()
    return letter
