"""Live queries on a real broker: any worker answers for any account, whatever partitioner the producer used.

Two workers share a 4-partition events topic. Every account's records go to an explicit partition that murmur2 (the
Java client's and aiokafka's default partitioner, the one Faust's table routing assumes) would not choose: for some
accounts on the other worker than murmur2's partition, for others on the same one. Then each account is asked from
both workers: both answer 200 with the same body, whose usage is the batch engine's usage at the answer's `as_of`;
an unknown account is 404 from both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from bisect import bisect_right
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from processor.batch.engine import BatchEngine
from processor.cli.simulate import SimConfig, iter_lines
from processor.topics import EVENTS, create_topics, topic_names
from schemas.events import decode, parse_timestamp, to_ms
from tests.processor.worker.support import (
    SETTINGS,
    WorkerProcess,
    arrival_times,
    key_of,
    partition_of,
    settled,
    start_worker,
    write_jsonl,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
PARTITIONS = 4
FIELDS = {
    "account_id", "usage", "licenses", "overage_allowance", "headroom", "today_peak", "today_peak_at", "as_of",
    "data_through",
}  # fmt: skip


def history() -> list[bytes]:
    """The first 55 % of a simulated day of six accounts (mid-day: usage is not 0 everywhere)."""
    config = SimConfig(accounts=6, agents=4, days=1, seed=11, duplicates=0.03)
    lines = [line.encode() for line in iter_lines(config)]
    return lines[: len(lines) * 55 // 100]


def place(accounts: list[str], owner: dict[int, int]) -> dict[str, int]:
    """A partition per account, never murmur2's: alternately on the other worker than murmur2's and on the same."""
    placed: dict[str, int] = {}
    for index, account in enumerate(accounts):
        hashed = partition_of(account.encode(), PARTITIONS)
        others = [p for p in range(PARTITIONS) if p != hashed]
        away = [p for p in others if owner[p] != owner[hashed]]
        near = [p for p in others if owner[p] == owner[hashed]]
        choice = near if index % 2 and near else away
        placed[account] = choice[index % len(choice)]
    return placed


async def _produce(bootstrap: str, topic: str, lines: list[bytes], placed: dict[str, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for line, stamp in zip(lines, arrival_times(lines), strict=True):
            key = key_of(line)
            assert key is not None
            await producer.send(topic, value=line, key=key, partition=placed[key.decode()], timestamp_ms=stamp)
        await producer.flush()
    finally:
        await producer.stop()


def usage_at(changes: list[tuple[int, int]], at_ms: int) -> int:
    """The usage level at `at_ms` from sorted (at_ms, usage) change points (0 before the first)."""
    index = bisect_right(changes, (at_ms, float("inf")))
    return changes[index - 1][1] if index else 0


def wrong(body: Any, account: str, changes: list[tuple[int, int]], last_event_ms: int) -> str | None:
    """Why an answer is not the expected one (None when it is)."""
    if not isinstance(body, dict) or set(body) != FIELDS or body["account_id"] != account or body["as_of"] is None:
        return f"shape: {body}"
    as_of = to_ms(parse_timestamp(body["as_of"]))
    if as_of < last_event_ms:
        return f"not caught up: as_of {body['as_of']}"
    if body["usage"] != usage_at(changes, as_of) or body["headroom"] != body["licenses"] - body["usage"]:
        return f"usage {body['usage']} (headroom {body['headroom']}), batch engine {usage_at(changes, as_of)}"
    through = body["data_through"]
    if through is not None and not (isinstance(through, str) and through.endswith("Z")):
        return f"data_through {through!r}"
    return None


def logs(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- worker on port {w.port}:\n{w.tail(80)}" for w in workers)


def last_events(lines: list[bytes]) -> dict[str, int]:
    """The latest occurred_at (ms) of each account."""
    latest: dict[str, int] = {}
    for line in lines:
        event = decode(line)
        if not hasattr(event, "reason"):
            latest[event.account_id] = max(latest.get(event.account_id, event.at_ms), event.at_ms)
    return latest


def problems_of(workers: list[WorkerProcess], account: str, changes: list[tuple[int, int]], last_ms: int) -> list[str]:
    """What is wrong with the two workers' answers for one account (empty when both are right and equal)."""
    answers = [worker.get(f"/accounts/{account}/usage") for worker in workers]
    problems = []
    for (status, body), worker in zip(answers, workers, strict=True):
        why = f"HTTP {status}: {body}" if status != 200 else wrong(body, account, changes, last_ms)
        if why:
            problems.append(f"{account} from :{worker.port}: {why}")
    if not problems and answers[0] != answers[1]:
        problems.append(f"{account}: the workers disagree: {answers}")
    return problems


@pytest.mark.parametrize("standbys", ["0", "1"])
def test_every_worker_answers_for_every_account_placed_off_murmur2(
    broker: str, topic_prefix: str, tmp_path: Path, standbys: str
):
    """Without standbys a worker has nothing of the other's partitions (murmur2 routing would give 404); with one
    standby it holds copies of them, which it must not answer from as if they were its own."""
    asyncio.run(create_topics(broker, topic_prefix, PARTITIONS, 1))
    lines = history()
    engine = BatchEngine(SETTINGS)
    engine.load(write_jsonl(tmp_path / "events.jsonl", lines))
    last = last_events(lines)
    accounts = sorted(last)
    changes = {a: sorted((c.at_ms, c.usage) for c in engine.usage_changes(a)) for a in accounts}
    assert any(usage_at(changes[a], last[a]) > 0 for a in accounts)  # mid-day: some usage is still open
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    extra = ("--standby-replicas", standbys)
    workers = [start_worker(broker, topic_prefix, app_id, tmp_path / name, *extra) for name in ("a", "b")]
    try:
        owner = settled(workers, PARTITIONS)
        placed = place(accounts, owner)
        hashed = {a: partition_of(a.encode(), PARTITIONS) for a in accounts}
        assert all(placed[a] != hashed[a] for a in accounts)
        assert any(owner[placed[a]] != owner[hashed[a]] for a in accounts)  # murmur2 routing would miss these
        asyncio.run(_produce(broker, topic_names(topic_prefix)[EVENTS], lines, placed))

        deadline = time.monotonic() + 150
        problems = ["not asked yet"]
        while problems and time.monotonic() < deadline:
            problems = [p for a in accounts for p in problems_of(workers, a, changes[a], last[a])]
            if problems:
                time.sleep(0.5)
        assert not problems, "\n".join(problems) + f"\nplaced {placed}, owners {owner}\n" + logs(workers)

        unknown = (404, {"error": "unknown account", "account_id": "no-such-account"})
        answers: list[tuple[int, Any]] = []
        while time.monotonic() < deadline + 30:
            answers = [worker.get("/accounts/no-such-account/usage") for worker in workers]
            if all(status != 503 for status, _ in answers):
                break
            time.sleep(0.5)
        assert answers == [unknown, unknown], f"{answers}\n{logs(workers)}"
    finally:
        for worker in workers:
            worker.stop()
