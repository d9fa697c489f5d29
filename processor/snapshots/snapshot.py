"""`ccmeter snapshot`: a DuckDB file of the sink's data at one consistent cut.

The cut is the manifest read once at the start: only the files it commits are read (never modified once committed),
so a snapshot taken while the sink writes holds exactly the records below the manifest's offsets. Output rows are
deduplicated by their ids (the worker delivers at least once), events by their Kafka position; that also removes the
copies a file merge can briefly show (store.compact), and a build that finds a listed file merged away starts over.

The database is built under a hidden temporary name in the target directory and renamed into place, so readers
only ever see complete snapshots; a reader that has the previous file open keeps reading it undisturbed. The temp
files (and WAL) that a killed build left behind are removed by the next build, once their process is gone.

The file is written in DuckDB's STORAGE_VERSION format (ATTACH ... STORAGE_VERSION), which every DuckDB release from
1.1 on opens, and every table, view and column carries a description (`COMMENT ON`, see `describe`).
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from processor.snapshots.history import AccountHistory, load_histories, periods_between, snapshot_accounts
from processor.snapshots.restatements import ADJUSTMENT_COMMENTS, RESTATEMENT_COMMENTS
from processor.snapshots.store import Manifest, StoreError, committed_files, read_manifest
from processor.snapshots.tables import COLUMN_COMMENTS, TABLE_COLUMN_COMMENTS, TABLE_COMMENTS, TABLES, TS, Table
from processor.snapshots.views import VIEW_COLUMN_COMMENTS, VIEW_COMMENTS, create_views
from processor.topics import EVENTS, topic_names
from schemas.events import from_ms, to_ms
from schemas.outputs import DAY_KEYS, SUMMARY_KEYS, Report

_DUCK_TYPES: dict[str, str] = {
    "int32": "INTEGER",
    "int64": "BIGINT",
    "string": "VARCHAR",
    "binary": "BLOB",
    "double": "DOUBLE",
    "timestamp[ms, tz=UTC]": "TIMESTAMPTZ",
}
_ORDER: dict[str, str] = {
    "events": "kafka_partition, kafka_offset",
    "usage_changes": "account_id, changed_at, kafka_partition, kafka_offset",
    "peak_windows": "account_id, kind, start_at, end_at",
    "alerts": "account_id, alert_at, kafka_partition, kafka_offset",
    "dead_letters": "kafka_partition, kafka_offset",
    "user_intervals": "account_id, start_at, user_id",
    "plans": "account_id, effective_at, kafka_partition, kafka_offset",
    "presence_intervals": "account_id, start_at, user_id, kind, device_id",
    "horizons": "account_id, kafka_partition, kafka_offset",
    "partition_horizons": "events_partition, kafka_partition, kafka_offset",
}
# The storage format of the snapshot files: the oldest DuckDB release that opens them, tested with OLDEST_DUCKDB.
STORAGE_VERSION = "v1.1.0"
OLDEST_DUCKDB = "1.1.3"
_DATABASE = "ccmeter_snapshot"  # the name the file is attached under while it is built
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
STAMP_RE = r"\d{8}T\d{12}Z"
log = logging.getLogger("ccmeter.snapshot")


class SnapshotError(Exception):
    """The snapshot cannot be built or opened (user-facing message)."""


class SnapshotUsageError(SnapshotError):
    """The snapshot's own arguments are wrong (`--keep`, `--out`): a usage error, not a failure of the work."""


@dataclass(frozen=True)
class SnapshotResult:
    """What `build_snapshot` wrote."""

    path: Path
    rows: dict[str, int]
    files: int
    watermark_ms: int | None
    seconds: float
    pruned: list[Path]


def ccmeter_version() -> str:
    """The installed ccmeter version ("unknown" when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ccmeter")
    except PackageNotFoundError:
        return "unknown"


def _columns(table: Table) -> list[pa.Field]:
    """The table's columns with the Kafka position last."""
    fields = list(table.schema)
    return [f for f in fields if not f.name.startswith("kafka_")] + [f for f in fields if f.name.startswith("kafka_")]


