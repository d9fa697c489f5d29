"""`ccmeter replay restate`: a period's report recomputed with the events that arrived too late for the live worker.

Inputs, all of one account: the events the live worker applied (`replay.source.classify` over the snapshot), plus
the too-late ones, found three ways and merged by their position on the events topic (partition, offset):
the snapshot's events that the partition clock rejects as `too_late`; the snapshot's `dead_letters` with reason
`too_late` (their original bytes); with `--broker`, the dead-letter topic itself (letters newer than the snapshot).
The batch engine folds them (duplicates dropped by event id). The last report is the one the snapshot's live outputs
give (`ccmeter report --snapshot`: processor.core.billing.build_report over its usage changes, user intervals and
plans). The restated report is built the same way from the batch engine's outputs, keeping, like the live ones, only
what is final below the account's horizon (its partition's watermark minus the allowed lateness). So, when the live
outputs are right (`ccmeter replay verify`), the two reports differ exactly by the effect of the late events.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from processor import deadletters
from processor.cli import CliError
from processor.core.model import NEVER, Settings, UserInterval
from processor.snapshots.tables import EVENTS_TABLE, event_row
from processor.topics import DEAD_LETTERS, EVENTS, topic_names
from replay import kafka
from replay.source import Verdicts, classify, write_event_file
from schemas.events import Rejection, decode
from schemas.outputs import DAY_KEYS, SUMMARY_KEYS, Report

Position = tuple[int, int]


@dataclass
class LateEvents:
    """Too-late events of one account by position, and how many each source found."""

    raw: dict[Position, bytes] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, position: Position, value: bytes) -> None:
        """Record one (the first source to name a position keeps it)."""
        self.found[source] = self.found.get(source, 0) + 1
        self.raw.setdefault(position, value)


def _of_account(value: bytes, account: str) -> bool:
    event = decode(value)
    return not isinstance(event, Rejection) and event.account_id == account


def snapshot_prefix(con: duckdb.DuckDBPyConnection) -> str:
    """The topic prefix the snapshot's sink read."""
    rows = con.execute("SELECT topic_prefix FROM snapshot_info").fetchall()
    return rows[0][0] if rows and rows[0][0] else "ccmeter."


def late_from_table(con: duckdb.DuckDBPyConnection, account: str, events_topic: str, late: LateEvents) -> None:
    """The snapshot's dead letters with reason too_late that are events of `account`."""
    rows = con.execute(
        "SELECT source_partition, source_offset, original FROM dead_letters WHERE reason = 'too_late' "
        "AND source_topic = ? AND source_offset IS NOT NULL AND original IS NOT NULL",
        [events_topic],
    ).fetchall()
    for partition, offset, original in rows:
        if _of_account(bytes(original), account):
            late.add("dead_letters table", (partition, offset), bytes(original))


async def late_from_topic(broker: str, prefix: str, account: str, late: LateEvents, bar: Any) -> None:
    """The too_late letters of `account` on the dead-letter topic, from its start to its current end."""
    names = topic_names(prefix)
    topic, events_topic = names[DEAD_LETTERS], names[EVENTS]
    client = kafka.consumer(broker)
    await client.start()
    try:
        partitions = await kafka.partitions_of(client, topic)
        ends = await kafka.end_offsets(client, topic, partitions)
        starts = await kafka.beginning_offsets(client, topic, partitions)
        bar.reset(total=sum(ends[p] - starts[p] for p in partitions))
        parts = kafka.tps(topic, partitions)
        client.assign(parts)
        for tp in parts:
            client.seek(tp, starts[tp.partition])
        remaining = {tp for tp in parts if starts[tp.partition] < ends[tp.partition]}
        while remaining:
            batches = await client.getmany(*remaining, timeout_ms=500, max_records=10_000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp.partition]:
                        break
                    bar.update(1)
                    _letter(message.key, message.value, message.headers, account, events_topic, late)
            for tp in list(remaining):
                if await client.position(tp) >= ends[tp.partition]:
                    remaining.discard(tp)
    finally:
        await client.stop()


