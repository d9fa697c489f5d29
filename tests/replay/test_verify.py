"""`ccmeter replay verify` on snapshots built from the worker's own outputs (no Kafka)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

from processor.cli import main
from processor.cli.simulate import SimConfig, iter_lines
from tests.replay.support import build_snapshot_of


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 accounts x 1 day with duplicates, out-of-order and malformed lines, and the worker's outputs."""
    config = SimConfig(
        accounts=3, agents=4, days=1, seed=11, start=date(2026, 11, 2), duplicates=0.03, out_of_order=0.05,
        malformed=0.01, heartbeat_seconds=150,
    )  # fmt: skip
    lines = [line.encode() for line in iter_lines(config)]
    return build_snapshot_of(lines, tmp_path_factory.mktemp("verify") / "usage.duckdb")


def test_clean_snapshot_verifies(snapshot: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["replay", "verify", "--snapshot", str(snapshot), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan: verify")
    assert "OK: no differences (3 accounts)" in out
    for name in ("usage_changes", "peak_windows", "user_intervals", "plans"):
        line = next(x for x in out.splitlines() if x.startswith(f"{name}:"))
        recomputed, live = int(line.split()[1]), int(line.split()[3])
        assert recomputed == live > 0, line


def test_planted_differences_are_found(snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    copy = tmp_path / "altered.duckdb"
    shutil.copy(snapshot, copy)
    con = duckdb.connect(str(copy))
    try:
        changed = con.execute(
            "UPDATE usage_changes SET licenses = licenses + 7 WHERE change_id = (SELECT min(change_id) FROM "
            "usage_changes) RETURNING change_id, account_id"
        ).fetchall()[0]
        dropped = con.execute(
            "DELETE FROM peak_windows WHERE window_id = (SELECT min(window_id) FROM peak_windows WHERE kind = '1h') "
            "RETURNING window_id"
        ).fetchall()[0][0]
    finally:
        con.close()
    assert main(["replay", "verify", "--snapshot", str(copy), "--quiet"]) == 1
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if " different: " in x or " missing_live: " in x or " extra_live: " in x]
    assert len(lines) == 2, out
    assert any(x.startswith(f"usage_changes different: {changed[1]} {changed[0]}: licenses live") for x in lines)
    assert any(x.startswith("peak_windows missing_live: ") and dropped in x for x in lines)
    assert "FAILED: 2 differences" in out


def test_until_limits_the_comparison(snapshot: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["replay", "verify", "--snapshot", str(snapshot), "--until", "2026-11-02T12:00:00Z", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "below each account's horizon and 2026-11-02T12:00:00.000Z" in out


def test_not_a_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["replay", "verify", "--snapshot", str(tmp_path / "none.duckdb")]) == 2
    assert "no such snapshot file" in capsys.readouterr().err


def test_every_database_of_verify_is_held_to_the_memory_limit(snapshot: Path, monkeypatch: pytest.MonkeyPatch):
    """DuckDB's default is 80% of the machine's memory and its buffer pool grows with the data: verify sets a limit
    (`--memory-limit`, default 1GB) on every database it uses, and still verifies within a small one."""
    from replay import verify as module

    limits: list[str] = []
    bound = module._bound

    def spy(connection: duckdb.DuckDBPyConnection, work_dir: Path, memory_limit: str) -> None:
        bound(connection, work_dir, memory_limit)
        limits.append(connection.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])

    monkeypatch.setattr(module, "_bound", spy)
    assert main(["replay", "verify", "--snapshot", str(snapshot), "--quiet", "--memory-limit", "64MB"]) == 0
    assert len(limits) == 3 and all(limit.startswith(("61.0 MiB", "64.0 MB", "61.0MiB", "64.0MB")) for limit in limits)
    with pytest.raises(SystemExit) as bad:
        main(["replay", "verify", "--snapshot", str(snapshot), "--quiet", "--memory-limit", "lots"])
    assert bad.value.code == 2
