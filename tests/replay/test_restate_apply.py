"""`ccmeter replay restate --apply`: the restated period becomes part of the billing record of the next snapshot
(processor/snapshots/restatements.py): restated numbers, adjustments, idempotent, reconciled with later live updates."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest

from processor.cli import main
from processor.snapshots.restatements import read_records
from processor.snapshots.snapshot import build_snapshot
from tests.replay.support import MINUTE, T0, build_snapshot_of, event
from tests.replay.test_restate import ACCOUNT, history

RESTATE = ["replay", "restate", "--account", ACCOUNT, "--period", "2026-11", "--quiet"]
BILLING = (
    "peak_usage, epoch_ms(peak_at), billable_overage, over_allowance, seconds_over_licenses, license_hours, "
    "distinct_users"
)
LATER = [event("e5", T0 + 50 * MINUTE, user_id="u4"), event("e6", T0 + 51 * MINUTE, user_id="u5")]


def rows(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def billing(path: Path) -> list[tuple]:
    return rows(path, f"SELECT {BILLING} FROM billing_periods WHERE account_id = ?", [ACCOUNT])


def days(path: Path) -> list[tuple]:
    sql = "SELECT date, peak_usage, seconds_over_licenses, max_excess, license_hours FROM billing_days "
    return rows(path, sql + "WHERE account_id = ? ORDER BY date", [ACCOUNT])


def resnapshot(path: Path) -> Path:
    """A new snapshot of the sink directory `path` was built from."""
    out = path.with_name(path.stem + "-next.duckdb")
    build_snapshot(path.parent / f"{path.stem}-sink", out)
    return out


@pytest.fixture
def snapshots(tmp_path: Path) -> tuple[Path, Path]:
    return (
        build_snapshot_of(history(late_on_time=False), tmp_path / "late.duckdb"),
        build_snapshot_of(history(late_on_time=True), tmp_path / "in-time.duckdb"),
    )


def test_dry_run_records_nothing(snapshots: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    late, _ = snapshots
    assert main([*RESTATE, "--snapshot", str(late), "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "dry run: would record restatement" in out and "--apply" in out
    assert read_records(late.parent / "late-sink") == []


def test_apply_puts_the_restated_period_into_the_next_snapshot(snapshots: tuple[Path, Path], tmp_path: Path, capsys):
    late, in_time = snapshots
    args = [*RESTATE, "--snapshot", str(late), "--out", str(tmp_path / "r.json"), "--apply", "--reason", "ticket 7"]
    assert main(args) == 0
    assert "applied: restatement" in capsys.readouterr().out
    assert rows(late, "SELECT count(*) FROM billing_periods WHERE restated")[0][0] == 0  # a snapshot never changes
    after = resnapshot(late)
    # The restated period equals what the live worker reports had the event arrived in time (stream engine, the
    # in-time snapshot) - computed here by the batch engine over the snapshot's events plus the late one.
    assert billing(after) == billing(in_time) != billing(late)
    assert days(after) == days(in_time)
    assert rows(after, "SELECT restated, restatement_id IS NOT NULL FROM billing_periods")[0] == (True, True)
    assert rows(after, "SELECT bool_and(restated) FROM billing_days")[0][0] is True
    assert rows(after, "SELECT restated FROM top_accounts_by_overage WHERE account_id = ?", [ACCOUNT]) == [(True,)]
    adjustments = {
        (str(day) if day else None, field): (json.loads(before), json.loads(after_), reason, ids)
        for day, field, before, after_, reason, ids in rows(
            after, "SELECT date, field, before, after, reason, event_ids FROM adjustments"
        )
    }
    assert adjustments[(None, "peak_usage")][:3] == (1, 2, "ticket 7")
    assert adjustments[(None, "billable_overage")][:2] == (0, 1)
    assert adjustments[("2026-11-02", "peak_usage")][:2] == (1, 2)
    assert adjustments[(None, "peak_usage")][3] == ["e-late"]
    assert (None, "data_through") not in adjustments
    # report --snapshot shows the restated numbers and the status in JSON, CSV and the billing run.
    report = ["report", "--snapshot", str(after), "--period", "2026-11"]
    assert main([*report, "--account", ACCOUNT, "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["restatement"] == "restated" and shown["peak_usage"] == 2 and shown["billable_overage"] == 1
    assert main([*report, "--account", ACCOUNT, "--format", "table"]) == 0
    assert any(line.split() == ["restatement", "restated"] for line in capsys.readouterr().out.splitlines())
    assert main([*report, "--all", "--format", "csv"]) == 0
    (line,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert (line["restatement"], line["peak_usage"], line["billable_overage"]) == ("restated", "2", "1")
    assert main(["report", "--snapshot", str(late), "--period", "2026-11", "--all", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["restatement"] == "live"


def test_restating_twice_changes_nothing(snapshots: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    late, _ = snapshots
    args = [*RESTATE, "--snapshot", str(late), "--out", str(tmp_path / "r.json"), "--apply"]
    assert main(args) == 0
    first = rows(resnapshot(late), "SELECT * FROM adjustments ORDER BY adjustment_id")
    (record,) = read_records(late.parent / "late-sink")
    capsys.readouterr()
    assert main(args) == 0
    assert "already applied (nothing new)" in capsys.readouterr().out
    assert read_records(late.parent / "late-sink") == [record]
    second = rows(resnapshot(late), "SELECT * FROM adjustments ORDER BY adjustment_id")
    assert first == second and len({row[0] for row in second}) == len(second) > 0


def test_a_later_live_update_of_a_restated_period_is_reconciled(snapshots: tuple[Path, Path], tmp_path: Path, capsys):
    """The period is restated, then more events of it arrive in time: the next snapshot counts both."""
    late, _ = snapshots
    assert main([*RESTATE, "--snapshot", str(late), "--out", str(tmp_path / "r.json"), "--apply"]) == 0
    grown = build_snapshot_of(history(late_on_time=False) + LATER, tmp_path / "grown.duckdb")
    want = build_snapshot_of(history(late_on_time=True) + LATER, tmp_path / "want.duckdb")
    assert (
        main(["replay", "carry", "--from", str(late.parent / "late-sink"), "--to", str(tmp_path / "grown-sink")]) == 0
    )
    assert "carried 1 restatements" in capsys.readouterr().out
    after = resnapshot(grown)
    assert billing(after) == billing(want) != billing(grown)
    assert days(after) == days(want)
    # before is this snapshot's live report (with the later events), after the restated one.
    live_hours = rows(grown, "SELECT license_hours FROM billing_periods")[0][0]
    before, restated = rows(
        after, "SELECT before, after FROM adjustments WHERE field = 'license_hours' AND date IS NULL"
    )[0]
    assert json.loads(before) == live_hours and json.loads(restated) == billing(want)[0][5]
