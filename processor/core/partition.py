"""The partition driver: which events of one partition reach their accounts, and when the accounts advance.

One implementation for the pure fold (`fold_batch`, `fold_history`) and the streaming worker
(processor/worker/partition.py), which adds only I/O around it: decoding, offsets, dead letters, state entries and
alerts. The rules (SPEC 2, docs/semantics.md):

- admission: an event more than `max_future_skew` ahead of `max(W_p, record time)` is `future_skew`; one below its
  account's horizon `H_a = max(W_a - allowed_lateness, W_p - account_idle_lateness)` is `too_late`; otherwise it
  moves the partition watermark `W_p` and is offered to its account (deduplication, reorder buffer);
- advance: after a batch, every account with a record in it advances to its horizon; an account without records
  advances only when the idle floor `W_p - account_idle_lateness` passes its next due work (its wake time, kept in a
  heap: the cost follows the due work, not the number of accounts).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from processor.core.fold import AccountFold, PartitionClock, Verdict
from processor.core.model import NEVER, FoldOutput, LateEvents, Metrics, Settings
from processor.core.records import EVENT_ID, Record, at_ms_of, same_payload, to_record
from schemas.events import Event
from schemas.fast import WireEvent

__all__ = ["PartitionDriver", "flush", "fold_batch", "fold_history", "tick"]


class PartitionDriver:
    """Clock and wake heap of one partition: admits events to their accounts and says which accounts to advance."""

    __slots__ = ("_heap", "_queued", "_touched", "clock", "settings", "wakes")

    def __init__(self, settings: Settings, watermark: int | None = None, wakes: Mapping[str, int] | None = None):
        self.settings = settings
        self.clock = PartitionClock(settings, watermark)
        self.wakes: dict[str, int] = dict(wakes or {})  # account -> next due work (only accounts that have some)
        # The heap holds at most one live entry per account, at or before its wake (`_queued`: that entry's time).
        # An account whose wake moves later (every batch, for an active one) keeps its entry; when the entry comes
        # up, the account is due or queued again at its wake then. Pushing at every reschedule instead kept an entry
        # per batch per account until the idle floor passed it (two hours of batches: millions at many accounts).
        self._queued: dict[str, int] = dict(self.wakes)
        self._heap: list[tuple[int, str]] = [(wake, account) for account, wake in self.wakes.items()]
        heapq.heapify(self._heap)
        self._touched: dict[str, None] = {}  # accounts with records since the last `due` (insertion ordered)

    def admit(
        self,
        fold: AccountFold,
        event: WireEvent,
        arrival: int,
        at_ms: int,
        record_ms: int | None = None,
        *,
        fresh: bool = True,
    ) -> Verdict | None:
        """Judge one event of `fold`'s account and offer it if it passes; the account is due at the next `due`.

        `record_ms` is the record's arrival time (the second reference of the future-skew check). A record that is
        not `fresh` was already applied to its account before a crash (its outputs exist): it only moves the clock
        as it did the first time, and the verdict is None.
        """
        self._touched[fold.account_id] = None
        clock = self.clock
        if clock.skewed(at_ms, record_ms):
            if not fresh:
                return None
            fold.metrics.future_skew += 1
            return "future_skew"
        if not fresh:
            clock.observe(at_ms)  # a no-op for an event that was too late: it lay below the horizon, so below W_p
            return None
        horizon = clock.horizon_of(fold)
        if at_ms < horizon:
            fold.metrics.too_late += 1
            return "too_late"
        clock.observe(at_ms)
        return fold.offer(event, arrival, horizon, at_ms)

    def due(self) -> list[str]:
        """The accounts to advance now: those with records since the last call, then those whose next due work the
        idle floor has passed (their own horizon did not move, but the floor under it did)."""
        due = self._touched
        self._touched = {}
        floor = self.clock.idle_floor
        heap, wakes, queued = self._heap, self.wakes, self._queued
        woken: list[tuple[int, str]] = []
        while heap and heap[0][0] < floor:
            at, account_id = heapq.heappop(heap)
            if queued.get(account_id) != at:
                continue  # superseded by an earlier entry of the account, or the account is idle
            del queued[account_id]
            wake = wakes.get(account_id)
            if wake is None:
                continue  # idle since it was queued
            if wake < floor:
                del wakes[account_id]
                woken.append((wake, account_id))
            else:
                queued[account_id] = wake
                heapq.heappush(heap, (wake, account_id))
        for _, account_id in sorted(woken):  # in the order of their wake times
            due.setdefault(account_id, None)
        return list(due)

    def advance(self, account_id: str, fold: AccountFold, out: FoldOutput) -> int:
        """Advance one account to its horizon, appending to `out`; return the horizon (its `data_through`)."""
        horizon = self.clock.horizon_of(fold)
        fold.advance_into(horizon, self.settings, out)
        out.horizons[account_id] = horizon
        return horizon

    def schedule(self, account_id: str, wake: int) -> None:
        """Remember the account's next due work (NEVER: none)."""
        if wake >= NEVER:
            self.wakes.pop(account_id, None)  # its heap entry, if any, is dropped when it comes up
            return
        self.wakes[account_id] = wake
        queued = self._queued.get(account_id)
        if queued is None or wake < queued:
            self._queued[account_id] = wake
            heapq.heappush(self._heap, (wake, account_id))

    @property
    def queued(self) -> int:
        """Entries in the wake heap (at most one live entry per account with due work, plus superseded ones)."""
        return len(self._heap)

    def advance_due(self, states: Mapping[str, AccountFold], out: FoldOutput) -> None:
        """Advance every due account of `states` and schedule its next work (the pure fold's use)."""
        for account_id in self.due():
            fold = states[account_id]
            self.advance(account_id, fold, out)
            self.schedule(account_id, fold.pending_until())


