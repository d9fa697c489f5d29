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

from processor.errors import EXIT_FAILURE, EXIT_USAGE, CcmeterError, CliError, exit_code_of
from processor.kafka_security import (
    KafkaAccessError,
    SecurityConfigError,
    add_security_options,
    check_access,
    security_from_args,
    use_security,
)
from processor.topics import EVENTS, topic_names
from processor.worker.config import WorkerConfig, add_arguments
from replay.common import quiet_kafka_logging


async def prepare_output_topics(config: WorkerConfig, events_topic: str) -> int:
    """Create the missing output topics under the config's prefix; return the events topic's partition count."""
    from processor.cli.worker import prepare_topics

    return await prepare_topics(dataclasses.replace(config, events_topic=events_topic))


def build_parser() -> argparse.ArgumentParser:
    """The launcher's flags: those of `ccmeter worker`, Kafka security included (`replay run` passes those on as
    `CCMETER_*` variables, processor/kafka_security.py `child_env`)."""
    parser = argparse.ArgumentParser(
        prog="python -m replay.launch",
        description="Run `ccmeter worker` on another prefix's events topic (a rebuilt app version). Exit status: 0 "
        "stopped, 1 runtime failure (broker unreachable, access refused, topic missing), 2 usage error.",
    )
    add_arguments(parser)
    add_security_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the worker's flags (--events-topic required) and run the worker on that events topic with the Kafka
    security of the flags and `CCMETER_*` variables. Usage errors exit 2, runtime failures 1."""
    args = build_parser().parse_args(argv)
    from aiokafka.errors import KafkaError

    try:
        config = WorkerConfig.from_args(args)
        if config.events_topic is None:
            raise CliError("--events-topic is required: the live events topic to read")
        if topic_names(config.prefix)[EVENTS] == config.events_topic:
            raise CliError("--prefix must differ from the live prefix (the new version writes its own outputs)")
        security = security_from_args(args)
    except (CliError, ValueError) as exc:  # a bad flag, variable or security setting (SecurityConfigError)
        return _fail(exc, exit_code_of(exc) if isinstance(exc, CcmeterError) else EXIT_USAGE)
    with use_security(security):
        try:
            with quiet_kafka_logging():  # the failure is reported in one line below
                asyncio.run(check_access(config.broker, security))
                partitions = asyncio.run(prepare_output_topics(config, config.events_topic))
        except CcmeterError as exc:  # prepare_topics: RuntimeFailure for a missing topic or a broker error
            return _fail(exc, exc.exit_code)
        except SecurityConfigError as exc:  # a TLS file that does not load
            return _fail(exc, EXIT_USAGE)
        except (KafkaAccessError, KafkaError, OSError) as exc:  # refused, unreachable, a file that cannot be read
            return _fail(exc, EXIT_FAILURE)
        from processor.app import run_worker

        return run_worker(config, partitions)


def _fail(exc: BaseException, status: int) -> int:
    print(f"replay.launch: error: {exc}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
