"""The streaming worker as a Faust app: events topic in; usage changes, peak windows, alerts, intervals, dead letters
out; live usage over HTTP.

One agent (concurrency 1) takes batches from the events topic (`take_events`). Per batch and partition it runs
`StreamProcessor.process` (processor/worker), then:

1. sends every output record (`send_soon`, no await per record) and waits until the producer has delivered them;
2. writes each touched account's state entry once, then the partition's clock entry, to the `state` table, whose
   changelog partition is the events partition (the Faust current-event context is set to an event of that
   partition, because table writes and the RocksDB store pick their partition from it);
3. returns, and `take_events` acks the batch. Faust commits acked offsets only after flushing the producer.

So outputs are delivered before the state that says they were produced, and state before the offsets: after a
crash, records are re-delivered and outputs may repeat (same ids), but none are lost. Re-delivered records at or
below the stored applied offsets are dropped (processor/worker/partition.py).

Faust itself does not guarantee that: around restarts and rebalances its stream drops records in flight and acks
them, and it can commit offsets beyond what was processed. So offsets are applied strictly in sequence from the
stored applied offset. When a batch does not continue at `applied + 1`, the worker reads the missing range itself,
outside Faust's stream (processor/worker/reader.py), and applies that instead; the records Faust delivers later are
at or below the applied offset and are dropped. A hole at the end of a partition shows no later record: a timer
compares each idle partition's applied offset with its end offset and fills such holes the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import EventT

from processor.topics import ALERTS, DEAD_LETTERS, EVENTS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES, topic_names
from processor.worker import records as rec
from processor.worker.config import WorkerConfig
from processor.worker.partition import BatchResult
from processor.worker.reader import RangeReader
from processor.worker.runner import StreamProcessor
from processor.worker.state import clock_key, decode_clock, is_clock_key
from schemas.events import format_ms

log = logging.getLogger("ccmeter.worker")

TABLE_NAME = "state"
EXIT_CRASH = 70
IDLE_CHECK_S = 1.0  # how often idle partitions are compared with their end offset
IDLE_TICKS = 2  # checks without progress before a trailing hole is filled
FILL_CHUNK = 10_000  # offsets read and committed at a time when filling a hole


@dataclass(eq=False)
class _Message:
    topic: str
    partition: int


@dataclass(eq=False)
class PartitionContext:
    """Stand-in for Faust's current event: table writes take their changelog partition from `message.partition`."""

    message: _Message


