"""`ccmeter report` and `ccmeter timeline`: licenses usage reports, billing runs and usage change points.

With `--events FILE` both read the whole file with the DuckDB batch engine, so a report covers every event in it,
however late it arrived, up to the account's data_through (the file rule: `max(W_a - allowed_lateness, W_p -
account_idle_lateness)` with the account's and the file's largest occurred_at); a period that runs past it is reported
as partial. With `--snapshot FILE` they read a DuckDB snapshot instead (processor/cli/snapshots.py). Both sources
resolve `--period` the same way (`report_dates`) and refuse the same empty periods (`check_period`), so the same
events give the same billing-run lines either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processor.errors import CliError, RuntimeFailure
from processor.eventfile import EventFileError, check_event_file
from processor.options import add_quiet
from processor.reports.render import FORMATS, local_time, render_billing_run, render_export, render_report
from schemas.events import format_ms
from schemas.outputs import Report

if TYPE_CHECKING:
    from processor.snapshots.history import AccountHistory

TIMELINE_KEYS: tuple[str, ...] = ("at", "at_local", "usage", "licenses", "change_id")
PERIOD_FLAG_HELP = (
    "billing period: current, previous or YYYY-MM (the billing period that starts in that month); current is the "
    "one containing the account's data_through"
)
ReportFn = Callable[[str, date, date], Report]
ManyReportsFn = Callable[[Sequence[tuple[str, date, date]]], list[Report]]

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
        help="licenses usage report of one account, or a billing run of every account",
        description=(
            "Compute the licenses usage report (SPEC section 4) of one account: peak usage, billable overage "
            "(grace-aware), over allowance, license hours and distinct users, with one row per account-local day, "
            "the users counted at the peak, and data_through: nothing after it is counted, and a day or period "
            "that ends after it is partial (complete false; a day that starts at or after it has null metrics). "
            "From an event file (--events) or a DuckDB snapshot (--snapshot); the range is --period (current, "
            "previous, YYYY-MM) or --from/--to. --all prints the billing run: one line per account and period with "
            "every summary field, the period's local start and end, a stable line_id and the restatement status. "
            "CSV and table round license hours to 6 decimals and seconds to milliseconds, and show every UTC instant "
            "in the report's timezone as well (*_local)."
        ),
        epilog="Example: ccmeter report --events events.jsonl --all --period previous --format csv --out run.csv",
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", metavar="FILE", help="event file (.jsonl or .parquet)")
    source.add_argument("--snapshot", metavar="FILE", help="a DuckDB snapshot from `ccmeter snapshot`")
    report.add_argument("--account", metavar="ID", help="account_id to report on")
    report.add_argument("--all", action="store_true", help="billing run: one line per account and period")
    add_range_arguments(report)
    report.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    report.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    add_quiet(report)
    report.set_defaults(func=run_report)

    timeline = subparsers.add_parser(
        "timeline",
        help="usage change points of one account",
        description="Print every change of the account's usage (at, at_local, usage, licenses, change_id) in "
        "event-time order, from an event file or a snapshot; with --period or --from/--to only the changes in that "
        "range (account-local dates). at_local is `at` in the timezone of the plan in effect then.",
        epilog="Example: ccmeter timeline --snapshot usage.duckdb --account acct-1 --from 2026-11-02 --to 2026-11-02",
    )
    source = timeline.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", metavar="FILE", help="event file (.jsonl or .parquet)")
    source.add_argument("--snapshot", metavar="FILE", help="a DuckDB snapshot from `ccmeter snapshot`")
    timeline.add_argument("--account", required=True, metavar="ID", help="account_id")
    add_range_arguments(timeline)
    timeline.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default: csv)")
    timeline.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    add_quiet(timeline)
    timeline.set_defaults(func=run_timeline)


def add_range_arguments(parser: argparse.ArgumentParser) -> None:
    """`--from`/`--to` (account-local dates) and `--period` (billing period)."""
    parser.add_argument("--from", dest="from_date", metavar="YYYY-MM-DD", help="first local date")
    parser.add_argument("--to", dest="to_date", metavar="YYYY-MM-DD", help="last local date (inclusive)")
    parser.add_argument("--period", metavar="PERIOD", help=PERIOD_FLAG_HELP)


def check_range_flags(args: argparse.Namespace, *, required: bool = True) -> None:
    """Either `--period` or both `--from` and `--to` (or none of them when not `required`)."""
    if args.period is not None and (args.from_date is not None or args.to_date is not None):
        raise CliError("give either --period or --from/--to, not both")
    if args.period is None and (args.from_date is None) != (args.to_date is None):
        raise CliError("give --period (current, previous or YYYY-MM) or both --from and --to")
    if required and args.period is None and args.from_date is None:
        raise CliError("give --period (current, previous or YYYY-MM) or both --from and --to")


def has_range(args: argparse.Namespace) -> bool:
    """Whether a range (`--period` or `--from`/`--to`) was given."""
    return args.period is not None or args.from_date is not None


def report_dates(args: argparse.Namespace, history: AccountHistory) -> tuple[date, date]:
    """The local dates (from, to inclusive) of `--period` (resolved with the account's latest plan and
    data_through) or of `--from`/`--to`."""
    from processor.snapshots.history import resolve_period

    if args.period is not None:
        try:
            return resolve_period(args.period, history.latest_plan, history.data_through_ms)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    start, end = parse_date(args.from_date, "--from"), parse_date(args.to_date, "--to")
    if end < start:
        raise CliError(f"--to ({end}) is before --from ({start})")
    return start, end


def first_event_ms(history: AccountHistory) -> int | None:
    """The first instant the account's history knows (a usage change, counted interval or plan); None if none."""
    firsts = [items[0].at_ms for items in (history.changes, history.plans) if items]
    firsts += [interval.start_ms for interval in history.intervals[:1]]
    return min(firsts, default=None)


