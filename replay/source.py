"""Event logs of a snapshot as the live worker saw them, for recomputation with the batch engine.

The snapshot's `events` table holds every record of the events topic (too-late ones included). The worker applied
only some: per partition, in offset order, a valid event whose Kafka key is its account_id, that the partition clock
does not reject for future skew and that is not below its account's horizon (SPEC 2, docs/semantics.md section 7).
`classify` replays both (processor.core.fold.PartitionClock with the record timestamps, and each account's
watermark, as the worker does) and gives each valid event its verdict: `ok`, `too_late`, `future_skew` or
`key_mismatch`. `write_event_file` exports a selection as a Parquet event file (typed wire fields plus `arrival` in
(partition, offset) order) that BatchEngine loads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from processor.batch.wire import FIELDS
from processor.core.fold import PartitionClock
from processor.core.model import Settings
from processor.errors import snapshot_error

WIRE_COLUMNS = ", ".join(f'"{name}"' for name in FIELDS)


def open_snapshot_file(path: str | Path) -> tuple[duckdb.DuckDBPyConnection, int | None]:
    """Open a snapshot read-only (CliError when it is not one); returns the connection and its watermark."""
    from processor.snapshots.snapshot import SnapshotError, open_snapshot

    try:
        return open_snapshot(path)
    except SnapshotError as exc:
        raise snapshot_error(str(exc)) from None


CLASSIFY_BATCH_ROWS = 50_000  # events per batch the partition clocks are replayed over (bounds memory)


@dataclass
class Verdicts:
    """The verdict of every valid event of the snapshot, and each partition's final watermark.

    The verdicts are in `table` (in memory), or in the Parquet file `path` (`classify_to_file`, bounded memory)."""

    table: pa.Table | None  # kafka_partition int32, kafka_offset int64, verdict string
    watermarks: dict[int, int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    account_watermarks: dict[tuple[int, str], int] = field(default_factory=dict)
    path: Path | None = None

    def horizon(self, partition: int, settings: Settings, account: str) -> int | None:
        """Every instant below it is final for `account` on that partition (SPEC 2; None: nothing admitted there)."""
        watermark = self.watermarks.get(partition)
        if watermark is None:
            return None
        return settings.horizon(self.account_watermarks.get((partition, account)), watermark)


VERDICT_SCHEMA = pa.schema([("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()), ("verdict", pa.string())])


def _verdict_batches(
    con: duckdb.DuckDBPyConnection, settings: Settings, where: str, bar: Any, into: Verdicts
) -> Iterator[pa.RecordBatch]:
    """Replay each partition's clock over the valid events, batch by batch; fills `into`'s watermarks and counts."""
    reader = con.sql(
        "SELECT kafka_partition::INTEGER AS kafka_partition, kafka_offset::BIGINT AS kafka_offset, "
        "epoch_ms(kafka_ts) AS ts, epoch_ms(occurred_at) AS at, account_id, "
        "coalesce(kafka_key = account_id, false) AS keyed FROM events WHERE rejection IS NULL "
        f"{'AND ' + where if where else ''} ORDER BY kafka_partition, kafka_offset"
    ).to_arrow_reader(batch_size=CLASSIFY_BATCH_ROWS)
    clocks: dict[int, PartitionClock] = {}
    marks = into.account_watermarks  # each account's watermark on each partition
    counts = into.counts
    for batch in reader:
        partitions = batch.column("kafka_partition").to_pylist()
        stamps = batch.column("ts").to_pylist()
        times = batch.column("at").to_pylist()
        keyed = batch.column("keyed").to_pylist()
        accounts = batch.column("account_id").to_pylist()
        verdicts: list[str] = []
        for index, partition in enumerate(partitions):
            if not keyed[index]:
                verdict = "key_mismatch"
            else:
                clock = clocks.get(partition)
                if clock is None:
                    clock = clocks[partition] = PartitionClock(settings)
                at, key = times[index], (partition, accounts[index])
                own = marks.get(key)
                if clock.skewed(at, stamps[index]):
                    verdict = "future_skew"
                elif at < settings.horizon(own, clock.watermark):
                    verdict = "too_late"
                else:
                    verdict = "ok"
                    clock.observe(at)
                    if own is None or at > own:
                        marks[key] = at
            verdicts.append(verdict)
            counts[verdict] += 1
        if bar is not None:
            bar.update(len(partitions))
        yield pa.record_batch(
            [batch.column("kafka_partition"), batch.column("kafka_offset"), pa.array(verdicts, pa.string())],
            schema=VERDICT_SCHEMA,
        )
    into.watermarks.update({p: c.watermark for p, c in clocks.items() if c.watermark is not None})


def classify(con: duckdb.DuckDBPyConnection, settings: Settings, where: str = "", bar: Any = None) -> Verdicts:
    """Replay each partition's clock over the valid events (optionally `AND <where>` on the events table); the
    verdicts are kept in memory (`Verdicts.table`)."""
    result = Verdicts(None)
    batches = list(_verdict_batches(con, settings, where, bar, result))
    result.table = pa.Table.from_batches(batches, schema=VERDICT_SCHEMA)
    return result


def classify_to_file(
    con: duckdb.DuckDBPyConnection, settings: Settings, path: Path, where: str = "", bar: Any = None
) -> Verdicts:
    """`classify`, writing the verdicts to the Parquet file `path` batch by batch: memory does not grow with the
    number of events (only with partitions and accounts)."""
    import pyarrow.parquet as pq

    result = Verdicts(None, path=path)
    with pq.ParquetWriter(path, VERDICT_SCHEMA) as writer:
        for batch in _verdict_batches(con, settings, where, bar, result):
            writer.write_batch(batch)
    return result


def account_partitions(con: duckdb.DuckDBPyConnection) -> dict[str, list[int]]:
    """The events partitions each account's valid events are on (one, unless keys were wrong)."""
    rows = con.execute(
        "SELECT account_id, list(DISTINCT kafka_partition ORDER BY kafka_partition) FROM events "
        "WHERE rejection IS NULL GROUP BY account_id"
    ).fetchall()
    return {account: list(parts) for account, parts in rows}


