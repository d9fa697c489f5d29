"""Render a licenses usage report (SPEC section 4) as JSON, CSV (one row per day) or a terminal table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Literal

from schemas.outputs import DAY_KEYS, SUMMARY_KEYS, Report

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


def report_csv(report: Report) -> str:
    """One row per account-local day, with a header row (like a vendor's Export button)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["account_id", *DAY_KEYS])
    for day in report.days:
        values = day.model_dump(mode="json")
        writer.writerow([report.account_id, *(_csv_value(values[key]) for key in DAY_KEYS)])
    return out.getvalue()


def _csv_value(value: object) -> object:
    return "" if value is None else value


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table; numbers are right-aligned."""
    cells = [[_fmt(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    separator = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), separator, *(line(row) for row in cells)]) + "\n"


def report_table(report: Report) -> str:
    """The summary as key/value lines, then the days as a table."""
    summary = report.to_json_dict()
    width = max(len(key) for key in SUMMARY_KEYS)
    lines = [f"Licenses usage report: {report.account_id}, {report.from_} to {report.to} ({report.timezone})", ""]
    lines += [f"  {key.ljust(width)}  {_fmt(summary[key])}" for key in SUMMARY_KEYS if key != "account_id"]
    lines.append("")
    rows = [[getattr(day, key) for key in DAY_KEYS] for day in report.days]
    return "\n".join(lines) + "\n" + text_table(DAY_KEYS, rows)
