"""Output records of the worker, sent in per-partition batches through the worker's own aiokafka producer.

One `send` per record costs more than the fold itself (docs/performance.md); aiokafka's batch API sends each
(topic, partition) group as one produce request. Partitions are picked like Kafka's default partitioner (murmur2
of the key; keyless records, the dead letters, go to a random partition), so records of one account stay in order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from processor.core.model import NEVER
from processor.topics import ALERTS, DEAD_LETTERS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES
from processor.worker import records as rec
from processor.worker.partition import BatchResult

Record = tuple[str, bytes | None, bytes]  # topic, key, value
PLACED_LIMIT = 1_000_000  # cached partitions of keys; the cache starts over beyond this


def output_records(names: dict[str, str], result: BatchResult) -> list[Record]:
    """(topic, key, value) of every output record of a batch result."""
    out, dumps, peak_window_json = result.output, rec.dumps, rec.peak_window_json
    records: list[Record] = []
    add = records.append
    topic = names[USAGE_CHANGES]
    for change in out.usage_changes:
        add((topic, change.account_id.encode(), dumps(rec.usage_change(change))))
    topic = names[PEAK_WINDOWS]
    for window in out.windows:
        add((topic, window.account_id.encode(), peak_window_json(window)))
    topic = names[ALERTS]
    for alert in result.alerts:
        add((topic, alert.account_id.encode(), dumps(alert.to_record().model_dump(mode="json"))))
    topic = names[INTERVALS]
    for interval in (*out.opened, *out.intervals):
        add((topic, interval.account_id.encode(), dumps(rec.user_interval(interval))))
    for account_id, plan in out.plans:
        add((topic, account_id.encode(), dumps(rec.plan(account_id, plan))))
    for presence in out.presences:
        add((topic, presence.account_id.encode(), dumps(rec.presence_interval(presence))))
    # What is known comes after what it covers (same topic and key as the account's intervals and plans).
    partition, watermarks = result.partition, result.watermarks
    for account_id, horizon in out.horizons.items():
        if horizon > -NEVER:
            record = rec.horizon(account_id, partition, horizon, watermarks.get(account_id))
            add((topic, account_id.encode(), dumps(record)))
    if result.idle_floor is not None:
        add((topic, f"partition-{partition}".encode(), dumps(rec.partition_horizon(partition, result.idle_floor))))
    topic = names[DEAD_LETTERS]
    for letter in result.dead_letters:
        add((topic, None, dumps(letter)))
    return records


class BatchSender:
    """Sends records in per-partition batches and waits until the broker has acknowledged all of them."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._placed: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition: murmur2 in Python is slow
        self.sent = 0

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", linger_ms=0, max_batch_size=1024 * 1024
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def _partitions_of(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        return partitions

    async def send(self, records: Iterable[Record]) -> None:
        """Send `records` and wait for every acknowledgement; raises if one was not delivered."""
        producer = await self._ensure()
        groups: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
        placed = self._placed
        for topic, key, value in records:
            partition = placed.get((topic, key)) if key is not None else None
            if partition is None:
                partitions = self._partitions.get(topic) or await self._partitions_of(producer, topic)
                if key is None:
                    partition = random.choice(partitions)
                else:
                    partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
                    if len(placed) >= PLACED_LIMIT:
                        placed.clear()
                    placed[(topic, key)] = partition
            groups.setdefault((topic, partition), []).append((key, value))
        pending = []
        count = 0
        for (topic, partition), items in groups.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"an output record of {len(value)} bytes does not fit a batch")
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            count += len(items)
        await asyncio.gather(*pending)
        self.sent += count

    async def close(self) -> None:
        """Flush and stop the producer if it was started."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
