"""The streaming worker end to end on a real broker: `ccmeter worker` subprocesses, outputs read back from Kafka.

How outputs are compared: the input is a simulated history followed by one "watermark pusher" event per partition
(an api.request of a throwaway account `~push-N`, one day plus the allowed lateness after the last real event), so
on every partition every instant of the real accounts is final and every one of their windows (1d included) is
closed. The live outputs of the real accounts, after dropping re-deliveries by `change_id` / `window_id` (copies
must be identical), must then equal BatchEngine's outputs for the real accounts on the same file exactly; the
pushers' own records are ignored. Records are published with the timestamps of a real-time stream (each arrives at
the latest event time so far, `arrival_times`), the second reference of the future-skew check.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processor.brokers.readback import consume
from processor.cli.simulate import SimConfig, iter_lines
from processor.topics import ALERTS, DEAD_LETTERS, EVENTS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES, create_topics
from processor.topics import topic_names as names_of
from schemas.events import Rejection, decode, format_ms
from tests.processor.worker.support import (
    arrival_times,
    by_id,
    end_offsets,
    expected,
    key_of,
    produce,
    real,
    start_worker,
    wait_committed,
    with_pushers,
    write_jsonl,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
PARTITIONS = 4
START = date(2026, 11, 1)


def history(seed: int, accounts: int = 6, agents: int = 4, days: int = 1, start: date = START) -> list[bytes]:
    config = SimConfig(
        accounts=accounts,
        agents=agents,
        days=days,
        seed=seed,
        start=start,
        duplicates=0.03,
        out_of_order=0.05,
        malformed=0.01,
    )
    return [line.encode() for line in iter_lines(config)]


def prepare(bootstrap: str, prefix: str) -> dict[str, str]:
    asyncio.run(create_topics(bootstrap, prefix, PARTITIONS, 1))
    return names_of(prefix)


def scenario(
    bootstrap: str, prefix: str, tmp_path: Path, seed: int, **shape: int
) -> tuple[dict[str, str], list[bytes], dict, dict, str]:
    """Topics, a simulated history with pushers, the batch engine's usage changes and windows, a fresh app id."""
    names = prepare(bootstrap, prefix)
    lines = with_pushers(history(seed=seed, **shape), PARTITIONS)
    want_changes, want_windows, source = expected(write_jsonl(tmp_path / "events.jsonl", lines))
    assert want_changes and want_windows, source
    return names, lines, want_changes, want_windows, f"app-{uuid.uuid4().hex[:8]}"


def done_when(want_changes: dict, want_windows: dict, names: dict[str, str]):
    def done(got: dict[str, list[dict]]) -> bool:
        changes = {r["change_id"] for r in got[names[USAGE_CHANGES]]}
        windows = {r["window_id"] for r in got[names[PEAK_WINDOWS]]}
        return want_changes.keys() <= changes and want_windows.keys() <= windows

    return done


def check_equal(got: dict[str, list[dict]], names: dict[str, str], want_changes: dict, want_windows: dict) -> None:
    changes = real(by_id(got[names[USAGE_CHANGES]], "change_id"))
    windows = real(by_id(got[names[PEAK_WINDOWS]], "window_id"))
    assert len(changes) == len(want_changes) and changes == want_changes
    assert len(windows) == len(want_windows) and windows == want_windows


def outputs(bootstrap: str, names: dict[str, str], want_changes: dict, want_windows: dict, timeout: float = 120):
    topics = [names[USAGE_CHANGES], names[PEAK_WINDOWS], names[ALERTS], names[DEAD_LETTERS], names[INTERVALS]]
    return consume(bootstrap, topics, done_when(want_changes, want_windows, names), timeout=timeout)


