"""Topic contents for the snapshot tests: a simulated history on the events topic, and the outputs the worker would
publish for it (computed with the pure fold per partition, flushed, in the JSON shapes of processor/worker/records.py).

Records are placed on explicit partitions: every account on `partition_of(account)`, its outputs on the same
partition of each output topic (like the worker, keyed by account_id).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from aiokafka.partitioner import murmur2

from processor.cli.worker import record_key as key_of
from processor.core.alerts import alerts_for
from processor.core.model import NEVER, PresenceInterval, Settings
from processor.core.partition import fold_history
from processor.simulation.config import SimConfig
from processor.simulation.output import iter_lines
from processor.snapshots.sink import SinkWriter
from processor.topics import ALERTS, DEAD_LETTERS, EVENTS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES
from processor.worker import records as rec
from schemas.events import Rejection, decode

PARTITIONS = 3
SETTINGS = Settings()

# (key, value, timestamp_ms) per topic key and partition, in offset order.
Record = tuple[bytes | None, bytes, int]


def partition_of(key: bytes | None, partitions: int = PARTITIONS) -> int:
    """Kafka's default partitioner for keyed records; partition 0 for records without a key."""
    return 0 if key is None else (murmur2(key) & 0x7FFFFFFF) % partitions


def history_lines(seed: int = 3, accounts: int = 4, agents: int = 4, days: int = 2, **faults: float) -> list[bytes]:
    """A simulated history (heartbeats every 150 s to keep it small) in arrival order."""
    config = SimConfig(accounts=accounts, agents=agents, days=days, seed=seed, heartbeat_seconds=150, **faults)
    return [line.encode() for line in iter_lines(config)]


