"""The per-batch checkpoint: one documented order of writes, each step's failure a typed error.

For every batch (the results of the owned partitions):

1. the outputs are sent and acknowledged (`OutputDeliveryError`);
2. the state entries (touched accounts, then each partition's clock) are sent to the changelog and acknowledged,
   with transactions committed together with the outputs (`ChangelogWriteError`);
3. the local store applies the entries (processor/worker/store.py);
4. the group's offsets are committed every commit interval, for lag tools (processor/app.py; a refusal means this
   worker lost the partitions: `FencedError`).

Two guarantees (`--processing-guarantee`):

- `exactly_once` (brokers with transactions, e.g. Apache Kafka): one transactional producer per owned events
  partition, `transactional_id = f"{app_id}-{partition}"` (Kafka Streams' EOS-v1 pattern). A partition's outputs and
  state entries of one batch are one transaction. The next owner's producer fences this one when it starts (and
  aborts its open transaction), so a zombie's writes fail with `ProducerFenced` and `read_committed` readers (the
  sink, the changelog recovery) never see them.
- `at_least_once` (brokers without transactions, e.g. Tansu): one idempotence-free producer for everything; fencing is
  checked by the worker before it writes (processor/app.py), which leaves a short window a transaction would close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)

from processor.kafka_security import access_error
from processor.worker.errors import ChangelogWriteError, CheckpointError, FencedError, OutputDeliveryError
from processor.worker.faults import Faults
from processor.worker.partition import BatchResult
from processor.worker.sender import BatchSender, output_records
from processor.worker.store import ChangelogStore

log = logging.getLogger("ccmeter.worker")

EXACTLY_ONCE = "exactly_once"
AT_LEAST_ONCE = "at_least_once"
FENCED_ERRORS = (ProducerFenced, InvalidProducerEpoch, InvalidProducerIdMapping, TransactionalIdAuthorizationFailed)
CLOSE_TIMEOUT_S = 10.0


def transactional_id(app_id: str, partition: int) -> str:
    """The transactional id of the producer of one events partition."""
    return f"{app_id}-{partition}"


async def supports_transactions(bootstrap: str, app_id: str) -> bool:
    """Whether the broker gives a transactional producer an id (Tansu answers InitProducerId with an error)."""
    sender = BatchSender(bootstrap, transactional_id=f"{app_id}-probe")
    quiet = logging.getLogger("aiokafka.producer.sender")  # logs the expected refusal as an error
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(sender.start(), timeout=20)
    except (TimeoutError, KafkaError, OSError) as exc:
        if access_error(exc, bootstrap) is not None:  # refused (missing ACL...), not a broker without transactions
            raise
        log.info("the broker gives no transactional producer (%r): at_least_once", exc)
        return False
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sender.close(), timeout=CLOSE_TIMEOUT_S)
        quiet.setLevel(level)
    return True


class Checkpoint:
    """Writes batches in the checkpoint order through the worker's own producers."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        names: dict[str, str],
        store: ChangelogStore,
        guarantee: str,
        faults: Faults | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.app_id = app_id
        self.names = names
        self.store = store
        self.transactional = guarantee == EXACTLY_ONCE
        self.faults = faults or Faults()
        self._shared = BatchSender(bootstrap)  # at_least_once: every partition's writes
        self._senders: dict[int, BatchSender] = {}  # exactly_once: one transactional producer per partition
        self.batches = 0

    @property
    def sent(self) -> int:
        """Output and changelog records acknowledged so far."""
        return self._shared.sent + sum(s.sent for s in self._senders.values())

    async def own(self, partitions: list[int]) -> None:
        """Start the producers of newly owned partitions (exactly_once: this fences their previous owner, whose open
        transaction is aborted; call it before recovering the partitions' state)."""
        if not self.transactional:
            return
        for partition in partitions:
            if partition in self._senders:
                continue
            sender = BatchSender(self.bootstrap, transactional_id(self.app_id, partition))
            try:
                await sender.start()
            except FENCED_ERRORS as exc:
                raise FencedError(f"a newer producer owns {sender.transactional_id}: {exc!r}", {partition}) from exc
            except KafkaError as exc:
                raise ChangelogWriteError(f"starting producer {sender.transactional_id}: {exc!r}", {partition}) from exc
            self._senders[partition] = sender

    async def drop(self, partitions: list[int]) -> None:
        """Stop the producers of partitions this worker no longer owns."""
        for partition in partitions:
            sender = self._senders.pop(partition, None)
            if sender is not None:
                await _close(sender)

    async def write(self, results: list[BatchResult]) -> None:
        """Steps 1-3 for one batch; raises a CheckpointError subclass (nothing later is done for this batch)."""
        self.batches += 1
        if self.transactional:
            outcomes = await asyncio.gather(*(self._write_transaction(r) for r in results), return_exceptions=True)
            _raise_first(outcomes)
            positions = dict(zip((r.partition for r in results), outcomes, strict=True))
        else:
            positions = await self._write_plain(results)
        self.faults.hit("after_changelog")
        for result in results:
            self.store.apply(result.partition, result.states, positions[result.partition])  # type: ignore[arg-type]

    async def _write_plain(self, results: list[BatchResult]) -> dict[int, int]:
        sender = self._shared
        partitions = {r.partition for r in results}
        try:
            await sender.send(record for result in results for record in output_records(self.names, result))
        except (KafkaError, OSError, ValueError) as exc:
            raise OutputDeliveryError(repr(exc), partitions) from exc
        self.faults.hit("after_outputs")
        changelog = self.store.topic
        try:
            positions = await asyncio.gather(
                *(sender.send_to(changelog, r.partition, list(r.states.items())) for r in results)
            )
        except (KafkaError, OSError, ValueError) as exc:
            raise ChangelogWriteError(repr(exc), partitions) from exc
        return {r.partition: position for r, position in zip(results, positions, strict=True)}

    async def _write_transaction(self, result: BatchResult) -> int:
        """One partition's transaction; the changelog offset after its entries (-1: nothing written)."""
        partition = result.partition
        sender = self._senders.get(partition)
        if sender is None:
            raise FencedError("no producer: the partition was given up", {partition})
        records = output_records(self.names, result)
        if not records and not result.states:
            return -1
        try:
            await sender.begin()
            await sender.send(records)
        except FENCED_ERRORS as exc:
            raise FencedError(f"{sender.transactional_id} was fenced ({type(exc).__name__})", {partition}) from exc
        except (KafkaError, OSError, ValueError) as exc:
            raise OutputDeliveryError(repr(exc), {partition}) from exc
        self.faults.hit("after_outputs")
        try:
            position = await sender.send_to(self.store.topic, partition, list(result.states.items()))
            await sender.commit()
        except FENCED_ERRORS as exc:
            raise FencedError(f"{sender.transactional_id} was fenced ({type(exc).__name__})", {partition}) from exc
        except (KafkaError, OSError, ValueError) as exc:
            raise ChangelogWriteError(repr(exc), {partition}) from exc
        return position

    async def close(self) -> None:
        """Stop every producer (an open transaction is aborted by its producer's next owner, or times out)."""
        await self.drop(sorted(self._senders))
        await _close(self._shared)


def _raise_first(outcomes: list[object]) -> None:
    """Raise the most serious error among gathered outcomes: delivery and changelog failures before fencing."""
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if not errors:
        return
    for error in errors:
        if not isinstance(error, CheckpointError):
            raise error
    serious = [e for e in errors if not isinstance(e, FencedError)]
    if serious:
        raise serious[0]
    fenced = set().union(*(e.partitions for e in errors if isinstance(e, CheckpointError)))
    raise FencedError("; ".join(e.detail for e in errors if isinstance(e, CheckpointError)), fenced)


async def _close(sender: BatchSender) -> None:
    """Stop a producer; a fenced or unreachable one may not stop cleanly, which is logged and ignored."""
    await sender.abort()
    closing: Awaitable[None] = sender.close()
    try:
        await asyncio.wait_for(closing, timeout=CLOSE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the producer is gone either way
        log.info("a producer did not stop cleanly: %r", exc)
