"""A pre-loaded events topic with several partitions (issue 13 scale-out and replay benches), and a group of
`ccmeter worker` processes timed until every record is applied.

Records go to the partition Kafka's default partitioner picks for their key (murmur2 of the account id), so every
account stays on one partition and the accounts spread. The simulated dataset ends with one watermark pusher; here
each partition gets its own (an account of the `~` kind whose key lands on that partition), since each partition's
clock closes only its own accounts' windows.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from bench.common import Row, log
from bench.data import SimDataset, pusher_time
from bench.kafka_io import record_key
from bench.procs import Proc, cpu_seconds, rss_mib, start_worker
from bench.worker_bench import Loaded
from processor.topics import EVENTS, create_topics, topic_names
from schemas.events import format_ms


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of Kafka's default partitioner for a non-empty key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def pusher_accounts(partitions: int) -> list[str]:
    """One throwaway account per partition (index = partition), found by trying `~push-N` names."""
    found: dict[int, str] = {}
    number = 0
    while len(found) < partitions:
        name = f"~push-{number}"
        found.setdefault(partition_of(name.encode(), partitions), name)
        number += 1
    return [found[p] for p in range(partitions)]


def pusher_for(account: str, at_ms: int) -> bytes:
    """An api.request of `account` at `at_ms` (moves its partition's watermark there)."""
    body = {
        "event_id": "push",
        "type": "api.request",
        "account_id": account,
        "occurred_at": format_ms(at_ms),
        "user_id": "p",
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def _produce(bootstrap: str, topic: str, lines: Sequence[bytes], stamps: Sequence[int], partitions: int) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1024 * 1024, max_request_size=4 << 20
    )
    await producer.start()
    began = time.perf_counter()
    placed: dict[bytes | None, int] = {}
    try:
        pending: list[asyncio.Future[Any]] = []
        batches: dict[int, Any] = {}
        for line, stamp in zip(lines, stamps, strict=True):
            key = record_key(line)
            partition = placed.get(key)
            if partition is None:
                partition = placed[key] = partition_of(key, partitions) if key else 0
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=line, timestamp=stamp) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=line, timestamp=stamp)
                if len(pending) >= 32:
                    await asyncio.gather(*pending)
                    pending.clear()
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - began


@dataclass
class Feed:
    """Topics created under a fresh prefix, and the records still to publish to the events topic."""

    bootstrap: str
    prefix: str
    names: dict[str, str]
    dataset: SimDataset
    partitions: int
    lines: list[bytes]
    stamps: list[int]

    def publish(self) -> Loaded:
        """Pre-load the events topic with every record; the loaded topic."""
        log(f"pre-loading {len(self.lines):,} records into {self.names[EVENTS]} ({self.partitions} partitions)")
        seconds = asyncio.run(_produce(self.bootstrap, self.names[EVENTS], self.lines, self.stamps, self.partitions))
        log(f"pre-loaded in {seconds:.1f} s ({len(self.lines) / seconds:,.0f} records/s)")
        return Loaded(self.bootstrap, self.prefix, self.names, self.dataset, len(self.lines), seconds)


def prepare(bootstrap: str, dataset: SimDataset, partitions: int, label: str = "bench") -> Feed:
    """Create the topics under a fresh prefix with `partitions` partitions each; the records to publish: the
    dataset's events by key, then one watermark pusher per partition."""
    prefix = f"{label}-{uuid.uuid4().hex[:8]}."
    asyncio.run(create_topics(bootstrap, prefix, partitions, 1))
    lines, stamps = dataset.lines()[:-1], dataset.timestamps()[:-1]  # without the dataset's single pusher
    at = pusher_time(max(stamps))
    pushers = pusher_accounts(partitions)
    lines += [pusher_for(account, at) for account in pushers]
    stamps += [at] * len(pushers)
    return Feed(bootstrap, prefix, topic_names(prefix), dataset, partitions, lines, stamps)


def preload_partitioned(bootstrap: str, dataset: SimDataset, partitions: int, label: str = "bench") -> Loaded:
    """`prepare`, then publish everything: a pre-loaded topic."""
    return prepare(bootstrap, dataset, partitions, label).publish()


def spread(loaded: Loaded, partitions: int) -> dict[int, int]:
    """Records per partition of a pre-loaded topic (from the keys, as the producer placed them)."""
    counts: dict[int, int] = defaultdict(int)
    for line in loaded.dataset.lines()[:-1]:
        key = record_key(line)
        counts[partition_of(key, partitions) if key else 0] += 1
    for partition in range(partitions):
        counts[partition] += 1  # its pusher
    return dict(sorted(counts.items()))


async def _committed_all(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if isinstance(tp, TopicPartition)
            and tp.topic == topic and meta is not None and meta.offset >= 0}  # fmt: skip


