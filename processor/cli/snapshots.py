"""`ccmeter sink`, `ccmeter snapshot`, `ccmeter chart`, `ccmeter deadletters`, and the `--snapshot` path of
`ccmeter report`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from processor.cli.report import (
    account_dates,
    add_range_arguments,
    billing_run,
    check_period,
    check_range_flags,
    check_report_flags,
    events_history,
    has_range,
    parse_date,
    require_account,
)
from processor.durations import ONCE_GIVE_UP, flag_seconds, give_up_seconds
from processor.errors import CliError, RuntimeFailure, snapshot_error
from processor.kafka_security import add_security_options
from processor.options import add_broker, add_duration, add_prefix, add_quiet, broker_of, deprecated, prefix_of
from processor.reports.render import (
    BILLING_RUN_KEYS,
    FORMATS,
    RESTATEMENT_RESTATED,
    escape_control,
    render_billing_run,
    render_report,
    text_table,
)
from processor.snapshots.history import AccountHistory, load_histories, snapshot_accounts
from schemas.outputs import Report

ALL_KEYS: tuple[str, ...] = BILLING_RUN_KEYS  # the columns of `report --all` (processor/reports/render.py)
CHART_SUFFIXES: tuple[str, ...] = (".png", ".svg")
# Tables a snapshot needs for reports up to data_through (a snapshot written by an older ccmeter lacks them).
_NEEDED_TABLES = ("horizons", "partition_horizons", "presence_intervals")
LETTER_KEYS: tuple[str, ...] = (
    "reason",
    "detail",
    "source_partition",
    "source_offset",
    "kafka_ts",
    "original",
    "original_size",
    "original_sha256",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sink`, `snapshot`, `chart` and `deadletters` subcommands."""
    sink = subparsers.add_parser(
        "sink",
        help="copy the events and output topics into date-partitioned Parquet files",
        description="Consume PREFIX+events and every output topic (usage-changes, peak-windows, alerts, dead-letters, "
        "intervals) into DIR/<table>/date=YYYY-MM-DD/*.parquet. The offsets live with the data (DIR/_sink/"
        "manifest.json), so a restart resumes exactly where the last commit ended; files appear atomically and "
        "are never modified (small ones are merged now and then). An unreachable broker is retried with backoff "
        "(one line per attempt) and the sink resumes at its committed offsets when it is back. SIGTERM or Ctrl-C "
        "flushes and stops.",
        epilog="Example: ccmeter sink --broker 127.0.0.1:9092 --data-dir data --once",
    )
    add_broker(sink)
    add_prefix(sink)
    sink.add_argument(
        "--events-prefix",
        default=None,
        metavar="PREFIX",
        help="read the events topic of this prefix instead of PREFIX+events: a rebuilt version's sink "
        "(--prefix ccmeter.v2.) reads the live events topic (--events-prefix ccmeter.), so its snapshots hold events",
    )
    sink.add_argument("--data-dir", required=True, metavar="DIR", help="where the Parquet files and manifest live")
    sink.add_argument("--once", action="store_true", help="consume up to the current end offsets, then exit")
    flush = add_duration(
        sink,
        "--flush-interval",
        default="30s",
        help="commit at least this often (every commit adds files, so not much less in production)",
    )
    deprecated(sink, "--flush-seconds", flush)
    sink.add_argument(
        "--flush-records",
        type=int,
        default=50_000,
        metavar="N",
        help="commit when this many records are buffered (default 50000)",
    )
    compact = add_duration(
        sink, "--compact-interval", default="5m", help="merge small committed files this often and at exit (0s: never)"
    )
    deprecated(sink, "--compact-seconds", compact)
    sink.add_argument(
        "--give-up-after",
        metavar="DURATION",
        default=None,
        help="exit with status 1 when the broker has been unreachable this long, e.g. 90s, 10m or never (default: "
        f"{ONCE_GIVE_UP} with --once, else never: the sink retries with backoff)",
    )
    sink.add_argument(
        "--retry-max",
        metavar="DURATION",
        default="30s",
        help="longest wait between attempts to reach the broker (from 0.5s, doubling; default 30s)",
    )
    sink.add_argument(
        "--metrics-bind",
        metavar="[HOST:]PORT",
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (a bare PORT listens on 127.0.0.1 only; "
        "docs/operators.md lists the series)",
    )
    add_quiet(sink)
    add_security_options(sink)
    sink.set_defaults(func=run_sink_command)

    snapshot = subparsers.add_parser(
        "snapshot",
        help="write a DuckDB snapshot of the sink's data at a consistent cut",
        description="Build FILE.duckdb from the files the sink's manifest commits (read once at the start): tables "
        "events, usage_changes, peak_windows, alerts, plans, user_intervals, presence_intervals, horizons, "
        "partition_horizons, dead_letters, billing_periods, billing_days (up to each account's data_through) and "
        "snapshot_info, plus analyst views (docs/analysts.md). The file appears atomically; "
        "open it read-only with duckdb.connect(FILE, read_only=True).",
        epilog="Example: ccmeter snapshot --data-dir data --out snapshots/usage.duckdb --keep 7",
    )
    snapshot.add_argument("--data-dir", required=True, metavar="DIR", help="the sink's data directory")
    snapshot.add_argument("--out", required=True, metavar="FILE.duckdb", help="snapshot file to (re)place")
    snapshot.add_argument(
        "--keep",
        type=int,
        default=None,
        metavar="N",
        help="keep N snapshots: the replaced one is kept as FILE.<UTC stamp>.duckdb and older ones beyond N pruned",
    )
    add_quiet(snapshot)
    snapshot.set_defaults(func=run_snapshot_command)

    chart = subparsers.add_parser(
        "chart",
        help="PNG or SVG chart of one account's usage against its licenses, from a snapshot or an event file",
        description="Draw one account's licenses usage. With --period or --from/--to: one bar per account-local day "
        "(its peak; the part above the licenses in red) against licenses and licenses + allowance, the billed level "
        "(licenses + billable overage), and below it the stretches over licenses against the grace period, which "
        "decides what is billable. With --day: that local day's usage steps at their exact instants (minute "
        "resolution and finer), the stretches over licenses shaded. Times are in the account's timezone, named on "
        "the axis. A vertical line marks the account's data_through: nothing after it is known, so nothing is drawn "
        "there. The --out suffix chooses the format: .png or .svg.",
        epilog="Examples: ccmeter chart --snapshot usage.duckdb --account acct-1 --period current --out usage.svg; "
        "ccmeter chart --snapshot usage.duckdb --account acct-1 --day 2026-11-02 --out day.png",
    )
    source = chart.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", metavar="FILE", help="a snapshot from `ccmeter snapshot`")
    source.add_argument("--events", metavar="FILE", help="event file (.jsonl or .parquet; batch engine)")
    chart.add_argument("--account", required=True, metavar="ID", help="account_id")
    add_range_arguments(chart)
    chart.add_argument(
        "--day", metavar="YYYY-MM-DD", help="one account-local day at full resolution, instead of a range"
    )
    chart.add_argument("--out", required=True, metavar="FILE", help="chart file to write: FILE.png or FILE.svg")
    chart.set_defaults(func=run_chart_command)

    letters = subparsers.add_parser(
        "deadletters",
        help="the dead letters of one account, from a snapshot",
        description="List the dead letters of one account: reason, detail, source partition and offset, the Kafka "
        "timestamp of the original record and its text (control characters escaped; bytes that are not UTF-8 as "
        "\\xNN). A letter belongs to the account that keyed its events record, and to the account_id the event "
        "decoded to when that differs. Oldest first (by source position).",
        epilog="Example: ccmeter deadletters --snapshot usage.duckdb --account acct-1 --format csv --limit 100",
    )
    letters.add_argument("--snapshot", required=True, metavar="FILE", help="a snapshot from `ccmeter snapshot`")
    letters.add_argument("--account", required=True, metavar="ID", help="account_id (the events record's key)")
    letters.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    letters.add_argument("--limit", type=int, default=None, metavar="N", help="at most N letters (the first N)")
    letters.set_defaults(func=run_deadletters_command)


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("ccmeter").setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)


