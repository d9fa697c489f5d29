"""Render a licenses usage report (SPEC section 4) as JSON, CSV or a terminal table, and the billing-run export.

CSV has two sections separated by one empty line: the days (header `account_id` + EXPORT_DAY_KEYS, one row per day),
then the summary (header BILLING_RUN_KEYS, one row: the report's line of the billing run). A null metric (a day that
starts at or after data_through, a null `peak_at` or `data_through`) is an empty cell; booleans are `true`/`false`;
`peak_users` is one cell, see `peak_users_cell`. The table prints the period's dates and, when the report is not
complete, "partial: data through <ts>"; null metrics show as `-`.

Exports (CSV and table) round `license_hours` to 6 decimals and seconds to milliseconds (3 decimals), and put a
`*_local` column (ISO 8601 with offset, in the report's timezone) next to every UTC instant; JSON keeps the report's
fields at full precision (the billing run's JSON adds the same extra columns).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from hashlib import sha256
from typing import Literal
from zoneinfo import ZoneInfo

from processor.core.periods import local_midnight_ms
from schemas.events import from_ms
from schemas.outputs import DAY_KEYS, SUMMARY_KEYS, PeakUser, Report

Format = Literal["json", "csv", "table"]
FORMATS: tuple[str, ...] = ("json", "csv", "table")
LICENSE_HOURS_PLACES = Decimal("0.000001")  # license hours: 6 decimals in CSV and table exports
SECONDS_PLACES = Decimal("0.001")  # seconds: milliseconds in CSV and table exports
ROUNDING: dict[str, Decimal] = {"license_hours": LICENSE_HOURS_PLACES, "seconds_over_licenses": SECONDS_PLACES}
LOCAL_SUFFIX = "_local"
RESTATEMENT_LIVE = "live"  # the restatement status of a line computed from the live record
RESTATEMENT_RESTATED = "restated"  # ... of a period restated with too-late events (a snapshot's restatements)


def _with_local(keys: Sequence[str], instants: Sequence[str]) -> tuple[str, ...]:
    """`keys` with `<key>_local` inserted after each key of `instants`."""
    return tuple(k for key in keys for k in ((key, key + LOCAL_SUFFIX) if key in instants else (key,)))


EXPORT_DAY_KEYS: tuple[str, ...] = _with_local(DAY_KEYS, ("peak_at",))
BILLING_RUN_KEYS: tuple[str, ...] = (
    "line_id",
    *SUMMARY_KEYS[:3],  # account_id, from, to
    "period_start_local",
    "period_end_local",
    *_with_local(SUMMARY_KEYS[3:], ("peak_at", "data_through")),
    "restatement",
)


def render_report(report: Report, fmt: str, restatement: str | None = None) -> str:
    """The report in one of FORMATS; with `restatement` (a snapshot's report) JSON carries it as `restatement` too
    (CSV and table always show it, `live` by default)."""
    if fmt == "json":
        values = report.to_json_dict()
        if restatement is not None:
            values = {
                **{k: v for k, v in values.items() if k != "days"},
                "restatement": restatement,
                "days": values["days"],
            }
        return json.dumps(values, indent=2) + "\n"
    if fmt == "csv":
        return report_csv(report, restatement or RESTATEMENT_LIVE)
    if fmt == "table":
        return report_table(report, restatement or RESTATEMENT_LIVE)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def peak_users_cell(users: Sequence[PeakUser | dict]) -> str:
    """`peak_users` as one text cell: `user[presence,...]` per user, joined by `;`; a user's presences are its sorted
    device ids, then `portal`, then `api`. Example: `u-1[laptop-1,portal];u-2[api]` (empty when there are none)."""
    parts = []
    for user in users:
        u = user if isinstance(user, PeakUser) else PeakUser.model_validate(user)
        presences = [*u.devices, *(["portal"] if u.portal else []), *(["api"] if u.api else [])]
        parts.append(f"{u.user_id}[{','.join(presences)}]")
    return ";".join(parts)


def local_time(utc_text: str | None, timezone: str) -> str | None:
    """A UTC instant (RFC 3339 text) in `timezone`, ISO 8601 with milliseconds and offset (None stays None)."""
    if utc_text is None:
        return None
    moment = datetime.fromisoformat(utc_text).astimezone(ZoneInfo(timezone))
    return moment.isoformat(timespec="milliseconds")


def _local_ms(ms: int, timezone: str) -> str:
    return from_ms(ms).astimezone(ZoneInfo(timezone)).isoformat(timespec="milliseconds")


def line_id(account_id: str, start: str, end: str) -> str:
    """The stable id of a billing-run line: the first 16 hex digits of sha256("account_id|from|to")."""
    return sha256(f"{account_id}|{start}|{end}".encode()).hexdigest()[:16]


def billing_row(report: Report, restatement: str = RESTATEMENT_LIVE) -> dict[str, object]:
    """The report's line of a billing run (BILLING_RUN_KEYS, JSON types, full precision): its summary, the period's
    local start and end (`[midnight(from), midnight(to + 1))` in its timezone), local times, a line id and status."""
    summary = report.to_json_dict()
    zone = report.timezone
    after = date.fromisoformat(report.to) + timedelta(days=1)
    extra = {
        "line_id": line_id(report.account_id, report.from_, report.to),
        "period_start_local": _local_ms(local_midnight_ms(date.fromisoformat(report.from_), zone), zone),
        "period_end_local": _local_ms(local_midnight_ms(after, zone), zone),
        "peak_at_local": local_time(report.peak_at, zone),
        "data_through_local": local_time(report.data_through, zone),
        "restatement": restatement,
    }
    merged = {**summary, **extra}
    return {key: merged[key] for key in BILLING_RUN_KEYS}


def day_rows(report: Report) -> list[dict[str, object]]:
    """The report's days with `account_id` and `peak_at_local` (JSON types, full precision)."""
    rows = []
    for day in report.days:
        values = day.model_dump(mode="json")
        values["peak_at_local"] = local_time(day.peak_at, report.timezone)
        rows.append({"account_id": report.account_id, **{key: values[key] for key in EXPORT_DAY_KEYS}})
    return rows


def export_value(key: str, value: object) -> object:
    """A value as CSV and table exports show it: license hours and seconds rounded (ROUNDING, half up like DuckDB's
    round(), as a fixed-point Decimal), `peak_users` as one cell; anything else unchanged."""
    places = ROUNDING.get(key)
    if places is not None and isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(repr(float(value))).quantize(places, rounding=ROUND_HALF_UP)
    if key == "peak_users" and isinstance(value, list):
        return peak_users_cell(value)
    return value


def export_row(row: dict[str, object]) -> dict[str, object]:
    """Every value of `row` through `export_value`."""
    return {key: export_value(key, value) for key, value in row.items()}


def render_billing_run(reports: Iterable[Report], fmt: str, restated: Callable[[Report], bool] | None = None) -> str:
    """One line per report (BILLING_RUN_KEYS): JSON (a list of objects, full precision), CSV or a table; `restated`
    tells which reports are restated periods (status `restated`, else `live`)."""
    rows = [
        billing_row(report, RESTATEMENT_RESTATED if restated is not None and restated(report) else RESTATEMENT_LIVE)
        for report in reports
    ]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    return render_export(rows, BILLING_RUN_KEYS, fmt)


def render_export(rows: Sequence[dict[str, object]], keys: Sequence[str], fmt: str) -> str:
    """Rows as CSV (header, cells by `_csv_value`) or a table, through `export_value`."""
    exported = [export_row(row) for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(keys)
        writer.writerows([_csv_value(row[key]) for key in keys] for row in exported)
        return out.getvalue()
    if fmt == "table":
        return text_table(keys, [[row[key] for key in keys] for row in exported])
    raise ValueError(f"unknown format {fmt!r}; choose one of csv, table")


def report_csv(report: Report, restatement: str = RESTATEMENT_LIVE) -> str:
    """The days (one row per account-local day, with a header), an empty line, then the summary: the report's
    billing-run line (header, one row)."""
    days = render_export(day_rows(report), ("account_id", *EXPORT_DAY_KEYS), "csv")
    return days + "\n" + render_export([billing_row(report, restatement)], BILLING_RUN_KEYS, "csv")


def _csv_value(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    """`text` with control and line-separator characters escaped (\\n, \\xNN, \\uNNNN), so it stays on one line
    and cannot drive the analyst's terminal."""
    if text.isprintable():
        return text
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, Decimal):
        return f"{value:,}"
    return escape_control(str(value))


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table; numbers are right-aligned."""
    cells = [[_fmt(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    separator = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), separator, *(line(row) for row in cells)]) + "\n"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def partial_note(report: Report) -> str | None:
    """ "partial: data through <ts>" for a report that is not complete (None when it is)."""
    if report.complete:
        return None
    if report.data_through is None:
        return "partial: no data yet"
    return f"partial: data through {report.data_through}"


def report_table(report: Report, restatement: str = RESTATEMENT_LIVE) -> str:
    """The period's dates (and whether it is partial), the summary (the billing-run line) as key/value lines, then
    the days as a table."""
    summary = export_row(billing_row(report, restatement))
    summary["peak_users"] = summary["peak_users"] or None
    width = max(len(key) for key in BILLING_RUN_KEYS)
    account = escape_control(report.account_id)
    lines = [f"Licenses usage report: {account}, {report.from_} to {report.to} ({report.timezone})"]
    note = partial_note(report)
    if note is not None:
        lines.append(note)
    lines.append("")
    lines += [f"  {key.ljust(width)}  {_fmt(summary[key])}" for key in BILLING_RUN_KEYS if key != "account_id"]
    lines.append("")
    return "\n".join(lines) + "\n" + render_export(day_rows(report), EXPORT_DAY_KEYS, "table")
