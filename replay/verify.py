"""`ccmeter replay verify`: recompute a snapshot's outputs from its own event log and compare with the live ones.

The events the live worker applied (`replay.source.classify`: valid, keyed by their account, admitted by the
partition clock) are folded by the independent batch engine. Both sides are then cut at each account's horizon (its
partition's final watermark minus the allowed lateness, or `--until`): below it every output is final, whatever
arrived later. Compared, by id and field by field in the JSON shapes of the output topics: usage changes
(`at < horizon`), closed peak windows (`end <= horizon`), user intervals (`start < horizon`; one not ended below it
is open there, end null; when the snapshot has any) and plans (`at < horizon`). With `--against`, the outputs
compared are another snapshot's (a rebuilt version's).

Memory does not grow with the number of events: the partition clocks run over batches and write their verdicts to
disk, the batch engine works in a DuckDB file, and each side's records go, batch by batch, to a Parquet run that
DuckDB joins by id (spilling to disk); differences are handed to a callback as they are found.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from processor.core.model import NEVER, PeakWindow, Plan, Settings, UsageChange, UserInterval
from processor.options import DEFAULT_MEMORY_LIMIT
from processor.worker import records as rec
from replay.source import Verdicts, account_partitions, classify_to_file, write_event_file
from schemas.events import format_ms

Records = dict[str, dict[str, Any]]  # id -> record (JSON shape of the output topics)
TABLES = ("usage_changes", "peak_windows", "user_intervals", "plans")
ID_OF = {"usage_changes": "change_id", "peak_windows": "window_id", "user_intervals": "interval_id", "plans": "plan_id"}


@dataclass(frozen=True)
class Difference:
    """One disagreement between the recomputation and the live outputs."""

    table: str
    kind: str  # "missing_live" (recomputed, not in the snapshot), "extra_live" (only live), "different"
    account_id: str
    record_id: str
    detail: str

    def line(self) -> str:
        """One line for the terminal."""
        return f"{self.table} {self.kind}: {self.account_id} {self.record_id}: {self.detail}"


@dataclass
class VerifyResult:
    """Rows compared per table, the differences, and what was left out."""

    compared: dict[str, int] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)  # only when `verify` has no `on_difference`
    horizons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    difference_count: int = 0


def account_horizons(
    con: duckdb.DuckDBPyConnection, verdicts: Verdicts, settings: Settings, until_ms: int | None
) -> dict[str, int]:
    """Per account, the instant below which its outputs are final (the lowest over its partitions)."""
    out: dict[str, int] = {}
    for account, partitions in account_partitions(con).items():
        horizons = [verdicts.horizon(p, settings, account) for p in partitions]
        if not horizons or any(h is None for h in horizons):
            continue
        horizon = min(h for h in horizons if h is not None)
        out[account] = horizon if until_ms is None else min(horizon, until_ms)
    return out


BATCH_ROWS = 20_000  # output records converted per batch on each side (bounds memory)
RUN_SCHEMA = pa.schema([("id", pa.string()), ("account_id", pa.string()), ("body", pa.string()), ("n", pa.int64())])
Row = tuple[Any, ...]


def _ts(ms: int) -> str:
    return format_ms(ms)


def _horizon_table(horizons: dict[str, int]) -> pa.Table:
    return pa.table(
        {"account_id": pa.array(list(horizons), pa.string()), "horizon": pa.array(list(horizons.values()), pa.int64())}
    )


# Per table: the live query (snapshot tables, joined with the horizons) and its row -> record conversion.
LIVE_SQL = {
    "usage_changes": "SELECT change_id, account_id, epoch_ms(changed_at), usage, licenses FROM usage_changes "
    "JOIN _replay_horizons USING (account_id) WHERE epoch_ms(changed_at) < horizon",
    "peak_windows": "SELECT window_id, account_id, kind, epoch_ms(start_at), epoch_ms(end_at), max_usage, "
    "epoch_ms(max_at), seconds_over_licenses, license_seconds FROM peak_windows "
    "JOIN _replay_horizons USING (account_id) WHERE epoch_ms(end_at) <= horizon",
    # not ended below the horizon (or no end yet): still open there, end null
    "user_intervals": "SELECT interval_id, account_id, user_id, epoch_ms(start_at), "
    "CASE WHEN epoch_ms(end_at) < horizon THEN epoch_ms(end_at) END FROM user_intervals "
    "JOIN _replay_horizons USING (account_id) WHERE epoch_ms(start_at) < horizon",
    "plans": "SELECT plan_id, account_id, epoch_ms(effective_at), licenses, overage_allowance, billing_anchor_day, "
    "timezone, grace_minutes, grace_mode FROM plans JOIN _replay_horizons USING (account_id) "
    "WHERE epoch_ms(effective_at) < horizon",
}


def _live_record(table: str, r: Row) -> dict[str, Any]:
    if table == "usage_changes":
        return {"change_id": r[0], "account_id": r[1], "at": _ts(r[2]), "usage": r[3], "licenses": r[4]}
    if table == "peak_windows":
        return {
            "window_id": r[0],
            "account_id": r[1],
            "kind": r[2],
            "start": _ts(r[3]),
            "end": _ts(r[4]),
            "max_usage": r[5],
            "max_at": _ts(r[6]),
            "seconds_over_licenses": r[7],
            "license_seconds": r[8],
        }  # fmt: skip
    if table == "user_intervals":
        return {
            "record": "user_interval",
            "interval_id": r[0],
            "account_id": r[1],
            "user_id": r[2],
            "start": _ts(r[3]),
            "end": _ts(r[4]) if r[4] is not None else None,
        }
    return {**rec.plan(r[1], Plan(r[2], *r[3:])), "plan_id": r[0]}


# Per table: the batch engine's query (its own tables, joined with the horizons) and the conversion. Sums are
# HUGEINT in DuckDB (Decimal through Arrow): cast back to BIGINT, as `BatchEngine.peak_windows` reads them as int.
MINE_SQL = {
    "usage_changes": "SELECT account_id, at_ms, usage, licenses FROM usage_changes "
    "JOIN _replay_horizons USING (account_id) WHERE at_ms < horizon",
    "peak_windows": "SELECT account_id, kind, start_ms, end_ms, max_usage, max_at_ms, over_ms::BIGINT, "
    "license_ms::BIGINT "
    "FROM peak_windows JOIN _replay_horizons USING (account_id) WHERE end_ms <= horizon",
    "user_intervals": "SELECT account_id, user_id, start_ms, end_ms, horizon FROM user_intervals "
    "JOIN _replay_horizons USING (account_id) WHERE start_ms < horizon",
    "plans": "SELECT account_id, at_ms, licenses, overage_allowance, billing_anchor_day, timezone, grace_minutes, "
    "grace_mode FROM plans JOIN _replay_horizons USING (account_id) WHERE at_ms < horizon "
    "ORDER BY account_id, at_ms, seq",
}


def _mine_record(table: str, r: Row) -> dict[str, Any]:
    if table == "usage_changes":
        return rec.usage_change(UsageChange(*r))
    if table == "peak_windows":
        return rec.peak_window(PeakWindow(*r))
    if table == "user_intervals":  # not ended below the horizon: still open (end null), as the worker emits it
        account, user, start, end, horizon = r
        return rec.user_interval(UserInterval(account, user, start, end if end < horizon else NEVER))
    return rec.plan(r[0], Plan(*r[1:]))


def _records(
    con: duckdb.DuckDBPyConnection, sql: str, horizons: dict[str, int], convert: Callable[[Row], dict[str, Any]]
) -> Iterator[list[dict[str, Any]]]:
    """The rows of `sql` (over `_replay_horizons`) as records, in batches of BATCH_ROWS."""
    con.register("_replay_horizons", _horizon_table(horizons))
    try:
        for batch in con.sql(sql).to_arrow_reader(batch_size=BATCH_ROWS):
            yield [convert(row) for row in _rows(batch)]
    finally:
        con.unregister("_replay_horizons")


def _write_run(batches: Iterator[list[dict[str, Any]]], id_key: str, path: Path, bar: Any) -> int:
    """Write records as (id, account_id, JSON body, row number) to the Parquet file `path`; returns the count."""
    import pyarrow.parquet as pq

    count = 0
    with pq.ParquetWriter(path, RUN_SCHEMA) as writer:
        for records in batches:
            writer.write_table(
                pa.table(
                    {
                        "id": [r[id_key] for r in records],
                        "account_id": [r["account_id"] for r in records],
                        "body": [json.dumps(r, default=str) for r in records],
                        "n": range(count, count + len(records)),
                    },
                    schema=RUN_SCHEMA,
                )
            )
            count += len(records)
            if bar is not None:
                bar.update(len(records))
            del records  # not alive while the next batch is built
    return count


def _rows(batch: pa.RecordBatch) -> Iterator[Row]:
    """The rows of an Arrow batch as tuples."""
    return zip(*(column.to_pylist() for column in batch.columns), strict=True)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _detail(record: dict[str, Any], id_key: str) -> str:
    return ", ".join(f"{k} {v}" for k, v in record.items() if k not in (id_key, "account_id", "record"))


def compare_runs(table: str, mine: Path, theirs: Path, work: duckdb.DuckDBPyConnection) -> Iterator[Difference]:
    """Differences of one table between two runs (by id, the last of equal ids counting), ordered by account, kind
    and id; DuckDB joins them (on disk when they do not fit in memory)."""
    id_key = ID_OF[table]

    def side(path: Path) -> str:
        return (
            "SELECT id, arg_max(account_id, n) AS account_id, arg_max(body, n) AS body "
            f"FROM read_parquet('{_quoted(path)}') GROUP BY id"
        )

    reader = work.sql(
        f"WITH m AS ({side(mine)}), t AS ({side(theirs)}) "
        "SELECT coalesce(m.account_id, t.account_id) AS account_id, "
        "CASE WHEN t.id IS NULL THEN 'missing_live' WHEN m.id IS NULL THEN 'extra_live' ELSE 'different' END AS kind, "
        "coalesce(m.id, t.id) AS id, m.body, t.body FROM m FULL OUTER JOIN t ON m.id = t.id "
        "WHERE m.body IS DISTINCT FROM t.body ORDER BY account_id, kind, id"
    ).to_arrow_reader(batch_size=BATCH_ROWS)
    for batch in reader:
        for account, kind, record_id, my_body, their_body in _rows(batch):
            if kind == "missing_live":
                yield Difference(table, kind, account, record_id, _detail(json.loads(my_body), id_key))
            elif kind == "extra_live":
                yield Difference(table, kind, account, record_id, _detail(json.loads(their_body), id_key))
            else:
                mine_record, theirs_record = json.loads(my_body), json.loads(their_body)
                if mine_record == theirs_record:  # the same values written differently
                    continue
                fields = [
                    f"{k} live {theirs_record.get(k)!r} != recomputed {mine_record.get(k)!r}"
                    for k in mine_record
                    if mine_record[k] != theirs_record.get(k)
                ]
                yield Difference(table, kind, account, record_id, "; ".join(fields))


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _bound(connection: duckdb.DuckDBPyConnection, work_dir: Path, memory_limit: str) -> None:
    """Hold the connection's database to `memory_limit`; sorts and joins beyond it spill under `work_dir`."""
    connection.execute(f"SET temp_directory = '{_quoted(work_dir / 'spill')}'")
    connection.execute(f"SET memory_limit = '{_quoted(memory_limit)}'")


