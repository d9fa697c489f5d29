"""Output records of the worker, sent in per-partition batches through the worker's own aiokafka producer.

One `send` per record costs more than the fold itself (docs/performance.md); aiokafka's batch API sends each
(topic, partition) group as one produce request. Partitions are picked like Kafka's default partitioner (murmur2
of the key; keyless records, the dead letters, go to a random partition), so records of one account stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from processor import deadletters
from processor.core.model import NEVER
from processor.kafka_security import client_kwargs
from processor.topics import ALERTS, DEAD_LETTERS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES
from processor.worker import records as rec
from processor.worker.partition import BatchResult

Header = tuple[str, bytes]
Record = tuple[str, bytes | None, bytes | None, list[Header]]  # topic, key, value, headers
Item = tuple[bytes | None, bytes | None, list[Header]]  # key, value, headers
NO_HEADERS: list[Header] = []
PLACED_LIMIT = 1_000_000  # cached partitions of keys; the cache starts over beyond this


def output_records(names: dict[str, str], result: BatchResult) -> list[Record]:
    """(topic, key, value, headers) of every output record of a batch result (only dead letters have headers)."""
    out, dumps, peak_window_json, horizon_json = result.output, rec.dumps, rec.peak_window_json, rec.horizon_json
    records: list[Record] = []
    none = NO_HEADERS
    add = records.append
    topic = names[USAGE_CHANGES]
    for change in out.usage_changes:
        add((topic, change.account_id.encode(), dumps(rec.usage_change(change)), none))
    topic = names[PEAK_WINDOWS]
    for window in out.windows:
        add((topic, window.account_id.encode(), peak_window_json(window), none))
    topic = names[ALERTS]
    for alert in result.alerts:
        add((topic, alert.account_id.encode(), dumps(alert.to_record().model_dump(mode="json")), none))
    topic = names[INTERVALS]
    for interval in (*out.opened, *out.intervals):
        add((topic, interval.account_id.encode(), dumps(rec.user_interval(interval)), none))
    for account_id, plan in out.plans:
        add((topic, account_id.encode(), dumps(rec.plan(account_id, plan)), none))
    for presence in out.presences:
        add((topic, presence.account_id.encode(), dumps(rec.presence_interval(presence)), none))
    # What is known comes after what it covers (same topic and key as the account's intervals and plans).
    partition, watermarks = result.partition, result.watermarks
    for account_id, horizon in out.horizons.items():
        if horizon > -NEVER:
            record = horizon_json(account_id, partition, horizon, watermarks.get(account_id))
            add((topic, account_id.encode(), record, none))
    if result.idle_floor is not None:
        add(
            (topic, f"partition-{partition}".encode(), dumps(rec.partition_horizon(partition, result.idle_floor)), none)
        )
    topic = names[DEAD_LETTERS]
    for letter in result.dead_letters:
        add((topic, *deadletters.encode(letter)))
    return records


class BatchSender:
    """Sends records in per-partition batches and waits until the broker has acknowledged all of them.

    With a `transactional_id` the producer is transactional (`begin`, `commit`, `abort`): a newer producer with the
    same id fences this one, whose next send or commit then fails with `ProducerFenced`.
    """

    def __init__(self, bootstrap: str, transactional_id: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._placed: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition: murmur2 in Python is slow
        self.sent = 0

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            options: dict[str, Any] = {"acks": "all", "linger_ms": 0, "max_batch_size": 1024 * 1024}
            if self.transactional_id is not None:
                options["transactional_id"] = self.transactional_id  # start() runs InitProducerId: fences older ones
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **options, **client_kwargs())
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def start(self) -> None:
        """Connect now (for a transactional sender: register its id with the broker, fencing older producers)."""
        await self._ensure()

    async def _partitions_of(self, producer: AIOKafkaProducer, topic: str) -> list[int]:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        return partitions

    async def send(self, records: Iterable[Record]) -> None:
        """Send `records` and wait for every acknowledgement; raises if one was not delivered."""
        producer = await self._ensure()
        groups: dict[tuple[str, int], list[Item]] = {}
        placed = self._placed
        for topic, key, value, headers in records:
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
            groups.setdefault((topic, partition), []).append((key, value, headers))
        pending = []
        for (topic, partition), items in groups.items():
            pending += await self._submit(producer, topic, partition, items)
        await _all(pending)
        self.sent += sum(map(len, groups.values()))

    async def send_to(self, topic: str, partition: int, items: list[tuple[bytes, bytes | None]]) -> int:
        """Send `(key, value)` items to one partition in order, wait for the acks; the offset after the last one
        (-1 when `items` is empty)."""
        if not items:
            return -1
        producer = await self._ensure()
        pending = await self._submit(producer, topic, partition, [(key, value, NO_HEADERS) for key, value in items])
        acks = await _all(pending)
        return max(ack.offset + count for ack, count in acks)

    @staticmethod
    async def _submit(
        producer: AIOKafkaProducer, topic: str, partition: int, items: list[Item]
    ) -> list[Awaitable[tuple[Any, int]]]:
        """Queue `items` as batches; one awaitable per batch giving (its metadata, its record count)."""
        pending: list[Awaitable[tuple[Any, int]]] = []

        async def acked(future: Awaitable[Any], count: int) -> tuple[Any, int]:
            return await future, count

        async def queue(batch: Any) -> None:
            future = await producer.send_batch(batch, topic, partition=partition)
            pending.append(acked(future, batch.record_count()))

        batch = producer.create_batch()
        for key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                await queue(batch)
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes does not fit a batch")
        if batch.record_count():
            await queue(batch)
        return pending

    async def begin(self) -> None:
        """Begin a transaction (transactional senders only)."""
        await (await self._ensure()).begin_transaction()

    async def commit(self) -> None:
        """Commit the open transaction: its records become visible to `read_committed` readers at once."""
        await (await self._ensure()).commit_transaction()

    async def abort(self) -> None:
        """Abort the open transaction, if any (errors are swallowed: the producer is closed next anyway)."""
        producer = self._producer
        if producer is None or self.transactional_id is None:
            return
        with contextlib.suppress(Exception):
            await producer.abort_transaction()

    async def close(self) -> None:
        """Flush and stop the producer if it was started."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


async def _all(pending: list[Awaitable[Any]]) -> list[Any]:
    """Await every acknowledgement; raise the first failure only after all are settled (none left unretrieved)."""
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes
