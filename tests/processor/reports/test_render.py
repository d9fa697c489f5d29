"""Rendering a report: data_through, complete, peak_users and null day metrics in JSON, CSV and the table."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest

from processor.core.billing import build_report
from processor.core.model import Plan, PresenceInterval, UsageChange, UserInterval
from processor.reports.render import (
    BILLING_RUN_KEYS,
    EXPORT_DAY_KEYS,
    partial_note,
    peak_users_cell,
    render_report,
)
from schemas.outputs import SUMMARY_KEYS, PeakUser, Report

HOUR = 3_600_000
M2 = 1_772_409_600_000  # 2026-03-02T00:00:00Z
A = "acct"


def report(data_through_ms: int | None) -> Report:
    """Usage 2 (u-1 on laptop-1 and the portal, u-2 by API) from 09:00 to 10:00 on 2026-03-02, reported 03-02..03-04."""
    changes = [UsageChange(A, M2 + 9 * HOUR, 2, 1), UsageChange(A, M2 + 10 * HOUR, 0, 1)]
    intervals = [UserInterval(A, u, M2 + 9 * HOUR, M2 + 10 * HOUR) for u in ("u-1", "u-2")]
    presences = [
        PresenceInterval(A, "u-1", "desktop", "laptop-1", M2 + 9 * HOUR, M2 + 10 * HOUR),
        PresenceInterval(A, "u-1", "portal", None, M2 + 9 * HOUR, M2 + 10 * HOUR),
        PresenceInterval(A, "u-2", "api", None, M2 + 9 * HOUR, M2 + 10 * HOUR),
    ]
    plans = [Plan(at_ms=0, licenses=1)]
    return build_report(
        A, date(2026, 3, 2), date(2026, 3, 4), changes, intervals, plans,
        presences=presences, data_through_ms=data_through_ms,
    )  # fmt: skip


PARTIAL = M2 + 30 * HOUR  # 2026-03-03T06:00:00Z: 03-02 complete, 03-03 partial, 03-04 null


def test_peak_users_cell() -> None:
    users = [
        PeakUser(user_id="u-1", devices=["laptop-1", "phone-2"], portal=True, api=True),
        PeakUser(user_id="u-2", devices=[], portal=False, api=True),
        PeakUser(user_id="u-3", devices=[], portal=False, api=False),
    ]
    assert peak_users_cell(users) == "u-1[laptop-1,phone-2,portal,api];u-2[api];u-3[]"
    assert peak_users_cell([u.model_dump() for u in users[1:2]]) == "u-2[api]"
    assert peak_users_cell([]) == ""


def test_json_carries_the_new_fields_and_nulls() -> None:
    data = json.loads(render_report(report(PARTIAL), "json"))
    assert tuple(k for k in data if k != "days") == SUMMARY_KEYS
    assert (data["data_through"], data["complete"]) == ("2026-03-03T06:00:00.000Z", False)
    assert data["peak_users"] == [
        {"user_id": "u-1", "devices": ["laptop-1"], "portal": True, "api": False},
        {"user_id": "u-2", "devices": [], "portal": False, "api": True},
    ]
    assert [d["complete"] for d in data["days"]] == [True, False, False]
    assert [d["peak_usage"] for d in data["days"]] == [2, 0, None]
    assert data["days"][2]["license_hours"] is None and data["days"][2]["licenses"] == 1


def test_csv_has_the_days_then_the_summary() -> None:
    days_text, summary_text = render_report(report(PARTIAL), "csv").split("\n\n")
    days = list(csv.DictReader(io.StringIO(days_text)))
    assert list(days[0]) == ["account_id", *EXPORT_DAY_KEYS]
    assert [d["complete"] for d in days] == ["true", "false", "false"]
    assert [d["peak_usage"] for d in days] == ["2", "0", ""]  # null: an empty cell
    assert all(days[2][key] == "" for key in ("peak_at", "seconds_over_licenses", "max_excess", "distinct_users"))
    (summary,) = csv.DictReader(io.StringIO(summary_text))
    assert list(summary) == list(BILLING_RUN_KEYS) and set(SUMMARY_KEYS) < set(BILLING_RUN_KEYS)
    assert summary["peak_users"] == "u-1[laptop-1,portal];u-2[api]"
    assert (summary["data_through"], summary["complete"]) == ("2026-03-03T06:00:00.000Z", "false")


def test_csv_of_an_account_without_data() -> None:
    _, summary_text = render_report(report(None), "csv").split("\n\n")
    (summary,) = csv.DictReader(io.StringIO(summary_text))
    assert (summary["data_through"], summary["complete"], summary["peak_users"], summary["peak_at"]) == (
        "", "false", "", ""
    )  # fmt: skip


@pytest.mark.parametrize(
    ("data_through", "note"),
    [
        (PARTIAL, "partial: data through 2026-03-03T06:00:00.000Z"),
        (None, "partial: no data yet"),
        (M2 + 99 * HOUR, None),
    ],
)
def test_table_says_whether_the_period_is_partial(data_through: int | None, note: str | None) -> None:
    rendered = report(data_through)
    assert partial_note(rendered) == note
    lines = render_report(rendered, "table").splitlines()
    assert lines[0] == "Licenses usage report: acct, 2026-03-02 to 2026-03-04 (UTC)"
    assert lines[1] == (note or "")


def test_table_shows_peak_users_and_null_days_as_dashes() -> None:
    text = render_report(report(PARTIAL), "table")
    assert "  peak_users             u-1[laptop-1,portal];u-2[api]" in text
    assert "  complete               false" in text
    last = text.rstrip().splitlines()[-1].split()
    assert last[0] == "2026-03-04" and last[1:3] == ["-", "-"] and last[-1] == "false"
    assert last.count("-") == 7  # peak_usage, peak_at(_local), seconds_over_licenses, max_excess, license_hours, users


def test_control_characters_in_ids_never_reach_the_terminal_raw() -> None:
    hostile = "acct\x1b]0;owned\x07\nnext"
    rendered = build_report(hostile, date(2026, 11, 2), date(2026, 11, 2), [], [], [], data_through_ms=None)
    table = render_report(rendered, "table")
    assert "\x1b" not in table and "\x07" not in table
    assert "acct\\x1b]0;owned\\x07\\nnext" in table
    assert json.loads(render_report(rendered, "json"))["account_id"] == hostile  # JSON escapes by itself