def verify(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    until_ms: int | None = None,
    progress: bool = True,
    against: duckdb.DuckDBPyConnection | None = None,
    on_difference: Callable[[Difference], None] | None = None,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> VerifyResult:
    """Recompute from `con`'s events and compare with `con`'s outputs, or with those of `against` (another
    snapshot, e.g. of a rebuilt version whose sink holds outputs only), below `con`'s horizons.

    Each difference goes to `on_difference` as it is found (else to `VerifyResult.differences`); memory stays
    bounded whatever the number of events: every DuckDB database it uses is held to `memory_limit` (DuckDB's
    default is 80% of the machine's memory, and its buffer pool grows with the data), and what does not fit spills
    to work files in a temporary directory."""
    from processor.batch.engine import BatchEngine
    from replay.common import progress as bar_of

    result = VerifyResult()

    def emit(difference: Difference) -> None:
        result.difference_count += 1
        if on_difference is None:
            result.differences.append(difference)
        else:
            on_difference(difference)

    outputs = con if against is None else against
    total = con.execute("SELECT count(*) FROM events WHERE rejection IS NULL").fetchall()[0][0]
    with tempfile.TemporaryDirectory(prefix="ccmeter-verify-") as tmp:
        work_dir = Path(tmp)
        for connection in {id(con): con, id(outputs): outputs}.values():  # sorts and joins may spill here
            _bound(connection, work_dir, memory_limit)
        with bar_of(total, "verify: partition clocks", enabled=progress) as bar:
            verdicts = classify_to_file(con, settings, work_dir / "verdicts.parquet", bar=bar)
        skipped = {k: v for k, v in verdicts.counts.items() if k != "ok"}
        if skipped:
            note = "not applied live (left out): " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
            result.notes.append(note)
        horizons = account_horizons(con, verdicts, settings, until_ms)
        result.horizons = horizons
        applied = work_dir / "applied.parquet"
        rows = write_event_file(con, verdicts, applied)
        live_ids = {r[0] for r in outputs.execute("SELECT DISTINCT account_id FROM usage_changes").fetchall()}
        unknown = sorted(live_ids - set(horizons))
        if unknown:
            result.notes.append(
                f"live usage changes of accounts without events in the snapshot: {', '.join(unknown[:10])}"
            )
            for account in unknown:
                emit(Difference("usage_changes", "extra_live", account, "-", "account has no events"))
        has_intervals = _count(outputs, "user_intervals") > 0
        tables = [t for t in TABLES if t != "user_intervals" or has_intervals]
        if not has_intervals:
            result.notes.append("user_intervals: the snapshot has none (not compared)")
        engine = BatchEngine(settings, database=str(work_dir / "engine.duckdb"))
        work = duckdb.connect(str(work_dir / "compare.duckdb"))
        try:
            _bound(engine.con, work_dir, memory_limit)
            _bound(work, work_dir, memory_limit)
            with bar_of(rows, "verify: batch engine", enabled=progress) as bar:
                engine.load(applied)
                bar.update(rows)
            size = sum(_count(engine.con, t) + _count(outputs, t) for t in tables)  # an upper bound
            with bar_of(size, "verify: compare", enabled=progress) as bar:
                for table in tables:
                    mine, theirs = work_dir / f"mine-{table}.parquet", work_dir / f"live-{table}.parquet"
                    convert_mine: Callable[[Row], dict[str, Any]] = lambda r, t=table: _mine_record(t, r)  # noqa: E731
                    convert_live: Callable[[Row], dict[str, Any]] = lambda r, t=table: _live_record(t, r)  # noqa: E731
                    batches = _records(engine.con, MINE_SQL[table], horizons, convert_mine)
                    result.compared[table] = _write_run(batches, ID_OF[table], mine, bar)
                    batches = _records(outputs, LIVE_SQL[table], horizons, convert_live)
                    result.live[table] = _write_run(batches, ID_OF[table], theirs, bar)
                    for difference in compare_runs(table, mine, theirs, work):
                        emit(difference)
                if bar.total != bar.n:  # the total counted every row; those past the horizons are not compared
                    bar.total = bar.n
                    bar.refresh()
        finally:
            work.close()
            engine.close()
    return result
