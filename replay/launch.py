"""`python -m replay.launch --events-topic TOPIC [ccmeter worker flags]`: a worker of a new app version.

A rebuilt version reads the live events topic and writes under its own prefix (e.g. ccmeter.v2.), with its own app
id (consumer group and changelog topic). That is `ccmeter worker --events-topic TOPIC`; this launcher also insists
that the option is given and that the prefix is not the live one, so that a rebuild can never write into the live
outputs. It creates the new version's output topics (not an events topic) with the partition count of the events
topic, then runs the worker in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from processor.cli import CliError
from processor.topics import EVENTS, topic_names
from processor.worker.config import WorkerConfig, add_arguments


async def prepare_output_topics(config: WorkerConfig, events_topic: str) -> int:
    """Create the missing output topics under the config's prefix; return the events topic's partition count."""
    from processor.cli.worker import prepare_topics

    return await prepare_topics(dataclasses.replace(config, events_topic=events_topic))


def build_parser() -> argparse.ArgumentParser:
    """The launcher's flags: those of `ccmeter worker`."""
    parser = argparse.ArgumentParser(
        prog="python -m replay.launch",
        description="Run `ccmeter worker` on another prefix's events topic (a rebuilt app version).",
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the worker's flags (--events-topic required) and run the worker on that events topic."""
    args = build_parser().parse_args(argv)
    from aiokafka.errors import KafkaError

    try:
        config = WorkerConfig.from_args(args)
        if config.events_topic is None:
            raise CliError("--events-topic is required: the live events topic to read")
        if topic_names(config.prefix)[EVENTS] == config.events_topic:
            raise CliError("--prefix must differ from the live prefix (the new version writes its own outputs)")
        partitions = asyncio.run(prepare_output_topics(config, config.events_topic))
    except (CliError, ValueError, OSError, KafkaError) as exc:
        print(f"replay.launch: error: {exc}", file=sys.stderr)
        return 2
    from processor.app import run_worker

    return run_worker(config, partitions)


if __name__ == "__main__":
    sys.exit(main())