# -- the pure fold's partition-level entry points ------------------------------------------------------------------


def fold_batch(
    states: dict[str, AccountFold],
    driver: PartitionDriver,
    batch: Sequence[tuple[int, Event]],
    record_ms: Sequence[int | None] | None = None,
) -> tuple[FoldOutput, list[tuple[int, Event, Verdict]]]:
    """Admit each (arrival, event) of a batch, then advance the due accounts. `record_ms[i]` is the arrival time of
    `batch[i]` (Kafka record timestamp) for the future-skew check. Returns the outputs and the non-accepted
    verdicts."""
    rejected: list[tuple[int, Event, Verdict]] = []
    for index, (arrival, event) in enumerate(batch):
        account_id = event.account_id
        fold = states.get(account_id)
        if fold is None:
            fold = states[account_id] = AccountFold(account_id)
        stamp = record_ms[index] if record_ms is not None else None
        verdict = driver.admit(fold, event, arrival, at_ms_of(event), stamp)
        if verdict != "accepted" and verdict is not None:
            rejected.append((arrival, event, verdict))
    out = FoldOutput()
    driver.advance_due(states, out)
    return out, rejected


def tick(states: dict[str, AccountFold], driver: PartitionDriver) -> FoldOutput:
    """Advance the accounts whose due work the idle floor has passed (between batches)."""
    out = FoldOutput()
    driver.advance_due(states, out)
    return out


def flush(states: dict[str, AccountFold], settings: Settings) -> FoldOutput:
    """End of input: advance every account to +infinity (all timers fire, every window closes)."""
    out = FoldOutput()
    for fold in states.values():
        fold.advance_into(NEVER, settings, out)
    return out


def _restated_order(
    states: dict[str, AccountFold], events: Iterable[Event]
) -> tuple[list[tuple[int, Event]], list[tuple[int, Event, Verdict]], dict[str, int]]:
    """A file read as the restated view: copies dropped in arrival order (first arrival wins), then the rest in
    application order `(occurred_at, arrival)`, so that no event is too late. Also returns the latest `occurred_at`
    of each account's dropped copies: they still count towards `data_through` (docs/semantics.md section 6)."""
    first: dict[tuple[str, str], Record] = {}
    kept: list[tuple[int, int, Event]] = []
    rejected: list[tuple[int, Event, Verdict]] = []
    copies: dict[str, int] = {}
    for arrival, event in enumerate(events):
        at_ms = at_ms_of(event)
        record = to_record(event, at_ms, arrival, 0)
        key = (event.account_id, record[EVENT_ID])
        previous = first.get(key)
        if previous is None:
            first[key] = record
            kept.append((at_ms, arrival, event))
            continue
        fold = states.get(event.account_id)
        if fold is None:
            fold = states[event.account_id] = AccountFold(event.account_id)
        if at_ms > copies.get(event.account_id, -NEVER):
            copies[event.account_id] = at_ms
        verdict: Verdict = "duplicate" if same_payload(previous, record) else "duplicate_conflict"
        setattr(fold.metrics, verdict, getattr(fold.metrics, verdict) + 1)
        rejected.append((arrival, event, verdict))
    kept.sort(key=lambda item: (item[0], item[1]))
    return [(arrival, event) for _, arrival, event in kept], rejected, copies


def fold_history(
    events: Iterable[Event],
    settings: Settings = Settings(),
    batch_size: int = 1000,
    late_events: LateEvents = "count",
) -> tuple[FoldOutput, dict[str, Metrics], list[tuple[int, Event, Verdict]]]:
    """Run a whole single-partition history in arrival order (arrival = position), in batches, then flush.

    `late_events="count"` reads it as a file (SPEC 2: the restated view, every event counts however late it
    arrived); `"drop"` as the stream would, with too-late events rejected. Either way `output.horizons` holds each
    account's `data_through` at the end of the input (before the flush). A file has no arrival times, so there is no
    reference for future skew: it is not checked (like the batch engine).
    """
    states: dict[str, AccountFold] = {}
    driver = PartitionDriver(replace(settings, max_future_skew_ms=NEVER))
    out = FoldOutput()
    rejected: list[tuple[int, Event, Verdict]] = []
    copies: dict[str, int] = {}
    if late_events == "count":
        ordered, rejected, copies = _restated_order(states, events)
    else:
        ordered = list(enumerate(events))
    for start in range(0, len(ordered), batch_size):
        step, bad = fold_batch(states, driver, ordered[start : start + batch_size])
        out.extend(step)
        rejected.extend(bad)
    clock = driver.clock
    for account_id, at_ms in copies.items():  # the dropped copies, at the end: the order above stays too-late free
        states[account_id].observe(at_ms)
        clock.observe(at_ms)
    # Every account with a record has a horizon, even if all of them were too late (then it is the idle floor).
    horizons = {}
    for account_id, fold in states.items():
        horizon = clock.horizon_of(fold)
        if horizon > -NEVER:
            horizons[account_id] = horizon
    out.extend(flush(states, settings))
    out.horizons = horizons
    rejected.sort(key=lambda item: item[0])
    return out, {account_id: fold.metrics for account_id, fold in states.items()}, rejected
