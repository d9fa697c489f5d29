"""`ccmeter sink` and snapshots on a real broker: exactly-once rows under re-delivery, progress resets and crashes
(SIGKILL mid-write), snapshots at a consistent cut while the sink writes, and reports equal to the batch engine's.

The topics hold the same records as the session's `sim_streams` (a simulated history and the worker's outputs for
it, see streams.py), so every snapshot made through Kafka must equal the one made without it (`snapshot_path`).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from processor.cli import main
from processor.reports.render import billing_row
from processor.snapshots.history import load_histories, resolve_period, snapshot_accounts
from processor.snapshots.sink import SinkConfig, retry_delay, run_sink
from processor.snapshots.snapshot import build_snapshot, open_snapshot
from processor.snapshots.store import FILE_RE, Manifest, committed_files, read_manifest, write_manifest
from processor.snapshots.tables import TABLES
from processor.topics import (
    ALERTS,
    EVENTS,
    INTERVALS,
    PEAK_WINDOWS,
    USAGE_CHANGES,
    create_topics,
    topic_names,
)
from tests.processor.snapshots.streams import Streams, partition_engines, publish, snapshot_rows

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[3]
OUTPUTS = (USAGE_CHANGES, PEAK_WINDOWS, ALERTS, INTERVALS)


def prepare(broker: str, prefix: str, streams: Streams) -> dict[str, str]:
    asyncio.run(create_topics(broker, prefix, streams.partitions, 1))
    return topic_names(prefix)


def sink_once(broker: str, prefix: str, data: Path, flush_records: int = 5000) -> int:
    """Run the sink in-process up to the end offsets; return the number of new records it stored."""
    stats = run_sink(SinkConfig(broker, prefix, data, once=True, flush_records=flush_records))
    return stats.records


def snapshot(data: Path, out: Path) -> dict[str, list[tuple]]:
    build_snapshot(data, out)
    return snapshot_rows(out)


def test_rows_are_stored_once_despite_reruns_resets_and_redelivered_outputs(
    broker: str, topic_prefix: str, tmp_path: Path, sim_streams: Streams, snapshot_path: Path
) -> None:
    names = prepare(broker, topic_prefix, sim_streams)
    publish(broker, names, sim_streams)
    data = tmp_path / "data"
    reference = snapshot_rows(snapshot_path)

    assert sink_once(broker, topic_prefix, data) == sim_streams.count()
    assert snapshot(data, tmp_path / "a.duckdb") == reference  # Kafka stored exactly the topics' records

    files = sorted(p.relative_to(data) for table in TABLES for p in (data / table.name).rglob("*.parquet"))
    assert sink_once(broker, topic_prefix, data) == 0  # a second run finds nothing new
    assert sorted(p.relative_to(data) for table in TABLES for p in (data / table.name).rglob("*.parquet")) == files

    manifest = read_manifest(data)
    assert manifest is not None
    half = {topic: {p: o // 2 for p, o in parts.items()} for topic, parts in manifest.offsets.items()}
    write_manifest(data, Manifest(manifest.prefix, half, {}))  # progress reset to an earlier cut
    assert 0 < sink_once(broker, topic_prefix, data, flush_records=3000) < sim_streams.count()
    assert snapshot(data, tmp_path / "b.duckdb") == reference

    resent = Streams(partitions=sim_streams.partitions)  # the worker re-sends outputs after a crash of its own
    for topic in OUTPUTS:
        for partition, records in sim_streams.records[topic].items():
            resent.records[topic][partition] = records[len(records) // 3 :]
    publish(broker, names, resent)
    assert sink_once(broker, topic_prefix, data) == resent.count()
    assert snapshot(data, tmp_path / "c.duckdb") == reference


def test_reports_from_a_kafka_snapshot_equal_the_batch_engine(
    broker: str, topic_prefix: str, tmp_path: Path, sim_streams: Streams, capsys: pytest.CaptureFixture[str]
) -> None:

    names = prepare(broker, topic_prefix, sim_streams)
    publish(broker, names, sim_streams)
    data, out = tmp_path / "data", tmp_path / "usage.duckdb"
    assert main(["sink", "--broker", broker, "--prefix", topic_prefix, "--data-dir", str(data), "--once"]) == 0
    assert main(["snapshot", "--data-dir", str(data), "--out", str(out)]) == 0
    con, _ = open_snapshot(out)
    with con:
        engines = partition_engines(con, tmp_path)  # an event file is one partition (data_through's file rule)
        histories = load_histories(con)
        accounts = snapshot_accounts(con)
    assert accounts == sorted(engines) and len(accounts) == 4
    capsys.readouterr()
    assert main(["report", "--snapshot", str(out), "--all", "--period", "current", "--format", "json"]) == 0
    billing = {row["account_id"]: row for row in json.loads(capsys.readouterr().out)}
    for account in accounts:
        for spec in ("current", "previous"):
            start, end = resolve_period(spec, histories[account].latest_plan, histories[account].data_through_ms)
            expected = engines[account].report(account, start, end)
            assert histories[account].report(start, end) == expected, (account, spec)
            if spec == "current":
                assert billing[account] == billing_row(expected)


# A sink that stops for a moment at one spot and says so on stderr, so that a SIGKILL lands exactly there. Spot
# "TORN": half of a Parquet file is written under its temporary name. Spot "UNCOMMITTED": a flush's files are renamed
# into place but the manifest is not replaced yet. The spot is the first argument.
SLOW_SINK = """
import io, sys, time
import processor.snapshots.sink as sink
import processor.snapshots.store as store