def committed_all(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset of every partition of `topic` that has one."""
    return asyncio.run(_committed_all(bootstrap, group, topic))


@dataclass
class GroupRun:
    """What a group of workers measured (samples: (wall, records applied by all, CPU seconds of all))."""

    workers: int
    rate: float
    cpu_rate: float
    seconds: float
    records: int
    preload_seconds: float  # of the pre-load, which overlaps the first part of the measurement
    rss_mib: list[float]
    partitions: list[list[int]]
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)


def run_group(feed: Feed, workdir: Path, workers: int, label: str) -> tuple[GroupRun, Loaded]:
    """Start `workers` `ccmeter worker` processes in one consumer group on the still empty topic, wait until every
    partition is owned, then pre-load the topic (in a thread) and time the workers until every record is applied.

    Starting the workers first keeps a rebalance out of the measurement: a worker started on a full topic takes
    every partition and works alone until the next one has joined (seen: 380,000 of 545,000 records). Progress is
    the sum of the workers' own counters (GET /health, `stats.records - stats.redelivered`), polled every 0.1 s: the
    first sample with records > 0 starts the clock (those records not counted, as in worker_bench), the first with
    every record done stops it; the committed offsets are then checked to reach the ends. The pre-load runs during
    the first part of the measurement (the workers consume as the records arrive)."""
    app_id = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    partitions = feed.partitions
    procs: list[Proc] = [
        start_worker(feed.bootstrap, feed.prefix, app_id, workdir / f"{app_id}-w{index}", "--partitions",
                     str(partitions))
        for index in range(workers)
    ]  # fmt: skip
    try:
        owned = _wait_settled(procs, partitions)
        total = len(feed.lines)
        published: list[Loaded] = []
        publisher = threading.Thread(target=lambda: published.append(feed.publish()), daemon=True)
        publisher.start()
        samples: list[tuple[float, int, float]] = []
        healths: list[dict[str, Any]] = [{} for _ in procs]
        deadline = time.monotonic() + 90 + total / 2_000
        while time.monotonic() < deadline:
            for index, proc in enumerate(procs):
                if not proc.alive():
                    raise RuntimeError(f"worker {index} exited:\n{proc.tail()}")
                body = proc.health()
                if body:
                    healths[index] = body
            done = sum(_applied(h) for h in healths)
            if done:
                samples.append((time.perf_counter(), done, sum(cpu_seconds(p.pid) for p in procs)))
                if done >= total:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{label}: {workers} workers did not finish {total} records in time:\n{procs[0].tail()}")
        publisher.join(timeout=60)
        if not published:
            raise RuntimeError(f"{label}: the pre-load did not finish")
        loaded = published[0]
        (t0, r0, c0), (t1, r1, c1) = samples[0], samples[-1]
        rate = (r1 - r0) / (t1 - t0)
        cpu_rate = (r1 - r0) / max(c1 - c0, 1e-9)
        log(f"{label}: {rate:,.0f} events/s wall, {cpu_rate:,.0f} events per CPU second ({r1 - r0:,} in "
            f"{t1 - t0:.1f} s; pre-load {loaded.produce_seconds:.1f} s)")  # fmt: skip
        run = GroupRun(workers, rate, cpu_rate, t1 - t0, r1 - r0, loaded.produce_seconds,
                       [rss_mib(p.pid) for p in procs], owned, samples, healths)  # fmt: skip
        _wait_committed(loaded, app_id, partitions)
        return run, loaded
    finally:
        for proc in procs:
            proc.stop()


def _wait_settled(procs: list[Proc], partitions: int, timeout: float = 120.0) -> list[list[int]]:
    """Wait until every worker owns partitions, none is rebalancing and together they own all; who owns what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        healths = []
        for index, proc in enumerate(procs):
            if not proc.alive():
                raise RuntimeError(f"worker {index} exited:\n{proc.tail()}")
            healths.append(proc.health())
        if all(h and h["partitions"] and not h["rebalancing"] for h in healths):
            owned = [sorted(h["partitions"]) for h in healths if h]
            if sorted(p for parts in owned for p in parts) == list(range(partitions)):
                return owned
        time.sleep(0.2)
    raise RuntimeError(f"the group did not settle in {timeout:.0f} s:\n{procs[0].tail()}")


def _applied(health: dict[str, Any]) -> int:
    """Records a worker has processed, re-deliveries after a rebalance left out."""
    if not health:
        return 0
    stats = health["stats"]
    return int(stats["records"]) - int(stats.get("redelivered", 0))


def _wait_committed(loaded: Loaded, group: str, partitions: int) -> None:
    """Wait (up to 20 s) until the group's committed offsets reach the end of every partition; warn if not."""
    ends = spread(loaded, partitions)
    offsets: dict[int, int] = {}
    for _ in range(100):
        offsets = committed_all(loaded.bootstrap, group, loaded.names[EVENTS])
        if all(offsets.get(p, -1) >= end for p, end in ends.items()):
            return
        time.sleep(0.2)
    log(f"warning: committed offsets {offsets} below the ends {ends} after the run")


def group_details(run: GroupRun) -> dict[str, Any]:
    """JSON-friendly details of a group run."""
    return {
        "workers": run.workers, "rate": run.rate, "cpu_rate": run.cpu_rate, "seconds": run.seconds,
        "records": run.records, "preload_seconds": run.preload_seconds, "rss_mib": run.rss_mib,
        "partitions": run.partitions, "samples": run.samples[:: max(1, len(run.samples) // 50)],
        "stats": [h.get("stats", {}) for h in run.health],
    }  # fmt: skip


def equal_row(bench: str, check: dict[str, Any], what: str) -> Row:
    """The 'outputs equal the batch engine's' row of a check_outputs result."""
    equal = bool(check["usage_changes_equal"] and check["peak_windows_equal"])
    return Row(bench, f"{what}: outputs equal batch engine", "yes" if equal else "NO", "", "equal", equal,
               f"usage changes {check['usage_changes_got']:,}/{check['usage_changes_expected']:,}, "
               f"peak windows {check['peak_windows_got']:,}/{check['peak_windows_expected']:,} by id")  # fmt: skip
