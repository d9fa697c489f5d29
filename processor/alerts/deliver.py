"""The Kafka side of alert delivery: read PREFIX+alerts with an own consumer group, POST, then commit.

Every partition of the alerts topic is assigned to this one process (no group membership: a restart after a crash
resumes at once, without waiting for a session timeout); the group only keeps the offsets. A record's offset is
committed after its POST succeeded or the receiver rejected it for good (a 4xx other than 408/429: logged as dead),
in order per partition, so a crash re-delivers at most the alerts whose commit it missed, with the same
idempotency key. Within one run each `(alert_id, state)` is POSTed once, whatever the worker re-emitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from processor.alerts.webhook import BadAlert, Delivery, RetryPolicy, build_delivery, post, redact_url
from processor.kafka_security import client_kwargs
from processor.stopping import run_until_signalled
from processor.topics import ALERTS, topic_names

log = logging.getLogger("ccmeter.alerts")
SEEN_LIMIT = 1_000_000  # (alert_id, state) pairs remembered per run for dropping re-emitted records


@dataclass(frozen=True)
class DeliverConfig:
    """Settings of `ccmeter alerts deliver` (the secret is never shown by repr)."""

    broker: str
    prefix: str
    url: str
    secret: bytes = field(repr=False)
    group: str
    once: bool = False
    timeout: float = 10.0  # seconds per POST
    policy: RetryPolicy = RetryPolicy()
    give_up_seconds: float | None = None  # exit (ReceiverDown) after the receiver failed this long; None: never
    start: Literal["earliest", "latest"] = "earliest"  # where a group without committed offsets starts


@dataclass
class DeliverStats:
    """What one run did."""

    delivered: int = 0
    dead: int = 0  # rejected by the receiver for good
    duplicates: int = 0  # the same (alert_id, state) again in this run: not POSTed again
    bad: int = 0  # records that are not alerts
    retries: int = 0

    def summary(self) -> str:
        """One line for the end of a run."""
        return (
            f"{self.delivered} delivered, {self.dead} dead (rejected by the receiver), {self.duplicates} re-emitted "
            f"records dropped, {self.bad} bad records skipped, {self.retries} retries"
        )


class DeliveryError(Exception):
    """An operational failure that ends the run (one line, exit status 1)."""


class ReceiverDown(DeliveryError):
    """The receiver kept failing for `give_up_seconds`; the alert in hand was not committed."""


class Deliverer:
    """Consume the alerts topic and POST each record to the webhook; stop on `stop()` after the POST in flight."""

    def __init__(self, config: DeliverConfig) -> None:
        self.config = config
        self.topic = topic_names(config.prefix)[ALERTS]
        self.stats = DeliverStats()
        self.stopping = asyncio.Event()
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.uncommitted: dict[Any, int] = {}  # offsets whose commit failed, retried with the next commit

    def stop(self) -> None:
        """Finish the POST in flight, commit it and return."""
        self.stopping.set()

    async def run(self) -> DeliverStats:
        """Deliver until stopped or, with `once`, up to the end offsets seen at the start."""
        import aiohttp
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.config.broker,
            client_id="ccmeter-alerts",
            group_id=self.config.group,
            enable_auto_commit=False,
            auto_offset_reset=self.config.start,
            isolation_level="read_committed",
            request_timeout_ms=15_000,
            **client_kwargs(),
        )
        try:
            await consumer.start()
            tps = await self._assign(consumer)
            ends = await consumer.end_offsets(tps) if self.config.once else {}
            log.info(
                "alerts: %s (%d partitions, group %s) -> %s",
                self.topic,
                len(tps),
                self.config.group,
                redact_url(self.config.url),
            )
            async with aiohttp.ClientSession() as session:
                await self._consume(consumer, session, tps, ends)
        finally:
            await self._commit(consumer, {})
            await _quiet_stop(consumer)
        return self.stats

    async def _assign(self, consumer: Any) -> list[Any]:
        """Assign every partition of the alerts topic and seek to the group's committed offsets (or `start`)."""
        from aiokafka import TopicPartition

        partitions = await self._partitions()
        if not partitions:
            raise DeliveryError(f"topic {self.topic} not found on {self.config.broker} (see `ccmeter topics create`)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        fresh = []
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None or committed < 0:
                fresh.append(tp)
            else:
                consumer.seek(tp, committed)
        if fresh:
            edge = consumer.end_offsets if self.config.start == "latest" else consumer.beginning_offsets
            for tp, offset in (await edge(fresh)).items():
                consumer.seek(tp, offset)
        return tps

    async def _partitions(self) -> list[int]:
        """The partition ids of the alerts topic ([] if it does not exist; never creates it)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.config.broker,
            client_id="ccmeter-alerts",
            request_timeout_ms=15_000,
            **client_kwargs(),
        )
        await admin.start()
        try:
            if self.topic not in await admin.list_topics():
                return []
            described = await admin.describe_topics([self.topic])
        finally:
            await _quiet_stop(admin)
        return [p["partition"] for topic in described if topic.get("error_code", 0) == 0 for p in topic["partitions"]]

    async def _consume(self, consumer: Any, session: Any, tps: list[Any], ends: dict[Any, int]) -> None:
        while not self.stopping.is_set():
            if self.config.once and await _reached(consumer, tps, ends):
                await self._commit(consumer, {tp: await consumer.position(tp) for tp in tps})
                return
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            for tp, records in batches.items():
                for record in records:
                    if self.stopping.is_set() or not await self._handle(session, tp, record):
                        return
                    await self._commit(consumer, {tp: record.offset + 1})

    async def _handle(self, session: Any, tp: Any, record: Any) -> bool:
        """Deliver one record (or skip it); False when a stop came while waiting to retry."""
        try:
            delivery = build_delivery(record.value)
        except BadAlert as exc:
            log.warning("alerts: skipped %s[%d] offset %d: %s", tp.topic, tp.partition, record.offset, exc)
            self.stats.bad += 1
            return True
        if delivery.key in self.seen:
            self.stats.duplicates += 1
            return True
        if not await self._deliver(session, delivery):
            return False
        self.seen[delivery.key] = None
        if len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)
        return True

    async def _deliver(self, session: Any, delivery: Delivery) -> bool:
        """POST until delivered or dead; False if stopped while waiting; ReceiverDown after `give_up_seconds`."""
        config, attempts, down_since = self.config, 0, None
        while True:
            result = await post(session, config.url, delivery, config.secret, config.timeout)
            if result.outcome == "ok":
                if attempts:
                    log.info("alerts: %s delivered after %d retries (%s)", delivery.key, attempts, result.reason)
                else:
                    log.info("alerts: %s delivered (%s)", delivery.key, result.reason)
                self.stats.delivered += 1
                return True
            if result.outcome == "dead":
                log.error("alerts: %s rejected by the receiver (%s): dead, not retried", delivery.key, result.reason)
                self.stats.dead += 1
                return True
            attempts += 1
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if config.give_up_seconds is not None and now - down_since >= config.give_up_seconds:
                raise ReceiverDown(
                    f"receiver {redact_url(config.url)} failing for {now - down_since:.0f}s ({attempts} attempts "
                    f"at {delivery.key}; last: {result.reason}); gave up, the alert stays uncommitted"
                )
            delay = config.policy.delay(attempts, result.retry_after)
            if config.give_up_seconds is not None:
                delay = max(0.0, min(delay, down_since + config.give_up_seconds - now))
            log.warning(
                "alerts: %s not delivered (attempt %d: %s); retrying in %.1fs",
                delivery.key,
                attempts,
                result.reason,
                delay,
            )
            self.stats.retries += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
                return False

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> None:
        """Commit `offsets` (and any earlier ones whose commit failed); a failure is one line, retried next time."""
        from aiokafka.errors import KafkaError

        pending = {**self.uncommitted, **offsets}
        if not pending:
            return
        try:
            await consumer.commit(pending)
        except (KafkaError, OSError) as exc:
            self.uncommitted = pending
            log.warning("alerts: committing offsets failed (%s); retried with the next commit", type(exc).__name__)
        else:
            self.uncommitted = {}


async def _reached(consumer: Any, tps: list[Any], ends: dict[Any, int]) -> bool:
    for tp in tps:
        if await consumer.position(tp) < ends.get(tp, 0):
            return False
    return True


async def _quiet_stop(client: Any) -> None:
    """Stop an aiokafka client; a lost broker makes stopping fail, which changes nothing at this point."""
    try:
        await (client.stop() if hasattr(client, "stop") else client.close())
    except Exception as exc:  # noqa: BLE001 - closing after a failure
        log.debug("alerts: stopping %s: %s", type(client).__name__, exc)


def run_deliver(config: DeliverConfig) -> DeliverStats:
    """Run the deliverer in the foreground; SIGTERM or Ctrl-C stop after the POST in flight (twice: abort)."""
    return asyncio.run(_main(config))


async def _main(config: DeliverConfig) -> DeliverStats:
    deliverer = Deliverer(config)

    def announce() -> None:
        log.warning("alerts: stopping after the POST in flight (signal again to abort)")

    return await run_until_signalled(deliverer.run, deliverer.stop, announce)
