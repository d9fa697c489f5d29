"""Kafka plumbing of the benchmarks: fast pre-loading of a topic, the raw-consumer ceiling, reading outputs back,
and committed offsets of a consumer group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from processor.brokers.readback import consume
from schemas.events import Rejection
from schemas.fast import decode_wire


async def _produce(bootstrap: str, topic: str, lines: Sequence[bytes], stamps: Sequence[int]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1024 * 1024, max_request_size=4 << 20
    )
    await producer.start()
    began = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        batch = producer.create_batch()
        for line, stamp in zip(lines, stamps, strict=True):
            key = record_key(line)
            if batch.append(key=key, value=line, timestamp=stamp) is None:
                pending.append(await producer.send_batch(batch, topic, partition=0))
                batch = producer.create_batch()
                batch.append(key=key, value=line, timestamp=stamp)
                if len(pending) >= 32:
                    await asyncio.gather(*pending)
                    pending.clear()
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=0))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - began


def record_key(line: bytes) -> bytes | None:
    """The record key (account_id), found without a full JSON parse where the simulator's layout allows."""
    marker = b'"account_id":"'
    start = line.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = line.find(b'"', start)
    return line[start:end] if end > start else None


def produce(bootstrap: str, topic: str, lines: Sequence[bytes], stamps: Sequence[int]) -> float:
    """Pre-load partition 0 of `topic` with `lines` (key = account_id, given Kafka timestamps); seconds taken."""
    return asyncio.run(_produce(bootstrap, topic, lines, stamps))


async def _raw_consume(bootstrap: str, topic: str, count: int, decode_events: bool) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        seen = valid = 0
        began = cpu = 0.0
        deadline = time.monotonic() + 300
        while seen < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: only {seen} of {count} records after 300 s")
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=20_000)
            for messages in batches.values():
                if not seen:
                    began, cpu = time.perf_counter(), time.process_time()
                seen += len(messages)
                if decode_events:
                    for message in messages:
                        if not isinstance(decode_wire(message.value), Rejection):
                            valid += 1
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu
    finally:
        await consumer.stop()
    return {"events": seen, "seconds": elapsed, "cpu_seconds": cpu, "rate": seen / elapsed, "valid": valid}


def raw_consume(bootstrap: str, topic: str, count: int, decode_events: bool = True) -> dict[str, float]:
    """Read `count` records of partition 0 from the start with a bare aiokafka consumer (decoding each as the worker
    does, `schemas.fast.decode_wire`, if asked); events per second from the first fetched batch to the last."""
    return asyncio.run(_raw_consume(bootstrap, topic, count, decode_events))


def read_all(bootstrap: str, topics: Sequence[str], done: Callable[[dict[str, list[dict]]], bool],
             timeout: float = 120.0, quiet: float = 1.0) -> dict[str, list[dict]]:  # fmt: skip
    """Every JSON record of `topics` from the start, until `done(records)` and `quiet` seconds without news."""
    return consume(bootstrap, list(topics), done, timeout, quiet, max_records=50_000, fetch_max_bytes=16 << 20)


async def _committed(bootstrap: str, group: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return meta.offset if meta is not None else None


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The consumer group's committed offset of partition 0 of `topic` (None if none)."""
    return asyncio.run(_committed(bootstrap, group, topic))
