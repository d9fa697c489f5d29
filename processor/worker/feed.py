"""The worker's own reading of the events topic: a group-less aiokafka consumer of the partitions the worker owns.

Faust's consumer group decides which events partitions (and so which table partitions) a worker owns, but the
records themselves are read here, each partition from its stored applied offset + 1, not through Faust's stream:

- Faust's stream delivers about 7,000 events/s on a 2-core machine whatever the agent does (docs/performance.md),
  while aiokafka alone reads well over 100,000;
- around restarts and rebalances Faust's stream drops records in flight and commits offsets it never delivered,
  and a seek back does not reliably bring them. Reading from the stored applied offset makes the changelog the only
  truth about what was processed.
"""

from __future__ import annotations

import asyncio
import logging
import operator

from aiokafka import AIOKafkaConsumer, TopicPartition

from processor.kafka_security import client_kwargs
from processor.worker.partition import Raw

log = logging.getLogger("ccmeter.worker")

FETCH_BYTES = 8 * 1024 * 1024

_RAW = operator.attrgetter("offset", "key", "value", "timestamp")  # a record as `Raw`, in C


class PartitionFeed:
    """Reads the given partitions of one topic, each from the position the caller asks for."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[int, int] = {}  # partition -> offset the consumer reads next, as far as we know

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",  # records of aborted transactions are never folded
                max_partition_fetch_bytes=FETCH_BYTES,
                fetch_max_bytes=FETCH_BYTES,
                **client_kwargs(),
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def log_start(self, partition: int) -> int:
        """The first offset still in the partition."""
        consumer = await self._ensure()
        tp = TopicPartition(self.topic, partition)
        return (await consumer.beginning_offsets([tp]))[tp]

    async def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        """The offset the next record of each partition will get."""
        consumer = await self._ensure()
        ends = await consumer.end_offsets([TopicPartition(self.topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def fetch(self, positions: dict[int, int], max_records: int, within_ms: int) -> dict[int, list[Raw]]:
        """Records of the partitions in `positions`, each starting at its given offset: at most `max_records`,
        collected for at most `within_ms` after the first one arrives (fewer, larger batches cost less per event:
        each batch writes the state of every account it touches). Empty if nothing came within `within_ms`.

        Offsets without a record (transaction markers, records removed by retention or compaction) are absent.
        """
        consumer = await self._ensure()
        wanted = {TopicPartition(self.topic, p) for p in positions}
        if consumer.assignment() != wanted:
            consumer.assign(sorted(wanted))
            self._next = {}
        for partition, offset in positions.items():
            if self._next.get(partition) != offset:
                consumer.seek(TopicPartition(self.topic, partition), offset)
                self._next[partition] = offset
        loop = asyncio.get_running_loop()
        out: dict[int, list[Raw]] = {}
        count = 0
        deadline: float | None = None
        while count < max_records:
            wait_ms = within_ms if deadline is None else round((deadline - loop.time()) * 1000)
            if wait_ms <= 0 and deadline is not None:
                break
            batches = await consumer.getmany(timeout_ms=max(wait_ms, 0), max_records=max_records - count)
            if not batches:
                break
            if deadline is None:
                deadline = loop.time() + within_ms / 1000
            for tp, records in batches.items():
                if not records:
                    continue
                raws: list[Raw] = list(map(_RAW, records))  # a negative timestamp is unknown: process() reads it so
                self._next[tp.partition] = raws[-1][0] + 1
                out.setdefault(tp.partition, []).extend(raws)
                count += len(raws)
        return out

    def progress(self) -> dict[int, tuple[int, int]]:
        """`(next offset to read, end offset)` of each partition read, the end as of its last fetch response (no
        request to the broker; metrics); partitions without both are absent."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out: dict[int, tuple[int, int]] = {}
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)  # read_committed: the end a reader can reach
            if end is None or end < 0:
                end = consumer.highwater(tp)
            position = self._next.get(tp.partition)
            if end is not None and position is not None:
                out[tp.partition] = (position, end)
        return out

    async def close(self) -> None:
        """Stop the consumer if it was started."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