class TableStore:
    """`StateStore` view of the Faust table (keys and values are bytes)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)

    def items(self) -> list[tuple[bytes, bytes]]:
        return list(self.table.data.items())


class Worker:
    """The app, its topics and table, and the batch handler."""

    def __init__(self, config: WorkerConfig, partitions: int) -> None:
        self.config = config
        self.partitions = partitions
        names = topic_names(config.prefix)
        self.events_topic_name = names[EVENTS]
        self.app = app = faust.App(
            config.app_id,
            broker=[f"kafka://{server}" for server in config.broker.split(",")],
            store=config.store,
            datadir=config.data_dir,
            autodiscover=False,
            web_enabled=True,
            web_host=config.web_host,
            web_port=config.web_port,
            web_bind=config.web_bind,
            canonical_url=f"http://{config.web_host}:{config.web_port}",
            topic_partitions=partitions,
            topic_replication_factor=config.replication,
            table_standby_replicas=config.standby_replicas,
            broker_session_timeout=config.session_timeout / 1000,
            broker_heartbeat_interval=config.heartbeat_interval / 1000,
            broker_rebalance_timeout=config.rebalance_timeout / 1000,
            broker_commit_interval=config.commit_interval / 1000,
            consumer_auto_offset_reset="earliest",
            consumer_max_fetch_size=8 * 1024 * 1024,  # Faust's 1 MiB default halves throughput (docs/performance.md)
            stream_buffer_maxsize=max(4096, 2 * config.batch_size),
            producer_acks=-1,
            processing_guarantee="at_least_once",
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw"}
        raw["value_serializer"] = "raw"
        self.events = app.topic(names[EVENTS], **raw)
        self.out = {
            key: app.topic(names[key], **raw) for key in (USAGE_CHANGES, PEAK_WINDOWS, ALERTS, DEAD_LETTERS, INTERVALS)
        }
        self.table = app.Table(
            TABLE_NAME, partitions=partitions, key_type=bytes, value_type=bytes, help="ccmeter account and clock state"
        )
        self.skipped = 0
        self.filled = 0  # records read outside Faust's stream to fill holes
        self.reader = RangeReader(config.broker, names[EVENTS])
        self._lock = asyncio.Lock()  # one batch or hole fill at a time
        self._idle: dict[int, tuple[int, int]] = {}  # partition -> (applied offset, checks without progress)
        self.processor = StreamProcessor(
            self.events_topic_name, config.settings, TableStore(self.table), share=config.near_capacity
        )
        self._register()

    # -- wiring ----------------------------------------------------------------------------------------------------

    def _register(self) -> None:
        app, worker = self.app, self

        @app.agent(self.events, name="ccmeter-meter", concurrency=1)
        async def meter(stream: faust.StreamT) -> None:
            async for batch in stream.take_events(worker.config.batch_size, worker.config.batch_within / 1000):
                try:
                    await worker.handle(batch)
                except Exception:  # noqa: BLE001 - state may be half updated: stop hard, offsets are not committed
                    log.exception("batch failed; exiting so that the batch is re-delivered to a fresh worker")
                    logging.shutdown()
                    os._exit(EXIT_CRASH)

        async def on_rebalance(sender: Any, *args: Any, **kwargs: Any) -> None:
            worker.processor.reset()

        app.on_partitions_revoked.connect(on_rebalance)
        app.on_partitions_assigned.connect(on_rebalance)
        app.on_rebalance_complete.connect(on_rebalance)  # after table recovery

        @app.timer(IDLE_CHECK_S, name="ccmeter-fill-trailing-holes")
        async def fill_trailing_holes() -> None:
            try:
                await worker.fill_trailing_holes()
            except Exception:  # noqa: BLE001 - outputs may be out, state is not written: try again next time
                log.exception("filling a trailing hole failed; retrying")

        @app.service
        class CloseReader(faust.Service):
            """Stops the range reader's consumer with the app."""

            async def on_stop(self) -> None:
                await worker.reader.close()

        @app.page("/accounts/{account_id}/usage")
        class AccountUsage(faust.web.View):
            """Live usage of one account (served by the worker that owns it)."""

            @app.table_route(table=worker.table, match_info="account_id")
            async def get(self, request: faust.web.Request, account_id: str) -> faust.web.Response:
                view = worker.processor.live_view(account_id)
                if view is None:
                    return self.json({"error": "unknown account", "account_id": account_id}, status=404)
                return self.json(live_json(view))

        @app.page("/health")
        class Health(faust.web.View):
            """Liveness and counters of this worker."""

            async def get(self, request: faust.web.Request) -> faust.web.Response:
                return self.json(worker.health())

    # -- batches ---------------------------------------------------------------------------------------------------

    def assigned(self) -> set[int]:
        """Events-topic partitions this worker owns now."""
        name = self.events_topic_name
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == name}

    async def handle(self, batch: Sequence[EventT]) -> None:
        """Process one `take_events` batch: outputs, wait for delivery, then state (see the module docstring)."""
        buffer = self.app.producer.buffer
        if buffer.max_messages < 4 * self.config.batch_size:  # else Faust warns on every event past 100 pending
            buffer.max_messages = 4 * self.config.batch_size
        async with self._lock:
            while self.app.in_recovery:  # never build partition state from a half-recovered table
                await asyncio.sleep(0.05)
            mine = self.assigned()
            generation = self.app.consumer_generation_id
            groups: dict[int, list[EventT]] = {}
            skipped = 0
            for event in batch:
                message = event.message
                # Events of partitions no longer ours, or fetched before the last rebalance, are skipped as Faust's
                # own stream iterator does; if a partition is still ours, the hole they leave is filled later.
                if message.partition in mine and message.generation_id == generation:
                    groups.setdefault(message.partition, []).append(event)
                else:
                    skipped += 1
            if skipped:
                self.skipped += skipped
                log.warning("skipped %d records of an earlier generation or of revoked partitions", skipped)
            results: list[BatchResult] = []
            for partition, events in groups.items():
                state = self.processor.partition(partition)
                if not state.start_known:  # no stored clock: the partition starts at its log start offset
                    tp = events[0].message.tp
                    earliest = (await self.app.consumer.earliest_offsets(tp)).get(tp)
                    state.applied = max(state.applied, (earliest or 0) - 1)
                    state.start_known = True
                raws = [(e.message.offset, e.message.key, e.message.value, _ms(e.message.timestamp)) for e in events]
                expected = state.applied + 1
                fresh = [raw[0] for raw in raws if raw[0] >= expected]
                if not fresh or fresh == list(range(expected, expected + len(fresh))):
                    results.append(self.processor.process(partition, raws))
                    continue
                last = raws[-1][0]
                log.warning(
                    "partition %d: the stream skipped records after offset %d; reading %d..%d directly",
                    *(partition, expected - 1, expected, last),
                )
                await self._fill(partition, expected, last + 1)
            await self._commit_results(results)

    async def fill_trailing_holes(self) -> None:
        """Apply records that Faust's stream skipped at the end of an idle partition (see the module docstring)."""
        if self.app.in_recovery or self.app.rebalancing or self._lock.locked():
            return
        for partition in sorted(self.assigned()):
            state = self.processor.partition(partition)
            if not state.start_known:
                continue
            applied = state.applied
            before = self._idle.get(partition)
            checks = before[1] + 1 if before and before[0] == applied else 0
            self._idle[partition] = (applied, checks)
            if checks < IDLE_TICKS:
                continue
            end = await self.reader.end_offset(partition)
            if end <= applied + 1:
                continue
            async with self._lock:
                if self.app.in_recovery or partition not in self.assigned():
                    continue
                if self.processor.partition(partition).applied != applied:  # a batch came meanwhile
                    continue
                first, last = applied + 1, end - 1
                log.warning("partition %d: offsets %d..%d were never delivered; reading them", partition, first, last)
                await self._fill(partition, applied + 1, end)

    async def _fill(self, partition: int, start: int, end: int) -> None:
        """Read offsets `[start, end)` directly, in chunks; process and commit each chunk."""
        while start < end:
            stop = min(end, start + FILL_CHUNK)
            raws = await self.reader.read(partition, start, stop)
            self.filled += len(raws)
            # Offsets missing from a direct read do not exist (transaction markers, retention): accept the gaps.
            await self._commit_results([self.processor.process(partition, raws, accept_gaps=True)])
            start = stop

    async def _commit_results(self, results: list[BatchResult]) -> None:
        """Send the outputs, wait for their delivery, then write each partition's state entries."""
        futures = [future for result in results for future in self._send(result)]
        if futures:
            await self._deliver(futures)
        table = self.table
        for result in results:
            context = PartitionContext(_Message(self.events_topic_name, result.partition))
            token = _current_event.set(weakref.ref(context))
            try:
                for key, value in result.states.items():
                    table[key] = value
            finally:
                _current_event.reset(token)
            self.processor.trim(result.partition, keep=(k.decode() for k in result.states if not is_clock_key(k)))

    def _send(self, result: BatchResult) -> list[asyncio.Future]:
        out = result.output
        dumps = rec.dumps
        sent: list[asyncio.Future] = []
        send = sent.append
        topic = self.out[USAGE_CHANGES]
        for change in out.usage_changes:
            send(topic.send_soon(key=change.account_id.encode(), value=dumps(rec.usage_change(change))))
        topic = self.out[PEAK_WINDOWS]
        for window in out.windows:
            send(topic.send_soon(key=window.account_id.encode(), value=dumps(rec.peak_window(window))))
        topic = self.out[ALERTS]
        for alert in result.alerts:
            record = alert.to_record().model_dump(mode="json")
            send(topic.send_soon(key=alert.account_id.encode(), value=dumps(record)))
        topic = self.out[INTERVALS]
        for interval in (*out.opened, *out.intervals):
            send(topic.send_soon(key=interval.account_id.encode(), value=dumps(rec.user_interval(interval))))
        for account_id, plan in out.plans:
            send(topic.send_soon(key=account_id.encode(), value=dumps(rec.plan(account_id, plan))))
        topic = self.out[DEAD_LETTERS]
        for letter in result.dead_letters:
            send(topic.send_soon(key=None, value=dumps(letter)))
        return sent

    async def _deliver(self, futures: list[asyncio.Future]) -> None:
        """Wait until the producer has delivered everything sent so far; raise if a record failed."""
        producer = self.app.producer
        while producer.buffer.size:  # Faust's buffer flush gives up after 0.1 s without progress: loop
            await producer.buffer.flush()
        await producer.flush()
        await asyncio.sleep(0)  # let delivery callbacks resolve the futures
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise RuntimeError(f"an output record was not delivered: {future.exception()!r}")

    # -- queries ---------------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Status of this worker (GET /health)."""
        watermarks: dict[str, str | None] = {}
        for partition in sorted(self.assigned()):
            raw = self.table.get(clock_key(partition))
            watermark = decode_clock(raw).watermark if raw else None
            watermarks[str(partition)] = format_ms(watermark) if watermark is not None else None
        return {
            "status": "ok",
            "app_id": self.config.app_id,
            "events_topic": self.events_topic_name,
            "partitions": sorted(self.assigned()),
            "rebalancing": bool(self.app.rebalancing),
            "watermarks": watermarks,
            "stats": {**self.processor.stats.as_dict(), "skipped_stale": self.skipped, "filled": self.filled},
        }


def _ms(timestamp: float | None) -> int | None:
    """Faust gives record timestamps in seconds; the fold wants ms."""
    return None if timestamp is None or timestamp < 0 else round(timestamp * 1000)


def live_json(view: Any) -> dict[str, Any]:
    """The JSON body of GET /accounts/{id}/usage."""
    return {
        "account_id": view.account_id,
        "usage": view.usage,
        "licenses": view.licenses,
        "overage_allowance": view.overage_allowance,
        "headroom": view.headroom,
        "today_peak": view.today_peak,
        "today_peak_at": format_ms(view.today_peak_at_ms) if view.today_peak_at_ms is not None else None,
        "as_of": format_ms(view.as_of_ms) if view.as_of_ms is not None else None,
    }


def run_worker(config: WorkerConfig, partitions: int) -> int:
    """Build the app and run it until SIGINT/SIGTERM (blocks; returns the exit status)."""
    worker = Worker(config, partitions)
    faust_worker = faust.Worker(worker.app, loglevel=config.log_level, stdout=sys.stdout, stderr=sys.stderr)
    faust_worker.spinner = None  # with a spinner, Faust sets the root logger to DEBUG below `info` (15 % slower)
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
