"""Helpers of the metrics tests: a small event history with known outcomes, and reading the Prometheus text."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from schemas.events import decode, format_ms

T0 = 1_780_000_000_000
DAY_MS = 86_400_000


def event(event_id: str, account: str, at_ms: int) -> bytes:
    body = {"event_id": event_id, "type": "api.request", "account_id": account, "user_id": "u1"}
    return json.dumps({**body, "occurred_at": format_ms(at_ms)}).encode()


def history(accounts: int = 3, per_account: int = 4) -> tuple[list[tuple[bytes | None, bytes]], dict[str, int]]:
    """(key, value) records and what the worker must count for them: valid events, one duplicate per account,
    malformed records, a key mismatch, a too-late event, and one pusher per account far ahead (so that every other
    event passes its account's horizon and is applied; the pushers themselves stay pending)."""
    records: list[tuple[bytes | None, bytes]] = []
    for a in range(accounts):
        account = f"acct-{a}"
        for i in range(per_account):
            records.append((account.encode(), event(f"{account}-{i}", account, T0 + i * 60_000)))
        records.append((account.encode(), event(f"{account}-0", account, T0)))  # an exact duplicate
    records += [(b"acct-0", b"not json"), (None, b"{broken"), (b"acct-1", event("x-1", "acct-0", T0 + 1))]
    for a in range(accounts):
        account = f"acct-{a}"
        records.append((account.encode(), event(f"{account}-push", account, T0 + 3 * DAY_MS)))
    records.append((b"acct-2", event("late-1", "acct-2", T0 - DAY_MS)))
    want = {
        "applied": accounts * per_account,
        "duplicate": accounts,
        "dead_letter:invalid_json": 2,
        "dead_letter:key_mismatch": 1,
        "dead_letter:too_late": 1,
    }
    return records, want


def arrival_times(values: list[bytes]) -> list[int]:
    """Record timestamps of a real-time stream: each record arrives at the latest event time so far."""
    out, latest = [], 0
    for value in values:
        decoded = decode(value)
        if not hasattr(decoded, "reason"):
            latest = max(latest, decoded.at_ms)
        out.append(latest)
    return out


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float | None:
    """One sample's value, None if absent."""
    return found.get((name, tuple(sorted(labels.items()))))
