"""`ccmeter worker` (run the streaming processor) and `ccmeter publish` (send a .jsonl event file to Kafka)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from processor.errors import CliError, InputError, RuntimeFailure
from processor.kafka_security import add_security_options, client_kwargs
from processor.options import add_broker, add_prefix, broker_of, prefix_of
from processor.topics import EVENTS, create_topics, topic_names
from processor.worker.config import WorkerConfig, add_arguments


def register(subparsers: Any) -> None:
    """Add the `worker` and `publish` subcommands."""
    worker = subparsers.add_parser(
        "worker",
        help="run the streaming processor (a Faust worker) against Kafka",
        description="Consume session events from PREFIX + 'events' (or --events-topic), keep per-account state in a "
        "Faust table and publish usage changes, peak windows, alerts, intervals and dead letters; serve live usage at "
        "GET /accounts/{id}/usage and GET /health on the web port. Creates missing topics first. "
        "Every flag can also be set by its CCMETER_* environment variable; flags win.",
        epilog="Example: ccmeter worker --broker 127.0.0.1:9092 --web-port 6066",
    )
    add_arguments(worker)
    add_security_options(worker)
    worker.set_defaults(func=run_worker_command)

    publish = subparsers.add_parser(
        "publish",
        help="publish a .jsonl event file to the events topic (key = account_id, file order kept)",
        description="Send every line of a .jsonl file as one record to PREFIX + 'events', in file order, with "
        "the event's account_id as the key (lines that are not JSON objects with an account_id are sent "
        "without a key; the worker dead-letters them).",
        epilog="Example: ccmeter publish --broker 127.0.0.1:9092 events.jsonl",
    )
    publish.add_argument("file", help="a .jsonl event file, e.g. from `ccmeter simulate --out events.jsonl`")
    add_broker(publish)
    add_prefix(publish)
    publish.add_argument(
        "--topic", default=None, metavar="TOPIC", help="publish to this topic instead of PREFIX + 'events'"
    )
    add_security_options(publish)
    publish.set_defaults(func=run_publish_command)


def run_worker_command(args: argparse.Namespace) -> int:
    """Ensure the topics exist, then run the worker in the foreground."""
    try:
        config = WorkerConfig.from_args(args)
        check_web_access(config)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if config.store.startswith("rocksdb://"):
        try:
            import rocksdict  # noqa: F401
        except ImportError as exc:
            raise RuntimeFailure("--store rocksdb:// needs rocksdict: pip install -e '.[rocksdb]'") from exc
    try:  # Faust creates the state directory itself, but not its parents (the default is under ccmeter-out/)
        Path(config.state_dir).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeFailure(f"--state-dir {config.state_dir}: {exc.strerror or exc}") from None
    from processor.app import run_worker
    from processor.cli import kafka_client_quieted

    with kafka_client_quieted():  # an unreachable broker is one line, not aiokafka's retries
        partitions = asyncio.run(prepare_topics(config))

    return run_worker(config, partitions)


def check_web_access(config: WorkerConfig) -> None:
    """Read the HTTP API's tokens and TLS files before anything else (ValueError with one line)."""
    from processor.web.auth import Access
    from processor.web.tls import contexts

    Access.from_config(config)
    contexts(config.web_tls_cert, config.web_tls_key)


async def prepare_topics(config: WorkerConfig) -> int:
    """Create missing topics; return the partition count of the events topic.

    With `--events-topic` (another prefix's events, e.g. the live log read by a rebuilt version) that topic must
    exist, and only the output topics are created, with its partition count."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    events = config.events
    try:
        if config.events_topic is None:
            await create_topics(config.broker, config.prefix, config.partitions, config.replication, timeout_ms=15_000)
        admin = AIOKafkaAdminClient(bootstrap_servers=config.broker, request_timeout_ms=15_000, **client_kwargs())
        try:
            await admin.start()
            described = await admin.describe_topics([events])
        finally:
            await admin.close()
        ok = described and not described[0].get("error_code") and described[0].get("partitions")
        count = len(described[0]["partitions"]) if ok else 0
        if count < 1:
            raise RuntimeFailure(f"topic {events} does not exist on {config.broker} (or has no partitions)")
        if config.events_topic is not None:
            await create_topics(
                config.broker, config.prefix, count, config.replication, timeout_ms=15_000, outputs_only=True
            )
    except (KafkaError, OSError) as exc:
        raise RuntimeFailure(f"cannot prepare topics on {config.broker}: {_reason(exc)}") from exc
    return count


def record_key(line: bytes) -> bytes | None:
    """The Kafka key of a wire line: its account_id (None when the line has none)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read: the worker dead-letters it
        return None
    account = value.get("account_id") if isinstance(value, dict) else None
    if not isinstance(account, str):
        return None
    try:
        return account.encode()
    except UnicodeEncodeError:  # a lone surrogate (\ud800) is no UTF-8 key: send it keyless, it is dead-lettered
        return None


async def publish_file(path: Path, broker: str, topic: str) -> int:
    """Send each line of `path` to `topic` (key = account_id), in order; return the number of records."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=broker, acks="all", linger_ms=5, max_batch_size=256 * 1024, **client_kwargs()
    )
    count = 0
    try:  # stopped in `finally` even when `start` fails, so no "Unclosed AIOKafkaProducer" report
        await producer.start()
        metadata = await producer.client.fetch_all_metadata()
        if topic not in metadata.topics():
            raise RuntimeFailure(
                f"topic {topic} does not exist on {broker}: run `ccmeter topics create --broker {broker}`"
            )
        pending: list[asyncio.Future] = []
        with path.open("rb") as handle:
            for raw in handle:
                line = raw.rstrip(b"\r\n")
                pending.append(await producer.send(topic, value=line, key=record_key(line)))
                count += 1
                if len(pending) >= 10_000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


def run_publish_command(args: argparse.Namespace) -> int:
    """Publish a .jsonl file and print how many records were sent."""
    from aiokafka.errors import KafkaError

    path = Path(args.file)
    if path.suffix != ".jsonl" or not path.is_file():
        raise InputError(f"{path}: expected an existing .jsonl file")
    broker, prefix = broker_of(args), prefix_of(args)
    topic = args.topic or topic_names(prefix)[EVENTS]
    started = time.monotonic()
    try:
        count = asyncio.run(publish_file(path, broker, topic))
    except (KafkaError, OSError) as exc:
        raise RuntimeFailure(f"cannot publish to {broker}: {_reason(exc)}") from exc
    elapsed = time.monotonic() - started
    print(f"published {count} records to {topic} in {elapsed:.1f}s", file=sys.stdout)
    return 0


def _reason(exc: BaseException) -> str:
    """A Kafka client failure in a few words (aiokafka's texts already name their class)."""
    from aiokafka.errors import KafkaConnectionError

    if isinstance(exc, KafkaConnectionError):
        return "broker not reachable"
    text = str(exc)
    name = type(exc).__name__
    return text if text and (name in text or "Unable to bootstrap" in text) else f"{name}: {text}" if text else name
