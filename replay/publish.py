"""`ccmeter replay publish`: an archive (or a `.jsonl` / simulator `.parquet` event file) back into the events topic.

One idempotent producer (acks=all, enable_idempotence) sends the records in arrival order, so the order within each
partition is the file's. Keys: the archived Kafka key (archives), else the event's `account_id`; values: the exact
archived bytes (`raw_bytes`, else `raw`), else the line (`.jsonl`), else JSON rebuilt from the typed wire fields.
Archives keep their original record timestamps (the second reference of the worker's future-skew check), so the
worker decides exactly as it did the first time. Publishing twice only adds duplicates, which the fold drops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from processor.batch.wire import FIELDS
from processor.cli import CliError
from processor.cli.worker import record_key as key_of_line
from processor.errors import RuntimeFailure
from processor.kafka_security import client_kwargs
from schemas.events import format_ms

Outgoing = tuple[bytes | None, bytes, int | None, int | None]  # key, value, timestamp_ms, original partition


@dataclass(frozen=True)
class Source:
    """An input file and what it holds."""

    path: Path
    kind: str  # "archive", "parquet" or "jsonl"
    records: int


def open_source(path: Path) -> Source:
    """Check the file and count its records."""
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        with path.open("rb") as handle:
            return Source(path, "jsonl", sum(1 for _ in handle))
    if path.suffix == ".parquet":
        try:
            meta = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
            raise CliError(f"{path}: not a readable Parquet file ({exc})") from None
        names = set(meta.schema_arrow.names)
        kind = "archive" if {"raw", "kafka_key"} <= names else "parquet"
        if kind == "parquet" and not {"event_id", "account_id", "occurred_at"} <= names:
            raise CliError(f"{path}: neither an archive (raw, kafka_key) nor an event file (typed wire fields)")
        return Source(path, kind, meta.metadata.num_rows)
    raise CliError(f"{path}: expected an archive .parquet or a .jsonl event file")


def _json_of(row: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {}
    for name in FIELDS:
        value = row.get(name)
        if value is None:
            continue
        body[name] = format_ms(round(value.timestamp() * 1000)) if name == "occurred_at" else value
    return json.dumps(body, separators=(",", ":")).encode()


def records(source: Source, keep_timestamps: bool = True) -> Iterator[Outgoing]:
    """The records to send, in arrival order."""
    if source.kind == "jsonl":
        with source.path.open("rb") as handle:
            for raw in handle:
                line = raw.rstrip(b"\r\n")
                yield key_of_line(line), line, None, None
        return
    table = pq.read_table(source.path)
    if "arrival" in table.column_names:
        table = table.sort_by([("arrival", "ascending")])
    for batch in table.to_batches(max_chunksize=20_000):
        for row in batch.to_pylist():
            if source.kind == "parquet":
                account = row.get("account_id")
                yield (account.encode() if isinstance(account, str) else None), _json_of(row), None, None
                continue
            value = row.get("raw_bytes") or (row.get("raw") or "").encode()
            key = row.get("kafka_key")
            stamp = row.get("kafka_ts")
            timestamp = round(stamp.timestamp() * 1000) if keep_timestamps and stamp is not None else None
            yield (key.encode() if key is not None else None), value, timestamp, row.get("kafka_partition")


@dataclass
class PublishResult:
    """What a publish sent."""

    sent: int
    per_partition: Counter[int]
    seconds: float


async def topic_partitions(producer: Any, topic: str, broker: str) -> int:
    """Partition count of `topic`; RuntimeFailure when it does not exist."""
    metadata = await producer.client.fetch_all_metadata()
    if topic not in metadata.topics():
        raise RuntimeFailure(f"topic {topic} does not exist on {broker}: run `ccmeter topics create --broker {broker}`")
    return len(metadata.partitions_for_topic(topic) or ())


async def start_producer(broker: str) -> Any:
    """A started idempotent producer (acks=all); on a broker without idempotent producers (InitProducerId fails,
    e.g. the embedded Tansu broker) a plain acks=all producer, with a note on standard error. A producer that fails
    to start is closed before the error goes up."""
    import sys

    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError, KafkaError

    for idempotent in (True, False):
        producer = AIOKafkaProducer(
            bootstrap_servers=broker,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=5,
            max_batch_size=256 * 1024,
            client_id="ccmeter-replay-publish",
            **client_kwargs(),
        )
        try:
            await producer.start()
            return producer
        except KafkaError as exc:
            await producer.stop()
            if not idempotent or isinstance(exc, KafkaConnectionError):
                raise
            print(
                f"ccmeter: note: {broker} refuses idempotent producers ({type(exc).__name__}); publishing with "
                "acks=all without idempotence (a retried batch may be written twice: the worker drops the copies)",
                file=sys.stderr,
            )
        except BaseException:
            await producer.stop()
            raise
    raise AssertionError("unreachable")


async def publish(
    source: Source, broker: str, topic: str, rate: float | None, keep_timestamps: bool, bar: Any
) -> PublishResult:
    """Send every record of `source` to `topic` with one idempotent producer; wait until all are acknowledged."""
    producer = await start_producer(broker)
    began = time.monotonic()
    per_partition: Counter[int] = Counter()
    sent = 0
    try:
        partitions = await topic_partitions(producer, topic, broker)
        pending: list[asyncio.Future] = []

        async def settle(limit: int) -> None:
            while len(pending) > limit:
                done = await pending.pop(0)
                per_partition[done.partition] += 1
                bar.update(1)
            if limit == 0 or per_partition.total() % 1000 == 0:
                bar.set_postfix_str(f"in flight {len(pending)}", refresh=False)

        for key, value, timestamp, original in records(source, keep_timestamps):
            partition = original % partitions if key is None and original is not None else None
            pending.append(
                await producer.send(topic, value=value, key=key, partition=partition, timestamp_ms=timestamp)
            )
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(pending) >= 20_000:
                await settle(10_000)
        await producer.flush()
        await settle(0)
    finally:
        await producer.stop()
    return PublishResult(sent, per_partition, time.monotonic() - began)
