"""processor.topics: names under a prefix, configs, and idempotent creation on the session broker; the CLI."""

from __future__ import annotations

import argparse
import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processor.cli import CliError
from processor.cli import brokers as commands
from processor.topics import (
    ALERTS,
    DEAD_LETTERS,
    DEFAULT_PREFIX,
    EVENTS,
    PEAK_WINDOWS,
    TOPICS,
    USAGE_CHANGES,
    create_topics,
    topic_names,
    validate_prefix,
)


def test_topic_names_default_and_custom_prefix() -> None:
    required = {
        EVENTS: "ccmeter.events",
        USAGE_CHANGES: "ccmeter.usage-changes",
        PEAK_WINDOWS: "ccmeter.peak-windows",
        ALERTS: "ccmeter.alerts",
        DEAD_LETTERS: "ccmeter.dead-letters",
    }
    names = topic_names()
    assert required.items() <= names.items()
    assert list(names) == [spec.key for spec in TOPICS]
    assert all(name == DEFAULT_PREFIX + key for key, name in names.items())
    assert DEFAULT_PREFIX == "ccmeter."
    assert topic_names("dev-1_")[USAGE_CHANGES] == "dev-1_usage-changes"
    assert topic_names("")[ALERTS] == "alerts"


def test_events_are_kept_forever() -> None:
    specs = {spec.key: spec for spec in TOPICS}
    assert specs[EVENTS].config == {"retention.ms": "-1"}
    assert all(not spec.config for key, spec in specs.items() if key != EVENTS)


@pytest.mark.parametrize("prefix", ["has space.", "slash/", "ümlaut.", "x" * 240])
def test_illegal_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(ValueError):
        validate_prefix(prefix)
    with pytest.raises(ValueError):
        topic_names(prefix)


async def _describe(bootstrap: str, names: list[str]) -> tuple[dict[str, int], str | None]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, names[0])])
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
        return partitions, entries.get("retention.ms")
    finally:
        await admin.close()


@pytest.mark.kafka
def test_create_topics_idempotent_with_requested_partitions(broker: str, topic_prefix: str) -> None:
    names = list(topic_names(topic_prefix).values())
    assert asyncio.run(create_topics(broker, topic_prefix, partitions=3, replication=1)) == names
    assert asyncio.run(create_topics(broker, topic_prefix, partitions=3, replication=1)) == []
    partitions, retention = asyncio.run(_describe(broker, names))
    assert partitions == dict.fromkeys(names, 3)
    assert retention == "-1"  # names[0] is the events topic


@pytest.mark.kafka
def test_create_topics_keeps_existing_topics_and_adds_missing_ones(broker: str, topic_prefix: str) -> None:
    async def create_one_then_all() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic_names(topic_prefix)[ALERTS], 1, 1)])
        finally:
            await admin.close()
        return await create_topics(broker, topic_prefix, partitions=2)

    created = asyncio.run(create_one_then_all())
    names = topic_names(topic_prefix)
    assert created == [name for key, name in names.items() if key != ALERTS]
    partitions, _ = asyncio.run(_describe(broker, list(names.values())))
    assert partitions[names[ALERTS]] == 1  # left untouched
    assert partitions[names[EVENTS]] == 2


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ccmeter")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.mark.kafka
def test_cli_topics_create_reports_created_then_existing(
    broker: str, topic_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["topics", "create", "--broker", broker, "--prefix", topic_prefix, "--partitions", "2"]
    assert _cli(argv) == 0
    first = capsys.readouterr().out.splitlines()
    assert len(first) == len(TOPICS) and all("created (2 partitions)" in line for line in first)
    assert first[0].startswith(f"{topic_prefix}events ")
    assert _cli(argv) == 0
    assert all(line.endswith("exists") for line in capsys.readouterr().out.splitlines())


def test_cli_topics_create_errors_are_user_errors() -> None:
    with pytest.raises(CliError, match="prefix"):
        _cli(["topics", "create", "--broker", "127.0.0.1:1", "--prefix", "bad prefix"])
    with pytest.raises(CliError, match="at least 1"):
        _cli(["topics", "create", "--broker", "127.0.0.1:1", "--partitions", "0"])
    with pytest.raises(CliError, match="127.0.0.1:1"):
        _cli(["topics", "create", "--broker", "127.0.0.1:1", "--timeout", "3"])
