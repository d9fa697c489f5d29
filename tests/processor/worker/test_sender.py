"""BatchSender on a real broker: every record arrives once, on the partition Kafka's default partitioner picks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from processor.worker.sender import BatchSender

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]
PARTITIONS = 4


async def _create(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def _read(bootstrap: str, topic: str, count: int) -> list[tuple]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[tuple] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < count:
                batches = await consumer.getmany(timeout_ms=500)
                got += [(r.partition, r.key, r.value, list(r.headers)) for records in batches.values() for r in records]
    finally:
        await consumer.stop()
    return got


def test_records_go_to_the_default_partitioners_partition_once(broker: str, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("sender")
    records = [(topic, f"acct-{i % 37}".encode(), f"v{i}".encode(), []) for i in range(3000)]
    records += [(topic, None, f"keyless{i}".encode(), [("ccmeter.dlq.reason", b"r%d" % i)]) for i in range(20)]

    async def scenario() -> list[tuple]:
        await _create(broker, topic)
        sender = BatchSender(broker)
        try:
            await sender.send(records[:1500])
            await sender.send(records[1500:])  # the second call uses the cached partitions
        finally:
            await sender.close()
        assert sender.sent == len(records)
        return await _read(broker, topic, len(records))

    got = asyncio.run(scenario())
    assert sorted(value for _, _, value, _ in got) == sorted(value for _, _, value, _ in records)
    assert sorted((v, h) for _, _, v, h in got if h) == sorted((v, h) for _, _, v, h in records if h)  # headers kept
    pick = DefaultPartitioner()
    every = list(range(PARTITIONS))
    for partition, key, _, _ in got:
        if key is not None:
            assert partition == pick(key, every, every)
    # Records of one key keep their order.
    values = [value for _, key, value, _ in got if key == b"acct-0"]
    assert values == [value for _, key, value, _ in records if key == b"acct-0"]
