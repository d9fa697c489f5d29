"""Which billing period `--period` picks from a snapshot: from the account's data_through (event time, not the wall
clock), its anchor day and the timezone of its latest plan, across month ends, year ends and DST changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processor.cli import main
from processor.core.model import Plan, UsageChange, UserInterval
from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import build_snapshot
from processor.topics import EVENTS, INTERVALS, USAGE_CHANGES
from processor.worker import records as rec
from schemas.events import format_ms, parse_timestamp, to_ms
from tests.processor.snapshots.streams import SETTINGS, horizon_records


def ms(text: str) -> int:
    return to_ms(parse_timestamp(text))


def tiny_snapshot(tmp_path: Path, plan: Plan, data_through: str, busy: tuple[str, str]) -> Path:
    """One account `a` with `plan`, one user counted during `busy`, and a last event that puts its data_through at
    `data_through` (allowed lateness later)."""
    watermark = format_ms(ms(data_through) + SETTINGS.allowed_lateness_ms)
    writer = SinkWriter(tmp_path / "data", "ccmeter.")
    plan_event = {
        "event_id": "p1", "type": "account.plan_changed", "account_id": "a", "occurred_at": format_ms(plan.at_ms),
        "licenses": plan.licenses, "overage_allowance": plan.overage_allowance,
        "billing_anchor_day": plan.billing_anchor_day, "timezone": plan.timezone,
    }  # fmt: skip
    last = {"event_id": "x", "type": "api.request", "account_id": "a", "user_id": "u", "occurred_at": watermark}
    for offset, event in enumerate((plan_event, last)):
        at = ms(event["occurred_at"])
        writer.add(EVENTS, 0, offset, at, b"a", json.dumps(event).encode())
    start, end = ms(busy[0]), ms(busy[1])
    outputs = [
        (USAGE_CHANGES, rec.usage_change(UsageChange("a", start, 1, plan.licenses))),
        (USAGE_CHANGES, rec.usage_change(UsageChange("a", end, 0, plan.licenses))),
        (INTERVALS, rec.plan("a", plan)),
        (INTERVALS, rec.user_interval(UserInterval("a", "u", start, end))),
    ]
    offsets: dict[str, int] = {}
    for topic, record in outputs:
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        writer.add(topic, 0, offset, ms(watermark), b"a", rec.dumps(record))
    for key, value in horizon_records(0, {"a": ms(watermark)}):
        offset = offsets[INTERVALS] = offsets[INTERVALS] + 1
        writer.add(INTERVALS, 0, offset, ms(watermark), key, value)
    writer.flush()
    out = tmp_path / "tiny.duckdb"
    build_snapshot(tmp_path / "data", out)
    return out


def summary(capsys: pytest.CaptureFixture[str], snapshot: Path, *args: str) -> dict:
    assert main(["report", "--snapshot", str(snapshot), "--account", "a", "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)


BERLIN = Plan(at_ms=ms("2026-01-01T00:00:00Z"), licenses=1, billing_anchor_day=1, timezone="Europe/Berlin")
MARCH_BUSY = ("2026-02-20T00:00:00Z", "2026-04-05T00:00:00Z")


@pytest.mark.parametrize(
    ("data_through", "current", "previous"),
    [
        # 00:30 on April 1 in Berlin (CEST) is still March 31 in UTC: the current period is April.
        ("2026-03-31T22:30:00Z", ("2026-04-01", "2026-04-30"), ("2026-03-01", "2026-03-31")),
        # 23:30 on March 31 in Berlin: still March.
        ("2026-03-31T21:30:00Z", ("2026-03-01", "2026-03-31"), ("2026-02-01", "2026-02-28")),
    ],
)
def test_current_period_follows_data_through_in_the_account_timezone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_through: str, current: tuple, previous: tuple
) -> None:
    snapshot = tiny_snapshot(tmp_path, BERLIN, data_through, MARCH_BUSY)
    got = summary(capsys, snapshot, "--period", "current")
    assert (got["from"], got["to"], got["timezone"]) == (*current, "Europe/Berlin")
    got = summary(capsys, snapshot, "--period", "previous")
    assert (got["from"], got["to"]) == previous


def test_a_dst_month_has_743_local_hours(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    snapshot = tiny_snapshot(tmp_path, BERLIN, "2026-04-02T12:00:00Z", MARCH_BUSY)
    march = summary(capsys, snapshot, "--period", "2026-03")
    assert (march["from"], march["to"]) == ("2026-03-01", "2026-03-31")
    assert march["license_hours"] == 743.0  # clocks went forward on March 29: one user all month long
    assert [d["license_hours"] for d in march["days"] if d["date"] == "2026-03-29"] == [23.0]
    assert summary(capsys, snapshot, "--period", "previous") == march


NEW_YORK = Plan(at_ms=ms("2025-12-01T00:00:00Z"), licenses=0, billing_anchor_day=28, timezone="America/New_York")


@pytest.mark.parametrize(
    ("data_through", "current"),
    [
        ("2026-02-28T04:59:59.999Z", ("2026-01-28", "2026-02-27")),  # Feb 27, 23:59:59.999 in New York
        ("2026-02-28T05:00:00.000Z", ("2026-02-28", "2026-03-27")),  # local midnight of the anchor day
        ("2026-12-29T03:00:00.000Z", ("2026-12-28", "2027-01-27")),  # across the year end
    ],
)
def test_anchor_day_and_month_ends(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_through: str, current: tuple
) -> None:
    snapshot = tiny_snapshot(tmp_path, NEW_YORK, data_through, ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"))
    got = summary(capsys, snapshot, "--period", "current")
    assert (got["from"], got["to"]) == current


def test_fall_back_month_and_explicit_months(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plan = Plan(at_ms=ms("2026-01-01T00:00:00Z"), licenses=0, billing_anchor_day=1, timezone="America/New_York")
    snapshot = tiny_snapshot(tmp_path, plan, "2026-12-01T12:00:00Z", ("2026-10-20T00:00:00Z", "2026-12-05T00:00:00Z"))
    november = summary(capsys, snapshot, "--period", "previous")
    assert (november["from"], november["to"]) == ("2026-11-01", "2026-11-30")
    assert november["license_hours"] == 721.0  # clocks went back on November 1
    assert november["peak_usage"] == 1 and november["billable_overage"] == 1  # 1 user, 0 licenses, all month
    assert november["complete"] is True and november["data_through"] == "2026-12-01T12:00:00.000Z"
    assert summary(capsys, snapshot, "--from", "2026-11-01", "--to", "2026-11-30") == november
    assert summary(capsys, snapshot, "--period", "2026-11") == november
    october = summary(capsys, snapshot, "--period", "2026-10")
    assert (october["from"], october["to"]) == ("2026-10-01", "2026-10-31") and october["complete"] is True


def test_the_current_period_counts_up_to_data_through(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plan = Plan(at_ms=ms("2026-01-01T00:00:00Z"), licenses=0, billing_anchor_day=1, timezone="America/New_York")
    snapshot = tiny_snapshot(tmp_path, plan, "2026-12-01T12:00:00Z", ("2026-10-20T00:00:00Z", "2026-12-05T00:00:00Z"))
    december = summary(capsys, snapshot, "--period", "current")
    assert (december["from"], december["to"]) == ("2026-12-01", "2026-12-31") and december["complete"] is False
    # The user stays counted until December 5, but only 05:00 (local midnight) to 12:00 UTC is known.
    assert december["license_hours"] == 7.0 and december["peak_usage"] == 1
    first, second = december["days"][:2]
    assert first["license_hours"] == 7.0 and first["complete"] is False
    assert second["license_hours"] is None and second["peak_usage"] is None and second["complete"] is False