def before_first_event(history: AccountHistory, start: date, end: date) -> bool:
    """Whether the local dates start..end end at or before the account's first event."""
    first = first_event_ms(history)
    return first is not None and history.bounds_ms(start, end)[1] <= first


def check_period(history: AccountHistory, start: date, end: date, *, current: bool = False) -> None:
    """A CliError for a range that ends before the account's first event, or one of which nothing is known (it
    starts at or after data_through; not for the current period, which contains data_through)."""
    account = history.account_id
    if before_first_event(history, start, end):
        first = format_ms(first_event_ms(history) or 0)
        raise CliError(f"{start} to {end} ends before the first event of account {account!r} ({first})")
    through = history.data_through_ms
    if not current and (through is None or history.bounds_ms(start, end)[0] >= through):
        known = "nothing is known of it" if through is None else f"data through {format_ms(through)}"
        raise CliError(f"{start} to {end} is empty for account {account!r}: {known}")


def account_dates(args: argparse.Namespace, history: AccountHistory) -> tuple[date, date]:
    """`report_dates` of one account, refused (CliError) when the range is empty for it (`check_period`)."""
    start, end = report_dates(args, history)
    current = (args.period or "").strip().lower() == "current"
    check_period(history, start, end, current=current)
    return start, end


def billing_run(
    histories: Mapping[str, AccountHistory],
    accounts: Sequence[str],
    report: ReportFn,
    args: argparse.Namespace,
    many: ManyReportsFn | None = None,
) -> list[Report]:
    """One report per account over its own period (`report_dates`), leaving out accounts whose period ends before
    their first event; a CliError when that leaves none. `many`, when given, makes all the reports in one call
    (the batch engine's set-based `BatchEngine.reports`) instead of one `report` call per account."""
    from processor.snapshots.history import AccountHistory

    requests = []
    for account in accounts:
        history = histories.get(account) or AccountHistory(account)
        start, end = report_dates(args, history)
        if not before_first_event(history, start, end):
            requests.append((account, start, end))
    reports = many(requests) if many is not None else [report(*request) for request in requests]
    if not reports:
        raise CliError(f"no account has events in that period ({len(accounts)} accounts, each starts after it)")
    return reports


def _load_engine(path: str, quiet: bool):  # noqa: ANN202 - BatchEngine import is lazy
    from processor.batch.engine import BatchEngine

    try:
        file = check_event_file(path)
    except EventFileError as exc:
        raise CliError(str(exc)) from None
    engine = BatchEngine()
    stats = engine.load(file, progress=not quiet and sys.stderr.isatty())
    if stats.rejected and not quiet:
        print(f"ccmeter: {stats.rejected} of {stats.rows} records rejected (bad input)", file=sys.stderr)
    return engine


