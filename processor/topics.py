"""ccmeter's Kafka topics: names (under a configurable prefix), per-topic configs, and idempotent creation.

Every topic name is `prefix + suffix` (default prefix "ccmeter."), so several environments or test runs can share
one cluster. Look names up by their logical key, e.g. `topic_names(prefix)[USAGE_CHANGES]`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError, TopicAlreadyExistsError, for_code

from processor.kafka_security import client_kwargs

DEFAULT_PREFIX = "ccmeter."

# Logical keys of topic_names(); each is also the topic's suffix after the prefix.
EVENTS = "events"
USAGE_CHANGES = "usage-changes"
PEAK_WINDOWS = "peak-windows"
ALERTS = "alerts"
DEAD_LETTERS = "dead-letters"
INTERVALS = "intervals"  # added by the worker: user intervals and plans, for snapshots

_LEGAL = re.compile(r"[A-Za-z0-9._-]*")
_MAX_TOPIC_LEN = 249


@dataclass(frozen=True)
class TopicSpec:
    """One ccmeter topic: its logical key (= name suffix), topic-level configs and what it carries."""

    key: str
    description: str
    config: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def name(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The full topic name under `prefix`."""
        return validate_prefix(prefix) + self.key


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        EVENTS,
        "Session events, the source of truth (kept forever so state can be rebuilt by replay).",
        MappingProxyType({"retention.ms": "-1"}),
    ),
    TopicSpec(USAGE_CHANGES, "Concurrent-usage changes per account, emitted by the processor."),
    TopicSpec(PEAK_WINDOWS, "Closed peak-usage windows per account."),
    TopicSpec(ALERTS, "License-limit alerts."),
    TopicSpec(DEAD_LETTERS, "Events the processor could not parse or apply, with the reason."),
    TopicSpec(INTERVALS, "Counted user intervals and plan changes per account (for snapshots)."),
)


def validate_prefix(prefix: str) -> str:
    """Return `prefix` if it only holds characters legal in Kafka topic names; raise ValueError otherwise."""
    if not _LEGAL.fullmatch(prefix):
        raise ValueError(f"topic prefix {prefix!r} may only contain letters, digits, '.', '_' and '-'")
    longest = max(len(spec.key) for spec in TOPICS)
    if len(prefix) + longest > _MAX_TOPIC_LEN:
        raise ValueError(f"topic prefix {prefix!r} is too long (topic names are limited to {_MAX_TOPIC_LEN} chars)")
    return prefix


def topic_names(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """Map each logical key (EVENTS, USAGE_CHANGES, ...) to its full topic name under `prefix`."""
    return {spec.key: spec.name(prefix) for spec in TOPICS}


async def create_topics(
    bootstrap: str,
    prefix: str = DEFAULT_PREFIX,
    partitions: int = 4,
    replication: int = 1,
    *,
    timeout_ms: int = 30_000,
    outputs_only: bool = False,
) -> list[str]:
    """Create ccmeter's topics under `prefix` on the cluster at `bootstrap`; return the names it created.
    With `outputs_only`, every topic but the events topic (for a version that reads another prefix's events).

    Idempotent: topics that already exist are left untouched (their partition count and configs are not changed)
    and are simply not in the returned list, so the existing ones are `set(topic_names(prefix).values()) - created`.
    Raises the broker's error (an aiokafka KafkaError) for anything other than "already exists".
    """
    if partitions < 1 or replication < 1:
        raise ValueError("partitions and replication must be at least 1")
    names = topic_names(prefix)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="ccmeter-topics", request_timeout_ms=timeout_ms, **client_kwargs()
    )
    try:  # closed in `finally` even when `start` fails
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(names[spec.key], partitions, replication, topic_configs=dict(spec.config))
            for spec in TOPICS
            if names[spec.key] not in existing and not (outputs_only and spec.key == EVENTS)
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted, timeout_ms=timeout_ms)
        created = _created_topics(response)
        await _wait_for_leaders(admin, sorted(created), timeout_ms / 1000)
    finally:
        await admin.close()
    return [name for name in names.values() if name in created]


def _created_topics(response: Any) -> set[str]:
    """Names the CreateTopics response reports as created; raises for errors other than "already exists"."""
    created: set[str] = set()
    for topic_error in response.topic_errors:
        topic, code = topic_error[0], topic_error[1]
        message = topic_error[2] if len(topic_error) > 2 else None
        if code == 0:
            created.add(topic)
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:  # lost a race with another creator: fine
            continue
        raise error(f"creating topic {topic!r} failed: {message or error.description}")
    return created


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> None:
    """Wait until the broker's metadata shows every topic in `names` with a leader for each partition.

    CreateTopics returns once the controller has the topics; the broker serving clients may learn of them a moment
    later, and a producer that comes too early only logs NotLeaderForPartition and retries. Waiting here keeps that
    noise out of tests and scripts.
    """
    if not names:
        return
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        topics = await admin.describe_topics(names)
        if len(topics) == len(names) and all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(partition["leader"] >= 0 for partition in topic["partitions"])
            for topic in topics
        ):
            return
        if asyncio.get_running_loop().time() >= deadline:
            raise KafkaTimeoutError(f"topics {names} created but without partition leaders after {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def list_topics(bootstrap: str, prefix: str = "", *, timeout_ms: int = 30_000) -> dict[str, int]:
    """Name -> partition count of the cluster's topics whose names start with `prefix` (internal topics, whose
    names start with "__", left out), sorted by name."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="ccmeter-topics", request_timeout_ms=timeout_ms, **client_kwargs()
    )
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return {
        topic["topic"]: len(topic["partitions"] or [])
        for topic in sorted(described, key=lambda t: t["topic"])
        if topic["topic"].startswith(prefix) and not topic["topic"].startswith("__") and not topic.get("is_internal")
    }


async def delete_topics(bootstrap: str, names: list[str], *, timeout_ms: int = 30_000) -> None:
    """Delete the topics `names`; raises the broker's error (an aiokafka KafkaError) for the first that fails
    (one that is already gone counts as deleted)."""
    from aiokafka.errors import UnknownTopicOrPartitionError

    if not names:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="ccmeter-topics", request_timeout_ms=timeout_ms, **client_kwargs()
    )
    await admin.start()
    try:
        response = await admin.delete_topics(names, timeout_ms=timeout_ms)
    finally:
        await admin.close()
    for topic, code in (item[:2] for item in response.topic_error_codes):
        error = for_code(code) if code else None
        if error is not None and error is not UnknownTopicOrPartitionError:
            raise error(f"deleting topic {topic!r} failed: {error.description}")


def is_events_topic(name: str) -> bool:
    """True for a topic named like an events topic (`PREFIX + "events"`): the source of truth, kept forever."""
    return name == EVENTS or name.endswith("." + EVENTS)
