"""Produce/consume helpers shared by the broker tests (real aiokafka clients, short timeouts)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


def group_timeouts(broker_kind: str) -> dict[str, int]:
    """Consumer-group timeouts that keep joins quick on the given broker kind.

    Our KafkaServer allows 1 s sessions (group.min.session.timeout.ms=1000) and Tansu answers a join after about
    half the session timeout; an external broker keeps Kafka's default minimum of 6 s.
    """
    session = 6000 if broker_kind == "external" else 1000
    return {
        "session_timeout_ms": session,
        "heartbeat_interval_ms": session // 5,
        "rebalance_timeout_ms": max(session, 2000),
    }


async def produce_keyed(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) records in order and wait until every one is acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def consume(
    bootstrap: str, topic: str, group: str, count: int, *, timeouts: dict[str, int], deadline: float = 30.0
) -> tuple[list[Any], dict[TopicPartition, int]]:
    """Read `count` records from `topic` as a member of `group` (from the earliest offset), commit, and return
    the records plus the committed offsets."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **timeouts,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(deadline):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
        await consumer.commit()
        committed = {tp: await consumer.committed(tp) or 0 for tp in consumer.assignment()}
    finally:
        await consumer.stop()
    return records, committed


def values_by_key(records: list[Any]) -> dict[bytes, list[bytes]]:
    """Record values grouped by key, in consumption order."""
    grouped: dict[bytes, list[bytes]] = defaultdict(list)
    for record in records:
        grouped[record.key].append(record.value)
    return dict(grouped)


async def roundtrip(bootstrap: str, topic: str, group: str, timeouts: dict[str, int], n: int = 40) -> None:
    """Produce `n` keyed records, read them back in a fresh group and check keys stay ordered and co-partitioned;
    then check a second member of the same group resumes at the committed offsets (it finds nothing new)."""
    keys = [f"account-{i}".encode() for i in range(5)]
    sent = [(keys[i % len(keys)], f"{i:04d}".encode()) for i in range(n)]
    await produce_keyed(bootstrap, topic, sent)

    records, committed = await consume(bootstrap, topic, group, n, timeouts=timeouts)
    assert len(records) == n
    expected: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in sent:
        expected[key].append(value)
    assert values_by_key(records) == dict(expected)  # every record, per-key order preserved
    partitions_per_key: dict[bytes, set[int]] = defaultdict(set)
    for record in records:
        partitions_per_key[record.key].add(record.partition)
    assert all(len(parts) == 1 for parts in partitions_per_key.values())
    assert sum(committed.values()) == n

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, **timeouts)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():
                assert not any((await consumer.getmany(timeout_ms=100)).values())
        for tp in consumer.assignment():
            assert await consumer.position(tp) == committed.get(tp, 0)
        assert not any((await consumer.getmany(timeout_ms=300)).values())
    finally:
        await consumer.stop()
