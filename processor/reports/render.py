"""Render a licenses usage report (SPEC section 4) as JSON, CSV or a terminal table.

CSV has two sections separated by one empty line: the days (header `account_id` + DAY_KEYS, one row per day), then
the summary (header SUMMARY_KEYS, one row). A null metric (a day that starts at or after data_through, a null
`peak_at` or `data_through`) is an empty cell; booleans are `true`/`false`; `peak_users` is one cell, see
`peak_users_cell`. The table prints the period's dates and, when the report is not complete, "partial: data through
<ts>"; null metrics show as `-`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Literal

from schemas.outputs import DAY_KEYS, SUMMARY_KEYS, PeakUser, Report

Format = Literal["json", "csv", "table"]
FORMATS: tuple[str, ...] = ("json", "csv", "table")


def render_report(report: Report, fmt: str) -> str:
    """The report in one of FORMATS."""
    if fmt == "json":
        return json.dumps(report.to_json_dict(), indent=2) + "\n"
    if fmt == "csv":
        return report_csv(report)
    if fmt == "table":
        return report_table(report)
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


def report_csv(report: Report) -> str:
    """The days (one row per account-local day, with a header), an empty line, then the summary (header, one row)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["account_id", *DAY_KEYS])
    for day in report.days:
        values = day.model_dump(mode="json")
        writer.writerow([report.account_id, *(_csv_value(values[key]) for key in DAY_KEYS)])
    writer.writerow([])
    writer.writerow(SUMMARY_KEYS)
    summary = report.to_json_dict()
    summary["peak_users"] = peak_users_cell(report.peak_users)
    writer.writerow([_csv_value(summary[key]) for key in SUMMARY_KEYS])
    return out.getvalue()


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
    return isinstance(value, int | float) and not isinstance(value, bool)


def partial_note(report: Report) -> str | None:
    """"partial: data through <ts>" for a report that is not complete (None when it is)."""
    if report.complete:
        return None
    if report.data_through is None:
        return "partial: no data yet"
    return f"partial: data through {report.data_through}"


def report_table(report: Report) -> str:
    """The period's dates (and whether it is partial), the summary as key/value lines, then the days as a table."""
    summary = report.to_json_dict()
    summary["peak_users"] = peak_users_cell(report.peak_users) or None
    width = max(len(key) for key in SUMMARY_KEYS)
    account = escape_control(report.account_id)
    lines = [f"Licenses usage report: {account}, {report.from_} to {report.to} ({report.timezone})"]
    note = partial_note(report)
    if note is not None:
        lines.append(note)
    lines.append("")
    lines += [f"  {key.ljust(width)}  {_fmt(summary[key])}" for key in SUMMARY_KEYS if key != "account_id"]
    lines.append("")
    rows = [[getattr(day, key) for key in DAY_KEYS] for day in report.days]
    return "\n".join(lines) + "\n" + text_table(DAY_KEYS, rows)