@dataclass
class Streams:
    """What each topic partition holds."""

    records: dict[str, dict[int, list[Record]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    partitions: int = PARTITIONS

    def count(self, topic: str | None = None) -> int:
        """Records on one topic (all topics when None)."""
        topics = [topic] if topic else list(self.records)
        return sum(len(part) for t in topics for part in self.records[t].values())

    def events_file(self, path: Path) -> Path:
        """The events as a .jsonl file in partition, offset order (what the batch engine reads)."""
        lines = [value for p in sorted(self.records[EVENTS]) for _, value, _ in self.records[EVENTS][p]]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return path


def horizon_records(partition: int, watermarks: dict[str, int]) -> list[tuple[bytes, bytes]]:
    """(key, value) of the horizon records of a partition whose accounts reached `watermarks` (the file rule:
    W_p = the largest of them), then its partition_horizon record."""
    if not watermarks:
        return []
    top = max(watermarks.values())
    out = [
        (account.encode(), rec.dumps(rec.horizon(account, partition, SETTINGS.horizon(mark, top), mark)))
        for account, mark in sorted(watermarks.items())
    ]
    floor = top - SETTINGS.account_idle_lateness_ms
    out.append((f"partition-{partition}".encode(), rec.dumps(rec.partition_horizon(partition, floor))))
    return out


def _presence_key(presence: PresenceInterval) -> tuple[object, ...]:
    return (presence.account_id, presence.user_id, presence.kind, presence.device_id, presence.start_ms)


def build_streams(lines: list[bytes], events_topic: str, partitions: int = PARTITIONS) -> Streams:
    """The events on their partitions (stamped with the latest event time so far, as if published live), and per
    partition the flushed outputs of the fold over them (stamped now)."""
    streams = Streams(partitions=partitions)
    events = streams.records[EVENTS]
    latest = 0
    for line in lines:
        key = key_of(line)
        decoded = decode(line)
        if not isinstance(decoded, Rejection):
            latest = max(latest, decoded.at_ms)
        events[partition_of(key, partitions)].append((key, line, latest))
    now = int(time.time() * 1000)  # outputs are stamped when published: output topics have a time-based retention
    for partition in range(partitions):
        _outputs(streams, partition, events_topic, now)
    return streams


def legacy_letter(reason: str, detail: str, original: bytes, topic: str, partition: int, offset: int) -> bytes:
    """A dead letter of format 1 (older workers: JSON with `original_base64`, no headers), which readers still
    accept: the simulated streams carry these (the worker's own, format 2, are in tests/replay/support.py)."""
    letter = {"reason": reason, "detail": detail, "original_base64": base64.b64encode(original).decode()}
    return rec.dumps(letter | {"topic": topic, "partition": partition, "offset": offset, "line": None})


def _outputs(streams: Streams, partition: int, events_topic: str, stamp: int) -> None:
    out = streams.records
    valid = []
    offsets = []
    watermarks: dict[str, int] = {}
    for offset, (_, value, _) in enumerate(streams.records[EVENTS].get(partition, [])):
        decoded = decode(value)
        if isinstance(decoded, Rejection):
            letter = legacy_letter(decoded.reason, decoded.detail, value, events_topic, partition, offset)
            out[DEAD_LETTERS][partition].append((None, letter, stamp))
        else:
            valid.append(decoded)
            offsets.append(offset)
            watermarks[decoded.account_id] = max(watermarks.get(decoded.account_id, decoded.at_ms), decoded.at_ms)
    fold, _, rejected = fold_history(valid, SETTINGS)
    for arrival, _event, verdict in rejected:
        if verdict in ("too_late", "future_skew"):
            raw = streams.records[EVENTS][partition][offsets[arrival]][1]
            letter = legacy_letter(verdict, "", raw, events_topic, partition, offsets[arrival])
            out[DEAD_LETTERS][partition].append((None, letter, stamp))
    by_account: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for change in fold.usage_changes:
        out[USAGE_CHANGES][partition].append((change.account_id.encode(), rec.dumps(rec.usage_change(change)), stamp))
        by_account[change.account_id][0].append(change)
    for window in fold.windows:
        out[PEAK_WINDOWS][partition].append((window.account_id.encode(), rec.dumps(rec.peak_window(window)), stamp))
    for interval in fold.intervals:
        value = rec.dumps(rec.user_interval(interval))
        out[INTERVALS][partition].append((interval.account_id.encode(), value, stamp))
    for account_id, plan in fold.plans:
        out[INTERVALS][partition].append((account_id.encode(), rec.dumps(rec.plan(account_id, plan)), stamp))
        by_account[account_id][1].append(plan)
    closed = {_presence_key(p) for p in fold.presences if p.end_ms < NEVER}
    for presence in fold.presences:  # like the user intervals: the closed copies (open copies: test_data_through)
        if presence.end_ms >= NEVER and _presence_key(presence) in closed:
            continue
        value = rec.dumps(rec.presence_interval(presence))
        out[INTERVALS][partition].append((presence.account_id.encode(), value, stamp))
    for key, value in horizon_records(partition, watermarks):
        out[INTERVALS][partition].append((key, value, stamp))
    for account_id, (changes, plans) in sorted(by_account.items()):
        for alert in alerts_for(
            account_id, sorted(changes, key=lambda c: c.at_ms), sorted(plans, key=lambda p: p.at_ms)
        ):
            value = rec.dumps(alert.to_record().model_dump(mode="json"))
            out[ALERTS][partition].append((account_id.encode(), value, stamp))


def feed(writer: SinkWriter, streams: Streams, flush_every: int | None = None) -> None:
    """Give every record to a SinkWriter (offset = position), topic by topic, flushing every `flush_every` records."""
    count = 0
    for topic in (EVENTS, USAGE_CHANGES, PEAK_WINDOWS, ALERTS, DEAD_LETTERS, INTERVALS):
        for partition, records in sorted(streams.records.get(topic, {}).items()):
            for offset, (key, value, stamp) in enumerate(records):
                writer.add(topic, partition, offset, stamp, key, value)
                count += 1
                if flush_every and count % flush_every == 0:
                    writer.flush()
    writer.flush()


async def _publish(bootstrap: str, names: dict[str, str], streams: Streams, topics: tuple[str, ...]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending = []
        for topic in topics:
            for partition, records in sorted(streams.records.get(topic, {}).items()):
                for key, value, stamp in records:
                    pending.append(
                        await producer.send(names[topic], value, key=key, partition=partition, timestamp_ms=stamp)
                    )
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def publish(bootstrap: str, names: dict[str, str], streams: Streams, topics: tuple[str, ...] | None = None) -> None:
    """Produce the records of `topics` (all by default) to their partitions, in order, and wait for the acks."""
    chosen = topics or (EVENTS, USAGE_CHANGES, PEAK_WINDOWS, ALERTS, DEAD_LETTERS, INTERVALS)
    asyncio.run(_publish(bootstrap, names, streams, chosen))


SNAPSHOT_TABLES = (
    "events",
    "usage_changes",
    "peak_windows",
    "alerts",
    "user_intervals",
    "plans",
    "presence_intervals",
    "horizons",
    "partition_horizons",
    "dead_letters",
    "billing_periods",
    "billing_days",
)


def snapshot_rows(path: Path, tables: tuple[str, ...] = SNAPSHOT_TABLES) -> dict[str, list[tuple]]:
    """Every row of the snapshot's data tables, in a canonical order (for equality checks)."""
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        return {table: sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in tables}


def export_events(con: duckdb.DuckDBPyConnection, path: Path, partition: int | None = None) -> Path:
    """The snapshot's events topic (or one partition of it) as a .jsonl file (partition, offset order), original
    bytes kept."""
    where = "" if partition is None else f"WHERE kafka_partition = {int(partition)}"
    lines = con.execute(
        f"SELECT coalesce(raw_bytes, encode(raw)) FROM events {where} ORDER BY kafka_partition, kafka_offset"
    ).fetchall()
    path.write_bytes(b"".join(bytes(line) + b"\n" for (line,) in lines))
    return path


def partition_engines(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> dict[str, Any]:
    """A batch engine per events partition (an event file is one partition: its data_through follows the file
    rule), by account."""
    from processor.batch.engine import BatchEngine

    engines: dict[str, Any] = {}
    partitions = [row[0] for row in con.execute("SELECT DISTINCT kafka_partition FROM events ORDER BY 1").fetchall()]
    for partition in partitions:
        engine = BatchEngine()
        engine.load(export_events(con, tmp_path / f"events-{partition}.jsonl", partition))
        engines.update({account: engine for account in engine.accounts()})
    return engines
