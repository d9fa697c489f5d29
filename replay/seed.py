"""State of a new app version at `--from TS`, folded from a snapshot's event log (`replay run --from-snapshot`).

The worker's state after offset N of a partition is the fold of that partition's records from the log start to N.
A snapshot's `events` table holds those records (offset, key, exact bytes, record timestamp), so the new version's
state at the offsets for `--from` is computed here with the worker's own code (processor.worker.runner
.StreamProcessor, the same batches of records), then:

1. the outputs of that prefix are published to the new version's output topics (so they hold everything);
2. the state entries are written to the new app's changelog topic (`APP_ID-state-changelog`, raw bytes, the entry's
   events partition), which the worker recovers its table from;
3. the new consumer group's offsets are committed at the `--from` offsets, last. Before step 1 they are committed at
   the log start with the marker `ccmeter replay: seeding`: a re-run after a crash sees the marker, seeds again (same
   ids, same entries) and deletes (tombstones) any changelog entry the new seed does not write.

The snapshot must hold every record from each partition's log start up to the `--from` offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.cli import CliError, RuntimeFailure
from processor.kafka_security import client_kwargs
from processor.topics import EVENTS, topic_names
from processor.worker.partition import Raw
from processor.worker.sender import output_records
from processor.worker.state import DictStore, entry_partition
from replay import kafka
from replay.source import open_snapshot_file

BATCH = 5000


@dataclass(frozen=True)
class SeedPlan:
    """Offsets `[begin, stop)` per partition to fold from the snapshot."""

    snapshot: Path
    ranges: dict[int, tuple[int, int]]

    @property
    def records(self) -> int:
        """Records to fold."""
        return sum(stop - begin for begin, stop in self.ranges.values())

    def lines(self) -> list[str]:
        """The seeding steps for the plan."""
        spans = ", ".join(f"p{p} [{b}, {s})" for p, (b, s) in sorted(self.ranges.items()))
        return [
            f"seed: fold {self.records} records of {self.snapshot} ({spans}) with the worker's code, publish their "
            "outputs, write the state to the changelog, commit the group at the --from offsets"
        ]


def plan_seed(snapshot: Path, events_topic: str, at_from: dict[int, int], beginnings: dict[int, int]) -> SeedPlan:
    """Check that the snapshot holds every record the state needs; CliError saying what is missing otherwise."""
    con, _ = open_snapshot_file(snapshot)
    try:
        prefix = con.execute("SELECT topic_prefix FROM snapshot_info").fetchall()[0][0]
        if topic_names(prefix)[EVENTS] != events_topic:
            raise CliError(f"snapshot {snapshot} is of {topic_names(prefix)[EVENTS]}, not {events_topic}")
        cut = dict(
            con.execute("SELECT partition, next_offset FROM snapshot_offsets WHERE topic_key = 'events'").fetchall()
        )
        problems: list[str] = []
        ranges: dict[int, tuple[int, int]] = {}
        for partition, stop in sorted(at_from.items()):
            begin = beginnings[partition]
            ranges[partition] = (begin, stop)
            if stop <= begin:
                continue
            if cut.get(partition, 0) < stop:
                problems.append(f"p{partition}: snapshot ends at offset {cut.get(partition, 0)}, --from needs {stop}")
                continue
            held = con.execute(
                "SELECT count(*) FROM events WHERE kafka_partition = ? AND kafka_offset >= ? AND kafka_offset < ?",
                [partition, begin, stop],
            ).fetchall()[0][0]
            if held != stop - begin:
                problems.append(f"p{partition}: snapshot holds {held} of the {stop - begin} records [{begin}, {stop})")
        if problems:
            raise CliError(
                "the snapshot cannot give the state at --from: " + "; ".join(problems) + " (take a newer snapshot, "
                "an earlier --from, or use --from beginning)"
            )
    finally:
        con.close()
    return SeedPlan(snapshot, ranges)


def _raws(con: Any, partition: int, begin: int, stop: int) -> Iterator[list[Raw]]:
    reader = con.execute(
        "SELECT kafka_offset, kafka_key, coalesce(raw_bytes, encode(raw)), epoch_ms(kafka_ts) FROM events "
        "WHERE kafka_partition = ? AND kafka_offset >= ? AND kafka_offset < ? ORDER BY kafka_offset",
        [partition, begin, stop],
    )
    while rows := reader.fetchmany(BATCH):
        yield [
            (o, k.encode() if k is not None else None, bytes(v) if v is not None else None, t) for o, k, v, t in rows
        ]


async def changelog_keys(broker: str, topic: str) -> dict[bytes, int]:
    """Keys (and their partition) that hold a value on a changelog topic now."""
    client = kafka.consumer(broker)
    await client.start()
    keys: dict[bytes, int] = {}
    try:
        partitions = await kafka.partitions_of(client, topic)
        ends = await kafka.end_offsets(client, topic, partitions)
        parts = [tp for tp in kafka.tps(topic, partitions) if ends[tp.partition] > 0]
        if not parts:
            return keys
        client.assign(parts)
        await client.seek_to_beginning(*parts)
        remaining = set(parts)
        while remaining:
            for tp, records in (await client.getmany(*remaining, timeout_ms=500)).items():
                for record in records:
                    if record.key is None:
                        continue
                    if record.value is None:
                        keys.pop(record.key, None)
                    else:
                        keys[record.key] = tp.partition
            remaining = {tp for tp in remaining if await client.position(tp) < ends[tp.partition]}
    finally:
        await client.stop()
    return keys


def _entry_partition(key: bytes, value: bytes) -> int:
    return entry_partition(key, value)


async def seed(config: Any, plan: SeedPlan, worker: Any, bar: Any) -> str:
    """Fold, publish outputs, write the changelog, commit offsets (see the module docstring); returns a summary."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    from processor.worker.runner import StreamProcessor
    from replay.launch import prepare_output_topics

    partitions = await prepare_output_topics(worker, config.events_topic)
    changelog = config.changelog
    client = kafka.admin(config.broker)
    await client.start()
    try:
        if changelog not in set(await client.list_topics()):
            topic = NewTopic(changelog, partitions, worker.replication, topic_configs={"cleanup.policy": "compact"})
            response = await client.create_topics([topic], timeout_ms=15_000)
            for name, code, *_ in response.topic_errors:
                if code and for_code(code) is not TopicAlreadyExistsError:
                    raise RuntimeFailure(f"creating topic {name}: {for_code(code).__name__}")
    finally:
        await client.close()
    begins = {p: begin for p, (begin, _) in plan.ranges.items()}
    await kafka.commit_group_offsets(config.broker, config.app_id, config.events_topic, begins, kafka.SEEDING)
    stale = await changelog_keys(config.broker, changelog)  # left by an unfinished earlier seed
    store = DictStore()
    processor = StreamProcessor(config.events_topic, worker.settings, store, share=worker.near_capacity)
    names = topic_names(config.new_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=config.broker, acks="all", enable_idempotence=True, linger_ms=5, **client_kwargs()
    )
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future] = []
        con, _ = open_snapshot_file(plan.snapshot)
        try:
            for partition, (begin, stop) in sorted(plan.ranges.items()):
                state = processor.partition(partition)
                state.applied, state.start_known = begin - 1, True
                for raws in _raws(con, partition, begin, stop):
                    result = processor.process(partition, raws, accept_gaps=False)
                    if result.resume_at is not None:
                        raise RuntimeFailure(
                            f"snapshot records of partition {partition} have a hole at {result.resume_at}"
                        )
                    for topic, key, value, headers in output_records(names, result):
                        pending.append(await producer.send(topic, value=value, key=key, headers=headers))
                    store.update(result.states)
                    bar.update(len(raws))
        finally:
            con.close()
        for key, value in store.data.items():
            pending.append(await producer.send(changelog, value=value, key=key, partition=_entry_partition(key, value)))
        for key, partition in stale.items():
            if key not in store.data:  # a tombstone: the table forgets the entry
                pending.append(await producer.send(changelog, value=None, key=key, partition=partition))
        await producer.flush()
        await asyncio.gather(*pending)
        sent = len(pending)
    finally:
        await producer.stop()
    offsets = {p: stop for p, (_, stop) in plan.ranges.items()}
    await kafka.commit_group_offsets(config.broker, config.app_id, config.events_topic, offsets)
    return (
        f"seeded {len(store.data)} state entries into {changelog} and {sent - len(store.data)} outputs; "
        f"group {config.app_id} committed at " + ", ".join(f"p{p} {o}" for p, o in sorted(offsets.items()))
    )