spot = sys.argv.pop(1)
write_table = store.pq.write_table
def torn_write(data, handle, **kwargs):
    buffer = io.BytesIO()
    write_table(data, buffer, **kwargs)
    raw = buffer.getvalue()
    handle.write(raw[: len(raw) // 2]); handle.flush()
    if spot == "TORN":
        print(spot, file=sys.stderr, flush=True); time.sleep(0.2)
    handle.write(raw[len(raw) // 2 :])
store.pq.write_table = torn_write

write_manifest = sink.write_manifest
def slow_manifest(*args):
    if spot == "UNCOMMITTED":
        print(spot, file=sys.stderr, flush=True); time.sleep(0.2)
    write_manifest(*args)
sink.write_manifest = slow_manifest

from processor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_sink(broker: str, prefix: str, data: Path, log: Path, *extra: str, spot: str = "") -> subprocess.Popen[bytes]:
    command = ["-c", SLOW_SINK, spot] if spot else ["-m", "processor.cli"]
    args = [sys.executable, *command, "sink", "--broker", broker, "--prefix", prefix, "--data-dir", str(data), *extra]
    with log.open("ab") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], times: int = 1, timeout: float = 30.0) -> None:
    """Wait until `text` occurs `times` times in the log."""
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(text) < times:
        assert proc.poll() is None, f"sink exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in the sink's log:\n{log.read_text()}"
        time.sleep(0.005)


def check_no_torn_files(data: Path) -> None:
    """Every visible data file is a complete Parquet file; the manifest parses."""
    read_manifest(data)
    for table in TABLES:
        for path in (data / table.name).rglob("*.parquet"):
            pq.read_metadata(path)


def test_sigkill_mid_write_leaves_no_torn_files_and_resumes_exactly(
    broker: str, topic_prefix: str, tmp_path: Path, sim_streams: Streams, snapshot_path: Path
) -> None:
    names = prepare(broker, topic_prefix, sim_streams)
    publish(broker, names, sim_streams)
    data, log = tmp_path / "data", tmp_path / "sink.log"
    rng = random.Random(7)
    for run, spot in enumerate(("TORN", "UNCOMMITTED", "TORN", "UNCOMMITTED"), start=1):
        proc = start_sink(broker, topic_prefix, data, log, "--flush-records", "2000", spot=spot)
        wait_for(log, spot, proc, times=log.read_text().count(spot) + rng.randint(1, 3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if spot == "TORN":
            assert list(data.rglob(".*.tmp-*"))  # half a file, under its temporary name
        check_no_torn_files(data)
        assert log.read_text().count("uncommitted or temporary files left by an earlier run") == run - 1
    manifest = read_manifest(data)
    assert manifest is not None and manifest.flushes >= 2  # progress between the kills
    sink_once(broker, topic_prefix, data)  # cleans up after the last kill, resumes at its commit
    assert snapshot(data, tmp_path / "after.duckdb") == snapshot_rows(snapshot_path)


def test_snapshots_taken_while_the_sink_writes_are_consistent_cuts(
    broker: str, topic_prefix: str, tmp_path: Path, sim_streams: Streams, snapshot_path: Path
) -> None:
    names = prepare(broker, topic_prefix, sim_streams)
    data, log = tmp_path / "data", tmp_path / "sink.log"
    proc = start_sink(
        broker,
        topic_prefix,
        data,
        log,
        "--flush-records",
        "1000",
        "--flush-interval",
        "200ms",
        "--compact-interval",
        "500ms",
    )
    try:
        wait_for(log, "partitions of", proc)
        chunks = []
        for k in range(6):  # the topics fill up in six steps
            chunk = Streams(partitions=sim_streams.partitions)
            for topic, parts in sim_streams.records.items():
                for partition, records in parts.items():
                    size = -(-len(records) // 6)
                    chunk.records[topic][partition] = records[k * size : (k + 1) * size]
            chunks.append(chunk)

        def produce() -> None:
            for chunk in chunks:
                publish(broker, names, chunk)
                time.sleep(0.3)

        producer = threading.Thread(target=produce)
        producer.start()
        cuts = 0
        while producer.is_alive() or cuts < 3:
            out = tmp_path / "live.duckdb"
            if read_manifest(data) is not None:
                build_snapshot(data, out)
                check_cut(out)
                cuts += 1
        producer.join()
        deadline = time.monotonic() + 30
        while sum(o for parts in (read_manifest(data) or Manifest("")).offsets.values() for o in parts.values()) < (
            sim_streams.count()
        ):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()
    assert "stopping" in log.read_text()
    assert snapshot(data, tmp_path / "final.duckdb") == snapshot_rows(snapshot_path)
    manifest = read_manifest(data)
    assert manifest is not None
    assert sum(len(paths) for paths in committed_files(data, manifest).values()) > 6


TOPIC_OF = {table.name: table.topic for table in TABLES}  # every sink table and the topic its rows come from


def check_cut(path: Path) -> None:
    """Each topic partition in the snapshot holds exactly the offsets below its recorded next offset."""
    with duckdb.connect(str(path), read_only=True) as con:
        offsets = {
            (t, p): o
            for t, p, o in con.execute("SELECT topic_key, partition, next_offset FROM snapshot_offsets").fetchall()
        }
        held: dict[tuple[str, int], list[int]] = {}
        for table, topic in TOPIC_OF.items():
            for partition, offset in con.execute(f"SELECT kafka_partition, kafka_offset FROM {table}").fetchall():
                held.setdefault((topic, partition), []).append(offset)
    for key, found in held.items():
        assert sorted(found) == list(range(offsets[key])), key
    for key, upto in offsets.items():
        if key[0] in TOPIC_OF.values():
            assert len(held.get(key, [])) == upto, key


def test_a_second_sink_on_the_same_directory_is_refused(
    broker: str, topic_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from processor.snapshots.store import sink_lock

    data = tmp_path / "data"
    asyncio.run(create_topics(broker, topic_prefix, 1, 1))
    with sink_lock(data):
        assert main(["sink", "--broker", broker, "--prefix", topic_prefix, "--data-dir", str(data), "--once"]) == 1
    assert "in use by another sink" in capsys.readouterr().err
    shutil.rmtree(data)


def test_worker_outputs_through_the_sink_give_the_batch_engine_reports(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    """End to end with the real `ccmeter worker`: events -> worker -> topics -> sink -> snapshot -> reports."""
    import uuid

    from processor.brokers.readback import consume
    from processor.simulation.config import SimConfig
    from processor.simulation.output import iter_lines
    from tests.processor.worker.support import (
        expected,
        produce,
        start_worker,
        with_pushers,
        write_jsonl,
    )

    partitions = 4
    asyncio.run(create_topics(broker, topic_prefix, partitions, 1))
    names = topic_names(topic_prefix)
    config = SimConfig(accounts=4, agents=3, days=1, seed=5, duplicates=0.02, out_of_order=0.03, malformed=0.01)
    lines = with_pushers([line.encode() for line in iter_lines(config)], partitions)
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    want_changes, want_windows, _ = expected(path)
    worker = start_worker(broker, topic_prefix, f"app-{uuid.uuid4().hex[:8]}", tmp_path / "worker")
    try:
        worker.wait_ready()
        produce(broker, names[EVENTS], lines)

        def done(got: dict[str, list[dict]]) -> bool:
            changes = {r["change_id"] for r in got[names[USAGE_CHANGES]]}
            windows = {r["window_id"] for r in got[names[PEAK_WINDOWS]]}
            return want_changes.keys() <= changes and want_windows.keys() <= windows

        consume(broker, [names[USAGE_CHANGES], names[PEAK_WINDOWS]], done, timeout=90)
    finally:
        worker.stop()
    data, out = tmp_path / "data", tmp_path / "usage.duckdb"
    sink_once(broker, topic_prefix, data)
    build_snapshot(data, out)
    con, _ = open_snapshot(out)
    with con:
        engines = partition_engines(con, tmp_path)  # an event file is one partition (data_through's file rule)
        histories = load_histories(con)
        real = [a for a in snapshot_accounts(con) if not a.startswith("~")]
        assert con.execute("SELECT count(*) FROM events").fetchall()[0][0] == len(lines)
        assert con.execute("SELECT count(*) FROM dead_letters").fetchall()[0][0] > 0
    assert real == [a for a in sorted(engines) if not a.startswith("~")] and len(real) == 4
    for account in real:
        history = histories[account]
        assert history.data_through_ms == engines[account].data_through(account), account
        for spec in ("current", "previous"):
            start, end = resolve_period(spec, history.latest_plan, history.data_through_ms)
            assert history.report(start, end) == engines[account].report(account, start, end), (account, spec)


def split(streams: Streams, parts: int) -> list[Streams]:
    """The records of every topic partition cut into `parts` consecutive slices."""
    chunks = [Streams(partitions=streams.partitions) for _ in range(parts)]
    for topic, partitions in streams.records.items():
        for partition, records in partitions.items():
            size = -(-len(records) // parts)
            for k, chunk in enumerate(chunks):
                chunk.records[topic][partition] = records[k * size : (k + 1) * size]
    return chunks


def stored_positions(data: Path) -> Counter[tuple[str, int, int]]:
    """How often each (topic key, partition, offset) occurs in the committed Parquet files."""
    manifest = read_manifest(data)
    assert manifest is not None
    held: Counter[tuple[str, int, int]] = Counter()
    for paths in committed_files(data, manifest).values():
        for path in paths:
            match = FILE_RE.fullmatch(path.name)
            assert match is not None
            table = pq.read_table(path, columns=["kafka_partition", "kafka_offset"])
            partitions, offsets = table.column("kafka_partition").to_pylist(), table.column("kafka_offset").to_pylist()
            held.update((match["topic"], p, o) for p, o in zip(partitions, offsets, strict=True))
    return held


def committed_count(data: Path) -> int:
    manifest = read_manifest(data)
    return 0 if manifest is None else sum(o for parts in manifest.offsets.values() for o in parts.values())


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"sink exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_the_sink_outlives_a_broker_outage_and_stores_every_record_once(tmp_path: Path, sim_streams: Streams) -> None:
    """A Kafka of its own (whatever the session's broker) is stopped under a running sink and started again on the
    same port and data."""
    from processor.brokers.kafka_server import KafkaServer

    prefix, data, log = "t.outage.", tmp_path / "data", tmp_path / "sink.log"
    before, after, _ = split(sim_streams, 3)  # two thirds of the history: one before the outage, one after
    kafka = KafkaServer(heap=("-Xms128m", "-Xmx384m", "-XX:TieredStopAtLevel=1"))  # C1 only: starts ~2x faster
    kafka.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        names = prepare(kafka.bootstrap, prefix, sim_streams)
        publish(kafka.bootstrap, names, before)
        proc = start_sink(
            kafka.bootstrap,
            prefix,
            data,
            log,
            "--flush-interval",
            "300ms",
            "--flush-records",
            "4000",
            "--retry-max",
            "2s",
        )
        wait_until(lambda: committed_count(data) == before.count(), proc, log, 30)
        port = kafka.port
        kafka.stop(keep_data=True)
        wait_for(log, "not reachable (attempt 2,", proc, timeout=30)  # the outage is found, retries go on
        kafka.start()
        assert kafka.port == port
        wait_for(log, "reachable again", proc, timeout=40)
        publish(kafka.bootstrap, names, after)
        wait_until(lambda: committed_count(data) == before.count() + after.count(), proc, log, 30)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        kafka.stop()
    text = log.read_text()
    assert proc.returncode == 0, text
    for noise in ("Traceback", "Unclosed", "Unable connect", "Failed fetch"):
        assert noise not in text, text
    retries = [line for line in text.splitlines() if "not reachable" in line]
    assert all(line.startswith(f"sink: broker {kafka.bootstrap} not reachable (attempt") for line in retries)
    expected = Counter(
        (topic, partition, offset)
        for topic, partitions in before.records.items()
        for partition, records in partitions.items()
        for offset in range(len(records) + len(after.records[topic][partition]))
    )
    assert stored_positions(data) == expected  # every record exactly once, across the outage


def test_sink_once_gives_up_on_an_unreachable_broker_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from processor.brokers.common import free_port

    data = tmp_path / "data"
    began = time.monotonic()
    args = ["sink", "--broker", f"127.0.0.1:{free_port()}", "--data-dir", str(data), "--once", "--give-up-after", "2s"]
    assert main(args) == 1
    assert time.monotonic() - began < 10
    err = capsys.readouterr().err
    final = err.strip().splitlines()[-1]
    assert final.startswith("ccmeter sink: broker 127.0.0.1:") and "not reachable for 2s" in final, err
    assert "Traceback" not in err
    assert main(["sink", "--data-dir", str(data), "--once", "--give-up-after", "soon"]) == 2
    assert "--give-up-after" in capsys.readouterr().err


def test_a_waiting_sink_stops_at_once_on_sigint(tmp_path: Path) -> None:
    from processor.brokers.common import free_port

    log = tmp_path / "sink.log"
    proc = start_sink(f"127.0.0.1:{free_port()}", "ccmeter.", tmp_path / "data", log)
    try:
        wait_for(log, "not reachable (attempt 4,", proc, timeout=30)  # backing off between attempts
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, log.read_text()
        assert time.monotonic() - began < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopping" in text and "Traceback" not in text and "Unclosed" not in text, text


def test_retry_delays_double_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(1)
    for attempt, base in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (100, 30.0)):
        delays = [retry_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays), attempt
        assert max(delays) - min(delays) > base / 4  # really random