def _ddl(table: Table) -> str:
    columns = ", ".join(f"{f.name} {_DUCK_TYPES[str(f.type)]}" for f in _columns(table))
    return f"CREATE TABLE {table.name} ({columns})"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _dedupe_key(table: Table) -> str:
    if table.name == "dead_letters":  # letters without a source position are only unique by their own position
        return (
            "source_topic, source_partition, source_offset, "
            "CASE WHEN source_offset IS NULL THEN kafka_partition END, "
            "CASE WHEN source_offset IS NULL THEN kafka_offset END"
        )
    return ", ".join(table.ids) if table.ids else "kafka_partition, kafka_offset"


def _preference(table: Table) -> str:
    """Which copy of a record a snapshot keeps: the first delivered; for user and presence intervals the closed
    copy."""
    if table.name in ("user_intervals", "presence_intervals"):
        return "end_at IS NULL, kafka_partition, kafka_offset"
    return "kafka_partition, kafka_offset"


def _load_table(con: duckdb.DuckDBPyConnection, table: Table, files: list[Path]) -> None:
    con.execute(_ddl(table))
    if not files:
        return
    paths = "[" + ", ".join(_sql_text(str(path)) for path in files) + "]"
    source = f"read_parquet({paths}, union_by_name = true)"
    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    # columns added later (e.g. dead_letters.original_size) are NULL in files written before
    names = ", ".join(f.name if f.name in present else f"NULL AS {f.name}" for f in _columns(table))
    con.execute(
        f"INSERT INTO {table.name} SELECT {names} FROM {source} "
        f"QUALIFY row_number() OVER (PARTITION BY {_dedupe_key(table)} ORDER BY {_preference(table)}) = 1 "
        f"ORDER BY {_ORDER[table.name]}"
    )


def _snapshot_info(con: duckdb.DuckDBPyConnection, data_dir: Path, manifest: Manifest, created: datetime) -> None:
    names = topic_names(manifest.prefix)
    if manifest.events_topic:  # a rebuilt version's sink reads the live events topic
        names[EVENTS] = manifest.events_topic
    offsets = [
        {"topic_key": key, "topic": names.get(key, key), "partition": partition, "next_offset": offset}
        for key, parts in sorted(manifest.offsets.items())
        for partition, offset in sorted(parts.items())
    ]
    watermarks = [{"partition": p, "watermark": from_ms(w)} for p, w in sorted(manifest.watermarks.items())]
    watermark = manifest.watermark_ms
    info = pa.table(
        {
            "snapshot_id": [uuid.uuid4().hex],
            "created_at": pa.array([created], pa.timestamp("us", tz="UTC")),
            "ccmeter_version": [ccmeter_version()],
            "data_dir": [str(data_dir.resolve())],
            "topic_prefix": [manifest.prefix],
            "watermark": pa.array([watermark], TS),
            "manifest_updated_at": [manifest.updated_at],
            "manifest_flushes": [manifest.flushes],
            "offsets": pa.array(
                [offsets],
                pa.list_(
                    pa.struct(
                        [
                            ("topic_key", pa.string()),
                            ("topic", pa.string()),
                            ("partition", pa.int32()),
                            ("next_offset", pa.int64()),
                        ]
                    )
                ),
            ),
            "watermarks": pa.array([watermarks], pa.list_(pa.struct([("partition", pa.int32()), ("watermark", TS)]))),
            "events_topic": [names[EVENTS]],
        }
    )
    con.register("_info", info)
    con.execute("CREATE TABLE snapshot_info AS SELECT * FROM _info")
    con.unregister("_info")


