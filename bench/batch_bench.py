"""Batch engine throughput (Parquet archive -> reports of every account) and report latency: one account over a
month of ~10 M events (from the Parquet file with the batch engine, and from a DuckDB snapshot), and a billing run
of 1,000 accounts from raw events (load + the set-based `BatchEngine.reports`, checked equal to the per-account
`report()` on a sample) and from a snapshot (`ccmeter report --snapshot FILE --all`).

The snapshots are built by the real `build_snapshot` from a sink data directory. The worker is far too slow to
produce those directories from 10 M events within the benchmark's time budget (see the worker rows), so the
directory is written here from the batch engine's outputs, which the worker rows check to be equal to the worker's:
output records go through the sink's own `SinkWriter` (same rows, files and manifest as `ccmeter sink`), and the
events table is written straight from the Parquet archive (one file per UTC date, `raw` left empty: the report
never reads it).
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from bench.common import OUT, Row, log, median
from processor.batch.engine import BatchEngine
from processor.core.fold import PartitionClock
from processor.core.model import Settings
from processor.simulation.month import ACCOUNT as MONTH_ACCOUNT
from processor.snapshots.sink import SinkWriter
from processor.snapshots.store import file_name
from processor.topics import EVENTS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES
from processor.worker import records as rec

BATCH_TARGET = 1_000_000
BILLING_TARGET = 2_000_000  # issue 13: billing run over 1,000 accounts from raw events
MONTH_RAW_TARGET_S = 2.0  # issue 13: month of 10 M events from the raw Parquet file
REPORT_TARGET_S = 1.0
SAMPLE = 50  # accounts whose per-account reports are compared with the set-based billing run
FIRST, LAST = date(2026, 11, 1), date(2026, 11, 30)
PREFIX = "bench."


@dataclass
class Loaded:
    """A batch engine with one archive loaded, and its timings."""

    engine: BatchEngine
    path: Path
    events: int
    load_seconds: float
    report_seconds: float
    accounts: int
    cpu_seconds: float  # CPU time of load + reports (all DuckDB threads): steadier than wall time on a busy machine


def load_and_report(path: Path, first: date = FIRST, last: date = LAST) -> Loaded:
    """BatchEngine.load(path), then the report of every account for first..last in one set-based billing run
    (`BatchEngine.reports`); timed."""
    engine = BatchEngine()
    began, cpu = time.perf_counter(), time.process_time()
    stats = engine.load(path)
    loaded = time.perf_counter()
    accounts = engine.accounts()
    engine.reports([(account, first, last) for account in accounts])
    done = time.perf_counter()
    return Loaded(engine, path, stats.rows, loaded - began, done - loaded, len(accounts), time.process_time() - cpu)


def compare_per_account(engine: BatchEngine, sample: int = SAMPLE) -> tuple[bool, float, float]:
    """The set-based reports of the first `sample` accounts against one `report()` call each: (equal, set-based
    seconds for all accounts, per-account seconds per report)."""
    accounts = engine.accounts()
    requests = [(account, FIRST, LAST) for account in accounts]
    began = time.perf_counter()
    many = engine.reports(requests)
    set_seconds = time.perf_counter() - began
    began = time.perf_counter()
    one = [engine.report(*request) for request in requests[:sample]]
    per_report = (time.perf_counter() - began) / max(1, len(one))
    return one == many[: len(one)], set_seconds, per_report


def profile_load(path: Path) -> list[tuple[str, float]]:
    """Where BatchEngine.load spends its time: one timed load with every DuckDB statement timed (top 6)."""
    timings: dict[str, float] = {}
    engine = BatchEngine()
    original = engine.con.execute

    def timed(sql: str, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(sql, *args, **kwargs)
        finally:
            head = " ".join(str(sql).split())[:70]
            timings[head] = timings.get(head, 0.0) + time.perf_counter() - began

    engine.con = _Proxy(engine.con, timed)  # type: ignore[assignment]
    engine.load(path)
    engine.close()
    return sorted(timings.items(), key=lambda item: -item[1])[:6]


class _Proxy:
    """A DuckDB connection whose execute() is wrapped (DuckDB connections do not take attributes)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, execute: Any) -> None:
        self._con = con
        self.execute = execute

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def write_sink_dir(engine: BatchEngine, archive: Path, data_dir: Path) -> None:
    """A sink data directory holding `archive`'s events and the engine's outputs (see the module docstring)."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    writer = SinkWriter(data_dir, PREFIX)
    offsets = {USAGE_CHANGES: 0, PEAK_WINDOWS: 0, INTERVALS: 0}

    def add(topic: str, at_ms: int, key: str, record: dict[str, Any]) -> None:
        writer.add(topic, 0, offsets[topic], at_ms, key.encode(), rec.dumps(record))
        offsets[topic] += 1

    for change in engine.usage_changes():
        add(USAGE_CHANGES, change.at_ms, change.account_id, rec.usage_change(change))
    for window in engine.peak_windows():
        add(PEAK_WINDOWS, window.end_ms, window.account_id, rec.peak_window(window))
    for account in engine.accounts():
        for plan in engine.plans(account):
            add(INTERVALS, plan.at_ms, account, rec.plan(account, plan))
    for interval in engine.user_intervals():
        add(INTERVALS, interval.end_ms, interval.account_id, rec.user_interval(interval))
    for account, through in engine.data_throughs().items():  # what the snapshot's account_horizons reads
        add(INTERVALS, through, account, rec.horizon(account, 0, through, None))
    events, last_ms = _write_events(archive, data_dir)
    writer.clocks[0] = PartitionClock(Settings(), last_ms)
    writer.advance(EVENTS, 0, events)
    writer.flush()


def _write_events(archive: Path, data_dir: Path) -> tuple[int, int]:
    """The events table of the sink from a Parquet archive, one file per UTC date; (rows, last occurred_at ms)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    source = f"read_parquet('{archive}', file_row_number = true)"
    names = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    offset = "arrival" if "arrival" in names else "file_row_number"

    def col(name: str, kind: str) -> str:
        return f"{name}::{kind} AS {name}" if name in names else f"NULL::{kind} AS {name}"

    con.execute(
        f"""CREATE TABLE ev AS SELECT 0::INTEGER AS kafka_partition, {offset}::BIGINT AS kafka_offset,
        occurred_at::TIMESTAMPTZ AS kafka_ts, account_id AS kafka_key, account_id, event_id, type,
        occurred_at::TIMESTAMPTZ AS occurred_at, {col("user_id", "VARCHAR")}, {col("device_id", "VARCHAR")},
        {col("page", "VARCHAR")}, {col("endpoint", "VARCHAR")}, {col("licenses", "BIGINT")},
        {col("overage_allowance", "BIGINT")}, {col("billing_anchor_day", "INTEGER")}, {col("timezone", "VARCHAR")},
        {col("grace_minutes", "BIGINT")}, {col("grace_mode", "VARCHAR")}, {col("schema_version", "BIGINT")},
        NULL::VARCHAR AS rejection, NULL::VARCHAR AS rejection_detail, NULL::VARCHAR AS raw, NULL::BLOB AS raw_bytes
        FROM {source}"""
    )
    rows, last = con.execute("SELECT count(*), epoch_ms(max(occurred_at)) FROM ev").fetchall()[0]
    days = con.execute(
        "SELECT occurred_at::DATE AS day, min(kafka_offset), max(kafka_offset) FROM ev GROUP BY 1 ORDER BY 1"
    ).fetchall()
    for day, first, last_offset in days:
        folder = data_dir / "events" / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name(EVENTS, 0, first, last_offset)
        con.execute(
            f"COPY (SELECT * FROM ev WHERE occurred_at::DATE = ? ORDER BY kafka_offset) TO '{path}' "
            "(FORMAT parquet, COMPRESSION zstd)",
            [day],
        )
    con.close()
    return int(rows), int(last)