def run_sink_command(args: argparse.Namespace) -> int:
    """`ccmeter sink`."""
    from aiokafka.errors import KafkaError

    from processor.snapshots.sink import BrokerUnreachable, SinkConfig, run_sink
    from processor.snapshots.store import StoreError
    from processor.topics import validate_prefix

    _setup_logging(args.quiet)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the sink reports outages itself, once per attempt
    broker, prefix = broker_of(args), prefix_of(args)
    try:
        events_prefix = validate_prefix(args.events_prefix) if args.events_prefix is not None else None
    except ValueError as exc:
        raise CliError(f"--events-prefix: {exc}") from None
    if args.flush_interval <= 0 or args.flush_records < 1:
        raise CliError("--flush-interval must be more than 0s and --flush-records at least 1")
    from processor.metrics.sink import MetricsBindError, parse_bind

    try:
        metrics_bind = parse_bind(args.metrics_bind) if args.metrics_bind is not None else None
    except MetricsBindError as exc:
        raise CliError(str(exc)) from None
    config = SinkConfig(
        broker=broker,
        prefix=prefix,
        data_dir=Path(args.data_dir),
        once=args.once,
        events_prefix=events_prefix,
        flush_seconds=args.flush_interval,
        flush_records=args.flush_records,
        compact_seconds=max(0.0, args.compact_interval),
        give_up_seconds=give_up_seconds(args.give_up_after, args.once),
        retry_max_seconds=max(0.5, flag_seconds(args.retry_max, "--retry-max")),
        metrics_bind=metrics_bind,
    )
    try:
        stats = run_sink(config)
    except BrokerUnreachable as exc:
        print(f"ccmeter sink: {exc}", file=sys.stderr)
        return 1
    except (StoreError, MetricsBindError) as exc:
        raise RuntimeFailure(str(exc)) from None
    except (KafkaError, OSError) as exc:
        raise RuntimeFailure(f"sink failed against {broker}: {exc!r}") from exc  # processor/cli explains refusals
    rows = ", ".join(f"{name} {count}" for name, count in sorted(stats.rows.items())) or "no new rows"
    print(
        f"ccmeter sink: {stats.records} records ({rows}); {stats.redelivered} re-deliveries dropped, "
        f"{stats.bad_records} bad output records skipped; {stats.files} files in {stats.flushes} commits",
        file=sys.stderr,
    )
    return 0