# The report's own keys, without those the billing tables hold in columns of their own.
_PERIOD_COLUMNS = tuple(key for key in SUMMARY_KEYS if key not in ("account_id", "from", "to"))
_DAY_COLUMNS = tuple(key for key in DAY_KEYS if key != "date")
_PEAK_USER = pa.struct(
    [("user_id", pa.string()), ("devices", pa.list_(pa.string())), ("portal", pa.bool_()), ("api", pa.bool_())]
)
_BILLING_DDL: dict[str, str] = {
    "billing_periods": "account_id VARCHAR, period_from DATE, period_to DATE, is_current BOOLEAN, complete BOOLEAN, "
    "data_through TIMESTAMPTZ, timezone VARCHAR, licenses BIGINT, overage_allowance BIGINT, peak_usage BIGINT, "
    "peak_at TIMESTAMPTZ, peak_users STRUCT(user_id VARCHAR, devices VARCHAR[], portal BOOLEAN, api BOOLEAN)[], "
    "billable_overage BIGINT, over_allowance BIGINT, seconds_over_licenses DOUBLE, license_hours DOUBLE, "
    "distinct_users BIGINT, restated BOOLEAN, restatement_id VARCHAR",
    "billing_days": "account_id VARCHAR, period_from DATE, date DATE, complete BOOLEAN, data_through TIMESTAMPTZ, "
    "peak_usage BIGINT, peak_at TIMESTAMPTZ, licenses BIGINT, overage_allowance BIGINT, "
    "seconds_over_licenses DOUBLE, max_excess BIGINT, license_hours DOUBLE, distinct_users BIGINT, restated BOOLEAN",
}
_BILLING_TYPES: dict[str, pa.DataType] = {
    "account_id": pa.string(),
    "period_from": pa.date32(),
    "period_to": pa.date32(),
    "date": pa.date32(),
    "is_current": pa.bool_(),
    "restated": pa.bool_(),
    "restatement_id": pa.string(),
    "complete": pa.bool_(),
    "data_through": TS,
    "timezone": pa.string(),
    "peak_at": TS,
    "peak_users": pa.list_(_PEAK_USER),
    "seconds_over_licenses": pa.float64(),
    "license_hours": pa.float64(),
}


# Descriptions written into every snapshot (`COMMENT ON`), from docs/analysts.md and SPEC.md section 4.
_TABLE_COMMENTS: dict[str, str] = {
    "snapshot_info": "One row: when the snapshot was taken and its cut (the Kafka offsets it holds everything below).",
    "billing_periods": "The licenses usage report of every billing period of each account, from its first usage "
    "change to the period containing its data_through.",
    "billing_days": "The account-local days of the billing_periods, as the report computes them.",
    "adjustments": "Every change a restatement made to the billing record (account, period, field, before, after, "
    "reason, when), like a credit note.",
    "restatements": "Each restated billing period: its too-late events, and the restated report of this snapshot.",
}
_BILLING_COLUMN_COMMENTS: dict[str, str] = {
    "period_from": "First local day of the billing period.",
    "period_to": "Last local day of the billing period (inclusive).",
    "is_current": "True for the period containing the account's data_through.",
    "complete": "True when data_through is at or after the end (the numbers are final).",
    "timezone": "The account's timezone (of its latest plan): the period's local days use it.",
    "licenses": "Licenses in effect at the end of the period.",
    "peak_usage": "Largest usage (distinct users counted); NULL for a day that starts at or after data_through.",
    "peak_at": "First instant the peak was reached; NULL at a peak of 0.",
    "peak_users": "The users counted at peak_at, sorted, each with its device ids and whether portal and api counted.",
    "billable_overage": "Grace-aware excess over the licenses that is billed (SPEC section 4).",
    "over_allowance": "The part of the billable overage above the overage allowance.",
    "seconds_over_licenses": "Seconds during which usage was above the licenses.",
    "license_hours": "Integral of usage, in hours.",
    "distinct_users": "Users counted at any instant.",
    "max_excess": "Largest number of users above the licenses.",
    "restated": "True when the period was restated: its numbers count the too-late events (see adjustments).",
    "restatement_id": "The restatement of the period (adjustments.restatement_id); NULL when not restated.",
}
_BILLING_RELATIONS = ("billing_periods", "billing_days", "top_accounts_by_overage", "adjustments", "restatements")
_COLUMN_COMMENTS: dict[str, dict[str, str]] = {
    "snapshot_info": {
        "snapshot_id": "Random id of this snapshot.",
        "created_at": "When the snapshot was built (wall clock, UTC).",
        "ccmeter_version": "Version of ccmeter that built it.",
        "data_dir": "The sink data directory it was built from.",
        "topic_prefix": "Prefix of the Kafka topic names.",
        "watermark": "Event-time watermark: the latest accepted occurred_at over all accounts.",
        "manifest_updated_at": "When the sink last updated the manifest that makes the cut.",
        "manifest_flushes": "Number of sink flushes recorded in that manifest.",
        "offsets": "Next offset per topic and partition: the snapshot holds every record below them.",
        "watermarks": "Event-time watermark per events partition.",
        "events_topic": "The events topic the sink read (a rebuilt version's sink reads the live one).",
    },
    "adjustments": ADJUSTMENT_COMMENTS,
    "restatements": RESTATEMENT_COMMENTS,
    "billing_days": {
        "period_from": "First local day of the billing period the day belongs to.",
        "date": "The account-local date.",
        "licenses": "Licenses in effect on the day.",
        "overage_allowance": "Overage allowance in effect on the day.",
    },
}


