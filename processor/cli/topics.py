"""`ccmeter topics list` and `ccmeter topics delete`: see the topics of the cluster, remove an old version's."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from processor.errors import CliError, RuntimeFailure
from processor.kafka_security import add_security_options
from processor.options import add_broker, add_duration, add_prefix, broker_of, prefix_of, show_seconds
from processor.topics import delete_topics, is_events_topic, list_topics, validate_prefix


def register_list_delete(topic_commands: Any) -> None:
    """Add `list` and `delete` to the `ccmeter topics` subcommands."""
    listing = topic_commands.add_parser(
        "list",
        help="list the topics under a prefix (e.g. those of old versions) with their partitions",
        description="List the cluster's topics whose names start with PREFIX, one per line with its partition "
        "count: the live topics (ccmeter.events, ...) and those of rebuilt versions (ccmeter.v1.*, ...). Kafka's "
        "internal topics are left out.",
        epilog="Example: ccmeter topics list --broker 127.0.0.1:9092",
    )
    add_broker(listing)
    add_prefix(listing, "list the topics whose names start with this")
    add_duration(listing, "--timeout", default="30s", help="give up when the broker has not answered within this")
    add_security_options(listing)
    listing.set_defaults(func=run_topics_list)

    delete = topic_commands.add_parser(
        "delete",
        help="delete the topics whose names start with --prefix (e.g. an old version's); needs --yes",
        description="Delete every topic whose name starts with PREFIX, e.g. `--prefix ccmeter.v1.` for the topics "
        "of an old version. Without --yes it lists what it would delete and refuses (exit 2). Events topics "
        "(named PREFIX + 'events': the source of truth, kept forever) are kept unless --include-events. Deleting "
        "cannot be undone.",
        epilog="Example: ccmeter topics delete --broker 127.0.0.1:9092 --prefix ccmeter.v1. --yes",
    )
    add_broker(delete)
    delete.add_argument(
        "--prefix",
        required=True,
        metavar="PREFIX",
        help="delete the topics whose names start with this (required: $CCMETER_PREFIX is not read, so what is "
        "deleted is always named on the command line)",
    )
    delete.add_argument("--yes", action="store_true", help="really delete (without it: list what would go, exit 2)")
    delete.add_argument("--include-events", action="store_true", help="also delete events topics (the source of truth)")
    add_duration(delete, "--timeout", default="30s", help="give up when the broker has not answered within this")
    add_security_options(delete)
    delete.set_defaults(func=run_topics_delete)


def _detail(exc: BaseException) -> str:
    return str(exc) if type(exc).__name__ in str(exc) else f"{type(exc).__name__}: {exc}"


def _admin_call(broker: str, timeout: float, what: str, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an admin coroutine within `timeout` seconds; failures become one-line runtime failures (exit 1), and
    aiokafka's own logging of them stays off the terminal."""
    from processor.kafka_security import KafkaAccessError, access_error, current_security

    log = logging.getLogger("aiokafka")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(asyncio.wait_for(coro, timeout=timeout + 5))
    except TimeoutError:
        raise RuntimeFailure(f"broker {broker} did not answer within {show_seconds(timeout)}") from None
    except Exception as exc:  # aiokafka raises KafkaError subclasses (connection, authorization, policy, ...)
        refused = access_error(exc, broker, current_security())
        if refused is not None:
            raise KafkaAccessError(refused) from None
        raise RuntimeFailure(f"{what} on {broker} failed: {_detail(exc)}") from None
    finally:
        log.setLevel(level)


def _check_timeout(timeout: float) -> int:
    if timeout <= 0:
        raise CliError("--timeout must be more than 0s")
    return int(timeout * 1000)


def run_topics_list(args: argparse.Namespace) -> int:
    """`ccmeter topics list`: the topics under the prefix, with their partition counts."""
    broker, prefix = broker_of(args), prefix_of(args)
    timeout_ms = _check_timeout(args.timeout)
    found = _admin_call(broker, args.timeout, "listing topics", list_topics(broker, prefix, timeout_ms=timeout_ms))
    if not found:
        print(f"no topics starting with {prefix!r} on {broker}")
        return 0
    width = max(len(name) for name in found)
    for name, partitions in found.items():
        print(f"{name:<{width}}  {partitions} partitions")
    return 0


def run_topics_delete(args: argparse.Namespace) -> int:
    """`ccmeter topics delete`: list what --prefix matches; with --yes delete it."""
    broker = broker_of(args)
    if not args.prefix:
        raise CliError("--prefix must not be empty")
    try:
        prefix = validate_prefix(args.prefix)
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}") from None
    timeout_ms = _check_timeout(args.timeout)
    found = _admin_call(broker, args.timeout, "listing topics", list_topics(broker, prefix, timeout_ms=timeout_ms))
    kept = [] if args.include_events else [name for name in found if is_events_topic(name)]
    doomed = [name for name in found if name not in kept]
    for name in kept:
        print(f"keep          {name}  (an events topic: add --include-events to delete it too)")
    if not doomed:
        print(f"no topics to delete starting with {prefix!r} on {broker}")
        return 0
    verb = "delete      " if args.yes else "would delete"
    for name in doomed:
        print(f"{verb}  {name}  ({found[name]} partitions)")
    if not args.yes:
        raise CliError(f"refusing to delete {len(doomed)} topics without --yes (deleting cannot be undone)")
    _admin_call(broker, args.timeout, "deleting topics", delete_topics(broker, doomed, timeout_ms=timeout_ms))
    print(f"deleted {len(doomed)} topics starting with {prefix!r}")
    return 0
