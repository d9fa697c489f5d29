"""`ccmeter replay archive`: the events of a time range, from the events topic into one Parquet file.

Offsets are chosen by record timestamp (`offsets_for_times`) with a slack on both sides (`by` "record-time", the
default), or the whole topic is read (`by` "event-time", for records whose timestamps say nothing about their event
times, e.g. published later); either way records are kept by event time: a valid event when `from <= occurred_at <
to`, a record that does not decode when its record timestamp is in the range. Columns are those of a snapshot's
`events` table (processor/snapshots/tables.py: Kafka position, key, the typed wire fields, `rejection`, the exact
`raw` text or `raw_bytes`) plus `arrival`, the row number; rows are in (partition, offset) order. BatchEngine and
processor/eventfile.py read it as an event file (typed wire fields and `arrival`); `ccmeter replay publish` sends the
exact raw bytes back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from processor.snapshots.tables import EVENTS_TABLE, Row, event_row
from replay import kafka
from replay.common import atomic_target, install

ARCHIVE_SCHEMA: pa.Schema = EVENTS_TABLE.schema.append(pa.field("arrival", pa.int64()))
CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class ArchivePlan:
    """What an archive reads: per partition the offsets [start, stop) of the events topic."""

    topic: str
    from_ms: int
    to_ms: int
    slack_ms: int
    starts: dict[int, int]
    stops: dict[int, int]
    by: str = "record-time"  # which records are read: by record timestamp (+- slack), or all ("event-time")
    topic_records: int = 0  # records on the topic (log start to end) when the plan was made

    @property
    def records(self) -> int:
        """Records to read (before filtering on event time)."""
        return sum(self.stops[p] - self.starts[p] for p in self.starts)


@dataclass
class ArchiveResult:
    """What an archive wrote."""

    path: Path
    read: int = 0
    kept: int = 0
    rejected: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)


async def make_plan(
    broker: str, topic: str, from_ms: int, to_ms: int, slack_ms: int, by: str = "record-time"
) -> ArchivePlan:
    """Offsets to read, never past the end offsets seen now: with `by` "record-time" those whose record timestamps
    are in [from - slack, to + slack); with "event-time" the whole topic (occurred_at is in the records only)."""
    client = kafka.consumer(broker)
    await client.start()
    try:
        partitions = await kafka.partitions_of(client, topic)
        ends = await kafka.end_offsets(client, topic, partitions)
        firsts = await kafka.beginning_offsets(client, topic, partitions)
        if by == "event-time":
            starts, stops = firsts, ends
        else:
            starts = await kafka.offsets_at(client, topic, partitions, from_ms - slack_ms, ends)
            stops = await kafka.offsets_at(client, topic, partitions, to_ms + slack_ms, ends)
    finally:
        await client.stop()
    stops = {p: max(stops[p], starts[p]) for p in partitions}
    total = sum(ends[p] - firsts[p] for p in partitions)
    return ArchivePlan(topic, from_ms, to_ms, slack_ms, starts, stops, by, total)


def keep(row: Row, from_ms: int, to_ms: int) -> bool:
    """In range by event time (valid events) or by record timestamp (records that do not decode)."""
    at = row.get("occurred_at") if row.get("rejection") is None else row["kafka_ts"]
    return at is not None and from_ms <= at < to_ms


async def write_archive(
    broker: str, plan: ArchivePlan, out: Path, bar: Any, on_lag: Callable[[dict[int, int]], None] | None = None
) -> ArchiveResult:
    """Read the planned offsets partition by partition into `out` (temporary file, then renamed into place)."""
    result = ArchiveResult(out)
    if plan.records == 0:  # nothing to read: no file, no consumer
        return result
    tmp = atomic_target(out)
    client = kafka.consumer(broker, max_partition_fetch_bytes=4 * 1024 * 1024)
    lag = {p: plan.stops[p] - plan.starts[p] for p in plan.starts}
    await client.start()
    try:
        with pq.ParquetWriter(tmp, ARCHIVE_SCHEMA, compression="zstd") as writer:
            rows: list[Row] = []
            for partition in sorted(plan.starts):
                start, stop = plan.starts[partition], plan.stops[partition]
                result.per_partition[partition] = 0
                if stop <= start:
                    continue
                tp = kafka.tps(plan.topic, [partition])[0]
                client.assign([tp])
                client.seek(tp, start)
                position = start
                while position < stop:
                    batches = await client.getmany(tp, timeout_ms=500, max_records=10_000)
                    for record in batches.get(tp, []):
                        if record.offset >= stop:
                            position = stop
                            break
                        position = record.offset + 1
                        result.read += 1
                        row = event_row(partition, record.offset, record.timestamp, record.key, record.value)
                        if keep(row, plan.from_ms, plan.to_ms):
                            row["arrival"] = result.kept
                            result.kept += 1
                            result.rejected += row.get("rejection") is not None
                            result.per_partition[partition] += 1
                            rows.append(row)
                    position = max(position, await client.position(tp))
                    before = lag[partition]
                    lag[partition] = stop - min(position, stop)
                    if on_lag:
                        on_lag(lag)
                    bar.update(before - lag[partition])
                    if len(rows) >= CHUNK_ROWS:
                        writer.write_table(pa.Table.from_pylist(rows, schema=ARCHIVE_SCHEMA))
                        rows.clear()
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=ARCHIVE_SCHEMA))
        if result.kept:
            install(tmp, out)
        else:  # nothing in range: leave `out` as it was
            tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        await client.stop()
    return result