def run_snapshot_command(args: argparse.Namespace) -> int:
    """`ccmeter snapshot`."""
    from processor.snapshots.snapshot import SnapshotError, SnapshotUsageError, build_snapshot
    from schemas.events import format_ms

    def progress(line: str) -> None:
        print(f"snapshot: {line}", file=sys.stderr)

    try:
        result = build_snapshot(
            Path(args.data_dir), Path(args.out), args.keep, progress=None if args.quiet else progress
        )
    except SnapshotError as exc:
        raise (CliError if isinstance(exc, SnapshotUsageError) else RuntimeFailure)(str(exc)) from None
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {args.out}: {exc.strerror or exc}") from None
    watermark = format_ms(result.watermark_ms) if result.watermark_ms is not None else "none"
    pruned = f", pruned {len(result.pruned)} older" if result.pruned else ""
    print(
        f"wrote {result.path}: {result.rows.get('events', 0)} events, {result.rows.get('usage_changes', 0)} usage "
        f"changes from {result.files} files; watermark {watermark}; {result.seconds:.1f}s{pruned}",
        file=sys.stderr,
    )
    return 0


def _open(path: str) -> tuple[Any, int | None]:
    from processor.snapshots.snapshot import SnapshotError, open_snapshot

    try:
        con, watermark_ms = open_snapshot(path)
    except SnapshotError as exc:
        raise snapshot_error(_open_error(path, str(exc))) from None
    tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    missing = [name for name in _NEEDED_TABLES if name not in tables]
    if missing:
        con.close()
        raise CliError(f"{path}: snapshot of an older ccmeter (no {missing[0]} table); run `ccmeter snapshot` again")
    return con, watermark_ms


