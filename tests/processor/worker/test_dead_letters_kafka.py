"""Dead letters that always fit, on a real broker: records beyond the limits become `too_large` letters by reference
(no value), a ~0.9 MB non-JSON value becomes a letter that carries it, the worker goes on and its memory stays flat."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processor.brokers.readback import consume
from processor.topics import DEAD_LETTERS, EVENTS, create_topics, topic_names
from schemas.events import format_ms
from tests.processor.worker.support import start_worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
BIG = 5 * 1024 * 1024
T0 = 1_793_577_600_000  # 2026-11-02T00:00:00Z


async def _allow_big_records(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(BIG + 1024**2)})
        await admin.alter_configs([resource])
    finally:
        await admin.close()


async def _send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=BIG + 1024**2)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key, timestamp_ms=T0)
    finally:
        await producer.stop()


def _event(n: int) -> tuple[bytes, bytes]:
    body = {"event_id": f"e{n}", "type": "api.request", "account_id": "acct-ok", "user_id": f"u{n}"}
    return b"acct-ok", json.dumps({**body, "occurred_at": format_ms(T0 + n)}).encode()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_oversized_and_deep_records_are_too_large_letters_and_the_worker_goes_on(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    asyncio.run(create_topics(broker, topic_prefix, 1, 1))
    names = topic_names(topic_prefix)
    asyncio.run(_allow_big_records(broker, names[EVENTS]))
    worker = start_worker(broker, topic_prefix, f"app-{uuid.uuid4().hex[:8]}", tmp_path)
    key = b"acct-big"
    letters: list[dict] = []

    def letters_after(count: int) -> list[dict]:
        got = consume(broker, [names[DEAD_LETTERS]], lambda g: len(g[names[DEAD_LETTERS]]) >= count, timeout=120)
        return got[names[DEAD_LETTERS]]

    try:
        worker.wait_ready()
        # warm-up: the same kind of records as measured below, so the allocator is in its steady state
        asyncio.run(_send(broker, names[EVENTS], [(key, b"x" * BIG)] * 3 + [_event(0)]))
        letters = letters_after(3)
        assert len(letters) == 3, worker.tail()
        before = _rss_kib(worker.proc.pid)
        bigs = 16
        records = [(key, bytes([65 + n]) * BIG) for n in range(bigs)]
        records += [(key, b"[" * 10_000 + b"]" * 10_000), (key, b"\x01not json" + b"y" * 900_000)]
        records += [_event(n) for n in range(1, 6)]
        asyncio.run(_send(broker, names[EVENTS], records))
        letters = letters_after(3 + bigs + 2)
        assert len(letters) == 3 + bigs + 2, worker.tail()
        total = 4 + len(records)
        deadline = time.monotonic() + 60
        health = worker.health()
        while (health is None or health["stats"]["records"] < total) and time.monotonic() < deadline:
            time.sleep(0.2)  # polling, bounded: the letters came first, the valid events after them follow
            health = worker.health()
        after = _rss_kib(worker.proc.pid)
    finally:
        worker.stop()
    log = worker.tail()
    too_large = [d for d in letters if d["reason"] == "too_large"]
    assert len(too_large) == 3 + bigs + 1, (letters, log)
    for letter in too_large:
        assert letter["original"] is None and letter["key"] is None and letter["topic"] == names[EVENTS], letter
        assert letter["size"] in (BIG, 20_000) and len(letter["sha256"]) == 64 and letter["timestamp"] == T0
    assert {d["detail"] for d in too_large} >= {"JSON nested deeper than 64 levels"}
    (kept,) = [d for d in letters if d["reason"] != "too_large"]
    assert kept["reason"] == "invalid_json" and kept["original"] == b"\x01not json" + b"y" * 900_000, log
    assert kept["key"] == key and kept["size"] == 900_009
    offsets = [d["offset"] for d in letters]
    assert len(set(offsets)) == len(offsets)  # one letter per record
    # 16 records of 5 MiB went through: kept, they would add 80 MiB
    assert after - before < 40 * 1024, f"RSS grew from {before} KiB to {after} KiB\n{log}"
    assert health is not None and health["counts"].get("dead_letter:too_large") == 3 + bigs + 1, (health, log)
    assert health["stats"]["records"] >= 4 + bigs + 2 + 5, (health, log)  # the valid events after them too