def _relation_comment(name: str) -> str | None:
    return _TABLE_COMMENTS.get(name) or TABLE_COMMENTS.get(name) or VIEW_COMMENTS.get(name)


def _column_comment(relation: str, column: str) -> str | None:
    for specific in (_COLUMN_COMMENTS, TABLE_COLUMN_COMMENTS, VIEW_COLUMN_COMMENTS):
        text = specific.get(relation, {}).get(column)
        if text:
            return text
    shared = (COLUMN_COMMENTS, _BILLING_COLUMN_COMMENTS)
    if relation in _BILLING_RELATIONS:  # a billing period's licenses, timezone ... are the report's
        shared = shared[::-1]
    return shared[0].get(column) or shared[1].get(column)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def describe(con: duckdb.DuckDBPyConnection) -> None:
    """`COMMENT ON` every table, view and column of the database being built that has a description."""
    relations = con.execute(
        "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal "
        "UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() WHERE database_name = current_database() "
        "AND NOT internal"
    ).fetchall()
    columns = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND NOT internal ORDER BY table_name, column_index"
    ).fetchall()
    statements = [
        f"COMMENT ON {kind} {_quoted(name)} IS {_sql_text(text)}"
        for name, kind in relations
        if (text := _relation_comment(name))
    ]
    statements += [
        f"COMMENT ON COLUMN {_quoted(table)}.{_quoted(column)} IS {_sql_text(text)}"
        for table, column in columns
        if (text := _column_comment(table, column))
    ]
    if statements:
        con.execute(";\n".join(statements))


