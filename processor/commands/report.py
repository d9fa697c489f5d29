"""`ccmeter report` and `ccmeter timeline`: licenses usage reports and usage change points from an event file.

Both read the whole file with the DuckDB batch engine, so a report covers every event in it, however late it arrived,
up to the account's data_through (the file rule: `max(W_a - allowed_lateness, W_p - account_idle_lateness)` with the
account's and the file's largest occurred_at); a period that runs past it is reported as partial.
`ccmeter report --snapshot FILE` reports from a DuckDB snapshot instead (processor/snapshots/commands.py).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from datetime import date
from pathlib import Path

from processor.cli import CliError
from processor.eventfile import EventFileError, check_event_file
from processor.reports.render import FORMATS, render_report
from schemas.events import format_ms

FIRST_DATE, LAST_DATE = date(1970, 1, 1), date(9998, 12, 31)  # the event-time range of SPEC 3


def parse_date(text: str, flag: str) -> date:
    """A YYYY-MM-DD date between 1970-01-01 and 9998-12-31, or a CliError naming the flag."""
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag} must be a date like 2026-11-01, not {text!r}") from None
    if not FIRST_DATE <= value <= LAST_DATE:
        raise CliError(f"{flag} must be between {FIRST_DATE} and {LAST_DATE}, not {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` and `timeline` subcommands."""
    report = subparsers.add_parser(
        "report",
        help="licenses usage report of one account for a date range",
        description=(
            "Compute the licenses usage report (SPEC section 4) of one account: peak usage, billable overage "
            "(grace-aware), over allowance, license hours and distinct users, with one row per account-local day, "
            "the users counted at the peak, and data_through: nothing after it is counted, and a day or period "
            "that ends after it is partial (complete false; a day that starts at or after it has null metrics). "
            "With --snapshot it reads a DuckDB snapshot and takes --period (current, previous, YYYY-MM); --all then "
            "prints one summary row per account for a billing run."
        ),
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", metavar="FILE", help="event file (.jsonl or .parquet)")
    source.add_argument("--snapshot", metavar="FILE", help="a DuckDB snapshot from `ccmeter snapshot`")
    report.add_argument("--account", metavar="ID", help="account_id to report on")
    report.add_argument(
        "--all", action="store_true", help="one summary row per account (billing run; needs --snapshot)"
    )
    report.add_argument("--from", dest="from_date", metavar="YYYY-MM-DD", help="first local date")
    report.add_argument("--to", dest="to_date", metavar="YYYY-MM-DD", help="last local date (inclusive)")
    report.add_argument(
        "--period",
        metavar="PERIOD",
        help="billing period (needs --snapshot): current, previous or YYYY-MM (the billing period that starts in "
        "that month); current is the period containing the account's data_through",
    )
    report.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    report.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    report.add_argument("--quiet", action="store_true", help="no progress bar")
    report.set_defaults(func=run_report)

    timeline = subparsers.add_parser(
        "timeline",
        help="usage change points of one account",
        description="Print every change of the account's usage (at, usage, licenses, change_id) in event-time order.",
    )
    timeline.add_argument("--events", required=True, metavar="FILE", help="event file (.jsonl or .parquet)")
    timeline.add_argument("--account", required=True, metavar="ID", help="account_id")
    timeline.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default: csv)")
    timeline.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    timeline.add_argument("--quiet", action="store_true", help="no progress bar")
    timeline.set_defaults(func=run_timeline)


def _load_engine(path: str, account: str, quiet: bool):  # noqa: ANN202 - BatchEngine import is lazy
    from processor.batch.engine import BatchEngine

    try:
        file = check_event_file(path)
    except EventFileError as exc:
        raise CliError(str(exc)) from None
    engine = BatchEngine()
    stats = engine.load(file, progress=not quiet and sys.stderr.isatty())
    if stats.rejected and not quiet:
        print(f"ccmeter: {stats.rejected} of {stats.rows} records rejected (bad input)", file=sys.stderr)
    accounts = engine.accounts()
    if account not in accounts:
        known = ", ".join(accounts[:10]) + (" ..." if len(accounts) > 10 else "")
        raise CliError(f"account {account!r} not found in {file} (accounts: {known or 'none'})")
    return engine


def _write(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    target = Path(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror}") from None
    print(f"wrote {target}", file=sys.stderr)


def run_report(args: argparse.Namespace) -> int:
    """`ccmeter report`: from an event file (batch engine) or from a snapshot (`--snapshot`)."""
    if args.snapshot is not None:
        from processor.snapshots.commands import run_snapshot_report

        _write(run_snapshot_report(args), args.out)
        return 0
    if args.period is not None or args.all:
        raise CliError("--period and --all need --snapshot (with --events give --account, --from and --to)")
    if args.account is None or args.from_date is None or args.to_date is None:
        raise CliError("with --events give --account, --from and --to")
    start = parse_date(args.from_date, "--from")
    end = parse_date(args.to_date, "--to")
    if end < start:
        raise CliError(f"--to ({end}) is before --from ({start})")
    engine = _load_engine(args.events, args.account, args.quiet)
    report = engine.report(args.account, start, end)
    _write(render_report(report, args.format), args.out)
    return 0


def run_timeline(args: argparse.Namespace) -> int:
    """`ccmeter timeline`."""
    engine = _load_engine(args.events, args.account, args.quiet)
    changes = engine.usage_changes(args.account)
    rows = [
        {"at": format_ms(c.at_ms), "usage": c.usage, "licenses": c.licenses, "change_id": c.change_id} for c in changes
    ]
    if args.format == "json":
        text = json.dumps({"account_id": args.account, "changes": rows}, indent=1) + "\n"
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["at", "usage", "licenses", "change_id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = out.getvalue()
    _write(text, args.out)
    return 0