def write_event_file(
    con: duckdb.DuckDBPyConnection,
    verdicts: Verdicts,
    out: Path,
    *,
    accounts: list[str] | None = None,
    extra: pa.Table | None = None,
) -> int:
    """Write the `ok` events (of `accounts`, or all) plus the rows of `extra` (events-table columns) to `out`.

    Rows are ordered by (kafka_partition, kafka_offset) and numbered by `arrival`. Returns the row count.
    """
    if verdicts.path is not None:
        relation = f"read_parquet('{_quoted(verdicts.path)}')"
    else:
        con.register("_replay_verdicts", verdicts.table)
        relation = "_replay_verdicts"
    sources = [
        f"SELECT {WIRE_COLUMNS}, e.kafka_partition, e.kafka_offset FROM events AS e "
        f"JOIN {relation} AS v USING (kafka_partition, kafka_offset) WHERE v.verdict = 'ok'"
        + (" AND e.account_id IN (SELECT unnest($accounts::VARCHAR[]))" if accounts is not None else "")
    ]
    if extra is not None and extra.num_rows:
        con.register("_replay_extra", extra)
        sources.append(f"SELECT {WIRE_COLUMNS}, kafka_partition, kafka_offset FROM _replay_extra")
    union = " UNION ALL ".join(sources)
    path = _quoted(out)
    try:
        params = {"accounts": accounts} if accounts is not None else {}
        con.execute(
            f"COPY (SELECT {WIRE_COLUMNS}, kafka_partition, kafka_offset, "
            "(row_number() OVER (ORDER BY kafka_partition, kafka_offset) - 1)::BIGINT AS arrival "
            f"FROM ({union}) ORDER BY kafka_partition, kafka_offset) TO '{path}' (FORMAT parquet)",
            params,
        )
        return int(con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0])
    finally:
        if verdicts.path is None:
            con.unregister("_replay_verdicts")
        if extra is not None and extra.num_rows:
            con.unregister("_replay_extra")


def _quoted(path: Path) -> str:
    """A path as the inside of a SQL string literal."""
    return str(path).replace("'", "''")