def _instant(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _report_rows(
    report: Report, start: date, end: date, is_current: bool, restatement: str | None = None
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The billing_periods row of one report and its billing_days rows."""
    values = report.to_json_dict()
    row: dict[str, object] = {"account_id": report.account_id, "period_from": start, "period_to": end}
    row["is_current"] = is_current
    row.update({key: values[key] for key in _PERIOD_COLUMNS})
    row["peak_at"], row["data_through"] = _instant(row["peak_at"]), _instant(row["data_through"])
    row["restated"], row["restatement_id"] = restatement is not None, restatement
    days: list[dict[str, object]] = []
    for day in values["days"]:
        entry: dict[str, object] = {"account_id": report.account_id, "period_from": start}
        entry.update({key: day[key] for key in _DAY_COLUMNS})
        entry["date"], entry["peak_at"] = date.fromisoformat(day["date"]), _instant(day["peak_at"])
        entry["data_through"] = row["data_through"]
        entry["restated"] = restatement is not None
        days.append(entry)
    return row, days


def _account_billing(history: AccountHistory) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The rows of one account's billing periods, from its first usage change to the period containing its
    data_through (none when nothing is known of it), and of their days."""
    from processor.core.periods import local_date

    periods: list[dict[str, object]] = []
    days: list[dict[str, object]] = []
    data_through_ms = history.data_through_ms
    if data_through_ms is None:
        return periods, days
    plan = history.latest_plan
    last = local_date(data_through_ms, plan.timezone)
    first = local_date(history.changes[0].at_ms, plan.timezone) if history.changes else last
    for start, end in periods_between(plan, min(first, last), last):
        row, rows = _report_rows(history.report(start, end), start, end, start <= last <= end)
        periods.append(row)
        days += rows
    return periods, days


def _restate(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    histories: dict[str, AccountHistory],
    tables: dict[str, list[dict[str, object]]],
    progress: Callable[[str], None] | None,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Put the restated report of every restatement recorded in `data_dir` into the billing rows (replacing the live
    ones of the period); return the adjustment rows and the restatement rows (processor/snapshots/restatements.py)."""
    from processor.snapshots.restatements import adjustment_rows, apply_all, read_records, restatement_row

    records = read_records(data_dir)
    if not records:
        return [], []

    def last_report(account: str, start: date, end: date) -> Report | None:
        history = histories.get(account)
        return None if history is None else history.report(start, end)

    adjustments: list[dict[str, object]] = []
    restated: list[dict[str, object]] = []
    for applied in apply_all(con, records, last_report, progress):
        record = applied.record
        key = (record.account_id, record.period_from)
        live = [r for r in tables["billing_periods"] if (r["account_id"], r["period_from"]) == key]
        row, days = _report_rows(
            applied.restated, record.period_from, record.period_to, bool(live and live[0]["is_current"]),
            record.restatement_id,
        )  # fmt: skip
        tables["billing_periods"] = [r for r in tables["billing_periods"] if r not in live] + [row]
        tables["billing_days"] = [
            r for r in tables["billing_days"] if (r["account_id"], r["period_from"]) != key
        ] + days
        adjustments += adjustment_rows(applied)
        restated.append(restatement_row(applied))
        if progress:
            progress(f"restated {record.account_id} {record.period_from}..{record.period_to}")
    return adjustments, restated


def _billing_tables(
    con: duckdb.DuckDBPyConnection, data_dir: Path, progress: Callable[[str], None] | None = None
) -> None:
    """`billing_periods` and `billing_days`: the report of every billing period of each account from its first usage
    change to the period containing its data_through, computed with build_report (nothing after data_through is
    counted), with the restated report for the periods restated in `data_dir`; and `adjustments`."""
    from processor.snapshots.restatements import ADJUSTMENTS_DDL, RESTATEMENTS_DDL

    tables: dict[str, list[dict[str, object]]] = {"billing_periods": [], "billing_days": []}
    histories = load_histories(con)
    for account_id in snapshot_accounts(con):
        history = histories.get(account_id)
        if history is not None:
            periods, days = _account_billing(history)
            tables["billing_periods"] += periods
            tables["billing_days"] += days
    adjustments, restated = _restate(con, data_dir, histories, tables, progress)
    for name, rows in tables.items():
        con.execute(f"CREATE TABLE {name} ({_BILLING_DDL[name]})")
        if not rows:
            continue
        columns = list(rows[0])
        schema = pa.schema([(key, _BILLING_TYPES.get(key, pa.int64())) for key in columns])
        con.register("_rows", pa.Table.from_pylist(rows, schema=schema))
        names = ", ".join(columns)
        con.execute(f"INSERT INTO {name} ({names}) SELECT {names} FROM _rows ORDER BY account_id, 2, 3")
        con.unregister("_rows")
    con.execute(f"CREATE TABLE adjustments ({ADJUSTMENTS_DDL})")
    if adjustments:
        con.register("_rows", pa.Table.from_pylist(adjustments))
        con.execute(
            "INSERT INTO adjustments BY NAME SELECT * FROM _rows "
            "ORDER BY account_id, period_from, date NULLS FIRST, field"
        )
        con.unregister("_rows")
    con.execute(f"CREATE TABLE restatements ({RESTATEMENTS_DDL})")
    if restated:
        con.register("_rows", pa.Table.from_pylist(restated))
        con.execute("INSERT INTO restatements BY NAME SELECT * FROM _rows ORDER BY account_id, period_from")
        con.unregister("_rows")


def _stamped(target: Path, stamp: str) -> Path:
    return target.with_name(f"{target.stem}.{stamp}{target.suffix}")


def history_files(target: Path) -> list[Path]:
    """Older snapshots kept beside `target` (`NAME.<UTC stamp>.duckdb`), newest first."""
    pattern = re.compile(re.escape(target.stem) + r"\." + STAMP_RE + re.escape(target.suffix))
    if not target.parent.is_dir():
        return []
    return sorted((p for p in target.parent.iterdir() if pattern.fullmatch(p.name)), reverse=True)


def _tmp_path(out: Path) -> Path:
    """Where this process builds `out`: a hidden name beside it, ending in `.tmp-<pid>` (DuckDB adds `.wal`)."""
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (also another user's, which we may not signal)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def remove_stale_leftovers(out: Path) -> dict[Path, int]:
    """Remove the temporary files (`.NAME.tmp-PID` and their `.wal`) that builds of `out` left beside it when their
    process died; those of a process still alive (including this one) are kept. Returns removed path -> bytes."""
    pattern = re.compile(r"\.?" + re.escape(out.name) + r"\.tmp-(\d+)(?:\.wal)?")
    if not out.parent.is_dir():
        return {}
    removed: dict[Path, int] = {}
    for path in sorted(out.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:  # removed meanwhile by another run, or not ours to remove
            continue
        removed[path] = size
    return removed


def _clean_leftovers(out: Path) -> None:
    removed = remove_stale_leftovers(out)
    if removed:
        names = ", ".join(path.name for path in removed)
        log.warning(
            "snapshot: removed %d leftover files of interrupted runs (%.1f MB): %s",
            len(removed),
            sum(removed.values()) / 1e6,
            names,
        )


def _install(tmp: Path, target: Path, keep: int | None) -> list[Path]:
    """Rename the new snapshot into place; with `keep`, keep the replaced one as a stamped copy and prune."""
    if keep is not None and keep > 1 and target.exists():
        stamp = datetime.fromtimestamp(target.stat().st_mtime, UTC).strftime(STAMP_FORMAT)
        kept = _stamped(target, stamp)
        if not kept.exists():
            os.link(target, kept)
    tmp.replace(target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    pruned: list[Path] = []
    if keep is not None:
        for old in history_files(target)[max(0, keep - 1) :]:
            old.unlink(missing_ok=True)
            pruned.append(old)
    return pruned


def build_snapshot(
    data_dir: Path,
    out: Path,
    keep: int | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    attempts: int = 5,
) -> SnapshotResult:
    """Write a snapshot of `data_dir` to `out` (atomically); `keep` N keeps N snapshots (this one + N-1 older).

    If the files change while they are listed, or a listed file disappears meanwhile (the sink merged it into a
    bigger one), it starts over from a fresh manifest, up to `attempts` times. Temp files of earlier builds whose
    process is gone are removed first.
    """
    began = time.perf_counter()
    if keep is not None and keep < 1:
        raise SnapshotUsageError("--keep must be at least 1")
    if out.suffix != ".duckdb":
        raise SnapshotUsageError(f"--out must name a .duckdb file, not {str(out)!r}")
    _clean_leftovers(out)
    for attempt in range(1, attempts + 1):
        try:
            manifest = read_manifest(data_dir)
        except StoreError as exc:
            raise SnapshotError(str(exc)) from None
        if manifest is None:
            raise SnapshotError(f"{data_dir}: no sink data (run `ccmeter sink --data-dir {data_dir}` first)")
        files = committed_files(data_dir, manifest)
        if files != committed_files(data_dir, manifest):
            # A merge ran while the directories were read: a listing can miss both the merged file (created behind
            # the reader) and the files it replaced (removed ahead of it), and would silently lack their rows.
            if attempt == attempts:
                raise SnapshotError(f"{data_dir}: the data files kept changing while listed; try again")
            if progress:
                progress("data files were merged while listed; starting over")
            continue
        try:
            rows, pruned = _build(data_dir, out, keep, manifest, files, progress)
        except duckdb.IOException:
            vanished = [path for paths in files.values() for path in paths if not path.exists()]
            if not vanished or attempt == attempts:
                raise
            if progress:
                progress(f"{len(vanished)} data files were merged meanwhile; starting over")
            continue
        return SnapshotResult(
            out,
            rows,
            sum(len(paths) for paths in files.values()),
            manifest.watermark_ms,
            time.perf_counter() - began,
            pruned,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _create_database(path: Path) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is a new file at `path` in the STORAGE_VERSION format (DuckDB writes its
    own, newer format unless told otherwise, which older releases refuse to open)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH {_sql_text(str(path))} AS {_DATABASE} (STORAGE_VERSION '{STORAGE_VERSION}')")
        con.execute(f"USE {_DATABASE}")
        con.execute("SET TimeZone = 'UTC'")
    except BaseException:
        con.close()
        raise
    return con


def _close_database(con: duckdb.DuckDBPyConnection) -> None:
    """Checkpoint and detach the file of `_create_database` (nothing stays in a write-ahead log)."""
    con.execute(f"CHECKPOINT {_DATABASE}")
    con.execute("USE memory")
    con.execute(f"DETACH {_DATABASE}")


def _build(
    data_dir: Path,
    out: Path,
    keep: int | None,
    manifest: Manifest,
    files: dict[str, list[Path]],
    progress: Callable[[str], None] | None,
) -> tuple[dict[str, int], list[Path]]:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(out)
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    created = datetime.now(UTC)
    rows: dict[str, int] = {}
    try:
        con = _create_database(tmp)
        try:
            for table in TABLES:
                _load_table(con, table, files[table.name])
                rows[table.name] = con.execute(f"SELECT count(*) FROM {table.name}").fetchall()[0][0]
                if progress:
                    progress(f"{table.name}: {rows[table.name]} rows from {len(files[table.name])} files")
            _snapshot_info(con, data_dir, manifest, created)
            _billing_tables(con, data_dir, progress)
            rows["billing_periods"] = con.execute("SELECT count(*) FROM billing_periods").fetchall()[0][0]
            create_views(con)
            describe(con)
            _close_database(con)
        finally:
            con.close()
        if tmp.with_name(tmp.name + ".wal").exists():  # pragma: no cover - DuckDB checkpoints on close
            raise SnapshotError(f"{tmp}: DuckDB left a write-ahead log behind")
        pruned = _install(tmp, out, keep)
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
        raise
    return rows, pruned


def open_snapshot(path: str | Path) -> tuple[duckdb.DuckDBPyConnection, int | None]:
    """Open a snapshot read-only; returns the connection and its event-time watermark (ms, or None)."""
    file = Path(path)
    if not file.is_file():
        raise SnapshotError(f"{file}: no such snapshot file")
    try:
        con = duckdb.connect(str(file), read_only=True)
    except duckdb.Error as exc:
        raise SnapshotError(f"{file}: not a DuckDB database ({str(exc).splitlines()[0]})") from None
    try:
        rows = con.execute("SELECT watermark FROM snapshot_info").fetchall()
    except duckdb.CatalogException:
        con.close()
        raise SnapshotError(f"{file}: not a ccmeter snapshot (no snapshot_info table)") from None
    watermark = rows[0][0] if rows else None
    return con, (to_ms(watermark) if watermark is not None else None)
