"""The replay commands against a real broker: archive and publish, plan, run (rebuild, from a snapshot), verify and
restate with the dead-letter topic, next to a live `ccmeter worker`.

Commands run in-process through `processor.cli.main` (the rebuilt version's worker is a subprocess, as in
production); live workers come from tests/processor/worker/support.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaConsumer

from processor.batch.engine import BatchEngine
from processor.brokers.readback import consume
from processor.cli import main
from processor.cli.simulate import SimConfig, iter_lines
from processor.eventfile import read_events
from processor.topics import ALERTS, DEAD_LETTERS, EVENTS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES, create_topics
from processor.topics import topic_names as names_of
from replay.seed import changelog_keys
from tests.processor.worker.support import (
    FAST,
    arrival_times,
    by_id,
    expected,
    key_of,
    partition_of,
    produce,
    start_worker,
    with_pushers,
    write_jsonl,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
PARTITIONS = 3
OUTPUTS = (USAGE_CHANGES, PEAK_WINDOWS, ALERTS, INTERVALS, DEAD_LETTERS)
IDS = {USAGE_CHANGES: "change_id", PEAK_WINDOWS: "window_id"}
WORKER_FLAGS = ["--", *FAST, "--web-bind", "127.0.0.1", "--log-level", "info"]


@pytest.fixture(autouse=True)
def _no_ccmeter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CCMETER_"):
            monkeypatch.delenv(name)


def history(seed: int, accounts: int = 4, agents: int = 4) -> list[bytes]:
    config = SimConfig(
        accounts=accounts, agents=agents, days=1, seed=seed, start=date(2026, 11, 2), duplicates=0.03,
        out_of_order=0.05, malformed=0.01, heartbeat_seconds=150,
    )  # fmt: skip
    return [line.encode() for line in iter_lines(config)]


def prepare(broker: str, prefix: str) -> dict[str, str]:
    asyncio.run(create_topics(broker, prefix, PARTITIONS, 1))
    return names_of(prefix)


def read_topic(broker: str, topic: str) -> dict[int, list[tuple[bytes | None, bytes, int]]]:
    """Every record of a topic: (key, value, timestamp) per partition in offset order."""

    async def run() -> dict[int, list[tuple[bytes | None, bytes, int]]]:
        client = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
        await client.start()
        try:
            from aiokafka import TopicPartition

            await client._client.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in sorted(client.partitions_for_topic(topic) or ())]
            assert parts, topic
            ends = await client.end_offsets(parts)
            client.assign(parts)
            await client.seek_to_beginning(*parts)
            out: dict[int, list[tuple[bytes | None, bytes, int]]] = defaultdict(list)
            pending = {tp for tp in parts if ends[tp] > 0}
            while pending:
                for tp, records in (await client.getmany(timeout_ms=300)).items():
                    out[tp.partition] += [(r.key, r.value, r.timestamp) for r in records]
                pending = {tp for tp in pending if await client.position(tp) < ends[tp]}
            return out
        finally:
            await client.stop()

    return asyncio.run(run())


def engine_outputs(path: Path) -> tuple[list, list, list]:
    engine = BatchEngine()
    try:
        engine.load(path)
        return engine.usage_changes(), engine.peak_windows(), engine.user_intervals()
    finally:
        engine.close()


def test_archive_then_publish_gives_the_same_events(broker: str, topic_prefix: str, tmp_path: Path, capsys):
    source, copy = prepare(broker, topic_prefix), prepare(broker, topic_prefix + "copy.")
    lines = history(seed=21)
    stamps = arrival_times(lines)
    produce(broker, source[EVENTS], lines, stamps)
    archive = tmp_path / "archive.parquet"
    flags = ["--broker", broker, "--quiet"]
    args = ["replay", "archive", "--prefix", topic_prefix, "--from", "2026-11-01", "--to", "2026-11-04"]
    assert main([*args, "--out", str(archive), *flags]) == 0
    assert capsys.readouterr().out.startswith("plan: archive")
    table = pq.read_table(archive)
    assert table.num_rows == len(lines)
    assert {"kafka_partition", "kafka_offset", "kafka_ts", "kafka_key", "raw", "arrival", "occurred_at"} <= set(
        table.column_names
    )
    rows = table.to_pylist()
    assert [r["arrival"] for r in rows] == list(range(len(rows)))
    produced: dict[int, list[bytes]] = defaultdict(list)
    for line in lines:
        key = key_of(line)
        produced[partition_of(key, PARTITIONS) if key else -1].append(line)
    for partition in range(PARTITIONS):  # keyed records: same partition, same order
        archived = [r["raw"].encode() for r in rows if r["kafka_partition"] == partition and r["kafka_key"]]
        assert archived == produced[partition]
    # Both readers take the archive as an event file; the batch engine gives what it gives for the .jsonl.
    assert sum(1 for _ in read_events(archive)) == len(lines)
    jsonl = write_jsonl(tmp_path / "events.jsonl", lines)
    assert engine_outputs(archive) == engine_outputs(jsonl)

    # Publish twice into a fresh topic: same keys, values, record timestamps and order per partition, twice over.
    for _ in range(2):
        assert main(["replay", "publish", str(archive), "--prefix", topic_prefix + "copy.", *flags]) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"published {len(lines)} records to {copy[EVENTS]}") == 2
    original, published = read_topic(broker, source[EVENTS]), read_topic(broker, copy[EVENTS])
    for partition in range(PARTITIONS):
        assert published[partition] == original[partition] * 2
    # The second copy changes no result: an archive of the copy folds to the same outputs.
    again = tmp_path / "again.parquet"
    args = ["replay", "archive", "--prefix", topic_prefix + "copy.", "--from", "2026-11-01", "--to", "2026-11-04"]
    assert main([*args, "--out", str(again), *flags]) == 0
    assert pq.read_table(again).num_rows == 2 * len(lines)
    assert engine_outputs(again) == engine_outputs(archive)
    # Re-running the archive replaces the file with the same content.
    before = pq.read_table(archive)
    args = ["replay", "archive", "--prefix", topic_prefix, "--from", "2026-11-01", "--to", "2026-11-04"]
    assert main([*args, "--out", str(archive), *flags]) == 0
    assert pq.read_table(archive).equals(before)
    assert not list(tmp_path.glob(".*tmp*"))


def test_archive_keeps_only_the_time_range(broker: str, topic_prefix: str, tmp_path: Path, capsys):
    names = prepare(broker, topic_prefix)
    lines = history(seed=22, accounts=2, agents=2)
    produce(broker, names[EVENTS], lines, arrival_times(lines))
    archive = tmp_path / "noon.parquet"
    args = ["replay", "archive", "--broker", broker, "--prefix", topic_prefix, "--quiet"]
    assert main([*args, "--from", "2026-11-02T12:00:00Z", "--to", "2026-11-02T13:00:00Z", "--out", str(archive)]) == 0
    rows = pq.read_table(archive).to_pylist()
    assert rows
    low, high = 1_793_620_800_000, 1_793_624_400_000  # 12:00, 13:00 UTC
    for row in rows:
        at = row["occurred_at"] if row["rejection"] is None else row["kafka_ts"]
        assert low <= round(at.timestamp() * 1000) < high


class Member:
    """A plain aiokafka consumer in a group, on its own thread (its own event loop), until `stop`."""

    def __init__(self, broker: str, topic: str, group: str) -> None:
        self.ready, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run(broker, topic, group)), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the consumer did not join its group"

    async def _run(self, broker: str, topic: str, group: str) -> None:
        client = AIOKafkaConsumer(
            topic, bootstrap_servers=broker, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=6000, heartbeat_interval_ms=500,
        )  # fmt: skip
        await client.start()
        try:
            while not client.assignment():
                await client.getmany(timeout_ms=200)
            await client.getmany(timeout_ms=500, max_records=5)
            await client.commit()
            self.ready.set()
            while not self.done.is_set():
                await client.getmany(timeout_ms=100, max_records=1)
        finally:
            await client.stop()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(30)


def test_plan_is_a_dry_run_that_warns_while_the_group_has_members(broker: str, topic_prefix: str, unique_name, capsys):
    names = prepare(broker, topic_prefix)
    lines = history(seed=23, accounts=2, agents=2)[:300]
    produce(broker, names[EVENTS], lines, arrival_times(lines))
    group = unique_name("live")
    args = ["replay", "plan", "--broker", broker, "--prefix", topic_prefix, "--from", "beginning", "--app-id", group]
    member = Member(broker, names[EVENTS], group)
    try:
        assert main(args) == 0  # a dry run: never refuses (`replay run` does)
        captured = capsys.readouterr()
        assert "ccmeter: warning: consumer group" in captured.err and "1 active members" in captured.err
        assert f"consumer group {group}: state Stable, 1 members" in captured.out
        assert "partitions 0,1,2" in captured.out
        assert f"{len(lines)} records from the beginning of the log" in captured.out
        assert f"ok: live group {group} is active" in captured.out
        assert main([*args, "--format", "json"]) == 0
        captured = capsys.readouterr()
        plan = json.loads(captured.out)
        assert "1 active members" in captured.err, captured.err
        assert plan["topic"] == names[EVENTS] and plan["from"] is None and plan["records"] == len(lines)
        assert [p["partition"] for p in plan["partitions"]] == [0, 1, 2]
        assert sum(p["records"] for p in plan["partitions"]) == len(lines)
        assert plan["group"]["group_id"] == group and plan["group"]["active"] is True
        assert plan["group"]["state"] == "Stable" and len(plan["group"]["members"]) == 1
        assert sorted(plan["group"]["members"][0]["partitions"]) == [0, 1, 2]
        assert len(plan["warnings"]) == 1 and "1 active members" in plan["warnings"][0]
    finally:
        member.stop()
    deadline = time.monotonic() + 30
    while True:  # the member has left: the group is empty, its committed offsets and lag are shown
        assert main([*args, "--format", "json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        if not plan["group"]["active"]:
            break
        assert time.monotonic() < deadline, plan
        time.sleep(0.5)
    assert plan["warnings"] == [] and plan["group"]["lag"] > 0  # lag: the member read only a few records
    assert all(p["committed"] is not None for p in plan["partitions"] if p["lag"] is not None)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert ", 0 members" in captured.out and f"ok: live group {group} is idle" in captured.out
    assert "warning" not in captured.err
    total = next(line for line in captured.out.splitlines() if line.strip().startswith("all"))
    assert int(total.split()[-1]) > 0


PROGRESS = ("horizon", "partition_horizon")  # what is known after each batch: depends on the batches


def outputs_of(broker: str, prefix: str) -> dict[str, object]:
    """Every output record of a version: by id (changes, windows) or as a set of JSON texts; of the progress records
    (sent once per batch, so as many as the version had batches) the last `data_through` of each account."""
    names = names_of(prefix)
    got = consume(broker, [names[key] for key in OUTPUTS], lambda _: True, timeout=30, quiet=1.0)
    out: dict[str, object] = {}
    for key in OUTPUTS:
        records = got[names[key]]
        if key in IDS:
            out[key] = by_id(records, IDS[key])
            continue
        out[key] = {json.dumps(r, sort_keys=True, default=repr) for r in records if r.get("record") not in PROGRESS}
    known: dict[str, str] = {}
    for record in got[names[INTERVALS]]:
        if record.get("record") == "horizon":
            known[record["account_id"]] = max(known.get(record["account_id"], ""), record["data_through"])
    out["data_through"] = known
    return out


def wait_for_live(broker: str, prefix: str, path: Path) -> None:
    want_changes, want_windows, _ = expected(path)
    names = names_of(prefix)

    def done(got: dict[str, list[dict]]) -> bool:
        changes = {r["change_id"] for r in got[names[USAGE_CHANGES]]}
        windows = {r["window_id"] for r in got[names[PEAK_WINDOWS]]}
        return want_changes.keys() <= changes and want_windows.keys() <= windows

    consume(broker, [names[USAGE_CHANGES], names[PEAK_WINDOWS]], done, timeout=120)


def assert_same(got: dict[str, object], want: dict[str, object]) -> None:
    """Equal outputs; on a difference, name the records only one side has."""
    for key in OUTPUTS:
        a, b = got[key], want[key]
        if a != b:
            if isinstance(a, set) and isinstance(b, set):
                only_got, only_want = sorted(a - b)[:5], sorted(b - a)[:5]
            else:
                only_got = [k for k in a if a.get(k) != b.get(k)][:5]
                only_want = [k for k in b if b.get(k) != a.get(k)][:5]
            raise AssertionError(f"{key}: only in the rebuild {only_got}; only live {only_want}")


async def crashed_seed(broker: str, changelog: str, group: str, events_topic: str) -> None:
    """What a seed that died half-way leaves: the seeding marker on the group, an entry in the changelog."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import NewTopic

    from replay import kafka

    admin = kafka.admin(broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(changelog, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    await kafka.commit_group_offsets(broker, group, events_topic, dict.fromkeys(range(PARTITIONS), 0), kafka.SEEDING)
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(changelog, b"garbage", key=b"stray", partition=1)
    finally:
        await producer.stop()


def test_run_refuses_an_app_id_that_holds_other_state(broker: str, topic_prefix: str, unique_name, capsys):
    names = prepare(broker, topic_prefix)
    app = unique_name("app")
    from aiokafka.admin import NewTopic

    from replay import kafka

    async def leftovers() -> None:
        admin = kafka.admin(broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(f"{app}-state-changelog", PARTITIONS, 1)])
            for _ in range(100):  # creation is acknowledged before the broker's metadata lists the topic
                if f"{app}-state-changelog" in set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
        await kafka.commit_group_offsets(broker, f"{app}-other", names[USAGE_CHANGES], {0: 0})

    asyncio.run(leftovers())
    args = ["replay", "run", "--broker", broker, "--prefix", topic_prefix, "--from", "beginning", "--into", "v2"]
    assert main([*args, "--app-id", app]) == 1  # state on the broker: a runtime failure
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--app-id", f"{app}-other"]) == 1
    assert "belongs to another app" in capsys.readouterr().err
    assert main([*args, "--app-id", app, "--from", "2026-11-02T00:00:00Z"]) == 1
    assert main(["replay", "run", "--broker", broker, "--prefix", topic_prefix, "--from", "2026-11-02", "--into", "v2",
                 "--app-id", unique_name("fresh")]) == 2  # fmt: skip
    assert "needs the fold state at that point" in capsys.readouterr().err


def mark(step: str, started: list[float] = []) -> None:  # noqa: B006 - the first call's time, kept across calls
    """Log a step with the seconds since the first mark (shown on failure, or with -s)."""
    started = started or started.append(time.monotonic()) or started
    print(f"[{time.monotonic() - started[0]:6.1f}s] {step}", file=sys.__stderr__, flush=True)


def anchor_day(snapshot: Path, account: str) -> int:
    import duckdb

    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        rows = con.execute("SELECT billing_anchor_day FROM latest_plans WHERE account_id = ?", [account]).fetchall()
    finally:
        con.close()
    return rows[0][0] if rows else 1


def test_rebuild_verify_seed_and_restate_next_to_a_live_worker(broker: str, topic_prefix: str, tmp_path: Path, capsys):
    names = prepare(broker, topic_prefix)
    lines = with_pushers(history(seed=24), PARTITIONS)
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    produce(broker, names[EVENTS], lines, arrival_times(lines))
    tag = uuid.uuid4().hex[:8]
    live = start_worker(broker, topic_prefix, f"live-{tag}", tmp_path / "live")
    try:
        live.wait_ready()
        mark("live ready")
        wait_for_live(broker, topic_prefix, path)
        mark("live done")
        live_outputs = outputs_of(broker, topic_prefix)
        assert live_outputs[USAGE_CHANGES] and live_outputs[DEAD_LETTERS]

        # 1. Rebuild from the beginning into v2 while the live worker runs: the same outputs, record for record.
        common = ["--broker", broker, "--prefix", topic_prefix, "--quiet", "--give-up-after", "150s"]
        common += ["--stall-timeout", "12"]
        v2 = ["replay", "run", *common, "--from", "beginning", "--into", "v2", "--app-id", f"v2-{tag}"]
        began = time.monotonic()
        assert main([*v2, "--state-dir", str(tmp_path / "v2"), *WORKER_FLAGS]) == 0, (tmp_path / "v2").glob("*.log")
        out = capsys.readouterr().out
        assert "start: from the beginning of the log" in out and "caught up" in out and "worker stopped" in out
        assert outputs_of(broker, f"{topic_prefix}v2.") == live_outputs
        mark(f"rebuild v2 {time.monotonic() - began:.1f}s")
        # Re-running is safe: the group is at the end offsets, nothing to do.
        assert main([*v2, "--state-dir", str(tmp_path / "v2"), *WORKER_FLAGS]) == 0
        assert "nothing to do" in capsys.readouterr().out

        # 2. A snapshot of the live version verifies against its own event log.
        data, snapshot = tmp_path / "sink", tmp_path / "usage.duckdb"
        assert main(["sink", "--broker", broker, "--prefix", topic_prefix, "--data-dir", str(data), "--once"]) == 0
        assert main(["snapshot", "--data-dir", str(data), "--out", str(snapshot), "--quiet"]) == 0
        assert main(["replay", "verify", "--snapshot", str(snapshot), "--quiet"]) == 0
        assert "OK: no differences" in capsys.readouterr().out
        mark("verified")

        # 3. Rebuild into v3 from mid-day, with the state folded from the snapshot: the same outputs again. An earlier
        # attempt crashed while seeding: its marker is on the group and a stray entry in the changelog.
        changelog = f"v3-{tag}-state-changelog"
        asyncio.run(crashed_seed(broker, changelog, f"v3-{tag}", names[EVENTS]))
        v3 = ["replay", "run", *common, "--from", "2026-11-02T14:00:00Z", "--into", "v3", "--app-id", f"v3-{tag}"]
        v3 += ["--from-snapshot", str(snapshot), "--data-dir", str(tmp_path / "v3")]
        assert main([*v3, *WORKER_FLAGS]) == 0
        out = capsys.readouterr().out
        assert "with the state folded from snapshot" in out and "seeded " in out
        mark("v3 rebuilt")
        v3_outputs = outputs_of(broker, f"{topic_prefix}v3.")
        assert_same(v3_outputs, live_outputs)
        assert b"stray" not in asyncio.run(changelog_keys(broker, changelog))
        assert main([*v3, *WORKER_FLAGS]) == 0  # done: the group has its offsets, the snapshot is not needed again
        assert "resuming group" in capsys.readouterr().out

        # 4. Events that arrive too late reach the dead-letter topic; restate finds them there.
        account = sorted({c["account_id"] for c in live_outputs[USAGE_CHANGES].values() if c["account_id"][0] != "~"})[
            0
        ]
        late = [
            json.dumps(
                {
                    "event_id": f"late-{n}",
                    "type": "api.request",
                    "account_id": account,
                    "user_id": f"late-{n}",
                    "occurred_at": "2026-11-02T10:00:00.000Z",
                }  # fmt: skip
            ).encode()
            for n in range(3)
        ]
        produce(broker, names[EVENTS], late, [None] * len(late))

        def dead(got: dict[str, list[dict]]) -> bool:
            return sum(1 for d in got[names[DEAD_LETTERS]] if d["reason"] == "too_late") >= 3

        consume(broker, [names[DEAD_LETTERS]], dead, timeout=60)
        mark("late events dead-lettered")
        restated = tmp_path / "restated.json"
        period = "2026-11" if anchor_day(snapshot, account) <= 2 else "2026-10"  # the period holding 2026-11-02
        args = ["replay", "restate", "--snapshot", str(snapshot), "--account", account, "--period", period]
        assert main([*args, "--broker", broker, "--out", str(restated), "--quiet"]) == 0
        out = capsys.readouterr().out
        assert "from dead-letter topic" in out and "late events: 3 added" in out
        assert "distinct_users" in out  # three more users on 2026-11-02
        assert json.loads(restated.read_text())["account_id"] == account
    finally:
        live.stop()


def test_publish_jsonl_and_simulator_parquet(broker: str, topic_prefix: str, tmp_path: Path, capsys):
    from processor.simulation.output import write_events
    from schemas.events import decode

    config = SimConfig(accounts=2, agents=2, days=1, seed=25, start=date(2026, 11, 2), heartbeat_seconds=150)
    jsonl, parquet = tmp_path / "events.jsonl", tmp_path / "events.parquet"
    write_events(jsonl, config)
    write_events(parquet, config)
    lines = jsonl.read_bytes().splitlines()
    for name, path in (("a.", jsonl), ("b.", parquet)):
        names = prepare(broker, topic_prefix + name)
        args = ["replay", "publish", str(path), "--broker", broker, "--prefix", topic_prefix + name, "--quiet"]
        assert main(args) == 0
        assert f"published {len(lines)} records" in capsys.readouterr().out
        got = read_topic(broker, names[EVENTS])
        for partition in range(PARTITIONS):
            want = [decode(line) for line in lines if partition_of(key_of(line), PARTITIONS) == partition]
            assert [decode(value) for _, value, _ in got[partition]] == want
            assert all(key == json.loads(value)["account_id"].encode() for key, value, _ in got[partition])