def build_snapshot_of(engine: BatchEngine, archive: Path, name: str) -> tuple[Path, float]:
    """Sink directory + `build_snapshot` -> the snapshot file and the build's seconds."""
    from processor.snapshots.snapshot import build_snapshot

    data_dir = OUT / "work" / f"sink-{name}"
    write_sink_dir(engine, archive, data_dir)
    out = OUT / "work" / f"{name}.duckdb"
    result = build_snapshot(data_dir, out)
    return out, result.seconds


def snapshot_report_seconds(snapshot: Path, account: str | None, repeats: int) -> list[float]:
    """In-process `ccmeter report --snapshot` (one account, or `--all`), each run timed from opening the file."""
    from processor.cli.snapshots import run_snapshot_report

    args = argparse.Namespace(
        snapshot=str(snapshot), all=account is None, account=account, from_date=FIRST.isoformat(),
        to_date=LAST.isoformat(), period=None, format="json",
    )  # fmt: skip
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run_snapshot_report(args)
        times.append(time.perf_counter() - began)
    return times


def cli_seconds(*args: str) -> float:
    """Wall time of `ccmeter ARGS` as a subprocess (interpreter start-up and imports included)."""
    from bench.procs import run_cli

    seconds, _ = run_cli(*args)
    return seconds


