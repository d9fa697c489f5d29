"""Processing of one events-topic partition, without Faust: raw records in, outputs and state entries out.

The rules of admission and advance are the pure fold's `PartitionDriver` (processor/core/partition.py: the clock
`W_p`, each account's horizon, the wake heap of idle accounts); this module adds the I/O around it: decoding and
dead letters, offsets, a cache of account folds loaded from the state table, alerts, and the state entries to write.

Idempotence against re-delivery (Kafka is at-least-once): a record whose offset is at or below the partition's
applied offset is dropped (`redelivered`). State entries of one batch are written account by account, then the
clock; a crash in between can leave an account newer than the clock. So each account also stores the last offset
applied to it: such a record still moves the clock (so the watermark ends up the same), but the account skips it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import msgpack

from processor.core.alerts import DEFAULT_SHARE, Alert, AlertTracker
from processor.core.fold import AccountFold, PartitionClock
from processor.core.model import NEVER, FoldOutput, Settings
from processor.core.partition import PartitionDriver
from processor.deadletters import Letter
from processor.worker import records as rec
from processor.worker.accounts import Parts, load_account, write_account
from processor.worker.state import (
    ClockEntry,
    account_header,
    account_key,
    clock_key,
    decode_clock,
    encode_clock,
    is_clock_key,
    is_part_key,
)
from schemas.events import MAX_RECORD_BYTES, Rejection, format_ms
from schemas.fast import WireEvent, decode_wire

log = logging.getLogger("ccmeter.worker")

# (offset, key, value, timestamp_ms) of one events-topic record; the timestamp (arrival time) is the second reference
# of the future-skew check (docs/semantics.md section 7), None (or negative, as Kafka gives it) if unknown.
Raw = tuple[int, bytes | None, bytes | None, int | None]
Loader = Callable[[bytes], bytes | None]
# A key longer than this cannot be an account_id (128 characters): such a record is `too_large` (by reference), so
# that a dead letter, which carries the original key, stays within the broker's limits.
MAX_KEY_BYTES = 1024


@dataclass(slots=True)
class Slot:
    """One account in memory: its fold, alert state, last applied offset, wake time and stored parts."""

    fold: AccountFold
    alerts: AlertTracker
    applied: int = -1
    wake: int = NEVER
    parts: Parts = field(default_factory=Parts)


@dataclass(slots=True)
class BatchResult:
    """What one batch of one partition produced."""

    partition: int
    output: FoldOutput = field(default_factory=FoldOutput)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[Letter] = field(default_factory=list)
    states: dict[bytes, bytes | None] = field(default_factory=dict)  # entries to write (None: delete), clock last
    redelivered: int = 0
    applied: int = 0
    gaps: int = 0
    resume_at: int | None = None  # records are missing before the rest of the batch: re-read from this offset
    idle_floor: int | None = None  # W_p - account_idle_lateness after the batch (None before any event)
    watermarks: dict[str, int | None] = field(default_factory=dict)  # W_a of the accounts in `output.horizons`
    # accepted (offset, value, timestamp)s of each account
    offered: dict[str, list[tuple[int, bytes | None, int | None]]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)  # applied, orphan, duplicate(_conflict), dead_letter:<reason>


class PartitionState:
    """Clock, applied offset, account cache and wake heap of one partition."""

    def __init__(
        self,
        partition: int,
        topic: str,
        settings: Settings,
        load: Loader,
        *,
        share: Fraction = DEFAULT_SHARE,
        clock: ClockEntry | None = None,
        wakes: dict[str, int] | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.partition = partition
        self.max_record_bytes = max_record_bytes
        self.topic = topic
        self.settings = settings
        self.share = share
        self._load = load
        self.driver = PartitionDriver(settings, clock.watermark if clock else None, wakes)
        self.applied = clock.applied if clock else -1
        self.counts: Counter[str] = Counter(clock.counts if clock else {})  # since the partition began (stored)
        self.start_known = clock is not None  # else the caller may set `applied` to the log start offset - 1
        self.slots: dict[str, Slot] = {}

    @property
    def clock(self) -> PartitionClock:
        """The partition's watermark `W_p` and horizons (the driver's)."""
        return self.driver.clock

    # -- accounts --------------------------------------------------------------------------------------------------

    def slot(self, account_id: str) -> Slot:
        """The account's slot: cached, else loaded from the table, else new."""
        slot = self.slots.get(account_id)
        if slot is None:
            raw = self._load(account_key(account_id))
            if raw is None:
                fold = AccountFold(account_id)
                fold.track()
                slot = Slot(fold, AlertTracker(share=self.share))
            else:
                loaded = load_account(raw, self._load)
                alerts = AlertTracker.from_state(loaded.alert_state, self.share)
                slot = Slot(loaded.fold, alerts, loaded.applied, loaded.wake, loaded.parts)
            self.slots[account_id] = slot
        return slot

    def cached_fold(self, account_id: str) -> AccountFold | None:
        """The account's fold if it is in memory."""
        slot = self.slots.get(account_id)
        return slot.fold if slot else None

    def trim(self, limit: int, keep: Iterable[str] = ()) -> int:
        """Drop the oldest cached slots beyond `limit` (their state is in the table); return how many."""
        excess = len(self.slots) - limit
        if excess <= 0:
            return 0
        kept = set(keep)
        victims = [account for account in self.slots if account not in kept][:excess]
        for account in victims:
            del self.slots[account]
        return len(victims)

    # -- processing ------------------------------------------------------------------------------------------------

    def process(self, batch: Sequence[Raw], accept_gaps: bool = False) -> BatchResult:
        """Apply a batch of raw records (in offset order); return outputs, dead letters and state entries.

        Offsets are applied without holes: at a record beyond `applied + 1` the rest of the batch is left out and
        `resume_at` says where to re-read from (the stream skipped records), unless `accept_gaps` (records that
        really do not exist, e.g. transaction markers) or the partition's start is unknown.
        """
        result = BatchResult(self.partition)
        dead = result.dead_letters
        for offset, key, value, record_ms in batch:
            if record_ms is not None and record_ms < 0:
                record_ms = None  # a record without a timestamp (Kafka's -1)
            if offset <= self.applied:
                result.redelivered += 1
                continue
            if offset != self.applied + 1 and (self.applied >= 0 or self.start_known):
                result.gaps += 1
                if not accept_gaps:
                    result.resume_at = self.applied + 1
                    log.warning("partition %d: offset %d follows %d; re-reading", self.partition, offset, self.applied)
                    break
                log.warning("partition %d: no records between %d and %d", self.partition, self.applied, offset)
            self.applied = offset
            try:
                self._admit(offset, key, value, record_ms, result)
            except Exception as exc:  # noqa: BLE001 - one record never stops the partition (SPEC 2)
                log.exception("partition %d offset %d: processing failed; dead-lettered", self.partition, offset)
                letter = rec.dead_letter(
                    "processing_error", _describe(exc), value, self.topic, self.partition, offset, key=key,
                    timestamp=record_ms
                )  # fmt: skip
                dead.append(letter)
        self._advance(result)
        counts = result.counts
        for letter in dead:
            counts["dead_letter:" + letter["reason"]] += 1
        self.counts.update(counts)
        result.states[clock_key(self.partition)] = encode_clock(
            ClockEntry(self.partition, self.clock.watermark, self.applied, dict(self.counts))
        )
        return result

    def _admit(
        self, offset: int, key: bytes | None, value: bytes | None, record_ms: int | None, result: BatchResult
    ) -> None:
        """Decode one record and let the driver judge it for its account, or dead-letter it with the reason (a record
        beyond the limits before any parsing, by reference: `too_large`)."""
        dead = result.dead_letters
        where = (self.topic, self.partition, offset)
        if value is None:
            decoded: tuple[WireEvent, int] | Rejection = Rejection(
                reason="invalid_json", detail="null record value (a tombstone)"
            )
        elif key is not None and len(key) > MAX_KEY_BYTES:
            decoded = Rejection(reason="too_large", detail=f"record key of {len(key)} bytes, more than {MAX_KEY_BYTES}")
        else:
            decoded = decode_wire(value, self.max_record_bytes)
        if not isinstance(decoded, tuple):  # a Rejection (cheaper than isinstance on a pydantic model)
            if decoded.reason == "too_large":
                dead.append(rec.too_large(decoded.detail, value or b"", *where, timestamp=record_ms))
            else:
                detail = decoded.detail
                dead.append(rec.dead_letter(decoded.reason, detail, value, *where, key=key, timestamp=record_ms))
            return
        event, at_ms = decoded
        account_id = event.account_id
        if key != account_id.encode():
            detail = f"record key {key!r} is not the event's account_id"
            dead.append(rec.dead_letter("key_mismatch", detail, value, *where, key=key, timestamp=record_ms))
            return
        slot = self.slots.get(account_id) or self.slot(account_id)
        fresh = offset > slot.applied  # else applied to the account before a crash: its outputs exist already
        if fresh:
            slot.applied = offset
        verdict = self.driver.admit(slot.fold, event, offset, at_ms, record_ms, fresh=fresh)
        if verdict is None:
            return
        if verdict == "accepted":
            result.applied += 1
            offered = result.offered.get(account_id)
            if offered is None:
                offered = result.offered[account_id] = []
            offered.append((offset, value, record_ms))
        elif verdict in ("duplicate", "duplicate_conflict"):
            result.applied += 1
            result.counts[verdict] += 1
        else:
            clock = self.clock
            detail = (
                f"occurred_at {format_ms(at_ms)}, account horizon {format_ms(clock.horizon_of(slot.fold))}"
                if verdict == "too_late"
                else f"occurred_at {format_ms(at_ms)}, partition watermark {clock.watermark} ms"
            )
            dead.append(rec.dead_letter(verdict, detail, value, *where, key=key, timestamp=record_ms))

    def _advance(self, result: BatchResult) -> None:
        """Advance the accounts the driver says are due (a failing account is quarantined, the rest go on)."""
        clock = self.clock
        result.idle_floor = None if clock.watermark is None else clock.idle_floor
        for account_id in self.driver.due():
            try:
                self._advance_account(account_id, self.slot(account_id), result)
            except Exception as exc:  # noqa: BLE001 - one account never stops the partition
                self._quarantine(account_id, exc, result)

    def _advance_account(self, account_id: str, slot: Slot, result: BatchResult) -> None:
        """Advance one account to its horizon; its outputs, alerts, wake time and state entry go into `result`
        only once all of them were computed (a failure leaves `result` as it was)."""
        step = FoldOutput()
        metrics = slot.fold.metrics
        applied, orphan = metrics.applied, metrics.orphan
        horizon = self.driver.advance(account_id, slot.fold, step)
        alerts = slot.alerts.advance(account_id, step.usage_changes, [plan for _, plan in step.plans], horizon)
        grace_due = slot.alerts.grace_due
        wake = slot.fold.pending_until()
        if grace_due is not None and grace_due < wake:
            wake = grace_due
        entries: dict[bytes, bytes | None] = {}
        write_account(entries, self.partition, slot.fold, slot.parts, slot.applied, wake, slot.alerts.to_state())
        slot.wake = wake
        self.driver.schedule(account_id, wake)
        result.watermarks[account_id] = slot.fold.watermark
        result.counts["applied"] += metrics.applied - applied
        result.counts["orphan"] += metrics.orphan - orphan
        result.alerts.extend(alerts)
        result.output.extend(step)
        result.states.update(entries)

    def _quarantine(self, account_id: str, exc: Exception, result: BatchResult) -> None:
        """Advancing the account failed: forget what this batch did to it (back to its stored state) and turn the
        records it accepted in this batch into `processing_error` dead letters, so that the partition goes on."""
        log.error(
            "partition %d: account %r failed to advance (%s); its %d records of this batch are dead letters",
            self.partition,
            account_id,
            _describe(exc),
            len(result.offered.get(account_id, ())),
            exc_info=exc,
        )
        self.slots.pop(account_id, None)
        key = account_id.encode()  # an accepted record's key is its account_id
        for offset, value, record_ms in result.offered.pop(account_id, ()):
            letter = rec.dead_letter(
                "processing_error", _describe(exc), value, self.topic, self.partition, offset, key=key,
                timestamp=record_ms
            )  # fmt: skip
            result.dead_letters.append(letter)


def _describe(exc: BaseException) -> str:
    """`Type: message` of an exception, at most 300 characters."""
    return f"{type(exc).__name__}: {exc}"[:300]


def scan_entries(items: Iterable[tuple[bytes, bytes]]) -> tuple[dict[int, ClockEntry], dict[int, dict[str, int]]]:
    """From all table entries: the clock of each partition and the wake times of its non-idle accounts."""
    clocks: dict[int, ClockEntry] = {}
    wakes: dict[int, dict[str, int]] = {}
    for key, value in items:
        if value is None:
            continue
        try:
            if is_clock_key(key):
                entry = decode_clock(value)
                clocks[entry.partition] = entry
                continue
            if is_part_key(key):
                continue
            partition, _, wake = account_header(value)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("ignoring unreadable state entry %r: %r", key[:80], exc)
            continue
        if wake < NEVER:
            wakes.setdefault(partition, {})[key.decode()] = wake
    return clocks, wakes