def test_outputs_equal_the_batch_engine_and_live_queries_answer(broker: str, topic_prefix: str, tmp_path: Path):
    names, lines, want_changes, want_windows, app_id = scenario(broker, topic_prefix, tmp_path, 1)
    worker = start_worker(broker, topic_prefix, app_id, tmp_path)
    try:
        worker.wait_ready()
        accounts = sorted({key_of(line).decode() for line in lines if key_of(line)})
        chunk = len(lines) // 4
        stamps = arrival_times(lines)

        def live_answers() -> int:
            """Query three accounts; check every answer's shape; how many were known (200)."""
            answered = 0
            for account in accounts[:3]:
                status, body = worker.get(f"/accounts/{account}/usage")
                assert status in (200, 404), body
                if status == 200:
                    answered += 1
                    assert body["account_id"] == account
                    assert set(body) == {
                        "account_id", "usage", "licenses", "overage_allowance", "headroom", "today_peak",
                        "today_peak_at", "as_of", "data_through",
                    }  # fmt: skip
                    assert body["headroom"] == body["licenses"] - body["usage"]
                    assert body["as_of"] is None or body["as_of"].endswith("Z")
            return answered

        answered = 0
        for start in range(0, len(lines), chunk):  # the live endpoint answers while events flow
            produce(broker, names[EVENTS], lines[start : start + chunk], stamps[start : start + chunk])
            time.sleep(0.3)
            answered += live_answers()
        deadline = time.monotonic() + 30  # on a slow machine the first batches may come after the last chunk
        while not answered and time.monotonic() < deadline:
            time.sleep(0.2)
            answered += live_answers()
        assert answered > 0, (worker.health(), worker.tail())
        got = outputs(broker, names, want_changes, want_windows)
        check_equal(got, names, want_changes, want_windows)
        dead = got[names[DEAD_LETTERS]]
        malformed = sum(1 for line in lines if key_of(line) is None)
        assert len({(d["partition"], d["offset"]) for d in dead}) >= malformed > 0
        assert all(d["topic"] == names[EVENTS] and d["original"] is not None for d in dead)
        alerts = got[names[ALERTS]]
        assert all(a["state"] in ("raised", "resolved") for a in alerts)
        status, body = worker.get("/accounts/no-such-account/usage")
        assert status == 404
        health = worker.health()
        assert health and health["stats"]["records"] >= len(lines)
        counts = health["counts"]  # kept with the state: what every owned partition saw since it began
        assert counts.get("dead_letter:invalid_json", 0) + counts.get("dead_letter:invalid_timestamp", 0) > 0
        assert counts["applied"] > 0 and counts.get("duplicate", 0) > 0
    finally:
        worker.stop()


def test_sigkill_mid_stream_and_restart(broker: str, topic_prefix: str, tmp_path: Path):
    names, lines, want_changes, want_windows, app_id = scenario(broker, topic_prefix, tmp_path, 2, accounts=8, agents=6)
    half = len(lines) // 2
    worker = start_worker(broker, topic_prefix, app_id, tmp_path, "--batch-size", "300")
    try:
        worker.wait_ready()
        stamps = arrival_times(lines)
        produce(broker, names[EVENTS], lines[:half], stamps[:half])
        # Kill once the worker is busy: some outputs are out, the first half is not done yet.
        consume(broker, [names[USAGE_CHANGES]], lambda got: len(got[names[USAGE_CHANGES]]) >= 5, timeout=60, quiet=0)
        worker.kill()
        produce(broker, names[EVENTS], lines[half:], stamps[half:])
        worker = start_worker(broker, topic_prefix, app_id, tmp_path, "--batch-size", "300")
        worker.wait_ready()
        got = outputs(broker, names, want_changes, want_windows)
        check_equal(got, names, want_changes, want_windows)
        # State survives a restart from the changelog alone: the live view is the same after a kill.
        account = next(c["account_id"] for c in want_changes.values())
        status, before = worker.get(f"/accounts/{account}/usage")
        assert status == 200
        worker.kill()
        worker = start_worker(broker, topic_prefix, app_id, tmp_path)
        worker.wait_ready()
        status, after = worker.get(f"/accounts/{account}/usage")
        assert status == 200 and after == before
    finally:
        worker.stop()


