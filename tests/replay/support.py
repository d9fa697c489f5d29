"""Helpers of the replay tests: snapshots built without Kafka, with the live outputs the worker's own code gives.

`build_snapshot_of(lines, path)` places each line on its partition (Kafka's default partitioner on the account_id),
stamps it with its arrival time, runs the worker's StreamProcessor over each partition in batches (outputs,
dead letters, exactly as the worker publishes them), feeds events and outputs to a SinkWriter and builds the DuckDB
snapshot from it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from aiokafka.partitioner import murmur2

from processor.cli.worker import record_key as key_of
from processor.core.model import Settings
from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import build_snapshot
from processor.topics import EVENTS, topic_names
from processor.worker.runner import StreamProcessor
from processor.worker.sender import output_records
from processor.worker.state import DictStore
from schemas.events import Rejection, decode, format_ms

PREFIX = "ccmeter."
T0 = 1_793_610_000_000  # 2026-11-02T09:00:00Z
MINUTE = 60_000


def partition_of(key: bytes | None, partitions: int) -> int:
    """Kafka's default partitioner for keyed records; partition 0 without a key."""
    return 0 if key is None else (murmur2(key) & 0x7FFFFFFF) % partitions


def event(event_id: str, at_ms: int, account: str = "acct-r", **fields: object) -> bytes:
    """One wire event (api.request by default)."""
    body: dict[str, object] = {"event_id": event_id, "type": "api.request", "account_id": account}
    body.update(fields)
    body["occurred_at"] = format_ms(at_ms)
    if body["type"] == "api.request":
        body.setdefault("user_id", "u1")
    return json.dumps(body).encode()


def plan(event_id: str, at_ms: int, account: str = "acct-r", licenses: int = 1, grace: int = 0) -> bytes:
    """An account.plan_changed event (UTC, anchor day 1, no allowance)."""
    return event(
        event_id,
        at_ms,
        account,
        type="account.plan_changed",
        licenses=licenses,
        overage_allowance=0,
        billing_anchor_day=1,
        timezone="UTC",
        grace_minutes=grace,
    )


def arrival_stamps(lines: list[bytes]) -> list[int]:
    """Each record arrives at the latest event time so far (a real-time stream)."""
    out, latest = [], 0
    for line in lines:
        decoded = decode(line)
        if not isinstance(decoded, Rejection):
            latest = max(latest, decoded.at_ms)
        out.append(latest)
    return out


def build_snapshot_of(
    lines: list[bytes], path: Path, partitions: int = 3, settings: Settings = Settings(), batch: int = 200
) -> Path:
    """A snapshot of `lines` published in order, and of the worker's outputs for them (see the module docstring)."""
    events_topic = topic_names(PREFIX)[EVENTS]
    by_partition: dict[int, list[tuple[int, bytes | None, bytes, int]]] = defaultdict(list)
    for line, stamp in zip(lines, arrival_stamps(lines), strict=True):
        key = key_of(line)
        records = by_partition[partition_of(key, partitions)]
        records.append((len(records), key, line, stamp))
    data = path.parent / f"{path.stem}-sink"
    writer = SinkWriter(data, PREFIX, settings)
    names = {name: key for key, name in topic_names(PREFIX).items()}
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    store = DictStore()
    processor = StreamProcessor(events_topic, settings, store)
    for partition, records in sorted(by_partition.items()):
        for offset, key, value, stamp in records:
            writer.add(EVENTS, partition, offset, stamp, key, value)
        for start in range(0, len(records), batch):
            raws = [(o, k, v, s) for o, k, v, s in records[start : start + batch]]
            result = processor.process(partition, raws)
            assert result.resume_at is None
            store.data.update(result.states)
            for topic, key, value, headers in output_records(topic_names(PREFIX), result):
                position = (names[topic], partition)
                writer.add(names[topic], partition, offsets[position], T0, key, value, headers)
                offsets[position] += 1
    writer.flush()
    build_snapshot(data, path)
    return path
