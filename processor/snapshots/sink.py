"""`ccmeter sink`: copy the events topic and every output topic into date-partitioned Parquet files.

The consumer assigns itself every partition (no consumer group, no committed offsets): the offsets live with the
data, in the manifest of the data directory (processor/snapshots/store.py). After a restart, or a crash anywhere,
the sink removes uncommitted leftovers and resumes at the committed offsets, so every record is stored exactly once.
Re-deliveries below the committed offset are dropped by position; outputs that the worker published twice (at-least-
once) have the same id and are deduplicated by the snapshot.

When the broker goes away (or is not there at the start), the sink commits what it has read, closes its clients and
reconnects with capped exponential backoff and jitter, logging one line per attempt, then resumes at the committed
offsets; `give_up_seconds` bounds the wait (`--once` gives up after 60 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from processor.core.fold import PartitionClock
from processor.core.model import Settings
from processor.kafka_security import KafkaAccessError, access_error, client_kwargs, current_security
from processor.snapshots.store import (
    Manifest,
    Recovery,
    StoreError,
    compact,
    file_name,
    read_manifest,
    recover,
    sink_lock,
    sync_dirs,
    write_manifest,
    write_parquet,
)
from processor.snapshots.tables import (
    EVENTS_TABLE,
    TABLES_BY_NAME,
    TOPIC_KEYS,
    BadRecord,
    Row,
    Table,
    arrow_table,
    event_row,
    output_row,
    row_date,
)
from processor.stopping import run_until_signalled
from processor.topics import EVENTS, topic_names

log = logging.getLogger("ccmeter.sink")
T = TypeVar("T")


@dataclass
class FlushStats:
    """What one flush wrote."""

    records: int = 0
    files: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


@dataclass
class SinkStats:
    """Totals of one sink run."""

    records: int = 0
    redelivered: int = 0
    bad_records: int = 0
    flushes: int = 0
    files: int = 0
    rows: Counter[str] = field(default_factory=Counter)


class SinkWriter:
    """Buffers rows of consumed records and flushes them as committed Parquet files (no Kafka here).

    `add` takes records in offset order per topic partition; `flush` writes the buffered rows, then commits the
    manifest with the new next offsets (and the event-time watermark of each events partition).
    """

    def __init__(
        self, data_dir: Path, prefix: str, settings: Settings = Settings(), events_topic: str | None = None
    ) -> None:
        self.data_dir = data_dir
        manifest = read_manifest(data_dir)
        if events_topic == topic_names(prefix)[EVENTS]:
            events_topic = None
        if manifest is None:
            manifest = Manifest(prefix=prefix, events_topic=events_topic)
        elif manifest.prefix != prefix:
            raise StoreError(f"{data_dir} holds topics with prefix {manifest.prefix!r}, not {prefix!r}")
        elif manifest.events_topic != events_topic and (manifest.offsets.get(EVENTS) or manifest.events_topic):
            held = manifest.events_topic or topic_names(prefix)[EVENTS]
            wanted = events_topic or topic_names(prefix)[EVENTS]
            raise StoreError(f"{data_dir} holds the events of {held}, not {wanted} (check --events-prefix)")
        else:
            manifest.events_topic = events_topic
        self.manifest = manifest
        self.settings = settings
        self.clocks = {p: PartitionClock(settings, w) for p, w in manifest.watermarks.items()}
        self.positions: dict[tuple[str, int], int] = {}  # next offset after what was added (not yet committed)
        self.buffers: dict[tuple[str, str, str, int], list[Row]] = defaultdict(list)
        self.pending = 0
        self.stats = SinkStats()
        self.on_commit: Callable[[Manifest], None] | None = None  # test hook: called before the manifest is written

    def next_offset(self, topic: str, partition: int) -> int | None:
        """Where consumption of a topic partition resumes (None: from the beginning)."""
        committed = self.manifest.next_offset(topic, partition)
        pending = self.positions.get((topic, partition))
        if pending is None:
            return committed
        return pending if committed is None else max(pending, committed)

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> bool:
        """Buffer one record; False when it is a re-delivery (below the resume offset) and was dropped (`headers`:
        the record's, read for dead letters)."""
        resume = self.next_offset(topic, partition)
        if resume is not None and offset < resume:
            self.stats.redelivered += 1
            return False
        self.positions[(topic, partition)] = offset + 1
        self.stats.records += 1
        if topic == EVENTS:
            table: Table = EVENTS_TABLE
            row = event_row(partition, offset, timestamp_ms, key, value)
            if row.get("rejection") is None:
                clock = self.clocks.get(partition)
                if clock is None:
                    clock = self.clocks[partition] = PartitionClock(self.settings)
                clock.admit(row["occurred_at"], timestamp_ms)
        else:
            try:
                table, row = output_row(topic, partition, offset, timestamp_ms, value, key, headers)
            except BadRecord as exc:
                self.stats.bad_records += 1
                if self.stats.bad_records <= 10:
                    log.warning("skipping bad %s record p%d@%d: %s", topic, partition, offset, exc)
                return True
        self.buffers[(table.name, row_date(table, row), topic, partition)].append(row)
        self.pending += 1
        return True

    def advance(self, topic: str, partition: int, position: int) -> None:
        """Move a partition's next offset to the consumer's position (past control records), once all is added."""
        current = self.next_offset(topic, partition)
        if current is None or position > current:
            self.positions[(topic, partition)] = position

    def dirty(self) -> bool:
        """True when something is buffered or offsets moved since the last commit."""
        return self.pending > 0 or any(self.manifest.next_offset(t, p) != o for (t, p), o in self.positions.items())

    def flush(self) -> FlushStats:
        """Write every buffered row as immutable files, then commit the manifest. Idempotent when nothing changed."""
        began = time.perf_counter()
        stats = FlushStats(records=self.pending)
        if not self.dirty():
            return stats
        dirs = set()
        for (table_name, day, topic, partition), rows in sorted(self.buffers.items()):
            table = TABLES_BY_NAME[table_name]
            offsets = [row["kafka_offset"] for row in rows]
            path = self.data_dir / table_name / f"date={day}" / file_name(topic, partition, min(offsets), max(offsets))
            write_parquet(path, arrow_table(table, rows))
            dirs.add(path.parent)
            stats.files += 1
            stats.rows[table_name] += len(rows)
        sync_dirs(dirs)
        manifest = Manifest(
            prefix=self.manifest.prefix,
            offsets={topic: dict(parts) for topic, parts in self.manifest.offsets.items()},
            watermarks={p: c.watermark for p, c in self.clocks.items() if c.watermark is not None},
            flushes=self.manifest.flushes + 1,
            events_topic=self.manifest.events_topic,
        )
        for (topic, partition), offset in self.positions.items():
            manifest.offsets.setdefault(topic, {})[partition] = offset
        if self.on_commit is not None:
            self.on_commit(manifest)
        write_manifest(self.data_dir, manifest)
        self.manifest = manifest
        self.positions.clear()
        self.buffers.clear()
        self.pending = 0
        self.stats.flushes += 1
        self.stats.files += stats.files
        self.stats.rows.update(stats.rows)
        stats.seconds = time.perf_counter() - began
        return stats


@dataclass(frozen=True)
class SinkConfig:
    """Settings of `ccmeter sink`."""

    broker: str
    prefix: str
    data_dir: Path
    once: bool = False
    events_prefix: str | None = None  # read this prefix's events topic (a rebuilt version reads the live one)
    flush_seconds: float = 30.0
    flush_records: int = 50_000
    refresh_seconds: float = 30.0
    compact_seconds: float = 300.0  # merge small committed files this often (and at the end); 0: never
    give_up_seconds: float | None = None  # stop (BrokerUnreachable) after this long without a broker; None: never
    retry_first_seconds: float = 0.5  # first wait before reconnecting, doubled per failed attempt ...
    retry_max_seconds: float = 30.0  # ... up to this (each wait is 50-100% of it, at random)
    probe_seconds: float = 5.0  # ask the broker for metadata after this long without records (finds an outage)
    metrics_bind: tuple[str, int] | None = None  # serve GET /metrics on (host, port) (processor/metrics/sink.py)


class BrokerUnreachable(Exception):
    """The broker stayed unreachable for `give_up_seconds`; what was read before is committed."""

    def __init__(self, broker: str, seconds: float, attempts: int, reason: str) -> None:
        super().__init__(
            f"broker {broker} not reachable for {seconds:.0f}s ({attempts} attempts; last: {reason}); gave up"
        )


class _Stopped(Exception):
    """A stop request arrived while the sink was connecting."""


def broker_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the broker is not reachable" (not disk errors: those stop the sink)."""
    from aiokafka.errors import KafkaError

    return (KafkaError, ConnectionError, TimeoutError)


def retry_delay(attempt: int, first: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt `attempt` (1, 2, ...): `first` doubled per attempt up to `cap`, then
    50-100% of that at random (jitter, so that many sinks do not reconnect in step)."""
    base = min(cap, first * 2 ** min(attempt - 1, 32))
    return base * (0.5 + 0.5 * (rng or random).random())


def describe_error(exc: BaseException) -> str:
    """One short line for a connection failure (no reprs of address tuples)."""
    text = re.sub(r"\s+", " ", str(exc)).strip()
    if "Unable to bootstrap" in text:
        return "cannot connect"
    if "Unable to get cluster metadata" in text:
        return "connection lost"
    text = re.sub(r"<AddressFamily\.\w+: \d+>", "", text).replace(", )", ")")
    name = type(exc).__name__
    if not text or text == name:
        return name
    return text if text.startswith(name) else f"{name}: {text}"[:200]


async def _partitions(admin: Any, names: dict[str, str]) -> dict[tuple[str, int], str]:
    """Map (topic name, partition) -> topic key for every existing ccmeter topic.

    Only topics that exist are described: a metadata request naming a missing topic would make a broker with
    `auto.topic.create.enable` create it with its default partition count.
    """
    existing = set(await admin.list_topics())
    wanted = [name for name in names.values() if name in existing]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)
    by_name = {name: key for key, name in names.items()}
    found: dict[tuple[str, int], str] = {}
    for topic in described:
        if topic.get("error_code", 0) != 0 or topic["topic"] not in by_name:
            continue
        for partition in topic["partitions"]:
            found[(topic["topic"], partition["partition"])] = by_name[topic["topic"]]
    return found


class Sink:
    """The Kafka side of the sink: assign, seek to the manifest, consume, flush; stop on `stop()`."""

    def __init__(self, config: SinkConfig, writer: SinkWriter) -> None:
        self.config = config
        self.writer = writer
        self.names = {key: name for key, name in topic_names(config.prefix).items() if key in TOPIC_KEYS}
        if config.events_prefix is not None:
            self.names[EVENTS] = topic_names(config.events_prefix)[EVENTS]
        self.stopping = asyncio.Event()
        self.ends: dict[Any, int] | None = None  # with `once`: the end offsets seen by the first session
        self.down_since: float | None = None  # monotonic time the broker was first found unreachable
        self.attempts = 0  # failed connection attempts since then
        self.failures = self.reconnects = 0  # failed attempts and reconnections since the start (metrics)
        self.consumer: Any = None  # the current session's consumer and its partitions (metrics: lag)
        self.tps: dict[Any, str] = {}

    @property
    def up(self) -> bool:
        """Whether the broker is reachable as far as the sink knows."""
        return self.down_since is None

    def stop(self) -> None:
        """Ask the loop to flush and finish."""
        self.stopping.set()

    async def run(self) -> SinkStats:
        """Consume until stopped (or, with `once`, up to the end offsets seen at the start).

        A broker that cannot be reached (at the start or later) is retried with capped exponential backoff, one
        warning line per attempt; buffered records are committed first and consumption resumes at the manifest's
        offsets. Raises BrokerUnreachable after `give_up_seconds` without a broker.
        """
        errors = broker_errors()
        while not self.stopping.is_set():
            try:
                await self._session()
                break
            except _Stopped:
                break
            except errors as exc:
                if access_error(exc, self.config.broker) is not None:  # refused, not unreachable: retrying cannot help
                    await self._commit_buffered()
                    raise
                await self._broker_failed(exc)
        await self._commit_buffered()
        return self.writer.stats

    async def _session(self) -> None:
        """Connect, assign, consume; the clients are closed however it ends."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        config = self.config
        clients: list[Any] = []
        try:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=config.broker, client_id="ccmeter-sink", request_timeout_ms=15_000, **client_kwargs()
            )
            clients.append(admin)
            await self._unless_stopped(admin.start())
            consumer = AIOKafkaConsumer(
                bootstrap_servers=config.broker,
                client_id="ccmeter-sink",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                request_timeout_ms=15_000,
                **client_kwargs(),
            )
            clients.append(consumer)
            await self._unless_stopped(consumer.start())
            tps = await self._unless_stopped(self._assign(admin, consumer, TopicPartition))
            if self.ends is None:
                self.ends = await consumer.end_offsets(list(tps)) if config.once and tps else {}
            self._reconnected()
            await self._consume(admin, consumer, TopicPartition, tps)
        finally:
            self.consumer = None
            await _close(clients)

    async def _unless_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` unless a stop request comes first: then cancel it and raise _Stopped."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise _Stopped

    def _reconnected(self) -> None:
        if self.down_since is not None:
            self.reconnects += 1
            log.warning(
                "sink: broker %s reachable again after %.1fs; resuming at the committed offsets",
                self.config.broker,
                time.monotonic() - self.down_since,
            )
        self.down_since, self.attempts = None, 0

    async def _broker_failed(self, exc: BaseException) -> None:
        """Log one line, commit what was read, give up or wait before the next attempt (a stop ends the wait)."""
        config, now = self.config, time.monotonic()
        reason = describe_error(exc)
        if self.down_since is None:  # first failure: keep what was read
            self.down_since = now
            await self._commit_buffered()
        self.attempts += 1
        self.failures += 1
        down = now - self.down_since
        if config.give_up_seconds is not None and down >= config.give_up_seconds:
            raise BrokerUnreachable(config.broker, down, self.attempts, reason)
        delay = retry_delay(self.attempts, config.retry_first_seconds, config.retry_max_seconds)
        if config.give_up_seconds is not None:
            delay = min(delay, config.give_up_seconds - down)
        log.warning(
            "sink: broker %s not reachable (attempt %d, down %.1fs: %s); retrying in %.1fs",
            config.broker,
            self.attempts,
            down,
            reason,
            delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)

    async def _commit_buffered(self) -> None:
        """Commit buffered records without the broker (their offsets are known from the records themselves)."""
        if not self.writer.dirty():
            return
        stats = await asyncio.to_thread(self.writer.flush)
        log.info("sink: flush %d: %d records, %d files", self.writer.manifest.flushes, stats.records, stats.files)

    async def _assign(self, admin: Any, consumer: Any, tp_type: type) -> dict[Any, str]:
        found = await _partitions(admin, self.names)
        missing = sorted(set(self.names.values()) - {name for name, _ in found})
        security = current_security()
        if not found and security.protocol != "PLAINTEXT":  # Kafka hides topics this principal may not DESCRIBE
            who = f"User:{security.username}" if security.username else "this client"
            raise KafkaAccessError(
                f"no access to topics {', '.join(missing)} at {self.config.broker} "
                f"(missing DESCRIBE/READ ACLs for {who}? or not created yet: ccmeter topics create)"
            )
        if missing:
            log.warning("topics not found (skipped for now): %s", ", ".join(missing))
        tps = {tp_type(name, partition): key for (name, partition), key in sorted(found.items())}
        consumer.assign(list(tps))
        resume = {tp: self.writer.next_offset(key, tp.partition) for tp, key in tps.items()}
        fresh = [tp for tp, offset in resume.items() if offset is None]
        # Ask for the log start offsets explicitly (retried on leader changes right after topic creation) instead of
        # seek_to_beginning, whose lazy reset backs off for seconds when the first attempt fails.
        starts = await consumer.beginning_offsets(fresh) if fresh else {}
        for tp, offset in resume.items():
            consumer.seek(tp, starts[tp] if offset is None else offset)
        self.consumer, self.tps = consumer, tps
        return tps

    async def _consume(self, admin: Any, consumer: Any, tp_type: type, tps: dict[Any, str]) -> None:
        config, writer = self.config, self.writer
        c = consumer
        ends = self.ends or {}
        log.info("sink: %d partitions of %d topics into %s", len(tps), len(set(tps.values())), config.data_dir)
        last_flush = last_refresh = last_compact = last_seen = time.monotonic()
        while not self.stopping.is_set():
            if config.once and await self._reached(c, tps, ends):
                break
            batches = await c.getmany(timeout_ms=250, max_records=config.flush_records)
            if batches:
                last_seen = time.monotonic()
            elif time.monotonic() - last_seen >= config.probe_seconds:
                await asyncio.wait_for(c.topics(), 15)  # raises when the broker is gone (fetches only retry)
                last_seen = time.monotonic()
            for tp, records in batches.items():
                key = tps.get(tp)
                if key is None:
                    continue
                for record in records:
                    writer.add(
                        key, tp.partition, record.offset, record.timestamp, record.key, record.value, record.headers
                    )
            now = time.monotonic()
            if writer.pending >= config.flush_records or (now - last_flush >= config.flush_seconds and writer.dirty()):
                await self._flush(c, tps)
                last_flush = time.monotonic()
            if config.compact_seconds and now - last_compact >= config.compact_seconds:
                await self._compact()
                last_compact = time.monotonic()
            if not config.once and now - last_refresh >= config.refresh_seconds:
                last_refresh = now
                found = await _partitions(admin, self.names)
                if len(found) != len(tps):
                    tps = await self._assign(admin, c, tp_type)
        await self._flush(c, tps)
        if config.compact_seconds:
            await self._compact()

    async def _compact(self) -> None:
        done = await asyncio.to_thread(compact, self.writer.data_dir, self.writer.manifest)
        if done.groups:
            log.info("sink: merged %d small files into %d", done.files_in, done.files_out)

    async def _reached(self, consumer: Any, tps: dict[Any, str], ends: dict[Any, int]) -> bool:
        for tp in tps:
            if await consumer.position(tp) < ends.get(tp, 0):
                return False
        return True

    async def _flush(self, consumer: Any, tps: dict[Any, str]) -> None:
        writer = self.writer
        for tp, key in tps.items():
            writer.advance(key, tp.partition, await consumer.position(tp))
        if not writer.dirty():
            return
        stats = await asyncio.to_thread(writer.flush)
        lag = 0
        for tp in tps:
            high = consumer.highwater(tp)
            if high is not None:
                lag += max(0, high - await consumer.position(tp))
        rows = ", ".join(f"{name} {count}" for name, count in sorted(stats.rows.items())) or "no rows"
        watermark = writer.manifest.watermark_ms
        from schemas.events import format_ms

        log.info(
            "sink: flush %d: %d records, %d files (%s) in %.2fs; watermark %s; lag %d",
            writer.manifest.flushes,
            stats.records,
            stats.files,
            rows,
            stats.seconds,
            format_ms(watermark) if watermark is not None else "-",
            lag,
        )


async def _close(clients: list[Any]) -> None:
    """Stop aiokafka clients quietly, newest first (a lost broker makes their close raise or cancel itself)."""
    for client in reversed(clients):
        close = client.stop if hasattr(client, "stop") else client.close
        try:
            await close()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception as exc:  # noqa: BLE001 - closing after a failure: nothing left to do about it
            log.debug("sink: closing %s: %s", type(client).__name__, exc)


def replay_watermarks(data_dir: Path, manifest: Manifest, settings: Settings = Settings()) -> dict[int, int]:
    """The event-time watermark of each events partition, replayed from the committed events files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from processor.snapshots.store import data_files

    columns = ["kafka_partition", "kafka_offset", "kafka_ts", "occurred_at", "rejection"]
    parts = [
        pq.read_table(path, columns=columns)
        for path in data_files(data_dir, EVENTS_TABLE)
        if manifest.committed(path.name)
    ]
    if not parts:
        return {}
    table = pa.concat_tables(parts).filter(pc.is_null(pc.field("rejection")))
    table = table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    clocks: dict[int, PartitionClock] = {}
    partitions = table.column("kafka_partition").to_pylist()
    times = table.column("occurred_at").cast("int64").to_pylist()
    stamps = table.column("kafka_ts").cast("int64").to_pylist()
    for partition, at_ms, stamp in zip(partitions, times, stamps, strict=True):
        clock = clocks.get(partition)
        if clock is None:
            clock = clocks[partition] = PartitionClock(settings)
        clock.admit(at_ms, stamp)
    return {p: c.watermark for p, c in clocks.items() if c.watermark is not None}


def prepare_resume(data_dir: Path) -> Manifest | None:
    """Recover the data directory (the caller holds the lock) and return the manifest to resume from."""

    def commit_rewind(recovery: Recovery) -> None:
        for (topic, partition), (old, new) in sorted(recovery.rewound.items()):
            log.warning(
                "sink: %s partition %d rewound from offset %d to %d (file boundary)", topic, partition, old, new
            )
        assert recovery.manifest is not None
        recovery.manifest.watermarks = replay_watermarks(data_dir, recovery.manifest)  # as of the rewound offsets
        write_manifest(data_dir, recovery.manifest)

    recovery = recover(data_dir, read_manifest(data_dir), on_rewind=commit_rewind)
    manifest = recovery.manifest
    if recovery.removed:
        log.info("sink: removed %d uncommitted or temporary files left by an earlier run", len(recovery.removed))
    if manifest is not None and not manifest.watermarks and manifest.offsets.get(EVENTS):
        manifest.watermarks = replay_watermarks(data_dir, manifest)  # a manifest written without them
        if manifest.watermarks:
            write_manifest(data_dir, manifest)
    return manifest


def run_sink(config: SinkConfig) -> SinkStats:
    """Run the sink in the foreground; SIGTERM or Ctrl-C flush, commit and stop (a second Ctrl-C aborts).

    Raises BrokerUnreachable when the broker stays away for `config.give_up_seconds` (what was read is committed).
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with sink_lock(config.data_dir):
        prepare_resume(config.data_dir)
        events_topic = topic_names(config.events_prefix)[EVENTS] if config.events_prefix is not None else None
        writer = SinkWriter(config.data_dir, config.prefix, events_topic=events_topic)
        return asyncio.run(_main(config, writer))


async def _main(config: SinkConfig, writer: SinkWriter) -> SinkStats:
    sink = Sink(config, writer)

    def announce() -> None:
        log.info("sink: stopping (flushing what was read; signal again to abort)")

    server = None
    if config.metrics_bind is not None:
        from processor.metrics.sink import serve, sink_registry

        server = await serve(sink_registry(sink), *config.metrics_bind)
        log.info("sink: metrics on http://%s:%d/metrics", *config.metrics_bind)
    try:
        return await run_until_signalled(sink.run, sink.stop, announce)
    finally:
        if server is not None:
            await server.cleanup()