async def _commit_group(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit `offsets` for `group` from outside (the group must have no members)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def test_the_table_not_the_group_offsets_says_where_processing_resumes(
    broker: str, broker_kind: str, topic_prefix: str, tmp_path: Path
):
    """Faust's stream may commit offsets it never delivered; the worker resumes from the applied offsets in its
    changelog. Planted here: while the worker is down, the group's offsets move past unprocessed records, to the middle
    of the new records on two partitions and to the end on the other two. The worker then commits, for monitoring,
    the offsets it has really applied."""
    if broker_kind == "tansu":
        pytest.skip("Tansu refuses offset commits from outside a group's members, so the offsets cannot be planted")
    names, lines, want_changes, want_windows, app_id = scenario(broker, topic_prefix, tmp_path, 4, accounts=8, agents=5)
    third = len(lines) // 3
    stamps = arrival_times(lines)
    produce(broker, names[EVENTS], lines[:third], stamps[:third])
    worker = start_worker(broker, topic_prefix, app_id, tmp_path / "a")
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 60
        while (worker.health() or {}).get("stats", {}).get("records", 0) < third:
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        worker.stop()
        before = end_offsets(broker, names[EVENTS], PARTITIONS)
        produce(broker, names[EVENTS], lines[third:], stamps[third:])
        after = end_offsets(broker, names[EVENTS], PARTITIONS)
        planted = {tp: after[tp] if tp.partition < 2 else (before[tp] + after[tp]) // 2 for tp in after}
        assert all(planted[tp] > before[tp] + 1 for tp in planted), (before, after)
        asyncio.run(_commit_group(broker, app_id, planted))
        worker = start_worker(broker, topic_prefix, app_id, tmp_path / "b")
        worker.wait_ready()
        got = outputs(broker, names, want_changes, want_windows)
        check_equal(got, names, want_changes, want_windows)
        health = worker.health()
        assert health and health["stats"]["records"] >= len(lines) - third
        # A refused commit is retried (it used to be counted as done: the group stayed behind for good).
        wait_committed(broker, app_id, after, worker, timeout=30)
    finally:
        worker.stop()


async def _produce_in_transactions(
    bootstrap: str, topic: str, lines: list[bytes], stamps: list[int], chunk: int
) -> int:
    """Publish `lines` in committed transactions of `chunk` records; between them, an aborted transaction with a
    an API request of a ghost user that would change usage if it were counted. Returns how many were aborted."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    await producer.start()
    aborted = 0
    try:
        for begin in range(0, len(lines), chunk):
            async with producer.transaction():
                for line, stamp in zip(lines[begin : begin + chunk], stamps[begin : begin + chunk], strict=True):
                    await producer.send(topic, line, key=key_of(line), timestamp_ms=stamp)
            # At the chunk's latest event time (not too late for the worker), on that event's account.
            latest = max(
                (e for e in map(decode, lines[begin : begin + chunk]) if not isinstance(e, Rejection)),
                key=lambda e: e.at_ms,
                default=None,
            )
            if latest is not None:
                ghost = {"account_id": latest.account_id, "occurred_at": format_ms(latest.at_ms)}
                ghost.update(event_id=f"ghost-{begin}", type="api.request", user_id="ghost")  # counts for 5 min
                await producer.begin_transaction()
                await producer.send(topic, json.dumps(ghost).encode(), key=latest.account_id.encode())
                await producer.abort_transaction()
                aborted += 1
    finally:
        await producer.stop()
    return aborted


def test_aborted_transactions_are_not_counted(broker: str, broker_kind: str, topic_prefix: str, tmp_path: Path):
    """Producers may write the events topic with transactions: only committed records count, and the offsets that
    transaction markers and aborted records take do not stop the worker."""
    if broker_kind == "tansu":
        pytest.skip("Tansu has no transactions")
    names, lines, want_changes, want_windows, app_id = scenario(broker, topic_prefix, tmp_path, 6, accounts=6, agents=4)
    aborted = asyncio.run(_produce_in_transactions(broker, names[EVENTS], lines, arrival_times(lines), 200))
    assert aborted > 0
    worker = start_worker(broker, topic_prefix, app_id, tmp_path)
    try:
        worker.wait_ready()
        got = outputs(broker, names, want_changes, want_windows)
        check_equal(got, names, want_changes, want_windows)
        intervals = got[names[INTERVALS]]
        assert not [r for r in intervals if r.get("user_id") == "ghost"]
    finally:
        worker.stop()


def test_second_worker_joins_late(broker: str, topic_prefix: str, tmp_path: Path):
    names, lines, want_changes, want_windows, app_id = scenario(broker, topic_prefix, tmp_path, 3, accounts=8, agents=5)
    first = start_worker(broker, topic_prefix, app_id, tmp_path / "a", "--batch-size", "300")
    second = None
    try:
        first.wait_ready()
        third = len(lines) // 3
        stamps = arrival_times(lines)
        produce(broker, names[EVENTS], lines[:third], stamps[:third])
        second = start_worker(broker, topic_prefix, app_id, tmp_path / "b", "--batch-size", "300")
        produce(broker, names[EVENTS], lines[third : 2 * third], stamps[third : 2 * third])
        second.wait_ready()
        produce(broker, names[EVENTS], lines[2 * third :], stamps[2 * third :])
        got = outputs(broker, names, want_changes, want_windows)
        check_equal(got, names, want_changes, want_windows)
        # Both workers own partitions, and each answers live queries for every account (routed to the owner).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            a, b = first.health(), second.health()
            if a and b and a["partitions"] and b["partitions"] and not (a["rebalancing"] or b["rebalancing"]):
                break
            time.sleep(0.3)
        assert set(a["partitions"]) | set(b["partitions"]) == set(range(PARTITIONS))
        assert not set(a["partitions"]) & set(b["partitions"])
        accounts = sorted({c["account_id"] for c in want_changes.values()})
        for account in accounts:
            views = [w.get(f"/accounts/{account}/usage") for w in (first, second)]
            assert views[0] == views[1] and views[0][0] == 200, views
    finally:
        first.stop()
        if second:
            second.stop()


def test_dead_letters_and_processing_goes_on(broker: str, topic_prefix: str, tmp_path: Path):
    names = prepare(broker, topic_prefix)
    t0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z

    def event(n: int, at: int, **extra: object) -> bytes:
        body = {"event_id": f"e{n}", "type": "api.request", "account_id": "acct-x", "user_id": "u1"}
        return json.dumps({**body, "occurred_at": format_ms(at), **extra}).encode()

    lines = [
        event(1, t0),
        b"{not json",
        json.dumps({"event_id": "m1", "type": "teleport", "account_id": "acct-x", "occurred_at": "x"}).encode(),
        event(2, t0 + 20 * 60_000),  # 20 min ahead of the watermark and of its arrival (max 5 min): future_skew
        event(3, t0 + 4 * 60_000),  # fine: moves the watermark to +4 min
        event(4, t0 + 8 * 60_000),  # fine
        event(5, t0 - 5 * 60_000),  # 13 min behind the watermark: too late
        event(6, t0 + 12 * 60_000, user_id="u2"),  # fine; processing went on
        event(7, t0 + 16 * 60_000, user_id="u3"),
        event(8, t0 + 20 * 60_000, user_id="u4"),
        event(9, t0 + 24 * 60_000, user_id="u5"),
    ]
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    minute = 60_000
    arrivals = [t0, t0, t0, t0, t0 + 4 * minute, t0 + 8 * minute, t0 + 8 * minute]
    arrivals += [t0 + 12 * minute, t0 + 16 * minute, t0 + 20 * minute, t0 + 24 * minute]
    worker = start_worker(broker, topic_prefix, app_id, tmp_path)
    try:
        worker.wait_ready()
        produce(broker, names[EVENTS], lines, arrivals)

        def done(got: dict[str, list[dict]]) -> bool:
            return len(got[names[DEAD_LETTERS]]) >= 4 and len(got[names[USAGE_CHANGES]]) >= 2

        got = consume(broker, [names[DEAD_LETTERS], names[USAGE_CHANGES]], done, timeout=60)
        reasons = sorted(d["reason"] for d in got[names[DEAD_LETTERS]])
        assert reasons == ["future_skew", "invalid_json", "too_late", "unknown_type"]
        late = next(d for d in got[names[DEAD_LETTERS]] if d["reason"] == "too_late")
        assert late["offset"] is not None and late["topic"] == names[EVENTS]
        # Horizon = +24 min - 10 min: usage 1 from t0 (u1) ... the changes before +14 min are final.
        changes = sorted((c["at"], c["usage"]) for c in got[names[USAGE_CHANGES]])
        assert changes[0] == (format_ms(t0), 1)
        assert (format_ms(t0 + 12 * 60_000), 2) in changes
    finally:
        worker.stop()


def test_tansu_smoke_with_ccmeter_publish(tmp_path: Path):
    from processor.brokers.tansu import TansuBroker

    with TansuBroker() as tansu:
        bootstrap = tansu.bootstrap
        prefix = f"tansu.{uuid.uuid4().hex[:6]}."
        prepare(bootstrap, prefix)
        # Events of 2020: `ccmeter publish` stamps records with the current time, so none is ahead of its arrival.
        lines = with_pushers(history(seed=4, accounts=4, agents=3, start=date(2020, 1, 6)), PARTITIONS)
        path = write_jsonl(tmp_path / "events.jsonl", lines)
        want_changes, want_windows, _ = expected(path)
        names = names_of(prefix)
        worker = start_worker(bootstrap, prefix, f"app-{uuid.uuid4().hex[:8]}", tmp_path, "--rebalance-timeout", "2s")
        try:
            worker.wait_ready(timeout=90)
            command = [sys.executable, "-m", "processor.cli", "publish", "--broker", bootstrap, "--prefix", prefix]
            done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0 and f"published {len(lines)} records" in done.stdout, done.stderr
            got = outputs(bootstrap, names, want_changes, want_windows)
            check_equal(got, names, want_changes, want_windows)
            account = next(c["account_id"] for c in want_changes.values())
            status, body = worker.get(f"/accounts/{account}/usage")
            assert status == 200 and body["account_id"] == account
        finally:
            worker.stop()


def test_rocksdb_store_survives_sigkill(broker: str, topic_prefix: str, tmp_path: Path):
    import rocksdict  # noqa: F401 - a dev dependency: the RocksDB store must be tested, not skipped

    names, lines, want_changes, want_windows, app_id = scenario(broker, topic_prefix, tmp_path, 5, accounts=4, agents=3)
    data = tmp_path / "rocks"
    options = ("--store", "rocksdb://", "--state-dir", str(data), "--batch-size", "300")
    stamps = arrival_times(lines)
    half = len(lines) // 2
    worker = start_worker(broker, topic_prefix, app_id, tmp_path, *options)
    try:
        worker.wait_ready()
        produce(broker, names[EVENTS], lines[:half], stamps[:half])
        consume(broker, [names[USAGE_CHANGES]], lambda got: len(got[names[USAGE_CHANGES]]) >= 5, timeout=60, quiet=0)
        worker.kill()
        produce(broker, names[EVENTS], lines[half:], stamps[half:])
        worker = start_worker(broker, topic_prefix, app_id, tmp_path, *options)
        worker.wait_ready()
        got = outputs(broker, names, want_changes, want_windows)
        check_equal(got, names, want_changes, want_windows)
        databases = sorted(p.name for p in (data / "state" / f"{app_id}-state-changelog").iterdir())
        assert databases == [f"{n}.db" for n in range(PARTITIONS)]  # checkpoints are written at a clean stop
    finally:
        worker.stop()
