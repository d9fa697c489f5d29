"""`ccmeter replay restate`: a too-late event that raises the peak changes the report by exactly its effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processor.cli import main
from processor.snapshots.history import load_histories
from replay.source import open_snapshot_file
from tests.replay.support import MINUTE, T0, build_snapshot_of, event, plan

ACCOUNT = "acct-r"


def history(late_on_time: bool) -> list[bytes]:
    """u1 from +1 min; u3 at +30 and +40 min; u2 at +2 min (5 min each), arriving after +30 min (too late) or in
    time. With licenses 1 and no grace, u2 makes the peak 2 for 4 minutes (+2..+6 min)."""
    late = event("e-late", T0 + 2 * MINUTE, user_id="u2")
    lines = [plan("p1", T0), event("e1", T0 + MINUTE, user_id="u1")]
    if late_on_time:
        lines.append(late)
    lines += [event("e3", T0 + 30 * MINUTE, user_id="u3"), event("e4", T0 + 40 * MINUTE, user_id="u3")]
    if not late_on_time:
        lines.append(late)
    return lines


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("restate")
    return (
        build_snapshot_of(history(late_on_time=False), base / "late.duckdb"),
        build_snapshot_of(history(late_on_time=True), base / "in-time.duckdb"),
    )


def report_of(path: Path) -> dict:
    con, _ = open_snapshot_file(path)
    try:
        from datetime import date

        return load_histories(con, [ACCOUNT])[ACCOUNT].report(date(2026, 11, 1), date(2026, 11, 30)).to_json_dict()
    finally:
        con.close()


def test_the_late_event_was_dead_lettered(snapshots: tuple[Path, Path]):
    con, _ = open_snapshot_file(snapshots[0])
    try:
        reasons = con.execute("SELECT reason, original_text FROM dead_letters").fetchall()
    finally:
        con.close()
    assert [reason for reason, _ in reasons] == ["too_late"]
    assert '"e-late"' in reasons[0][1]


def test_restate_changes_the_report_exactly_by_the_late_event(
    snapshots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    late, in_time = snapshots
    out = tmp_path / "restated.json"
    args = ["replay", "restate", "--snapshot", str(late), "--account", ACCOUNT, "--period", "2026-11"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    restated = json.loads(out.read_text())
    last = report_of(late)
    assert last["peak_usage"] == 1 and last["billable_overage"] == 0
    # The restated report is what the live worker would have reported had the event arrived in time.
    assert restated == report_of(in_time)
    assert restated["peak_usage"] == 2 and restated["peak_at"] == "2026-11-02T09:02:00.000Z"
    assert restated["billable_overage"] == 1 and restated["over_allowance"] == 1
    assert restated["seconds_over_licenses"] - last["seconds_over_licenses"] == 240
    assert "late events: 1 added" in printed
    assert "note:" not in printed  # without the late event the recomputation equals the last report
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.startswith("  ")}
    assert rows["peak_usage"][1:] == ["1", "2", "+1"]
    assert rows["billable_overage"][1:] == ["0", "1", "+1"]
    day = [line.split() for line in printed.splitlines() if line.strip().startswith("2026-11-02")]
    assert ["2026-11-02", "peak_usage", "1", "2", "+1"] in day
    assert f"wrote {out}" in printed


def test_restate_without_late_events_changes_nothing(
    snapshots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "same.json"
    args = ["replay", "restate", "--snapshot", str(snapshots[1]), "--account", ACCOUNT, "--period", "2026-11"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    assert "no difference from the last report" in capsys.readouterr().out
    assert json.loads(out.read_text()) == report_of(snapshots[1])


def test_restate_unknown_account(snapshots: tuple[Path, Path], capsys: pytest.CaptureFixture[str]):
    args = ["replay", "restate", "--snapshot", str(snapshots[0]), "--account", "nobody", "--period", "2026-11"]
    assert main(args) == 2
    assert "has no events" in capsys.readouterr().err


def test_restate_progress_counts_records(snapshots: tuple[Path, Path], tmp_path: Path, capsys):
    late, _ = snapshots
    args = ["replay", "restate", "--snapshot", str(late), "--account", ACCOUNT, "--period", "2026-11"]
    assert main([*args, "--out", str(tmp_path / "restated.json")]) == 0
    err = capsys.readouterr().err
    bars = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("restate: ")]
    assert "B/s" not in err and "0.00B" not in err, err
    for stage in ("restate: fold as applied live", "restate: fold with late events"):
        final = [line for line in bars if line.startswith(stage)][-1]
        assert "100%" in final and "records/s" in final, err
