"""Kafka look-ups of the replay commands: partitions, offsets by time, consumer group state and lag."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from processor.errors import RuntimeFailure
from processor.kafka_security import client_kwargs

COORDINATOR_PATIENCE_S = 30.0  # how long a new cluster may answer "no group coordinator yet"
SEEDING = "ccmeter replay: seeding"  # offsets committed while a seed from a snapshot has not finished


@dataclass(frozen=True)
class Member:
    """One member of a consumer group and the partitions of the topic of interest it owns."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[int, ...]


@dataclass
class GroupState:
    """A consumer group as the broker sees it: state, members, committed offsets on one topic."""

    group: str
    state: str
    members: list[Member] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)
    other_topics: set[str] = field(default_factory=set)  # topics with committed offsets besides the one of interest
    markers: set[str] = field(default_factory=set)  # metadata of the committed offsets on the topic of interest

    @property
    def active(self) -> bool:
        """True while the group has members (someone consumes with this group id)."""
        return bool(self.members)

    def lag(self, ends: dict[int, int]) -> dict[int, int | None]:
        """Records behind the end offsets per partition (None: nothing committed there)."""
        return {p: (end - self.committed[p] if p in self.committed else None) for p, end in ends.items()}


def consumer(broker: str, **options: Any) -> AIOKafkaConsumer:
    """A group-less consumer that commits nothing and reads committed records only, as the worker writes its outputs
    and changelog in transactions (start it before use)."""
    options.setdefault("request_timeout_ms", 15_000)
    options.setdefault("isolation_level", "read_committed")
    options.update(client_kwargs())
    return AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, group_id=None, **options)


def admin(broker: str) -> AIOKafkaAdminClient:
    """An admin client (start it before use)."""
    return AIOKafkaAdminClient(
        bootstrap_servers=broker, client_id="ccmeter-replay", request_timeout_ms=15_000, **client_kwargs()
    )


async def refresh_metadata(client: AIOKafkaConsumer) -> None:
    """Fetch the cluster metadata now, so `partitions_for_topic` sees topics created since the client started."""
    # aiokafka has no public call for this; its client (`_client`) is used here only.
    await client._client.force_metadata_update()  # noqa: SLF001


async def partitions_of(client: AIOKafkaConsumer, topic: str) -> list[int]:
    """Partition numbers of `topic`; RuntimeFailure when the topic does not exist (after a few seconds of retries, for
    a topic that was just created)."""
    for attempt in range(20):
        await refresh_metadata(client)
        found = client.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if attempt < 19:
            await asyncio.sleep(0.25)
    raise RuntimeFailure(f"topic {topic} does not exist (check --broker and --prefix)")


def tps(topic: str, partitions: Iterable[int]) -> list[TopicPartition]:
    """TopicPartitions of `topic`."""
    return [TopicPartition(topic, p) for p in partitions]


async def end_offsets(client: AIOKafkaConsumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """Next offset to be written, per partition (the cut a command works up to)."""
    found = await client.end_offsets(tps(topic, partitions))
    return {tp.partition: offset for tp, offset in found.items()}


async def beginning_offsets(client: AIOKafkaConsumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """Log start offset per partition."""
    found = await client.beginning_offsets(tps(topic, partitions))
    return {tp.partition: offset for tp, offset in found.items()}


async def offsets_at(
    client: AIOKafkaConsumer, topic: str, partitions: list[int], at_ms: int, ends: dict[int, int]
) -> dict[int, int]:
    """Per partition, the first offset whose record timestamp is >= at_ms (the end offset when there is none)."""
    found = await client.offsets_for_times({tp: max(0, at_ms) for tp in tps(topic, partitions)})
    out: dict[int, int] = {}
    for tp, hit in found.items():
        out[tp.partition] = ends[tp.partition] if hit is None else min(hit.offset, ends[tp.partition])
    return out


def _assigned(assignment: bytes, topic: str) -> tuple[int, ...]:
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    if not assignment:
        return ()
    try:
        decoded = ConsumerProtocolMemberAssignment.decode(assignment)
    except Exception:  # noqa: BLE001 - a foreign assignor's bytes: the member still counts, its partitions unknown
        return ()
    return tuple(sorted(p for name, parts in decoded.assignment for p in parts if name == topic))


async def group_state(
    client: AIOKafkaAdminClient,
    group: str,
    topic: str,
    partitions: list[int] | None = None,
    *,
    patience_s: float = COORDINATOR_PATIENCE_S,
) -> GroupState:
    """State, members and committed offsets (on `topic`) of a consumer group ("Dead" when it does not exist).

    With `partitions`, only the offsets of those partitions of `topic` are asked for (`other_topics` stays empty):
    the form every broker answers (Tansu drops the connection on an OffsetFetch for all of a group's topics).
    A new cluster has no group coordinator until its `__consumer_offsets` topic exists (created when a group is
    first asked for): the question is repeated for up to `patience_s` while the broker says so."""
    from aiokafka.errors import GroupCoordinatorNotAvailableError, GroupLoadInProgressError

    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await _group_state(client, group, topic, partitions)
        except (GroupCoordinatorNotAvailableError, GroupLoadInProgressError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _group_state(client: AIOKafkaAdminClient, group: str, topic: str, partitions: list[int] | None) -> GroupState:
    responses = await client.describe_consumer_groups([group])
    state = GroupState(group, "Dead")
    for response in responses:
        for item in response.groups:
            error_code, group_id, group_state_name, _protocol_type, _protocol, members = item[:6]
            if group_id != group:
                continue
            if error_code:
                raise RuntimeFailure(f"describing consumer group {group}: broker error {error_code}")
            state.state = group_state_name
            for member in members:
                member_id, client_id, host, _metadata, assignment = member[:5]
                state.members.append(Member(member_id, client_id, host, _assigned(assignment, topic)))
    wanted = tps(topic, partitions) if partitions is not None else None
    offsets = await client.list_consumer_group_offsets(group, partitions=wanted) if wanted != [] else {}
    state.committed = {
        tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0
    }
    state.other_topics = {tp.topic for tp in offsets if tp.topic != topic}
    state.markers = {meta.metadata for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}
    return state


async def partition_count(client: AIOKafkaAdminClient, topic: str) -> int | None:
    """Partitions of `topic`, None when it does not exist."""
    if topic not in set(await client.list_topics()):
        return None
    described = await client.describe_topics([topic])
    return len(described[0].get("partitions") or []) if described else None


async def commit_group_offsets(
    broker: str, group: str, topic: str, offsets: dict[int, int], metadata: str = "ccmeter replay"
) -> None:
    """Commit `offsets` (with `metadata`) for `group` on `topic` (the group must have no members)."""
    from aiokafka.structs import OffsetAndMetadata

    client = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False, **client_kwargs())
    await client.start()
    try:
        parts = tps(topic, offsets)
        client.assign(parts)
        await client.commit({tp: OffsetAndMetadata(offsets[tp.partition], metadata) for tp in parts})
    finally:
        await client.stop()