def _letter(
    key: bytes | None, value: bytes | None, headers: Any, account: str, events_topic: str, late: LateEvents
) -> None:
    """Collect a too_late letter of `account` (either dead-letter format, processor/deadletters.py)."""
    try:
        letter = deadletters.read(key, value, headers)
    except deadletters.BadLetter:
        return
    original, partition, offset = letter["original"], letter["partition"], letter["offset"]
    if letter["reason"] != "too_late" or letter["topic"] != events_topic or partition is None or offset is None:
        return
    if original is not None and _of_account(original, account):
        late.add("dead-letter topic", (partition, offset), original)


def late_table(late: LateEvents, account: str, skip: set[Position]) -> pa.Table:
    """Events-table rows of the late events not already among the snapshot's events of the account."""
    rows = [
        event_row(partition, offset, 0, account.encode(), value)
        for (partition, offset), value in sorted(late.raw.items())
        if (partition, offset) not in skip
    ]
    return pa.Table.from_pylist(rows, schema=EVENTS_TABLE.schema)


@dataclass
class Restatement:
    """The last and the restated report, and what went in."""

    last: Report
    restated: Report
    recomputed: Report  # without the late events: equals `last` when the live outputs are complete
    horizon_ms: int
    base_events: int
    late_events: int
    found: dict[str, int]
    beyond_horizon: int = 0  # late events at or after the horizon (not final in this snapshot: left out)


def report_below(engine: Any, account: str, start: date, end: date, horizon_ms: int) -> Report:
    """The report built, like the last report, from outputs final below the horizon (here the batch engine's)."""
    import dataclasses

    from processor.core.billing import build_report

    changes = [c for c in engine.usage_changes(account) if c.at_ms < horizon_ms]
    intervals = [  # as in the snapshot: an interval that has not ended below the horizon is still open
        i if i.end_ms < horizon_ms else UserInterval(i.account_id, i.user_id, i.start_ms, NEVER)
        for i in engine.user_intervals(account)
        if i.start_ms < horizon_ms
    ]
    plans = [p for p in engine.plans(account) if p.at_ms < horizon_ms]
    presences = [  # the same for presence intervals (peak_users); nothing after the horizon counts (data_through)
        p if p.end_ms < horizon_ms else dataclasses.replace(p, end_ms=NEVER)
        for p in engine.presence_intervals(account)
        if p.start_ms < horizon_ms
    ]
    return build_report(account, start, end, changes, intervals, plans, presences=presences, data_through_ms=horizon_ms)


def restate(
    con: duckdb.DuckDBPyConnection,
    account: str,
    start: date,
    end: date,
    settings: Settings,
    last: Report,
    late: LateEvents,
    progress: bool = True,
) -> Restatement:
    """Recompute the report of `account` for `start`..`end` with and without the late events.

    Both recomputations keep, like the live outputs the last report comes from, only what is final below the
    account's horizon (its partition's watermark - allowed lateness): past it both reports hold the last usage.
    """
    from processor.batch.engine import BatchEngine
    from replay.common import progress as bar_of

    quoted = account.replace("'", "''")
    verdicts = classify(
        con,
        settings,
        where="kafka_partition IN (SELECT DISTINCT kafka_partition FROM events "
        f"WHERE rejection IS NULL AND account_id = '{quoted}')",
    )
    positions = con.execute(
        "SELECT kafka_partition, kafka_offset FROM events WHERE rejection IS NULL AND account_id = ?", [account]
    ).fetchall()
    mine = {(p, o) for p, o in positions}
    horizons = [verdicts.horizon(p, settings, account) for p in {p for p, _ in mine}]
    if not horizons or None in horizons:
        raise CliError(f"account {account!r}: no applied events in the snapshot, nothing to restate")
    horizon = min(h for h in horizons if h is not None)
    assert verdicts.table is not None  # classify keeps the verdicts in memory
    columns = verdicts.table.to_pydict()
    for p, o, verdict in zip(columns["kafka_partition"], columns["kafka_offset"], columns["verdict"], strict=True):
        if verdict == "too_late" and (p, o) in mine:
            late.add("snapshot events (partition clock)", (p, o), b"")
    extra = late_table(late, account, mine)
    at = extra.column("occurred_at").cast(pa.int64()).to_pylist() if extra.num_rows else []
    beyond = sum(1 for ms in at if ms is not None and ms >= horizon)
    reports: list[Report] = []
    counts: list[int] = []
    with tempfile.TemporaryDirectory(prefix="ccmeter-restate-") as tmp:
        for with_late in (False, True):
            kept = dict(columns)
            if with_late:  # the clock's too-late events of the account count as applied here
                kept["verdict"] = [
                    "ok" if v == "too_late" and (p, o) in mine else v
                    for p, o, v in zip(kept["kafka_partition"], kept["kafka_offset"], kept["verdict"], strict=True)
                ]
            selection = Verdicts(pa.table(kept, schema=verdicts.table.schema), verdicts.watermarks)
            path = Path(tmp) / f"events-{int(with_late)}.parquet"
            rows = write_event_file(con, selection, path, accounts=[account], extra=extra if with_late else None)
            counts.append(rows)
            engine = BatchEngine(settings)
            label = "with late events" if with_late else "as applied live"
            try:
                with bar_of(rows, f"restate: fold {label}", enabled=progress) as bar:
                    engine.load(path)
                    bar.update(rows)
                reports.append(report_below(engine, account, start, end, horizon))
            finally:
                engine.close()
    return Restatement(
        last, reports[1], reports[0], horizon, counts[0], counts[1] - counts[0], dict(late.found), beyond
    )


