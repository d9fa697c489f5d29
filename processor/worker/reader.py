"""Direct reads of an offset range of one events-topic partition, outside Faust's stream.

Faust's stream can lose records around restarts and rebalances: it acks and commits offsets it never delivered, and
a `seek` back does not reliably bring them (its consumer drops records below its own read offset, and prefetched
records move that offset again). So when the worker finds a hole between its stored applied offset and the next
record Faust delivers, it reads the missing range itself with this reader: a plain aiokafka consumer with no group,
assigned one partition at a time, which returns every record that exists in the range.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from processor.worker.partition import Raw

log = logging.getLogger("ccmeter.worker")

FETCH_BYTES = 8 * 1024 * 1024


class RangeReadError(RuntimeError):
    """A range could not be read completely in time."""


class RangeReader:
    """Reads `[start, end)` of a partition of one topic; started lazily, stopped with `close`."""

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 60.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self.records_read = 0

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=FETCH_BYTES,
                fetch_max_bytes=FETCH_BYTES,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def end_offset(self, partition: int) -> int:
        """The partition's end offset (the offset the next record will get)."""
        consumer = await self._ensure()
        tp = TopicPartition(self.topic, partition)
        return (await consumer.end_offsets([tp]))[tp]

    async def read(self, partition: int, start: int, end: int) -> list[Raw]:
        """Every record of the partition with `start <= offset < end`, in offset order.

        Offsets without a record (transaction markers, records removed by retention) are simply absent.
        Raises `RangeReadError` if the consumer has not reached `end` within the timeout.
        """
        if end <= start:
            return []
        consumer = await self._ensure()
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        raws: list[Raw] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                missing = f"offsets {start}..{end - 1}"
                raise RangeReadError(f"partition {partition}: {missing} not read in {self.timeout_s} s")
            batches = await consumer.getmany(tp, timeout_ms=500)
            for record in batches.get(tp, ()):
                if start <= record.offset < end:
                    timestamp = record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None
                    raws.append((record.offset, record.key, record.value, timestamp))
        self.records_read += len(raws)
        return raws

    async def close(self) -> None:
        """Stop the consumer if it was started."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
