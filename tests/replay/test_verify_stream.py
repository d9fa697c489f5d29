"""`ccmeter replay verify` at scale and for machines: bounded memory, `--format json`, progress counted in records
(snapshots built without Kafka, tests/replay/support.py)."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from datetime import date
from pathlib import Path

import duckdb
import pytest

from processor.cli import main
from processor.cli.simulate import SimConfig, iter_lines
from processor.core.model import Settings
from replay import source, verify
from replay.source import open_snapshot_file
from schemas import events
from tests.replay.support import build_snapshot_of


def simulated(days: int, tmp: Path) -> Path:
    config = SimConfig(accounts=2, agents=3, days=days, seed=5, start=date(2026, 11, 2), heartbeat_seconds=150)
    lines = [line.encode() for line in iter_lines(config)]
    return build_snapshot_of(lines, tmp / f"usage-{days}d.duckdb")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulated(1, tmp_path_factory.mktemp("verify-1d"))


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulated(5, tmp_path_factory.mktemp("verify-5d"))


def events_in(path: Path) -> int:
    con, _ = open_snapshot_file(path)
    try:
        return int(con.execute("SELECT count(*) FROM events WHERE rejection IS NULL").fetchall()[0][0])
    finally:
        con.close()


def peak_of_verify(path: Path) -> tuple[int, int]:
    """(Python heap peak of `verify` in bytes, differences found)."""
    con, _ = open_snapshot_file(path)
    found: list[verify.Difference] = []
    try:
        tracemalloc.start()
        try:
            result = verify.verify(con, Settings(), progress=False, on_difference=found.append)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        con.close()
    assert sum(result.compared.values()) > 0
    return peak, len(found)


def test_memory_does_not_grow_with_the_number_of_events(small: Path, large: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(source, "CLASSIFY_BATCH_ROWS", 200)
    monkeypatch.setattr(verify, "BATCH_ROWS", 100)  # several batches per table in both snapshots
    # format_ms caches the text of up to 16,384 minutes (bounded, but it would grow with the span of this test)
    monkeypatch.setattr(events, "_minute_text", events._minute_text.__wrapped__)
    n_small, n_large = events_in(small), events_in(large)
    assert n_large >= 3.5 * n_small, (n_small, n_large)
    peak_of_verify(small)  # one-time imports and caches out of the way
    peak_small, differences_small = peak_of_verify(small)
    peak_large, differences_large = peak_of_verify(large)
    assert differences_small == differences_large == 0
    # about 4x the events: the peak stays about the same (it grew by a factor of ~4 when every event was held)
    assert peak_large < 1.5 * peak_small, (n_small, peak_small, n_large, peak_large)


def test_json_output_of_a_clean_snapshot(small: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["replay", "verify", "--snapshot", str(small), "--format", "json", "--quiet"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["ok"] is True and document["difference_count"] == 0 and document["differences"] == []
    assert document["snapshot"] == str(small) and document["against"] is None and document["accounts"] == 2
    assert set(document["compared"]) == {"usage_changes", "peak_windows", "user_intervals", "plans"}
    for name, counts in document["compared"].items():
        assert counts["recomputed"] == counts["outputs"] > 0, name
    assert "plan: verify" in captured.err  # the plan goes to standard error, standard output is JSON only


def test_json_output_lists_the_differences(small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    copy = tmp_path / "altered.duckdb"
    shutil.copy(small, copy)
    con = duckdb.connect(str(copy))
    try:
        changed = con.execute(
            "UPDATE usage_changes SET usage = usage + 3 WHERE change_id = (SELECT min(change_id) FROM usage_changes) "
            "RETURNING change_id, account_id"
        ).fetchall()[0]
        con.execute("DELETE FROM plans WHERE plan_id = (SELECT min(plan_id) FROM plans)")
    finally:
        con.close()
    assert main(["replay", "verify", "--snapshot", str(copy), "--format", "json", "--quiet"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["difference_count"] == len(document["differences"]) == 2
    kinds = {(d["table"], d["kind"]) for d in document["differences"]}
    assert kinds == {("usage_changes", "different"), ("plans", "missing_live")}, document["differences"]
    change = next(d for d in document["differences"] if d["table"] == "usage_changes")
    assert (change["record_id"], change["account_id"]) == changed and "usage live" in change["detail"]
    assert set(change) == {"table", "kind", "account_id", "record_id", "detail"}


def test_progress_counts_records(small: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["replay", "verify", "--snapshot", str(small)]) == 0
    err = capsys.readouterr().err
    bars = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("verify: ")]
    assert bars, err
    assert "B/s" not in err and "0.00B" not in err, err
    for stage in ("verify: partition clocks", "verify: batch engine", "verify: compare"):
        final = [line for line in bars if line.startswith(stage)][-1]
        assert "100%" in final and "records/s" in final, err
    assert str(events_in(small)) in err or f"{events_in(small) / 1000:.2f}k" in err, err
