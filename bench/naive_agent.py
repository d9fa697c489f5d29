"""The naive baseline, and two Faust floors used to explain the worker's numbers.

`--mode naive` (the baseline): a Faust agent that handles one event at a time. Per event it decodes the record
with the same `schemas.events.decode` as the worker and updates a small per-account state in a Faust table
(`table[account] = table[account] + 1`, one changelog record per event). No batching, no fold.

`--mode take`: `stream.take_events(5000, 0.2 s)` as the worker does, decode each event, nothing else: what Faust's
input path alone allows. `--mode take-send`: the same, plus one output record per event sent like the worker
sends its outputs (`topic.send_soon`, then wait for delivery per batch): Faust's output path. `--mode take-batch`:
the same records sent with aiokafka's batch API (`create_batch` / `send_batch`) on Faust's own producer instead.

Each mode times itself from the first event to the `--limit`-th and writes JSON to `--result`; the benchmark then
stops it.

    python -m bench.naive_agent --broker HOST:PORT --topic T --app-id ID --limit N --result FILE --data-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from processor.faust_adapter import aiokafka_producer
from schemas.events import Rejection, decode

MODES = ("naive", "take", "take-send", "take-batch")


class Progress:
    """Counts events; times them from the start of the first to the end of the `limit`-th; writes the result once."""

    def __init__(self, limit: int, result: Path) -> None:
        self.limit = limit
        self.result = result
        self.n = 0
        self.t0 = self.cpu0 = 0.0

    def start(self) -> None:
        """Called before handling an event or a batch: starts the clock the first time."""
        if not self.t0:
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def add(self, count: int = 1) -> None:
        """Called after handling `count` events."""
        before, self.n = self.n, self.n + count
        if before < self.limit <= self.n:
            elapsed = time.perf_counter() - self.t0
            cpu = time.process_time() - self.cpu0
            body = {"events": self.n, "seconds": elapsed, "cpu_seconds": cpu, "rate": self.n / elapsed}
            tmp = self.result.with_name(self.result.name + ".tmp")
            tmp.write_text(json.dumps(body))
            tmp.replace(self.result)


def out_topic(app_id: str) -> str:
    """The output topic of `--mode take-send`."""
    return f"{app_id}-out"


async def create_topic(broker: str, name: str) -> None:
    """Create a 1-partition topic (the broker does not auto-create topics)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


async def send_batches(producer: Any, topic: str, batch: Sequence[EventT]) -> None:
    """Send one record per event with the aiokafka batch API (partition 0) and wait for delivery."""
    pending = []
    records = producer.create_batch()
    for event in batch:
        message = event.message
        if records.append(key=message.key, value=message.value, timestamp=None) is None:
            pending.append(await producer.send_batch(records, topic, partition=0))
            records = producer.create_batch()
            records.append(key=message.key, value=message.value, timestamp=None)
    if records.record_count():
        pending.append(await producer.send_batch(records, topic, partition=0))
    await asyncio.gather(*pending)


def build_app(broker: str, topic: str, app_id: str, mode: str, progress: Progress, data_dir: Path) -> faust.App:
    """The app: one input topic; a table (naive) or an output topic (take-send)."""
    app = faust.App(
        app_id,
        broker=f"kafka://{broker}",
        store="memory://",
        datadir=str(data_dir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=2.0,
        stream_buffer_maxsize=10_000,
        producer_acks=-1,
        processing_guarantee="at_least_once",
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events = app.topic(topic, **raw)

    if mode == "naive":
        table = app.Table("naive-state", default=int, partitions=1)

        @app.agent(events, name="naive", concurrency=1)
        async def naive(stream: faust.StreamT) -> None:
            async for value in stream:
                progress.start()
                event = decode(value)
                if isinstance(event, Rejection):
                    continue
                table[event.account_id] = table[event.account_id] + 1
                progress.add()

        return app

    out = app.topic(out_topic(app_id), **raw)

    @app.agent(events, name="take", concurrency=1)
    async def take(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(5000, 0.2):
            progress.start()
            decoded = [decode(e.value) for e in batch]
            if mode == "take-send":
                futures = [out.send_soon(key=e.key, value=e.value) for e in batch]
                producer = app.producer
                while producer.buffer.size:
                    await producer.buffer.flush()
                await producer.flush()
                del futures
            elif mode == "take-batch":
                await send_batches(aiokafka_producer(app), out_topic(app_id), batch)
            progress.add(len(decoded))

    return app


def main(argv: list[str] | None = None) -> int:
    """Run the agent until stopped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--mode", choices=MODES, default="naive")
    parser.add_argument("--limit", type=int, required=True, help="time the first N events")
    parser.add_argument("--result", required=True, help="JSON result file")
    parser.add_argument("--data-dir", required=True, help="Faust's data directory")
    args = parser.parse_args(argv)
    progress = Progress(args.limit, Path(args.result))
    if args.mode in ("take-send", "take-batch"):
        asyncio.run(create_topic(args.broker, out_topic(args.app_id)))
    app = build_app(args.broker, args.topic, args.app_id, args.mode, progress, Path(args.data_dir))
    worker = faust.Worker(app, loglevel="info", stdout=sys.stdout, stderr=sys.stderr)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
