"""`report`, `chart` and `timeline` on a bad snapshot (missing, corrupt, empty, locked by a writer, of a newer DuckDB
storage format, not a ccmeter snapshot) or a bad request (unknown account, empty period, period before the first
event): one clear line and a non-zero exit, never a traceback. And `chart --day` / period charts from a snapshot."""

from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from processor.cli import main
from processor.snapshots.history import load_histories, resolve_period

MASK = (1 << 64) - 1
HEADER = 4096  # DuckDB's main header block: an 8-byte checksum, then "DUCK" and the storage version number


def commands(snapshot: Path, tmp_path: Path, account: str = "acct-1", span: tuple[str, ...] = ()) -> list[list[str]]:
    """The three commands (and the day chart) on `snapshot`."""
    span = span or ("--from", "2026-11-01", "--to", "2026-11-02")
    base = ["--snapshot", str(snapshot), "--account", account]
    return [
        ["report", *base, *span],
        ["timeline", *base, *span],
        ["chart", *base, *span, "--out", str(tmp_path / "c.png")],
        ["chart", *base, "--day", span[1] if span[0] == "--from" else "2026-11-01", "--out", str(tmp_path / "d.svg")],
    ]


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0, f"{argv}: exit 0\n{out}{err}"
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, f"{argv}:\n{err}"
    return err


def duckdb_checksum(block: bytes) -> int:
    """DuckDB's block checksum (src/common/checksum.cpp): 5381 xor-ed with every 8-byte word times a constant."""
    result = 5381
    for (word,) in struct.iter_unpack("<Q", block):
        result ^= (word * 0xBF58476D1CE4E5B9) & MASK
    return result


def newer_format_copy(snapshot: Path, out: Path) -> Path:
    """A copy of `snapshot` claiming a storage version no DuckDB release reads yet (checksum made to match)."""
    data = bytearray(snapshot.read_bytes())
    assert data[8:12] == b"DUCK"
    struct.pack_into("<Q", data, 12, 4096)
    struct.pack_into("<Q", data, 0, duckdb_checksum(bytes(data[8:HEADER])))
    out.write_bytes(data)
    return out


@pytest.mark.parametrize("kind", ["missing", "corrupt", "empty", "newer", "not_ccmeter", "directory"])
def test_a_bad_snapshot_file_is_one_line(
    capsys: pytest.CaptureFixture[str], snapshot_path: Path, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.duckdb"
    expected = {
        "missing": "no such snapshot file",
        "corrupt": "not a valid DuckDB database file",
        "empty": "not a valid DuckDB database file",
        "newer": "newer DuckDB storage format than this ccmeter reads",
        "not_ccmeter": "not a ccmeter snapshot",
        "directory": "no such snapshot file",
    }[kind]
    if kind == "corrupt":
        path.write_bytes(os.urandom(64 * 1024))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "newer":
        newer_format_copy(snapshot_path, path)
    elif kind == "not_ccmeter":
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE t (a INTEGER)")
    elif kind == "directory":
        path.mkdir()
    for argv in commands(path, tmp_path):
        err = one_line_error(capsys, argv)
        assert expected in err and str(path) in err, f"{argv}: {err}"


def test_a_snapshot_locked_by_a_writer_is_one_line(
    capsys: pytest.CaptureFixture[str], snapshot_path: Path, tmp_path: Path
) -> None:
    locked = tmp_path / "locked.duckdb"
    shutil.copy(snapshot_path, locked)
    holder = "import duckdb, sys\ncon = duckdb.connect(sys.argv[1])\nprint('ready', flush=True)\nsys.stdin.read()\n"
    writer = subprocess.Popen(
        [sys.executable, "-c", holder, str(locked)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([writer.stdout], [], [], 60)
        assert ready and writer.stdout.readline().strip() == "ready", "the writer did not open the file in 60 s"
        for argv in commands(locked, tmp_path):
            err = one_line_error(capsys, argv)
            assert "locked by another process that has it open for writing" in err
            assert f"(PID {writer.pid})" in err
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)


def test_unknown_account_empty_period_and_before_the_first_event(
    capsys: pytest.CaptureFixture[str], snapshot_path: Path, tmp_path: Path
) -> None:
    for argv in commands(snapshot_path, tmp_path, account="nobody"):
        assert "account 'nobody' not found in snapshot" in one_line_error(capsys, argv)
    for argv in commands(snapshot_path, tmp_path, span=("--from", "2026-12-01", "--to", "2026-12-02")):
        assert "is empty for account 'acct-1'" in one_line_error(capsys, argv)
    for argv in commands(snapshot_path, tmp_path, span=("--from", "2026-10-01", "--to", "2026-10-02")):
        assert "ends before the first event of account 'acct-1'" in one_line_error(capsys, argv)
    for argv in commands(snapshot_path, tmp_path, span=("--period", "2026-09")):
        if "--day" not in argv:
            assert "ends before the first event" in one_line_error(capsys, argv)
    day_and_range = ["chart", "--snapshot", str(snapshot_path), "--account", "acct-1", "--day", "2026-11-01",
                     "--period", "current", "--out", str(tmp_path / "x.png")]  # fmt: skip
    assert "either --day or --period" in one_line_error(capsys, day_and_range)
    bad_day = ["chart", "--snapshot", str(snapshot_path), "--account", "acct-1", "--day", "11/01/2026", "--out",
               str(tmp_path / "x.png")]  # fmt: skip
    assert "--day must be a date" in one_line_error(capsys, bad_day)
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.svg"))


def test_period_and_day_charts_from_a_snapshot(
    capsys: pytest.CaptureFixture[str], snapshot_path: Path, tmp_path: Path
) -> None:
    with duckdb.connect(str(snapshot_path), read_only=True) as con:
        history = load_histories(con, ["acct-2"])["acct-2"]
    report = history.report(*resolve_period("current", history.latest_plan, history.data_through_ms))
    svg = tmp_path / "period.svg"
    code = main(["chart", "--snapshot", str(snapshot_path), "--account", "acct-2", "--period", "current", "--out",
                 str(svg)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and f"billable overage {report.billable_overage}" in err, err
    text = svg.read_text()
    known = [day for day in report.days if day.peak_usage is not None]
    assert 0 < len(known) < len(report.days)  # the current period is partial
    assert text.count('id="daily-peak"') == len(known)  # one bar per day up to data_through
    assert f"{report.timezone}" in text and "data through" in text
    busiest = max(known, key=lambda day: day.peak_usage or 0)
    day = tmp_path / "day.png"
    code = main(["chart", "--snapshot", str(snapshot_path), "--account", "acct-2", "--day", busiest.date, "--out",
                 str(day)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and "stretches over licenses" in err and day.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", err
