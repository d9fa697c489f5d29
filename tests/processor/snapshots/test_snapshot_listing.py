"""A snapshot whose file listing raced a merge of the sink (store.compact) starts over instead of missing rows.

Reading a directory while files are renamed into it and removed from it can miss both the merged file (created behind
the reader) and the files it replaced (removed ahead of it); no listed file is then missing, so the build would not
notice. build_snapshot lists twice and starts over when the listings differ.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import processor.snapshots.snapshot as snapshot_module
from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import build_snapshot
from processor.snapshots.store import Manifest, compact
from processor.topics import EVENTS
from tests.processor.snapshots.streams import Streams, feed


def many_small_files(data: Path, sim_streams: Streams) -> int:
    """A sink directory of 3 x 400 events committed 25 at a time; returns the number of events."""
    small = Streams(partitions=sim_streams.partitions)
    for partition, records in sim_streams.records[EVENTS].items():
        small.records[EVENTS][partition] = records[:400]
    feed(SinkWriter(data, "ccmeter."), small, flush_every=25)
    return small.count(EVENTS)


def test_a_listing_that_raced_a_merge_is_taken_again(
    tmp_path: Path, sim_streams: Streams, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, out = tmp_path / "data", tmp_path / "usage.duckdb"
    events = many_small_files(data, sim_streams)
    real = snapshot_module.committed_files
    calls: list[int] = []

    def racing_listing(data_dir: Path, manifest: Manifest) -> dict[str, list[Path]]:
        listed = real(data_dir, manifest)
        if not calls:  # the first listing: a merge runs meanwhile; the reader sees neither its inputs nor its output
            merged = compact(data_dir, manifest)
            assert merged.groups > 0
            listed = {name: [path for path in paths if path.exists()] for name, paths in listed.items()}
        calls.append(1)
        return listed

    monkeypatch.setattr(snapshot_module, "committed_files", racing_listing)
    lines: list[str] = []
    build_snapshot(data, out, progress=lines.append)
    assert "data files were merged while listed; starting over" in lines
    with duckdb.connect(str(out), read_only=True) as con:
        held = con.execute("SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM events").fetchall()
    assert held == [(events, events)]


def test_listings_that_keep_changing_give_a_clear_error(
    tmp_path: Path, sim_streams: Streams, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    many_small_files(data, sim_streams)
    real = snapshot_module.committed_files
    count = iter(range(1000))

    def changing(data_dir: Path, manifest: Manifest) -> dict[str, list[Path]]:
        drop = next(count) % 2  # every other listing lacks the last file of each table
        return {name: paths[: len(paths) - drop] for name, paths in real(data_dir, manifest).items()}

    monkeypatch.setattr(snapshot_module, "committed_files", changing)
    with pytest.raises(snapshot_module.SnapshotError, match="kept changing while listed"):
        build_snapshot(data, tmp_path / "usage.duckdb", attempts=3)
    assert not (tmp_path / "usage.duckdb").exists()
