"""TansuBroker: lifecycle, keyed round-trips, group commits and topic creation against the embedded Tansu."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from processor.brokers.probe import probe_brokers
from processor.brokers.tansu import MEMORY_STORAGE, TansuBroker, TansuError
from processor.topics import EVENTS, create_topics, topic_names
from tests.processor.brokers.roundtrip import group_timeouts, roundtrip

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuBroker]:
    with TansuBroker() as broker:
        yield broker


def test_command_uses_memory_storage_and_the_same_advertised_address() -> None:
    broker = TansuBroker(19999)
    broker.port = 19999
    command = broker.command()
    assert command[1] == "broker"
    assert command[command.index("--storage-engine") + 1] == MEMORY_STORAGE
    assert command[command.index("--listener-url") + 1] == "tcp://127.0.0.1:19999"
    assert command[command.index("--advertised-listener-url") + 1] == "tcp://127.0.0.1:19999"


def test_lifecycle() -> None:
    with TansuBroker() as broker:
        host, port = broker.bootstrap.split(":")
        assert [b.port for b in probe_brokers(host, int(port))] == [int(port)]
        workdir = broker.workdir
        assert broker.running
    assert not broker.running
    assert workdir is not None and not workdir.exists()
    broker.stop()  # idempotent


def test_taken_port_is_reported() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with pytest.raises(TansuError, match="already in use"):
            TansuBroker(listener.getsockname()[1]).start()


def test_keyed_roundtrip_and_group_commit(tansu: TansuBroker) -> None:
    prefix = f"rt.{uuid.uuid4().hex[:8]}."
    asyncio.run(create_topics(tansu.bootstrap, prefix, partitions=3))
    topic = topic_names(prefix)[EVENTS]
    asyncio.run(roundtrip(tansu.bootstrap, topic, f"group-{uuid.uuid4().hex[:8]}", group_timeouts("tansu")))


def test_create_topics_is_idempotent(tansu: TansuBroker) -> None:
    prefix = f"idem.{uuid.uuid4().hex[:8]}."
    names = list(topic_names(prefix).values())
    assert asyncio.run(create_topics(tansu.bootstrap, prefix, partitions=2)) == names
    assert asyncio.run(create_topics(tansu.bootstrap, prefix, partitions=2)) == []

    async def partitions() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
        await admin.start()
        try:
            return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        finally:
            await admin.close()

    assert asyncio.run(partitions()) == dict.fromkeys(names, 2)


def test_unknown_topics_are_auto_created_with_four_partitions(tansu: TansuBroker) -> None:
    """The quirk that makes explicit topic creation necessary on Tansu."""
    topic = f"auto-{uuid.uuid4().hex[:8]}"

    async def produce_and_describe() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=tansu.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"x")
        finally:
            await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
            return len(described["partitions"])
        finally:
            await admin.close()

    assert asyncio.run(produce_and_describe()) == 4
