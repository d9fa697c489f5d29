"""A worker's own part of a live query (processor/app.py `own_view`, `live_json`), without a broker: the state entries
are those `StreamProcessor` writes, in a dict standing in for the table."""

from __future__ import annotations

import json
from collections.abc import Iterable

from processor.app import live_json, own_view
from processor.core.model import Settings
from processor.worker.runner import StreamProcessor
from schemas.events import format_ms

T0 = 1_793_520_000_000  # 2026-11-01T08:00:00Z
PARTITION = 1


class DictStore:
    """The table's key-value view over a dict."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return list(self.data.items())


def event(index: int, kind: str, minute: int, **fields: object) -> bytes:
    at = format_ms(T0 + minute * 60_000)
    body = {"event_id": f"e-{index}", "type": kind, "account_id": "acme", "occurred_at": at, **fields}
    return json.dumps(body).encode()


def processed() -> StreamProcessor:
    """Account `acme` on partition 1: 2 licenses, one desktop user in a work session; its entries stored."""
    plan = {"licenses": 2, "overage_allowance": 1, "billing_anchor_day": 1, "timezone": "UTC"}
    device = {"user_id": "u-1", "device_id": "d-1"}
    lines = [
        event(0, "account.plan_changed", 0, **plan),
        event(1, "desktop.signed_in", 1, **device),
        event(2, "work_session.started", 2, **device),
    ]
    store = DictStore()
    processor = StreamProcessor("t.events", Settings(), store)
    result = processor.process(PARTITION, [(offset, b"acme", line, T0) for offset, line in enumerate(lines)])
    store.data.update(result.states)
    return processor


def test_the_owner_of_the_partition_answers_from_memory_and_from_the_store():
    processor = processed()
    for _ in range(2):  # from the cached fold, then after a rebalance from the stored entry
        view = own_view(processor, "acme", frozenset({0, PARTITION}))
        assert view is not None and (view.usage, view.licenses, view.headroom) == (1, 2, 1)
        processor.reset()


def test_copies_of_other_partitions_are_not_answered():
    processor = processed()
    processor.reset()  # a standby copy or a partition that moved away: only the stored entry is here
    assert own_view(processor, "acme", frozenset({0, 2, 3})) is None
    assert own_view(processor, "acme", frozenset()) is None


def test_odd_account_ids_are_unknown_not_errors():
    processor = processed()
    for account_id in ("nobody", f"__clock__:{PARTITION}", "\udcff", ""):
        assert own_view(processor, account_id, frozenset({PARTITION})) is None


def test_the_answer_carries_data_through():
    view = own_view(processed(), "acme", frozenset({PARTITION}))
    assert view is not None
    body = live_json(view)
    assert body["account_id"] == "acme" and "data_through" in body
    expected = None if view.data_through_ms is None else format_ms(view.data_through_ms)
    assert body["data_through"] == expected
    assert body["as_of"] == format_ms(T0 + 2 * 60_000)