def _change(old: Any, new: Any) -> str:
    if isinstance(old, int | float) and isinstance(new, int | float) and not isinstance(old, bool):
        delta = new - old
        return f"{delta:+g}" if isinstance(delta, float) else f"{delta:+d}"
    return "changed"


def differences(last: Report, restated: Report) -> tuple[list[list[object]], list[list[object]]]:
    """Summary rows (field, last, restated, change) and day rows (date, field, last, restated, change) that differ."""
    old, new = last.to_json_dict(), restated.to_json_dict()
    summary = [
        [k, old.get(k), new.get(k), _change(old.get(k), new.get(k))] for k in SUMMARY_KEYS if old.get(k) != new.get(k)
    ]
    old_days = {d["date"]: d for d in old["days"]}
    new_days = {d["date"]: d for d in new["days"]}
    days: list[list[object]] = []
    for day in sorted(old_days.keys() | new_days.keys()):
        a, b = old_days.get(day, {}), new_days.get(day, {})
        for key in DAY_KEYS:
            if key != "date" and a.get(key) != b.get(key):
                days.append([day, key, a.get(key), b.get(key), _change(a.get(key), b.get(key))])
    return summary, days


def snapshot_events_topic(con: duckdb.DuckDBPyConnection, prefix: str) -> str:
    """The events topic the snapshot's sink read (a rebuilt version's sink reads the live one)."""
    try:
        rows = con.execute("SELECT events_topic FROM snapshot_info").fetchall()
    except duckdb.BinderException:  # a snapshot of an older ccmeter
        rows = []
    return rows[0][0] if rows and rows[0][0] else topic_names(prefix)[EVENTS]


def snapshot_data_dir(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The sink data directory the snapshot was built from."""
    rows = con.execute("SELECT data_dir FROM snapshot_info").fetchall()
    return Path(rows[0][0]) if rows and rows[0][0] else None


def late_records(
    con: duckdb.DuckDBPyConnection, late: LateEvents, horizon_ms: int
) -> dict[Position, tuple[str, bytes]]:
    """The late events a restatement records: position -> (event id, original bytes), those below the horizon (the
    ones the restated report counts). The partition clock's too-late events take their bytes from the snapshot."""
    out: dict[Position, tuple[str, bytes]] = {}
    for (partition, offset), value in sorted(late.raw.items()):
        if not value:
            rows = con.execute(
                "SELECT raw, raw_bytes FROM events WHERE kafka_partition = ? AND kafka_offset = ?", [partition, offset]
            ).fetchall()
            if not rows:
                continue
            raw, raw_bytes = rows[0]
            value = bytes(raw_bytes) if raw_bytes is not None else str(raw).encode()
        event = decode(value)
        if isinstance(event, Rejection) or event.at_ms >= horizon_ms:
            continue
        out[(partition, offset)] = (event.event_id, value)
    return out
