"""A measured variant of `ccmeter worker` for docs/performance.md: identical, except that its output records go out
through aiokafka's batch API (`create_batch` / `send_batch` on Faust's own producer) instead of one Faust
`topic.send_soon` per record. It shows the gain of the change proposed there; it is not used in production.

    python -m bench.worker_variant worker --broker ... (same flags as `ccmeter worker`)

Set CONSUMER_MAX_FETCH_SIZE (bytes; Faust reads it from the environment) to also try a larger fetch size.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Sequence
from typing import Any

from aiokafka.partitioner import murmur2

import processor.app as app_module
from processor.cli import main as cli_main
from processor.topics import ALERTS, DEAD_LETTERS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES
from processor.worker import records as rec
from processor.worker.partition import BatchResult

_original_deliver = app_module.Worker._deliver


def records_of(worker: Any, result: BatchResult) -> list[tuple[str, bytes | None, bytes]]:
    """(topic, key, value) of every output record of a batch, in the order `Worker._send` sends them."""
    out, dumps, names = result.output, rec.dumps, {key: topic.get_topic_name() for key, topic in worker.out.items()}
    records: list[tuple[str, bytes | None, bytes]] = []
    add = records.append
    topic = names[USAGE_CHANGES]
    for change in out.usage_changes:
        add((topic, change.account_id.encode(), dumps(rec.usage_change(change))))
    topic = names[PEAK_WINDOWS]
    for window in out.windows:
        add((topic, window.account_id.encode(), dumps(rec.peak_window(window))))
    topic = names[ALERTS]
    for alert in result.alerts:
        add((topic, alert.account_id.encode(), dumps(alert.to_record().model_dump(mode="json"))))
    topic = names[INTERVALS]
    for interval in out.intervals:
        add((topic, interval.account_id.encode(), dumps(rec.user_interval(interval))))
    for account_id, plan in out.plans:
        add((topic, account_id.encode(), dumps(rec.plan(account_id, plan))))
    topic = names[DEAD_LETTERS]
    for letter in result.dead_letters:
        add((topic, None, dumps(letter)))
    return records


async def send_batched(producer: Any, records: Sequence[tuple[str, bytes | None, bytes]]) -> None:
    """Send records with the default partitioner's choice of partition, one aiokafka batch at a time; wait for all."""
    groups: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
    cluster = producer.client.cluster
    counts: dict[str, list[int]] = {}
    for topic, key, value in records:
        partitions = counts.get(topic)
        if partitions is None:
            partitions = counts[topic] = sorted(cluster.partitions_for_topic(topic) or [0])
        if key is None:
            partition = random.choice(partitions)
        else:
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        groups.setdefault((topic, partition), []).append((key, value))
    pending = []
    for (topic, partition), items in groups.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)


def _send(self: Any, result: BatchResult) -> list[asyncio.Future]:
    producer = self.app.producer._ensure_producer()
    return [asyncio.ensure_future(send_batched(producer, records_of(self, result)))]


async def _deliver(self: Any, futures: list[asyncio.Future]) -> None:
    await asyncio.gather(*futures)  # raises if a record was not delivered
    await _original_deliver(self, [])


def main() -> int:
    """Patch `processor.app.Worker` and run the ccmeter CLI."""
    app_module.Worker._send = _send  # type: ignore[method-assign]
    app_module.Worker._deliver = _deliver  # type: ignore[method-assign]
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
