"""The streaming worker: a Faust app for group membership, the state table, live queries and health; the events
themselves are read by the worker's own aiokafka consumer (processor/worker/feed.py).

Faust's consumer group assigns the events partitions (and with them the partitions of the `state` table and its
changelog); Faust recovers the table after every rebalance and serves the HTTP views. A pump task then reads the
owned partitions directly, each from its stored applied offset + 1, and per batch:

1. folds the records with `StreamProcessor.process` (processor/worker), one result per partition;
2. sends every output record through its own producer in per-partition batches and waits until the broker has
   acknowledged them all (processor/worker/sender.py);
3. writes each touched account's state entry once, then the partition's clock entry, to the `state` table, whose
   changelog partition is the events partition;
4. every commit interval, commits `applied + 1` per partition for the consumer group (for lag monitoring only: the
   applied offsets in the table are what the worker resumes from).

So outputs are delivered before the state that says they were produced: after a crash, records are read again from
the stored applied offset and outputs may repeat (same ids), but none are lost. On a rebalance, Faust waits for the
batch in flight (the revocation handler takes the pump's lock) before it hands partitions over.

Why not Faust's stream: it delivers about 7,000 events/s here whatever the agent does, and around restarts and
rebalances it drops records in flight and commits offsets it never delivered (docs/performance.md,
docs/semantics.md). An agent stays subscribed to the events topic so that Faust assigns it and co-partitions the
table; the pump pauses those partitions in Faust's consumer, and records the agent still gets are ignored.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
import weakref
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TP

from processor.core.fold import LiveView
from processor.topics import EVENTS, topic_names
from processor.worker.config import WorkerConfig
from processor.worker.feed import PartitionFeed
from processor.worker.partition import BatchResult
from processor.worker.peers import FORWARDED_HEADER, RETRY_AFTER_S, Answer, Local, PeerRouter, peer_urls
from processor.worker.runner import StreamProcessor
from processor.worker.sender import BatchSender, output_records
from processor.worker.state import account_header, account_key, clock_key, decode_clock, is_clock_key
from schemas.events import format_ms

log = logging.getLogger("ccmeter.worker")

TABLE_NAME = "state"
EXIT_CRASH = 70
GC_THRESHOLD = 50_000  # allocations between young-generation collections (docs/performance.md)
WAIT_S = 0.05  # pause of the pump while Faust rebalances or recovers the table


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
    """The app, its table, the pump and the views."""

    def __init__(self, config: WorkerConfig, partitions: int) -> None:
        self.config = config
        self.partitions = partitions
        self.names = names = {**topic_names(config.prefix), EVENTS: config.events}
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
            producer_acks=-1,
            processing_guarantee="at_least_once",
        )
        raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw"}
        raw["value_serializer"] = "raw"
        self.events = app.topic(names[EVENTS], **raw)
        self.table = app.Table(
            TABLE_NAME, partitions=partitions, key_type=bytes, value_type=bytes, help="ccmeter account and clock state"
        )
        self.feed = PartitionFeed(config.broker, names[EVENTS])
        self.sender = BatchSender(config.broker)
        self.ignored = 0  # records Faust's stream delivered to the placeholder agent
        self._lock = asyncio.Lock()  # held for a whole batch; the revocation handler takes it too
        self._committed: dict[int, int] = {}
        self._commit_due = 0.0
        self.processor = StreamProcessor(
            self.events_topic_name, config.settings, TableStore(self.table), share=config.near_capacity
        )
        self.router = PeerRouter()
        self._register()

    # -- wiring ----------------------------------------------------------------------------------------------------

    def _register(self) -> None:
        app, worker = self.app, self

        @app.agent(self.events, name="ccmeter-assignment", concurrency=1)
        async def assignment(stream: faust.StreamT) -> None:
            """Keeps the events topic in Faust's subscription (the pump reads it); ignores what it is given."""
            async for _ in stream.events():
                worker.ignored += 1

        @app.task
        async def pump() -> None:
            try:
                await worker.pump()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - state may be half updated: stop hard, the table knows what was applied
                log.exception("processing failed; exiting so that a fresh worker resumes from the stored state")
                logging.shutdown()
                os._exit(EXIT_CRASH)

        async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
            async with worker._lock:  # let the batch in flight finish before the partitions go elsewhere
                worker.processor.reset()
                worker._committed.clear()
                await worker.flush_table_writes()

        async def on_rebalance(sender: Any, *args: Any, **kwargs: Any) -> None:
            worker.processor.reset()

        app.on_partitions_revoked.connect(on_revoked)
        app.on_partitions_assigned.connect(on_rebalance)
        app.on_rebalance_complete.connect(on_rebalance)  # after table recovery

        @app.service
        class CloseClients(faust.Service):
            """Stops the pump's consumer and producer with the app."""

            async def on_stop(self) -> None:
                async with worker._lock:
                    await worker.flush_table_writes()
                    await worker.feed.close()
                    await worker.sender.close()
                await worker.router.close()

        @app.page("/accounts/{account_id}/usage")
        class AccountUsage(faust.web.View):
            """Live usage of one account, answered by any worker (this one or a peer: processor/worker/peers.py)."""

            async def get(self, request: faust.web.Request, account_id: str) -> faust.web.Response:
                forwarded = FORWARDED_HEADER in request.headers
                answer = await worker.live_answer(account_id, str(request.rel_url), forwarded)
                headers = {"Retry-After": str(RETRY_AFTER_S)} if answer.status == 503 else None
                return self.json(answer.body, status=answer.status, headers=headers)

        @app.page("/health")
        class Health(faust.web.View):
            """Liveness and counters of this worker."""

            async def get(self, request: faust.web.Request) -> faust.web.Response:
                return self.json(worker.health())

    # -- the pump --------------------------------------------------------------------------------------------------

    def assigned(self) -> set[int]:
        """Events-topic partitions this worker owns now."""
        name = self.events_topic_name
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == name}

    def ready(self) -> bool:
        """Whether the assignment is settled and the table recovered."""
        app = self.app
        return not (app.rebalancing or app.in_recovery) and app.tables.recovery.completed.is_set()

    async def pump(self) -> None:
        """Read, fold, send, store: until the app stops (see the module docstring)."""
        config = self.config
        while not self.app.should_stop:
            if not self.ready():
                await asyncio.sleep(WAIT_S)
                continue
            async with self._lock:
                mine = sorted(self.assigned()) if self.ready() else []
                if not mine:
                    await asyncio.sleep(WAIT_S)
                    continue
                tps = {TP(self.events_topic_name, p) for p in mine}
                self.app.consumer.pause_partitions(tps)  # Faust resumes them after each recovery
                positions = {p: await self._position(p) for p in mine}
                fetched = await self.feed.fetch(positions, config.batch_size, config.batch_within)
                if fetched:
                    results = [self.processor.process(p, raws, accept_gaps=True) for p, raws in fetched.items()]
                    await self.commit_results(results)
                await self._commit_offsets(mine)

    async def _position(self, partition: int) -> int:
        """The next offset to read: the stored applied offset + 1, else the partition's log start."""
        state = self.processor.partition(partition)
        if not state.start_known:
            state.applied = max(state.applied, await self.feed.log_start(partition) - 1)
            state.start_known = True
        return state.applied + 1

    async def commit_results(self, results: list[BatchResult]) -> None:
        """Send the outputs, wait for their delivery, then write each partition's state entries."""
        names = self.names
        await self.sender.send(record for result in results for record in output_records(names, result))
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

    async def flush_table_writes(self) -> None:
        """Wait until Faust's producer has delivered the table's changelog writes."""
        producer = self.app.producer
        while producer.buffer.size:  # Faust's buffer flush gives up after 0.1 s without progress: loop
            await producer.buffer.flush()
        await producer.flush()

    async def _commit_offsets(self, partitions: list[int]) -> None:
        """Every commit interval: commit `applied + 1` of each owned partition for the group (lag monitoring)."""
        now = time.monotonic()
        if now < self._commit_due:
            return
        self._commit_due = now + self.config.commit_interval / 1000
        offsets = {}
        for partition in partitions:
            next_offset = self.processor.partition(partition).applied + 1
            if next_offset > 0 and self._committed.get(partition) != next_offset:
                offsets[TP(self.events_topic_name, partition)] = next_offset
        if not offsets:
            return
        try:
            # Faust's commit path: it flushes the producer (the table writes) first, then commits.
            await self.app.consumer._commit_offsets(offsets)
        except Exception as exc:  # noqa: BLE001 - monitoring only: the table holds the applied offsets
            log.warning("committing offsets %s failed: %r", {tp.partition: o for tp, o in offsets.items()}, exc)
            return
        self._committed.update({tp.partition: offset for tp, offset in offsets.items()})

    # -- queries ---------------------------------------------------------------------------------------------------

    async def live_answer(self, account_id: str, path: str, forwarded: bool) -> Answer:
        """Status and body of GET /accounts/{account_id}/usage (`path`: the request's encoded path and query)."""
        local = self.local_live(account_id)
        peers = [] if forwarded or local.body is not None else self.peer_urls()
        return await self.router.answer(account_id, path, forwarded, local, peers, self.all_partitions())

    def local_live(self, account_id: str) -> Local:
        """This worker's part of a live query: settled or not, its partitions, its answer if it holds the account."""
        if not self.ready():
            return Local(False, frozenset())
        mine = frozenset(self.assigned())
        view = own_view(self.processor, account_id, mine)
        return Local(True, mine, live_json(view) if view is not None else None)

    def peer_urls(self) -> list[str]:
        """Web URLs of the other members of the group that own partitions (from the last assignment)."""
        # Faust's router (public API): {member canonical_url: {changelog topic: [active partitions]}}.
        members = self.app.router.table_metadata(TABLE_NAME)
        return peer_urls(members, str(self.app.conf.canonical_url))

    def all_partitions(self) -> range:
        """Every partition of the events topic (a 404 needs all of them checked)."""
        # Faust's consumer (public ConsumerT method): the partition count from the group's metadata.
        count = self.app.consumer.topic_partitions(self.events_topic_name)
        return range(count or self.partitions)

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
            "stats": {
                **self.processor.stats.as_dict(),
                "ignored_stream_records": self.ignored,
                "outputs": self.sender.sent,
            },
        }


