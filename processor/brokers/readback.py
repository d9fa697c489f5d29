"""Read whole topics back as JSON records (tests and benchmarks): every partition from the start, group-less and
`read_committed` like the sink, until a condition holds and the topics have been quiet for a while."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from processor import deadletters
from processor.topics import DEAD_LETTERS


async def _consume(
    bootstrap: str,
    topics: list[str],
    done: Callable[[dict[str, list[dict]]], bool],
    timeout: float,
    quiet: float,
    max_records: int,
    fetch_max_bytes: int,
) -> dict[str, list[dict]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=fetch_max_bytes,
        isolation_level="read_committed",  # like the sink: records of aborted (fenced) transactions never count
    )
    await consumer.start()
    got: dict[str, list[dict]] = {topic: [] for topic in topics}
    try:
        parts: list[TopicPartition] = []
        for topic in topics:
            for _ in range(50):
                found = consumer.partitions_for_topic(topic)
                if found:
                    break
                await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way to wait for a new topic
                await asyncio.sleep(0.1)
            parts.extend(TopicPartition(topic, p) for p in sorted(found or ()))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        finished_at: float | None = None
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            for tp, messages in batches.items():
                got[tp.topic].extend(_record(tp.topic, m) for m in messages)
                last_new = time.monotonic()
            if finished_at is None and done(got):
                finished_at = time.monotonic()
            if finished_at is not None and time.monotonic() - max(finished_at, last_new) >= quiet:
                break
    finally:
        await consumer.stop()
    return got


def _record(topic: str, message: Any) -> dict:
    """A JSON output record, or a dead letter of either format as a dict (processor/deadletters.py)."""
    if topic.endswith(DEAD_LETTERS):
        return dict(deadletters.read(message.key, message.value, message.headers))
    return json.loads(message.value)


def consume(
    bootstrap: str,
    topics: list[str],
    done: Callable[[dict[str, list[dict]]], bool],
    timeout: float = 90.0,
    quiet: float = 1.5,
    max_records: int = 10_000,
    fetch_max_bytes: int = 50 * 1024 * 1024,
) -> dict[str, list[dict]]:
    """Read the topics from the start until `done(records)` holds and nothing new came for `quiet` seconds (every
    value a JSON document; dead letters of either format as dicts), or until `timeout` seconds passed."""
    return asyncio.run(_consume(bootstrap, topics, done, timeout, quiet, max_records, fetch_max_bytes))
