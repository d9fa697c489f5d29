"""Invoice-ready exports: rounding, local times next to UTC instants, the billing-run line, and SVG charts."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from processor.core.billing import build_report
from processor.core.model import Plan, UsageChange, UserInterval
from processor.reports.chart import chart_data, chart_format, render_chart
from processor.reports.render import (
    BILLING_RUN_KEYS,
    EXPORT_DAY_KEYS,
    billing_row,
    export_value,
    line_id,
    local_time,
    render_billing_run,
    render_report,
)
from schemas.events import to_ms
from schemas.outputs import SUMMARY_KEYS, Report

H = 3_600_000
NOV1 = 1_793_491_200_000  # 2026-11-01T00:00:00Z (New York: 2026-10-31T20:00-04:00; DST ends 2026-11-01 06:00Z)
ZONE = "America/New_York"


def new_york_report() -> Report:
    """Account `ny` (New York, anchor day 16): usage 3 from 2026-11-02 13:00Z for 1 h 20 min 33.3333 s, licenses 2."""
    plans = [Plan(at_ms=NOV1 - 30 * 24 * H, licenses=2, billing_anchor_day=16, timezone=ZONE, grace_minutes=0)]
    start = NOV1 + 24 * H + 13 * H
    end = start + 4_833_333  # 1 h 20 min 33.333 s
    changes = [UsageChange("ny", start, 3, 2), UsageChange("ny", end, 0, 2)]
    intervals = [UserInterval("ny", f"u-{n}", start, end) for n in range(3)]
    return build_report(
        "ny", date(2026, 10, 16), date(2026, 11, 15), changes, intervals, plans, data_through_ms=NOV1 + 10 * 24 * H
    )


def test_rounding_of_license_hours_and_seconds() -> None:
    assert export_value("license_hours", 80.81343916666667) == Decimal("80.813439")
    assert export_value("license_hours", 0.0000005) == Decimal("0.000001")  # half up, like DuckDB's round()
    assert export_value("seconds_over_licenses", 4833.3335) == Decimal("4833.334")
    assert export_value("seconds_over_licenses", 12.0) == Decimal("12.000")
    assert export_value("license_hours", None) is None and export_value("peak_usage", 3) == 3


def test_local_times_carry_the_offset_of_the_instant() -> None:
    assert local_time("2026-10-20T12:00:00.000Z", ZONE) == "2026-10-20T08:00:00.000-04:00"
    assert local_time("2026-11-02T13:00:00.250Z", ZONE) == "2026-11-02T08:00:00.250-05:00"
    assert local_time("2026-11-02T13:00:00.250Z", "UTC") == "2026-11-02T13:00:00.250+00:00"
    assert local_time(None, ZONE) is None


def test_billing_row_has_every_summary_field_and_the_period_in_local_time() -> None:
    report = new_york_report()
    row = billing_row(report)
    assert tuple(row) == BILLING_RUN_KEYS and set(SUMMARY_KEYS) <= set(row)
    summary = report.to_json_dict()
    assert all(row[key] == summary[key] for key in SUMMARY_KEYS)  # JSON types, full precision
    assert row["period_start_local"] == "2026-10-16T00:00:00.000-04:00"
    assert row["period_end_local"] == "2026-11-16T00:00:00.000-05:00"  # exclusive: local midnight after `to`
    assert row["peak_at"] == "2026-11-02T13:00:00.000Z" and row["peak_at_local"] == "2026-11-02T08:00:00.000-05:00"
    assert row["data_through_local"] == "2026-11-10T19:00:00.000-05:00"
    assert row["line_id"] == line_id("ny", "2026-10-16", "2026-11-15") and row["restatement"] == "live"
    assert line_id("ny", "2026-10-16", "2026-11-15") != line_id("ny", "2026-11-16", "2026-12-15")
    assert to_ms(datetime.fromisoformat(row["peak_at_local"])) == to_ms(datetime.fromisoformat(row["peak_at"]))


def test_csv_and_table_round_json_keeps_full_precision() -> None:
    report = new_york_report()
    assert report.license_hours == 3 * 4_833_333 / H  # 4.0277775
    (line,) = json.loads(render_billing_run([report], "json"))
    assert line["license_hours"] == report.license_hours and line["seconds_over_licenses"] == 4833.333
    (row,) = csv.DictReader(io.StringIO(render_billing_run([report], "csv")))
    assert (row["license_hours"], row["seconds_over_licenses"]) == ("4.027778", "4833.333")
    assert row["peak_users"] == "u-0[];u-1[];u-2[]"  # no presences given: users without presences
    days_text, _ = render_report(report, "csv").split("\n\n")
    days = {d["date"]: d for d in csv.DictReader(io.StringIO(days_text))}
    assert list(next(iter(days.values()))) == ["account_id", *EXPORT_DAY_KEYS]
    assert days["2026-11-02"]["license_hours"] == "4.027778"
    assert days["2026-11-02"]["peak_at_local"] == "2026-11-02T08:00:00.000-05:00"
    assert days["2026-11-12"]["peak_at_local"] == ""  # after data_through: null
    table = render_report(report, "table")
    assert "  license_hours          4.027778" in table and "  peak_at_local          2026-11-02T08:00:00" in table
    assert "4,833.333" in table and "America/New_York" in table.splitlines()[0]


def test_svg_and_png_charts(tmp_path: Path) -> None:
    changes = [UsageChange("a", 0, 3, 2), UsageChange("a", H, 0, 2)]
    data = chart_data(changes, [Plan(at_ms=0, licenses=2, grace_minutes=0)], 0, 6 * H)
    first = render_chart(data, tmp_path / "a.svg", "acct a & <b>").read_bytes()
    second = render_chart(data, tmp_path / "b.svg", "acct a & <b>").read_bytes()
    assert first == second  # reproducible: no timestamp, stable ids
    assert first.startswith(b"<?xml") and b"acct a &amp; &lt;b&gt;" in first and b"billable overage (1)" in first
    assert render_chart(data, tmp_path / "c.PNG", "a").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svg", "b.svg", "c.PNG"]  # no temporary files left
    assert chart_format("x.svg") == "svg"
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        render_chart(data, tmp_path / "c.pdf", "a")