def _ms(timestamp: float | None) -> int | None:
    """Faust gives record timestamps in seconds; the fold wants ms."""
    return None if timestamp is None or timestamp < 0 else round(timestamp * 1000)


def own_view(processor: StreamProcessor, account_id: str, mine: frozenset[int]) -> LiveView | None:
    """The account's live view if one of the partitions `mine` holds it, else None. The table may also hold copies of
    other partitions (standby replicas, entries written before a rebalance moved a partition away): not ours."""
    try:
        key = account_key(account_id)
    except UnicodeError:  # e.g. a lone surrogate from a percent-encoded path
        return None
    if is_clock_key(key):
        return None
    raw = processor.store.get(key)
    if raw is not None and account_header(raw)[0] not in mine:
        return None
    return processor.live_view(account_id)


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
        "data_through": format_ms(view.data_through_ms) if view.data_through_ms is not None else None,
    }


def run_worker(config: WorkerConfig, partitions: int) -> int:
    """Build the app and run it until SIGINT/SIGTERM (blocks; returns the exit status)."""
    worker = Worker(config, partitions)
    # Every event allocates short-lived tuples and dicts; with Python's default threshold (700) the cyclic
    # collector runs every few events. Fewer, larger young-generation collections: about 10% more events/s.
    gc.set_threshold(GC_THRESHOLD, 20, 100)
    faust_worker = faust.Worker(worker.app, loglevel=config.log_level, stdout=sys.stdout, stderr=sys.stderr)
    faust_worker.spinner = None  # with a spinner, Faust sets the root logger to DEBUG below `info` (15 % slower)
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