def bench(month: tuple[Path, int], billing: Path, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Parts 2 and 3: rows and details."""
    repeats = 3 if quick else 5
    rows: list[Row] = []
    details: dict[str, Any] = {}
    month_path, _ = month
    period = ["--from", FIRST.isoformat(), "--to", LAST.isoformat()]

    # Part 2 + 3a: the month of one big account.
    log(f"batch engine: load {month_path.name} + report")
    runs = [load_and_report(month_path) for _ in range(1 if quick else 2)]
    best = min(runs, key=lambda r: r.load_seconds + r.report_seconds)
    for other in runs:
        if other is not best:
            other.engine.close()
    month_total = best.load_seconds + best.report_seconds
    month_rate = best.events / month_total
    reports = [_timed(lambda e=best.engine: e.report(MONTH_ACCOUNT, FIRST, LAST)) for _ in range(repeats)]
    log(f"batch engine month: {month_rate:,.0f} events/s; report alone {median(reports) * 1000:.0f} ms")
    log("snapshot of the month")
    month_snapshot, month_build = build_snapshot_of(best.engine, month_path, month_path.stem)
    best.engine.close()
    month_snap = snapshot_report_seconds(month_snapshot, MONTH_ACCOUNT, repeats)
    month_cli = cli_seconds("report", "--snapshot", str(month_snapshot), "--account", MONTH_ACCOUNT, *period,
                            "--format", "json")  # fmt: skip
    month_events_cli = cli_seconds("report", "--events", str(month_path), "--account", MONTH_ACCOUNT, *period,
                                   "--format", "json", "--quiet")  # fmt: skip
    details["month"] = {
        "events": best.events, "load_seconds": [r.load_seconds for r in runs],
        "cpu_seconds": [r.cpu_seconds for r in runs],
        "report_seconds": reports, "rate": month_rate, "snapshot_build_seconds": month_build,
        "snapshot_report_seconds": month_snap, "snapshot_report_cli_seconds": month_cli,
        "events_report_cli_seconds": month_events_cli,
    }  # fmt: skip
    label = f"{best.events / 1e6:.1f} M events, 1 account"

    # Part 2 + 3b: many accounts, the billing run.
    log(f"batch engine: load {billing.name} + billing run of every account")
    billing_runs = [load_and_report(billing) for _ in range(1 if quick else 2)]
    many = min(billing_runs, key=lambda r: r.load_seconds + r.report_seconds)
    for other in billing_runs:
        if other is not many:
            other.engine.close()
    many_rate = many.events / (many.load_seconds + many.report_seconds)
    log(f"batch engine {many.accounts} accounts: load {many.load_seconds:.1f} s, reports {many.report_seconds:.2f} s")
    equal, set_seconds, per_report = compare_per_account(many.engine)
    log(f"billing run equals per-account reports: {equal}; per-account {per_report * 1000:.1f} ms each")
    log("snapshot of the accounts")
    many_snapshot, many_build = build_snapshot_of(many.engine, billing, billing.stem)
    many.engine.close()
    many_snap = snapshot_report_seconds(many_snapshot, None, max(2, repeats // 2))
    many_cli = cli_seconds("report", "--snapshot", str(many_snapshot), "--all", *period, "--format", "csv")
    details["accounts"] = {
        "events": many.events, "accounts": many.accounts, "load_seconds": [r.load_seconds for r in billing_runs],
        "report_seconds": [r.report_seconds for r in billing_runs], "rate": many_rate,
        "cpu_seconds": [r.cpu_seconds for r in billing_runs],
        "billing_run_again_seconds": set_seconds, "per_account_report_seconds": per_report,
        "equal_to_per_account": equal, "snapshot_build_seconds": many_build,
        "report_all_seconds": many_snap, "report_all_cli_seconds": many_cli,
    }  # fmt: skip
    if not quick:
        details["load_profile"] = profile_load(billing)
    rows += [
        Row("batch", f"load + report ({label})", month_rate, "events/s", f">= {BATCH_TARGET:,}",
            month_rate >= BATCH_TARGET,
            f"load {best.load_seconds:.1f} s + report {best.report_seconds * 1000:.0f} ms; "
            f"{best.events / best.cpu_seconds:,.0f} per CPU-s; {_pq_mb(month_path)}"),
        Row("batch", f"billing run, {many.accounts} accounts from raw events ({many.events / 1e6:.1f} M events)",
            many_rate, "events/s", f">= {BILLING_TARGET:,}", many_rate >= BILLING_TARGET,
            f"load {many.load_seconds:.1f} s ({many.events / many.load_seconds:,.0f}/s) + set-based reports "
            f"{many.report_seconds:.2f} s ({many.report_seconds / many.accounts * 1000:.2f} ms per account; "
            f"per-account path {per_report * 1000:.1f} ms each); {many.events / many.cpu_seconds:,.0f} per CPU-s; "
            f"best of {len(billing_runs)}"),
        Row("batch", "billing run equals per-account reports", "yes" if equal else "no", "", "equal", equal,
            f"first {min(SAMPLE, many.accounts)} accounts, Report objects compared field for field"),
        Row("report", f"month, 1 account, from the Parquet file ({label})", month_total, "s",
            f"< {MONTH_RAW_TARGET_S:g} s", month_total < MONTH_RAW_TARGET_S,
            f"BatchEngine load + report, best of {len(runs)}; {best.cpu_seconds:.1f} CPU-s; "
            f"`ccmeter report --events` CLI {month_events_cli:.1f} s"),
        Row("report", "month, 1 account, report on a loaded engine", median(reports), "s",
            f"< {REPORT_TARGET_S:g} s", median(reports) < REPORT_TARGET_S, f"median of {repeats}"),
        Row("report", "month, 1 account, from a DuckDB snapshot", median(month_snap), "s",
            f"< {REPORT_TARGET_S:g} s", median(month_snap) < REPORT_TARGET_S,
            f"in-process median of {repeats}; CLI {month_cli:.2f} s; snapshot build {month_build:.0f} s"),
        Row("report", f"billing run, {many.accounts} accounts, from a DuckDB snapshot", median(many_snap), "s",
            note=f"`report --snapshot --all`, in-process; CLI {many_cli:.1f} s; snapshot build {many_build:.0f} s"),
    ]  # fmt: skip
    return rows, details


def _timed(work: Any) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def _pq_mb(path: Path) -> str:
    return f"Parquet {path.stat().st_size / 1e6:.0f} MB, {pq.read_metadata(path).num_row_groups} row groups"