def _open_error(path: str, message: str) -> str:
    """One line for a snapshot DuckDB refused to open: a newer storage format, a lock held by a writer, or DuckDB's
    own first line (a corrupt file, not a database)."""
    if "version number" in message or "Unsupported Storage Version" in message:  # DuckDB's words for a newer format
        return f"{path}: written in a newer DuckDB storage format than this ccmeter reads; upgrade ccmeter"
    if "Could not set lock" in message:
        holder = re.search(r"\(PID (\d+)\)", message)
        by = f" (PID {holder.group(1)})" if holder else ""
        return (f"{path}: locked by another process that has it open for writing{by}; snapshots are read-only "
                "files: wait until it is done, or read a copy")  # fmt: skip
    return message


def _history(con: Any, path: str, account: str) -> AccountHistory:
    require_account(account, snapshot_accounts(con), f"snapshot {path}")
    return load_histories(con, [account]).get(account) or AccountHistory(account)


def snapshot_history(path: str, account: str) -> AccountHistory:
    """One account's history from a snapshot (a CliError for a bad snapshot or an unknown account)."""
    con, _ = _open(path)
    try:
        return _history(con, path, account)
    finally:
        con.close()


def snapshot_billing_run(con: Any, args: argparse.Namespace) -> list[Report]:
    """The billing run of every account of the snapshot, each over its own period (up to its data_through); a
    restated period gives its restated report (table `restatements`)."""
    from processor.snapshots.restatements import restated_reports

    histories = load_histories(con)
    restated = restated_reports(con)

    def report(account: str, start: date, end: date) -> Report:
        found = restated.get((account, str(start), str(end)))
        return found if found is not None else (histories.get(account) or AccountHistory(account)).report(start, end)

    return billing_run(histories, snapshot_accounts(con), report, args)


def _is_restated(con: Any) -> Callable[[Report], bool]:
    """Whether a report of the snapshot is one of its restated reports."""
    from processor.snapshots.restatements import restated_reports

    restated = restated_reports(con)
    return lambda report: restated.get((report.account_id, report.from_, report.to)) == report


def render_rows(rows: list[dict[str, object]], fmt: str, keys: tuple[str, ...]) -> str:
    """Rows of `keys` as JSON (a list of objects), CSV (with a header) or a terminal table."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(keys), lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _csv_cell(row[key]) for key in keys} for row in rows)
        return out.getvalue()
    if fmt == "table":
        return text_table(keys, [[row[key] for key in keys] for row in rows])
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _csv_cell(value: object) -> object:
    """A CSV cell as the report's CSV writes it: booleans `true`/`false`, null empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def run_snapshot_report(args: argparse.Namespace) -> str:
    """The text of `ccmeter report --snapshot FILE ...` (one account's report, or the `--all` billing run)."""
    check_report_flags(args)
    con, _ = _open(args.snapshot)
    try:
        if args.all:
            return render_billing_run(snapshot_billing_run(con, args), args.format, _is_restated(con))
        from processor.snapshots.restatements import restated_reports

        history = _history(con, args.snapshot, args.account)
        start, end = account_dates(args, history)
        restated = restated_reports(con).get((args.account, str(start), str(end)))
        if restated is not None:
            return render_report(restated, args.format, RESTATEMENT_RESTATED)
        return render_report(history.report(start, end), args.format)  # JSON: the report's own keys
    finally:
        con.close()


def run_chart_command(args: argparse.Namespace) -> int:
    """`ccmeter chart`: from a snapshot or an event file, into a PNG or SVG file (by the --out suffix): the period
    chart (daily peaks) of --period or --from/--to, or the step chart of one local day (--day)."""
    if args.day is not None and has_range(args):
        raise CliError("give either --day or --period/--from/--to, not both")
    if args.day is None:
        check_range_flags(args)
    if Path(args.out).suffix.lower() not in CHART_SUFFIXES:
        raise CliError(f"--out must name a .png or .svg file, not {args.out!r}")
    if args.snapshot is not None:
        history = snapshot_history(args.snapshot, args.account)
    else:
        history = events_history(args.events, args.account, quiet=True)
    try:
        if args.day is not None:
            path, summary = _day_chart(history, parse_date(args.day, "--day"), args.out)
        else:
            path, summary = _period_chart(history, account_dates(args, history), args.out)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {path} ({summary})", file=sys.stderr)
    return 0


