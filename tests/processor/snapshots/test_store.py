"""The sink's data directory without Kafka: rows of records, manifest commits, crash recovery, re-deliveries."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from processor.snapshots.sink import SinkWriter
from processor.snapshots.store import (
    Manifest,
    StoreError,
    committed_files,
    data_files,
    file_name,
    read_manifest,
    recover,
    sink_lock,
    write_manifest,
)
from processor.snapshots.tables import TABLES, BadRecord, event_row, output_row
from processor.topics import DEAD_LETTERS, EVENTS, INTERVALS, USAGE_CHANGES
from tests.processor.snapshots.streams import Streams, feed


def committed_rows(data_dir: Path) -> dict[str, list[dict]]:
    """Every committed row per table, sorted by Kafka position (what a snapshot would read, before dedupe)."""
    manifest = read_manifest(data_dir)
    assert manifest is not None
    out: dict[str, list[dict]] = {}
    for name, paths in committed_files(data_dir, manifest).items():
        rows = [row for path in paths for row in pq.read_table(path).to_pylist()]
        out[name] = sorted(rows, key=lambda r: (r["kafka_partition"], r["kafka_offset"]))
    return out


def test_manifest_round_trip_and_which_files_it_commits(tmp_path: Path) -> None:
    manifest = Manifest("ccmeter.", {EVENTS: {0: 100, 2: 7}, USAGE_CHANGES: {1: 5}}, {0: 1_793_577_600_000})
    write_manifest(tmp_path, manifest)
    again = read_manifest(tmp_path)
    assert again is not None and again.offsets == manifest.offsets and again.watermarks == manifest.watermarks
    assert again.watermark_ms == 1_793_577_600_000 and again.updated_at
    assert again.committed(file_name(EVENTS, 0, 50, 99))
    assert not again.committed(file_name(EVENTS, 0, 90, 100))  # offset 100 is not committed yet
    assert not again.committed(file_name(EVENTS, 1, 0, 0))  # partition never committed
    assert again.committed(file_name(USAGE_CHANGES, 1, 0, 4))
    assert not again.committed("notes.txt")
    assert [p.name for p in (tmp_path / "_sink").iterdir()] == ["manifest.json"]  # no temporary file left


def test_a_broken_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "_sink").mkdir()
    (tmp_path / "_sink" / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not a ccmeter sink manifest"):
        read_manifest(tmp_path)


def test_one_sink_per_directory(tmp_path: Path) -> None:
    with sink_lock(tmp_path):
        with pytest.raises(StoreError, match="in use by another sink"):
            with sink_lock(tmp_path):
                pass
    with sink_lock(tmp_path):  # released
        pass


def test_another_prefix_is_refused(tmp_path: Path) -> None:
    write_manifest(tmp_path, Manifest("prod."))
    with pytest.raises(StoreError, match="prefix 'prod.'"):
        SinkWriter(tmp_path, "staging.")


def test_event_rows_keep_the_raw_record_and_the_rejection() -> None:
    good = (
        b'{"event_id":"e1","type":"api.request","account_id":"a","user_id":"u",'
        b'"occurred_at":"2026-11-02T09:00:00.250+01:00"}'
    )
    row = event_row(1, 42, 1_793_577_600_000, b"a", good)
    assert row["rejection"] is None and row["account_id"] == "a" and row["type"] == "api.request"
    assert row["occurred_at"] == 1_793_577_600_000 + 8 * 3_600_000 + 250 and row["raw"] == good.decode()
    assert row["raw_bytes"] is None and row["kafka_partition"] == 1 and row["kafka_offset"] == 42
    bad = event_row(0, 0, 0, None, b"\xff\xfe{")
    assert bad["rejection"] == "invalid_utf8" and bad["raw_bytes"] == b"\xff\xfe{" and bad.get("account_id") is None
    assert event_row(0, 1, 0, None, b'{"type":"nope"}')["rejection"] == "unknown_type"


def test_output_rows_and_bad_output_records() -> None:
    letter = {"reason": "too_late", "original_base64": base64.b64encode(b"{}").decode(), "topic": "t", "partition": 2}
    table, row = output_row(DEAD_LETTERS, 0, 9, 5, json.dumps(letter | {"offset": 7}).encode())
    assert table.name == "dead_letters" and row["original"] == b"{}" and row["original_text"] == "{}"
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == ("t", 2, 7)
    for value in (b"nope", b"[]", b'{"record": "other"}', b'{"record": "plan"}', b'{"record": "user_interval"}'):
        with pytest.raises(BadRecord):
            output_row(INTERVALS, 0, 0, 0, value)
    with pytest.raises(BadRecord):
        output_row(USAGE_CHANGES, 0, 0, 0, b'{"change_id": "x", "account_id": "a", "at": "yesterday", "usage": 1, '
                                              b'"licenses": 0}')  # fmt: skip


def test_bad_output_records_are_counted_and_skipped(tmp_path: Path) -> None:
    writer = SinkWriter(tmp_path, "ccmeter.")
    assert writer.add(USAGE_CHANGES, 0, 0, 0, None, b"garbage")
    writer.flush()
    assert writer.stats.bad_records == 1 and writer.manifest.next_offset(USAGE_CHANGES, 0) == 1
    assert not list(data_files(tmp_path, TABLES[1]))


def test_files_are_dated_and_named_by_offsets(sink_dir: Path, sim_streams: Streams) -> None:
    manifest = read_manifest(sink_dir)
    assert manifest is not None
    for partition, records in sim_streams.records[EVENTS].items():
        assert manifest.next_offset(EVENTS, partition) == len(records)
    events = list(data_files(sink_dir, TABLES[0]))
    assert events and all(p.parent.name.startswith("date=2026-1") for p in events)
    for path in events:
        offsets = pq.read_table(path, columns=["kafka_offset"]).column(0).to_pylist()
        first, last = map(int, path.stem.rsplit("-", 2)[1:])
        assert min(offsets) == first and max(offsets) == last
    rows = committed_rows(sink_dir)
    assert len(rows["events"]) == sim_streams.count(EVENTS)
    intervals_tables = ("plans", "user_intervals", "presence_intervals", "horizons", "partition_horizons")
    assert sum(len(rows[name]) for name in intervals_tables) == sim_streams.count(INTERVALS)
    assert all(rows[name] for name in intervals_tables)


def test_redeliveries_below_the_committed_offset_are_dropped(
    tmp_path: Path, sink_dir: Path, sim_streams: Streams
) -> None:
    data = tmp_path / "data"
    shutil.copytree(sink_dir, data)
    before = committed_rows(data)
    again = SinkWriter(data, "ccmeter.")
    feed(again, sim_streams)  # everything delivered a second time
    assert again.stats.redelivered == sim_streams.count() and again.stats.records == 0
    assert committed_rows(data) == before


class Crash(Exception):
    pass


def test_crash_between_files_and_manifest_resumes_exactly(tmp_path: Path, sink_dir: Path, sim_streams: Streams) -> None:
    crashed = tmp_path / "crashed"
    writer = SinkWriter(crashed, "ccmeter.")
    commits = 0

    def crash_on_third(manifest: Manifest) -> None:
        nonlocal commits
        commits += 1
        if commits == 3:
            raise Crash

    writer.on_commit = crash_on_third
    with pytest.raises(Crash):
        feed(writer, sim_streams, flush_every=5000)
    manifest = read_manifest(crashed)
    assert manifest is not None and manifest.flushes == 2
    files = {table: list(data_files(crashed, table)) for table in TABLES}
    uncommitted = [p for paths in files.values() for p in paths if not manifest.committed(p.name)]
    assert uncommitted  # the third flush's files are there, not committed
    (uncommitted[0].parent / f".{uncommitted[0].name}.tmp-123").write_bytes(b"PAR1 torn")
    with sink_lock(crashed):
        removed = recover(crashed, manifest).removed
        assert len(removed) == len(uncommitted) + 1
        resumed = SinkWriter(crashed, "ccmeter.")
        feed(resumed, sim_streams, flush_every=7000)  # the broker re-delivers from the beginning: dropped by offset
    assert resumed.stats.redelivered > 0
    assert committed_rows(crashed) == committed_rows(sink_dir)  # as if it had never crashed


def test_a_manifest_reset_inside_files_rewinds_to_file_boundaries(
    tmp_path: Path, sink_dir: Path, sim_streams: Streams
) -> None:
    from processor.snapshots.sink import prepare_resume, replay_watermarks

    data = tmp_path / "data"
    shutil.copytree(sink_dir, data)
    before = read_manifest(data)
    assert before is not None
    assert replay_watermarks(data, before) == before.watermarks  # the clocks can be rebuilt from the files
    events = {p: o // 2 + 1 for p, o in before.offsets[EVENTS].items()}  # mid-file, by hand
    write_manifest(data, Manifest(before.prefix, {EVENTS: events}, {}))
    with sink_lock(data):
        manifest = prepare_resume(data)
    assert manifest is not None and read_manifest(data).offsets == manifest.offsets  # type: ignore[union-attr]
    for partition, offset in manifest.offsets[EVENTS].items():
        assert offset <= events[partition]
        assert any(p.name.endswith(f"-{offset - 1}.parquet") for p in data_files(data, TABLES[0])) or offset == 0
    assert all(manifest.committed(p.name) for table in TABLES for p in data_files(data, table))
    assert manifest.watermarks and all(w <= before.watermarks[p] for p, w in manifest.watermarks.items())
    feed(SinkWriter(data, "ccmeter."), sim_streams)  # consumed again from there
    assert committed_rows(data) == committed_rows(sink_dir)


def test_compaction_merges_small_files_and_keeps_every_row_once(
    tmp_path: Path, sink_dir: Path, snapshot_path: Path
) -> None:
    from processor.snapshots.snapshot import build_snapshot
    from processor.snapshots.store import compact
    from tests.processor.snapshots.streams import snapshot_rows

    data = tmp_path / "data"
    shutil.copytree(sink_dir, data)
    manifest = read_manifest(data)
    assert manifest is not None
    before = {table.name: list(data_files(data, table)) for table in TABLES}
    events_dir = before["events"][0].parent
    originals = tmp_path / "originals"
    shutil.copytree(events_dir, originals)
    done = compact(data, manifest, min_files=2)
    after = {table.name: list(data_files(data, table)) for table in TABLES}
    assert done.groups > 0 and done.files_in > done.files_out
    assert sum(map(len, after.values())) == sum(map(len, before.values())) - done.files_in + done.files_out
    assert all(manifest.committed(p.name) for paths in after.values() for p in paths)
    assert committed_rows(data) == committed_rows(sink_dir)
    reference = snapshot_rows(snapshot_path)
    build_snapshot(data, tmp_path / "compacted.duckdb")
    assert snapshot_rows(tmp_path / "compacted.duckdb") == reference

    # Interrupted: the merged file is in place but the files it replaces are still there (overlapping rows).
    for path in originals.iterdir():
        shutil.copy(path, events_dir / path.name)
    build_snapshot(data, tmp_path / "overlap.duckdb")
    assert snapshot_rows(tmp_path / "overlap.duckdb") == reference
    compact(data, manifest, min_files=2)
    assert committed_rows(data) == committed_rows(sink_dir)  # merged again, each row once


def test_a_snapshot_starts_over_when_a_listed_file_is_gone(
    tmp_path: Path, sink_dir: Path, snapshot_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import processor.snapshots.snapshot as snapshot
    from tests.processor.snapshots.streams import snapshot_rows

    real = snapshot.committed_files
    calls: list[int] = []

    def vanishing(data_dir: Path, manifest: Manifest) -> dict[str, list[Path]]:
        files = real(data_dir, manifest)
        calls.append(1)
        if len(calls) <= 2:  # the first attempt lists twice: as if the sink merged this file away after that
            files["usage_changes"] = [
                *files["usage_changes"],
                data_dir / "usage_changes" / "date=2026-11-02" / "x.parquet",
            ]
        return files

    monkeypatch.setattr(snapshot, "committed_files", vanishing)
    lines: list[str] = []
    snapshot.build_snapshot(sink_dir, tmp_path / "s.duckdb", progress=lines.append)
    assert len(calls) == 4 and any("starting over" in line for line in lines)
    assert snapshot_rows(tmp_path / "s.duckdb") == snapshot_rows(snapshot_path)