def require_account(account: str, accounts: Sequence[str], where: str) -> None:
    """A CliError naming the known accounts when `account` is not one of them."""
    if account not in accounts:
        known = ", ".join(accounts[:10]) + (" ..." if len(accounts) > 10 else "")
        raise CliError(f"account {account!r} not found in {where} (accounts: {known or 'none'})")


def engine_history(engine: Any, account: str) -> AccountHistory:
    """What the batch engine derived for one account, as an AccountHistory (for periods, charts and timelines)."""
    from processor.snapshots.history import AccountHistory

    return AccountHistory(
        account,
        changes=engine.usage_changes(account),
        intervals=engine.user_intervals(account),
        plans=engine.plans(account),
        presences=engine.presence_intervals(account),
        data_through_ms=engine.data_through(account),
    )


def engine_histories(engine: Any) -> dict[str, AccountHistory]:
    """`engine_history` of every account, each table read once (presences left out: a billing run resolves
    periods and first events from these, and its reports come from the engine itself)."""
    from processor.snapshots.history import AccountHistory

    histories = {account: AccountHistory(account) for account in engine.accounts()}
    for change in engine.usage_changes():
        histories[change.account_id].changes.append(change)
    for interval in engine.user_intervals():
        histories[interval.account_id].intervals.append(interval)
    for account, plans in engine.all_plans().items():
        histories[account].plans = plans
    for account, through in engine.data_throughs().items():
        if account in histories:  # an account whose every record was dropped as too late has no history
            histories[account].data_through_ms = through
    return histories


def events_history(path: str, account: str, quiet: bool) -> AccountHistory:
    """One account's history from an event file (a CliError for a bad file or an unknown account)."""
    engine = _load_engine(path, quiet)
    try:
        require_account(account, engine.accounts(), str(path))
        return engine_history(engine, account)
    finally:
        engine.close()


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
        raise RuntimeFailure(f"cannot write {target}: {exc.strerror}") from None
    print(f"wrote {target}", file=sys.stderr)


def check_report_flags(args: argparse.Namespace) -> None:
    """`--account` xor `--all`, and a range."""
    if args.all and args.account:
        raise CliError("give either --account or --all, not both")
    if not args.all and not args.account:
        raise CliError("give --account ID (or --all for every account)")
    check_range_flags(args)


def run_report(args: argparse.Namespace) -> int:
    """`ccmeter report`: from an event file (batch engine) or from a snapshot (`--snapshot`)."""
    if args.snapshot is not None:
        from processor.cli.snapshots import run_snapshot_report

        _write(run_snapshot_report(args), args.out)
        return 0
    check_report_flags(args)
    engine = _load_engine(args.events, args.quiet)
    try:
        accounts = engine.accounts()
        if args.all:
            histories = engine_histories(engine)
            reports = billing_run(histories, accounts, engine.report, args, many=engine.reports)
            text = render_billing_run(reports, args.format)
        else:
            require_account(args.account, accounts, str(args.events))
            start, end = account_dates(args, engine_history(engine, args.account))
            text = render_report(engine.report(args.account, start, end), args.format)
    finally:
        engine.close()
    _write(text, args.out)
    return 0


def timeline_rows(history: AccountHistory, args: argparse.Namespace) -> list[dict[str, object]]:
    """The account's usage changes (TIMELINE_KEYS), only those in the range when one is given."""
    from processor.core.billing import plan_at

    changes = history.changes
    if has_range(args):
        start_ms, end_ms = history.bounds_ms(*account_dates(args, history))
        changes = [change for change in changes if start_ms <= change.at_ms < end_ms]
    rows = []
    for change in changes:
        at = format_ms(change.at_ms)
        zone = plan_at(history.plans, change.at_ms).timezone
        rows.append(
            {
                "at": at,
                "at_local": local_time(at, zone),
                "usage": change.usage,
                "licenses": change.licenses,
                "change_id": change.change_id,
            }  # fmt: skip
        )
    return rows


def run_timeline(args: argparse.Namespace) -> int:
    """`ccmeter timeline`."""
    check_range_flags(args, required=False)
    if args.snapshot is not None:
        from processor.cli.snapshots import snapshot_history

        history = snapshot_history(args.snapshot, args.account)
    else:
        history = events_history(args.events, args.account, args.quiet)
    rows = timeline_rows(history, args)
    if args.format == "json":
        text = json.dumps({"account_id": args.account, "changes": rows}, indent=1) + "\n"
    else:
        text = render_export(rows, TIMELINE_KEYS, "csv")
    _write(text, args.out)
    return 0
