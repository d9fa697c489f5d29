"""The worker's state store: each owned partition's state entries in memory, backed by a compacted changelog topic.

Why the worker owns this instead of using a Faust table: Faust writes a table's local store at once but records its
changelog position only when the changelog write is acknowledged, and nothing waits for those acknowledgements; on
restart Faust replays older changelog entries over newer local data (issue 11: the same window emitted twice with
different content after a SIGKILL with `--store rocksdb://`). Here the order is explicit (processor/app.py): the
entries of a batch are written to the changelog through the worker's own producer and acknowledged (with
transactions: committed) before this store applies them, so the store never holds anything the changelog does not.

- The changelog topic is `changelog_topic(app_id)` (`{app_id}-state-changelog`, the name Faust used, so existing
  deployments and `ccmeter replay` keep working); its partition is the events partition; keys and values are the
  entries of processor/worker/state.py, unchanged.
- `acquire` brings a partition's entries up to the changelog's end (read `read_committed`, so records of aborted or
  fenced transactions are never applied), `apply` records one batch's acknowledged entries, `release` lets the
  partition go (a clean hand-over), `forget` drops it without trusting anything kept.
- With `rocksdb://` each partition also has a local RocksDB file (`DATA_DIR/state/{changelog}/{p}.db`), a cache
  for fast restarts only. It is trusted only if a clean-shutdown checkpoint file beside it (`{p}.checkpoint`, written
  by `release`) says which changelog offset it reflects, and that offset is still within the changelog; the file is
  deleted when the partition is acquired, so after a crash (no checkpoint) the local copy is wiped and the partition
  restored from the changelog. This is Kafka Streams' rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from processor.kafka_security import client_kwargs
from processor.worker.errors import RecoveryError

log = logging.getLogger("ccmeter.worker")

FETCH_BYTES = 16 * 1024 * 1024
RECOVERY_POLL_MS = 500
RECOVERY_STALL_S = 60.0


def changelog_topic(app_id: str) -> str:
    """The changelog topic of an app id's state (also read and written by `ccmeter replay`)."""
    return f"{app_id}-state-changelog"


