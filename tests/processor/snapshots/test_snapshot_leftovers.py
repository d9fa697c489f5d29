"""`ccmeter snapshot` removes the temporary files that killed earlier runs left beside its target (and their WAL),
never those of a process that is still alive."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import build_snapshot, pid_alive, remove_stale_leftovers
from processor.topics import EVENTS
from tests.processor.snapshots.streams import Streams, feed


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    assert not pid_alive(proc.pid)
    return proc.pid


def make(path: Path, size: int = 1000) -> Path:
    path.write_bytes(b"x" * size)
    return path


def test_dead_runs_leftovers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    out, dead, mine = tmp_path / "x.duckdb", dead_pid(), os.getpid()
    stale = [
        make(tmp_path / f".x.duckdb.tmp-{dead}", 3000),
        make(tmp_path / f".x.duckdb.tmp-{dead}.wal", 2000),
        make(tmp_path / f"x.duckdb.tmp-{dead}"),
    ]
    kept = [
        make(tmp_path / f".x.duckdb.tmp-{mine}"),  # this process (alive): never touched
        make(tmp_path / f".x.duckdb.tmp-{mine}.wal"),
        make(tmp_path / f".y.duckdb.tmp-{dead}"),  # another target's
        make(tmp_path / "x.duckdb"),
        make(tmp_path / f".x.duckdb.tmp-{dead}.bak"),  # not a name a build uses
    ]
    removed = remove_stale_leftovers(out)
    assert removed == {stale[0]: 3000, stale[1]: 2000, stale[2]: 1000}
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)
    assert remove_stale_leftovers(out) == {}
    assert remove_stale_leftovers(tmp_path / "missing" / "x.duckdb") == {}


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert pid_alive(1)  # init: alive, whether or not we may signal it
    assert not pid_alive(dead_pid())
    assert not pid_alive(0) and not pid_alive(-5) and not pid_alive(2**70)


def test_build_snapshot_cleans_up_first_and_says_so_in_one_line(
    tmp_path: Path, sim_streams: Streams, caplog: pytest.LogCaptureFixture
) -> None:
    small = Streams(partitions=sim_streams.partitions)
    for partition, records in sim_streams.records[EVENTS].items():
        small.records[EVENTS][partition] = records[:50]
    data = tmp_path / "data"
    feed(SinkWriter(data, "ccmeter."), small)
    out, dead = tmp_path / "snap" / "usage.duckdb", dead_pid()
    out.parent.mkdir()
    stale = [
        make(out.parent / f".usage.duckdb.tmp-{dead}", 22_000_000),
        make(out.parent / f".usage.duckdb.tmp-{dead}.wal"),
    ]
    with caplog.at_level(logging.INFO, logger="ccmeter.snapshot"):
        result = build_snapshot(data, out)
    assert result.rows["events"] == sum(len(r) for r in small.records[EVENTS].values())
    assert not any(path.exists() for path in stale)
    lines = [r.getMessage() for r in caplog.records if r.name == "ccmeter.snapshot"]
    assert len(lines) == 1 and "removed 2 leftover files" in lines[0] and "22.0 MB" in lines[0], lines
    assert f".usage.duckdb.tmp-{dead}.wal" in lines[0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["usage.duckdb"]