def _period_chart(history: AccountHistory, dates: tuple[date, date], out: str) -> tuple[Path, str]:
    from processor.reports.period_chart import period_chart, render_period_chart

    report = history.report(*dates)
    chart = period_chart(report, history.changes, history.plans)
    summary = f"peak {report.peak_usage}, billable overage {report.billable_overage}, {len(chart.known_days)} days"
    return render_period_chart(chart, out), summary


def _day_chart(history: AccountHistory, day: date, out: str) -> tuple[Path, str]:
    from processor.core.billing import known_plans
    from processor.core.periods import report_timezone
    from processor.reports.chart import chart_data, render_chart

    check_period(history, day, day)
    start_ms, end_ms = history.bounds_ms(day, day)
    zone = report_timezone(known_plans(history.plans, history.data_through_ms), day)
    data = chart_data(history.changes, history.plans, start_ms, end_ms, data_through_ms=history.data_through_ms,
                      timezone=zone)  # fmt: skip
    peak = max(data.usage, default=0)
    path = render_chart(data, out, f"{history.account_id} on {day} ({zone}) - peak {peak}")
    return path, f"peak {peak}, {len(data.over_stretches)} stretches over licenses"


TABLE_TEXT_LIMIT = 160  # characters of an original shown by the table format


def dead_letter_rows(con: Any, account: str, limit: int | None) -> list[dict[str, object]]:
    """The dead letters of `account` (view `dead_letters_by_account`) as LETTER_KEYS rows, in source order."""
    from schemas.events import format_ms

    columns = {row[0] for row in con.execute("DESCRIBE dead_letters_by_account").fetchall()}
    digest = "original_size, original_sha256" if "original_sha256" in columns else "NULL, NULL"  # older snapshots
    rows = con.execute(
        "SELECT reason, detail, source_partition, source_offset, epoch_ms(kafka_ts), original_text, original, "
        f"{digest} FROM dead_letters_by_account WHERE account_id = ? "
        "ORDER BY source_partition, source_offset, dead_lettered_at LIMIT ?",
        [account, limit],
    ).fetchall()
    letters: list[dict[str, object]] = []
    for reason, detail, partition, offset, kafka_ms, text, original, size, sha in rows:
        if text is None:  # not UTF-8: undecodable bytes as \xNN
            text = bytes(original or b"").decode("utf-8", "backslashreplace")
        letters.append(
            {
                "reason": reason,
                "detail": detail or "",
                "source_partition": partition,
                "source_offset": offset,
                "kafka_ts": None if kafka_ms is None else format_ms(kafka_ms),
                "original": escape_control(text),  # empty for a too_large letter: size and sha256 say which
                "original_size": size,
                "original_sha256": sha,
            }
        )
    return letters


def _known_accounts(con: Any) -> list[str]:
    rows = con.execute("SELECT DISTINCT kafka_key FROM events WHERE kafka_key IS NOT NULL").fetchall()
    return sorted(set(snapshot_accounts(con)) | {row[0] for row in rows})


def run_deadletters_command(args: argparse.Namespace) -> int:
    """`ccmeter deadletters`."""
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1, not {args.limit}")
    con, _ = _open(args.snapshot)
    try:
        require_account(args.account, _known_accounts(con), f"snapshot {args.snapshot}")
        rows = dead_letter_rows(con, args.account, args.limit)
    finally:
        con.close()
    if args.format == "table":
        for row in rows:
            text = str(row["original"])
            if len(text) > TABLE_TEXT_LIMIT:
                row["original"] = text[: TABLE_TEXT_LIMIT - 3] + "..."
    sys.stdout.write(render_rows(rows, args.format, LETTER_KEYS))
    return 0