async def ensure_changelog(bootstrap: str, topic: str, partitions: int, replication: int) -> int:
    """Create the compacted changelog topic if it is missing; its partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000, **client_kwargs())
    await admin.start()
    try:
        if topic not in set(await admin.list_topics()):
            new = NewTopic(topic, partitions, replication, topic_configs={"cleanup.policy": "compact"})
            response = await admin.create_topics([new], timeout_ms=15_000)
            for name, code, *_ in response.topic_errors:
                if code and for_code(code) is not TopicAlreadyExistsError:
                    raise for_code(code)(f"creating the changelog topic {name}")
        return await _partition_count(admin, topic)
    finally:
        await admin.close()


async def _partition_count(admin: AIOKafkaAdminClient, topic: str, timeout: float = 15.0) -> int:
    """Partitions of `topic` once each has a leader (a topic just created may not show them at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics([topic])
        partitions = (described[0].get("partitions") or []) if described else []
        if partitions and all(p["leader"] >= 0 for p in partitions):
            return len(partitions)
        if loop.time() >= deadline:
            return len(partitions)
        await asyncio.sleep(0.1)


@dataclass
class PartitionData:
    """One partition's entries and the changelog offset up to which they reflect every committed record."""

    entries: dict[bytes, bytes] = field(default_factory=dict)
    position: int = 0
    cache: Any = None  # the partition's Rdict with rocksdb://


class LocalCache:
    """Per-partition RocksDB files and their clean-shutdown checkpoints (rocksdb:// only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, partition: int) -> tuple[Path, Path]:
        return self.directory / f"{partition}.db", self.directory / f"{partition}.checkpoint"

    def take_checkpoint(self, partition: int) -> int | None:
        """The offset the clean checkpoint names, and delete it (a crash from now on means: not trusted)."""
        _, checkpoint = self._paths(partition)
        try:
            position = int(json.loads(checkpoint.read_text())["position"])
        except (OSError, ValueError, KeyError, TypeError):
            position = None
        with contextlib.suppress(FileNotFoundError):
            checkpoint.unlink()
            _fsync_dir(self.directory)
        return position

    def open(self, partition: int, wipe: bool) -> tuple[Any, dict[bytes, bytes]]:
        """The partition's database (wiped first if asked) and its entries."""
        from rocksdict import Options, Rdict

        path, _ = self._paths(partition)
        self.directory.mkdir(parents=True, exist_ok=True)
        if wipe and path.exists():
            shutil.rmtree(path, ignore_errors=True)
        db = Rdict(str(path), Options(raw_mode=True))
        return db, ({} if wipe else dict(db.items()))

    @staticmethod
    def write(db: Any, entries: dict[bytes, bytes | None]) -> None:
        """Write entries (None: delete) in one batch, without the WAL: a crash wipes the file anyway."""
        from rocksdict import WriteBatch, WriteOptions

        batch = WriteBatch(raw_mode=True)
        for key, value in entries.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        options = WriteOptions()
        options.disable_wal = True
        db.write(batch, options)

    def close(self, partition: int, db: Any, position: int | None) -> None:
        """Flush and close; with a position, write the clean-shutdown checkpoint naming it."""
        db.flush()
        db.close()
        if position is None:
            return
        _, checkpoint = self._paths(partition)
        tmp = checkpoint.with_suffix(".tmp")
        with tmp.open("w") as handle:
            json.dump({"position": position}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, checkpoint)
        _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ChangelogStore:
    """State entries of the owned partitions (the worker's `StateStore`), backed by the changelog topic."""

    def __init__(self, bootstrap: str, topic: str, store_url: str = "memory://", data_dir: str = ".") -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.cache = LocalCache(Path(data_dir) / "state" / topic) if store_url.startswith("rocksdb://") else None
        self._owned: dict[int, PartitionData] = {}
        self._dormant: dict[int, PartitionData] = {}  # released cleanly (memory:// only): caught up on re-acquire
        self.on_recovery_batch: Callable[[], None] = lambda: None  # fault injection point (tests)
        self.restored = 0  # changelog records applied by recoveries since start

    # -- StateStore ------------------------------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """The entry of `key` in an owned partition, else None."""
        for data in self._owned.values():
            value = data.entries.get(key)
            if value is not None:
                return value
        return None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every entry of the owned partitions."""
        for data in list(self._owned.values()):
            yield from data.entries.items()

    # -- ownership -------------------------------------------------------------------------------------------------

    def owned(self) -> set[int]:
        """Partitions acquired and not released."""
        return set(self._owned)

    def position(self, partition: int) -> int:
        """The changelog offset up to which `partition`'s entries reflect the changelog."""
        return self._owned[partition].position

    async def acquire(self, partitions: list[int]) -> None:
        """Bring `partitions` up to the changelog's committed end and own them; RecoveryError if that fails."""
        partitions = [p for p in partitions if p not in self._owned]
        if not partitions:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_bytes=FETCH_BYTES,
            **client_kwargs(),
        )
        loaded: dict[int, PartitionData] = {}
        try:
            await consumer.start()
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)  # read_committed: the last stable offset
            for tp in tps:
                loaded[tp.partition] = data = self._starting_point(tp.partition, starts[tp], ends[tp])
                consumer.seek(tp, data.position)
            await self._read_to_end(consumer, loaded, {tp: ends[tp] for tp in tps})
        except KafkaError as exc:
            for partition, data in loaded.items():
                self._close_cache(partition, data, None)
            raise RecoveryError(f"reading {self.topic}: {exc!r}", set(partitions)) from exc
        finally:
            await consumer.stop()
        for partition, data in loaded.items():
            self._owned[partition] = data
            log.info(
                "partition %d: state recovered, %d entries, changelog %s up to offset %d",
                partition,
                len(data.entries),
                self.topic,
                data.position,
            )

    def _starting_point(self, partition: int, start: int, end: int) -> PartitionData:
        """What is already known of the partition (dormant memory, a trusted local file) or nothing."""
        data = self._dormant.pop(partition, None)
        if self.cache is not None:
            position = self.cache.take_checkpoint(partition)
            trusted = position is not None and start <= position <= end
            db, entries = self.cache.open(partition, wipe=not trusted)
            if not trusted:
                log.info("partition %d: local state file not trusted (no clean checkpoint): rebuilt", partition)
            return PartitionData(entries, position if trusted else start, db)
        if data is not None and start <= data.position <= end:
            return data
        return PartitionData({}, start)

    async def _read_to_end(
        self, consumer: AIOKafkaConsumer, loaded: dict[int, PartitionData], ends: dict[TopicPartition, int]
    ) -> None:
        remaining = {tp for tp in ends if loaded[tp.partition].position < ends[tp]}
        loop = asyncio.get_running_loop()
        progress_at, last = loop.time(), -1
        while remaining:
            if loop.time() - progress_at > RECOVERY_STALL_S:
                stuck = {tp.partition: loaded[tp.partition].position for tp in remaining}
                raise RecoveryError(f"no progress for {RECOVERY_STALL_S:.0f}s at offsets {stuck}", set(stuck))
            if self.restored != last:
                progress_at, last = loop.time(), self.restored
            batches = await consumer.getmany(*remaining, timeout_ms=RECOVERY_POLL_MS)
            for tp, records in batches.items():
                if not records:
                    continue
                data = loaded[tp.partition]
                changes = {r.key: r.value for r in records if r.key is not None}
                self._merge(data, changes)
                self.restored += len(records)
                self.on_recovery_batch()
            for tp in list(remaining):
                position = await consumer.position(tp)
                loaded[tp.partition].position = max(loaded[tp.partition].position, min(position, ends[tp]))
                if position >= ends[tp]:
                    remaining.discard(tp)
                    progress_at = loop.time()

    def apply(self, partition: int, entries: dict[bytes, bytes], position: int) -> None:
        """Record a batch's entries once the changelog has them (`position`: the offset after the last one)."""
        data = self._owned[partition]
        self._merge(data, entries)
        data.position = max(data.position, position)

    def _merge(self, data: PartitionData, changes: dict[bytes, bytes | None]) -> None:
        entries = data.entries
        for key, value in changes.items():
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = value
        if data.cache is not None:
            LocalCache.write(data.cache, changes)

    def release(self, partition: int) -> None:
        """Let the partition go cleanly: its entries are exactly the changelog's up to its position."""
        data = self._owned.pop(partition, None)
        if data is None:
            return
        if data.cache is not None:
            self._close_cache(partition, data, data.position)
        else:
            self._dormant[partition] = data

    def forget(self, partition: int) -> None:
        """Drop the partition without trusting what is kept (fenced: someone else may have written since)."""
        data = self._owned.pop(partition, None)
        self._dormant.pop(partition, None)
        if data is not None:
            self._close_cache(partition, data, None)

    def _close_cache(self, partition: int, data: PartitionData, position: int | None) -> None:
        if data.cache is not None and self.cache is not None:
            db, data.cache = data.cache, None
            try:
                self.cache.close(partition, db, position)
            except Exception as exc:  # noqa: BLE001 - an unclosed cache is wiped at the next acquire
                log.warning("closing a local state file failed (%r): it will be restored from the changelog", exc)

    def close(self) -> None:
        """Release every owned partition (clean shutdown: checkpoints written)."""
        for partition in sorted(self._owned):
            self.release(partition)
