"""`python -m replay.launch --events-topic TOPIC [ccmeter worker flags]`: a worker of a new app version.

`ccmeter worker` reads `PREFIX + "events"` and writes its outputs under the same prefix. A rebuilt version must read
the live events topic and write under its own prefix (e.g. ccmeter.v2.), with its own app id (consumer group and
changelog topic). Until the worker has an `--events-topic` option, this launcher runs the same worker
(processor/app.py) with only the events topic name replaced. It creates the new version's output topics (not an
events topic) with the partition count of the events topic, then runs the worker in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from processor.cli import CliError
from processor.topics import EVENTS, TOPICS, topic_names
from processor.worker.config import WorkerConfig, add_arguments


async def prepare_output_topics(config: WorkerConfig, events_topic: str) -> int:
    """Create the missing output topics under the config's prefix; return the events topic's partition count."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    from replay import kafka

    client = kafka.admin(config.broker)
    await client.start()
    try:
        described = await client.describe_topics([events_topic])
        partitions = len(described[0].get("partitions") or []) if described and not described[0]["error_code"] else 0
        if partitions < 1:
            raise CliError(f"events topic {events_topic} does not exist on {config.broker}")
        existing = set(await client.list_topics())
        names = topic_names(config.prefix)
        wanted = [
            NewTopic(names[spec.key], partitions, config.replication, topic_configs=dict(spec.config))
            for spec in TOPICS
            if spec.key != EVENTS and names[spec.key] not in existing
        ]
        if wanted:
            response = await client.create_topics(wanted, timeout_ms=15_000)
            for topic, code, *_ in response.topic_errors:
                if code and for_code(code) is not TopicAlreadyExistsError:
                    raise CliError(f"creating topic {topic}: {for_code(code).__name__}")
    finally:
        await client.close()
    return partitions


def main(argv: list[str] | None = None) -> int:
    """Parse the worker's flags plus --events-topic and run the worker on that events topic."""
    parser = argparse.ArgumentParser(
        prog="python -m replay.launch",
        description="Run `ccmeter worker` on another prefix's events topic (a rebuilt app version).",
    )
    parser.add_argument("--events-topic", required=True, metavar="TOPIC", help="the live events topic to read")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from aiokafka.errors import KafkaError

    try:
        config = WorkerConfig.from_args(args)
        if topic_names(config.prefix)[EVENTS] == args.events_topic:
            raise CliError("--prefix must differ from the live prefix (the new version writes its own outputs)")
        partitions = asyncio.run(prepare_output_topics(config, args.events_topic))
    except (CliError, ValueError, OSError, KafkaError) as exc:
        print(f"replay.launch: error: {exc}", file=sys.stderr)
        return 2
    import processor.app as app

    live_names = app.topic_names

    def names(prefix: str = config.prefix) -> dict[str, str]:
        found = live_names(prefix)
        found[EVENTS] = args.events_topic
        return found

    app.topic_names = names
    return app.run_worker(config, partitions)


if __name__ == "__main__":
    sys.exit(main())
