"""The pure fold: session events of one account in, usage changes, peak windows and user intervals out.

Implements SPEC sections 1 and 2 as fixed by docs/semantics.md. No I/O: the streaming worker and the CLI feed it.

Per account, events are buffered (reorder buffer) until the partition's horizon (`watermark - allowed_lateness`)
passes them; then they are applied in `(occurred_at, arrival)` order, instant by instant. At each instant T the
timers due at T fire first, then the events at T, and usage is read once after the instant.

Timers are lazy: each active presence has one heap entry `(due, kind, key)`; the presence's state remembers the
due of its entry (`armed`). A heartbeat only moves `last_seen`; when the entry pops and `last_seen` has moved,
it is pushed again with the new due. Entries whose state is gone or re-armed are stale and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from heapq import heapify, heappop, heappush
from typing import Any, Literal

import msgpack

from processor.core.model import (
    DEFAULT_PLAN,
    NEVER,
    FoldOutput,
    Metrics,
    Plan,
    Settings,
    UsageChange,
    UserInterval,
)
from processor.core.records import (
    API_REQUEST,
    EVENT_ID,
    HEARTBEAT,
    PAGE_VIEWED,
    PLAN,
    PLAN_CHANGED,
    PORTAL_SIGNED_OUT,
    SESSION_ENDED,
    SESSION_STARTED,
    SIGNED_IN,
    SIGNED_OUT,
    Record,
    at_ms_of,
    same_payload,
    to_record,
)
from processor.core.windows import KIND_INDEX, PeakWindows
from schemas.events import CONTACT_CENTER_PAGES, Event

Verdict = Literal["accepted", "duplicate", "duplicate_conflict", "too_late", "future_skew"]

FORMAT_VERSION = 1
_METRIC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Metrics))
_DESKTOP, _PORTAL, _API = 0, 1, 2  # timer kinds
_TICK_EVERY_MS = 60_000


class PartitionClock:
    """Event-time watermark of one partition."""

    __slots__ = ("settings", "watermark")

    def __init__(self, settings: Settings, watermark: int | None = None) -> None:
        self.settings = settings
        self.watermark = watermark

    def admit(self, at_ms: int, record_ms: int | None = None) -> Literal["ok", "too_late", "future_skew"]:
        """Verdict of the clock on an event at `at_ms`; advances the watermark on "ok".

        Future skew is measured against `max(watermark, record_ms)`, where `record_ms` is the record's arrival time
        (the Kafka record timestamp): after a quiet stretch longer than the skew, the watermark alone would reject
        every honest event (docs/semantics.md section 7).
        """
        watermark = self.watermark
        if watermark is None:
            if record_ms is not None and at_ms > record_ms + self.settings.max_future_skew_ms:
                return "future_skew"
            self.watermark = at_ms
            return "ok"
        reference = watermark if record_ms is None or record_ms < watermark else record_ms
        if at_ms > reference + self.settings.max_future_skew_ms:
            return "future_skew"
        if at_ms < watermark - self.settings.allowed_lateness_ms:
            return "too_late"
        if at_ms > watermark:
            self.watermark = at_ms
        return "ok"

    @property
    def horizon(self) -> int:
        """Every instant below the horizon is final: `watermark - allowed_lateness` (-NEVER before any event)."""
        if self.watermark is None:
            return -NEVER
        return self.watermark - self.settings.allowed_lateness_ms


@dataclass(frozen=True, slots=True)
class LiveView:
    """Provisional view of an account for live queries (GET /accounts/{id}/usage)."""

    account_id: str
    usage: int
    licenses: int
    overage_allowance: int
    headroom: int  # licenses - usage (may be negative)
    today_peak: int
    today_peak_at_ms: int | None
    as_of_ms: int | None
    data_through_ms: int | None = None  # the account's horizon (SPEC 4): nothing after it is known yet


class AccountFold:
    """All state of one account; serialisable."""

    __slots__ = (
        "account_id",
        "metrics",
        "_plan",
        "_applied_to",
        "_usage",
        "_seg_start",
        "_last",
        "_seq",
        "_devices",
        "_portal",
        "_api",
        "_users",
        "_touched",
        "_buf",
        "_seen",
        "_timers",
        "_windows",
        "_close_at",
    )

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.metrics = Metrics()
        self._plan: Plan = DEFAULT_PLAN
        self._applied_to = -NEVER  # every instant below it is applied (the last horizon advanced to)
        self._usage = 0
        self._seg_start = -NEVER  # start of the running constant piece of usage, not yet fed to the windows
        self._last: int | None = None  # last applied instant
        self._seq = 0
        # State exists only while the presence is on (desktop: while signed in); the last item is `armed`.
        self._devices: dict[tuple[str, str], list[Any]] = {}  # [session, last_seen, armed]
        self._portal: dict[str, list[int]] = {}  # [last_cc_view, armed]
        self._api: dict[str, list[int]] = {}  # [last_request, armed]
        self._users: dict[str, list[int]] = {}  # [active presences, counted since]
        self._touched: dict[str, bool] = {}  # users changed during the current instant -> counted before it
        self._buf: list[Record] = []  # heap of records in application order
        self._seen: dict[str, Record] = {}  # event_id -> record, for every buffered record
        self._timers: list[tuple[int, int, Any]] = []  # heap of (due, kind, key)
        self._windows = PeakWindows(account_id)
        self._close_at: int | None = None  # cache of the earliest window end (None: unknown)

    # -- input ---------------------------------------------------------------------------------------------------

    def offer(self, event: Event, arrival: int, horizon: int) -> Verdict:
        """Deduplicate and buffer one event (applied by a later `advance`). `horizon` is the partition's horizon."""
        return self._offer(event, at_ms_of(event), arrival, horizon)

    def _offer(self, event: Event, at_ms: int, arrival: int, horizon: int) -> Verdict:
        if event.account_id != self.account_id:
            raise ValueError(f"event of account {event.account_id!r} offered to {self.account_id!r}")
        if at_ms < horizon or at_ms < self._applied_to:
            self.metrics.too_late += 1
            return "too_late"
        record = to_record(event, at_ms, arrival, self._seq)
        self._seq += 1
        event_id = record[EVENT_ID]
        previous = self._seen.get(event_id)
        if previous is not None:
            if same_payload(previous, record):
                self.metrics.duplicate += 1
                return "duplicate"
            self.metrics.duplicate_conflict += 1
            return "duplicate_conflict"
        self._seen[event_id] = record
        heappush(self._buf, record)
        return "accepted"

    # -- progress ------------------------------------------------------------------------------------------------

    def advance(self, horizon: int, settings: Settings) -> FoldOutput:
        """Apply everything with time < horizon and close windows with end <= horizon (NEVER flushes everything)."""
        out = FoldOutput()
        self.advance_into(horizon, settings, out)
        return out

    def advance_into(self, horizon: int, settings: Settings, out: FoldOutput) -> None:
        """`advance`, appending to an existing output."""
        if horizon <= self._applied_to:
            return
        mark = len(out.windows)
        self._run(horizon, settings, out)
        if horizon > self._seg_start and horizon >= self._next_close():
            # Feed the running piece only when a window closes: splitting a constant piece changes nothing.
            plan = self._plan
            self._windows.feed(self._seg_start, horizon, self._usage, plan.licenses, plan.timezone, out.windows)
            self._seg_start = horizon
            self._close_at = None
        self._applied_to = horizon
        if len(out.windows) - mark > 1:
            out.windows[mark:] = sorted(out.windows[mark:], key=lambda w: (w.end_ms, KIND_INDEX[w.kind], w.start_ms))

    def pending_until(self) -> int:
        """Lower bound of the work left: `advance(h)` changes nothing unless `h > pending_until()`; NEVER if idle."""
        best = self._buf[0][0] if self._buf else NEVER
        timers = self._timers
        tables = (self._devices, self._portal, self._api)
        while timers:
            due, kind, key = timers[0]
            state = tables[kind].get(key)
            if state is not None and state[-1] == due:
                best = min(best, due)
                break
            heappop(timers)  # stale entry: drop it
        end = self._next_close()
        if end < NEVER:
            best = min(best, end - 1)
        return best

    def _next_close(self) -> int:
        """Earliest end of a window that is open or that the running piece of usage opens (NEVER if none)."""
        if self._close_at is None:
            self._close_at = self._windows.next_end(self._seg_start, self._usage, self._plan.timezone)
        return self._close_at

    def _run(self, horizon: int, settings: Settings, out: FoldOutput) -> None:
        """Apply the instants below `horizon` in order: timers, then events, then read usage."""
        buf, timers, seen, devices = self._buf, self._timers, self._seen, self._devices
        metrics = self.metrics
        while True:
            if buf:
                t = buf[0][0]
                if timers and timers[0][0] < t:
                    t = timers[0][0]
            elif timers:
                t = timers[0][0]
            else:
                break
            if t >= horizon:
                break
            usage_before, plan_before = self._usage, self._plan
            fired = self._fire(t, settings) if timers and timers[0][0] <= t else 0
            applied = 0
            while buf and buf[0][0] == t:
                record = heappop(buf)
                del seen[record[EVENT_ID]]
                applied += 1
                if record[3] == HEARTBEAT:
                    state = devices.get((record[4], record[5]))
                    if state is not None:
                        state[1] = t
                else:
                    self._apply(record, t, settings, out)
            metrics.applied += applied
            if timers and timers[0][0] <= t:  # zero timeouts: still part of instant t
                fired += self._fire(t, settings)
            if applied or fired:  # not when only stale or re-armed timers popped
                self._last = t
            if self._touched:
                self._settle(t, out)
            if self._usage != usage_before:
                out.usage_changes.append(UsageChange(self.account_id, t, self._usage, self._plan.licenses))
                self._feed(t, usage_before, plan_before, out)
            elif self._plan is not plan_before:
                self._feed(t, usage_before, plan_before, out)

    def _feed(self, t: int, usage: int, plan: Plan, out: FoldOutput) -> None:
        """Close the running piece of usage at `t` and start a new one."""
        if t > self._seg_start:
            self._windows.feed(self._seg_start, t, usage, plan.licenses, plan.timezone, out.windows)
        self._seg_start = t
        self._close_at = None

    def _fire(self, t: int, settings: Settings) -> int:
        """Pop the timers due at or before `t`: re-arm those whose presence saw activity, end the others.
        Returns how many ended a presence."""
        fired = 0
        timers = self._timers
        while timers and timers[0][0] <= t:
            due, kind, key = heappop(timers)
            if kind == _DESKTOP:
                table: dict[Any, list[Any]] = self._devices
                state = table.get(key)
                if state is None or state[2] != due:
                    continue
                actual = state[1] + settings.device_timeout_ms
                user = key[0]
                active = state[0]
            else:
                table = self._portal if kind == _PORTAL else self._api
                state = table.get(key)
                if state is None or state[1] != due:
                    continue
                actual = state[0] + (
                    settings.portal_idle_timeout_ms if kind == _PORTAL else settings.api_activity_window_ms
                )
                user = key
                active = True
            if actual > due:
                state[-1] = actual
                heappush(timers, (actual, kind, key))
                continue
            del table[key]
            fired += 1
            if active:
                self._off(user)
        return fired

    def _apply(self, record: Record, t: int, settings: Settings, out: FoldOutput) -> None:
        """Apply one event (not a heartbeat of a known device) at instant `t`."""
        code = record[3]
        user = record[4]
        if code <= SESSION_ENDED:
            key = (user, record[5])
            devices = self._devices
            if code == SIGNED_IN:
                state = devices.get(key)
                if state is None:
                    due = t + settings.device_timeout_ms
                    devices[key] = [False, t, due]
                    heappush(self._timers, (due, _DESKTOP, key))
                else:
                    state[1] = t
            elif code == SESSION_STARTED:
                state = devices.get(key)
                if state is None:
                    self.metrics.orphan += 1
                else:
                    state[1] = t
                    if not state[0]:
                        state[0] = True
                        self._on(user)
            elif code == SESSION_ENDED:
                state = devices.get(key)
                if state is None:
                    self.metrics.orphan += 1
                else:
                    state[1] = t
                    if state[0]:
                        state[0] = False
                        self._off(user)
                    else:
                        self.metrics.orphan += 1
            elif code == SIGNED_OUT:
                state = devices.pop(key, None)
                if state is None:
                    self.metrics.orphan += 1
                elif state[0]:
                    self._off(user)
            # HEARTBEAT of a signed-out device: no effect.
        elif code == PAGE_VIEWED:
            if record[5] in CONTACT_CENTER_PAGES:
                state = self._portal.get(user)
                if state is None:
                    due = t + settings.portal_idle_timeout_ms
                    self._portal[user] = [t, due]
                    heappush(self._timers, (due, _PORTAL, user))
                    self._on(user)
                else:
                    state[0] = t
            elif self._portal.pop(user, None) is not None:
                self._off(user)
        elif code == API_REQUEST:
            state = self._api.get(user)
            if state is None:
                due = t + settings.api_activity_window_ms
                self._api[user] = [t, due]
                heappush(self._timers, (due, _API, user))
                self._on(user)
            else:
                state[0] = t
        elif code == PORTAL_SIGNED_OUT:
            if self._portal.pop(user, None) is None:
                self.metrics.orphan += 1
            else:
                self._off(user)
        elif code == PLAN_CHANGED:
            plan = Plan(t, *record[PLAN])
            self._plan = plan
            out.plans.append((self.account_id, plan))

    def _on(self, user: str) -> None:
        counter = self._users.get(user)
        if counter is None:
            counter = self._users[user] = [0, 0]
        if user not in self._touched:
            self._touched[user] = counter[0] > 0
        counter[0] += 1
        if counter[0] == 1:
            self._usage += 1

    def _off(self, user: str) -> None:
        counter = self._users[user]
        if user not in self._touched:
            self._touched[user] = True
        counter[0] -= 1
        if counter[0] == 0:
            self._usage -= 1

    def _settle(self, t: int, out: FoldOutput) -> None:
        """End of instant `t`: open and close the counted intervals of the users it touched (both are reported)."""
        users = self._users
        for user, was_counted in self._touched.items():
            counter = users[user]
            if counter[0] > 0:
                if not was_counted:
                    counter[1] = t
                    out.opened.append(UserInterval(self.account_id, user, t, NEVER))
            else:
                if was_counted:
                    out.intervals.append(UserInterval(self.account_id, user, counter[1], t))
                del users[user]
        self._touched.clear()

    # -- queries -------------------------------------------------------------------------------------------------

    def live_view(self, settings: Settings) -> LiveView:
        """Provisional view: as if every buffered event were applied now (self is not changed)."""
        fold = self
        if self._buf:
            fold = AccountFold.from_bytes(self.to_bytes())
            fold._run(max(record[0] for record in fold._buf) + 1, settings, FoldOutput())
        plan, usage, as_of = fold._plan, fold._usage, fold._last
        peak, peak_at = 0, None
        if as_of is not None:
            peak, at = fold._windows.day_peak(as_of, fold._seg_start, usage, plan.timezone)
            peak_at = at if peak > 0 else None
        return LiveView(
            account_id=self.account_id,
            usage=usage,
            licenses=plan.licenses,
            overage_allowance=plan.overage_allowance,
            headroom=plan.licenses - usage,
            today_peak=peak,
            today_peak_at_ms=peak_at,
            as_of_ms=as_of,
        )

    @property
    def usage(self) -> int:
        """Usage after the last applied instant."""
        return self._usage

    @property
    def plan(self) -> Plan:
        """The plan in effect after the last applied instant."""
        return self._plan

    # -- serialisation -------------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact msgpack form of the whole state (versioned)."""
        plan = self._plan
        data = [
            FORMAT_VERSION,
            self.account_id,
            [getattr(self.metrics, name) for name in _METRIC_FIELDS],
            None
            if plan is DEFAULT_PLAN
            else [
                plan.at_ms,
                plan.licenses,
                plan.overage_allowance,
                plan.billing_anchor_day,
                plan.timezone,
                plan.grace_minutes,
                plan.grace_mode,
            ],
            self._applied_to,
            self._usage,
            self._seg_start,
            self._last,
            self._seq,
            [[key[0], key[1], *state] for key, state in self._devices.items()],
            [[user, *state] for user, state in self._portal.items()],
            [[user, *state] for user, state in self._api.items()],
            [[user, *counter] for user, counter in self._users.items()],
            self._buf,
            self._windows.dump(),
        ]
        return msgpack.packb(data, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountFold:
        """Inverse of `to_bytes`."""
        items = msgpack.unpackb(data, use_list=False, raw=False)
        if not items or items[0] != FORMAT_VERSION:
            raise ValueError(f"unsupported AccountFold format {items[0] if items else None!r}")
        (_, account_id, metrics, plan, applied_to, usage, seg_start, last, seq) = items[:9]
        devices, portal, api, users, buf, windows = items[9:15]
        fold = cls(account_id)
        for name, value in zip(_METRIC_FIELDS, metrics, strict=False):
            setattr(fold.metrics, name, value)
        fold._plan = DEFAULT_PLAN if plan is None else Plan(*plan)
        fold._applied_to, fold._usage, fold._seg_start, fold._last, fold._seq = applied_to, usage, seg_start, last, seq
        timers = fold._timers
        for user, device, session, last_seen, armed in devices:
            key = (user, device)
            fold._devices[key] = [session, last_seen, armed]
            timers.append((armed, _DESKTOP, key))
        for user, last_view, armed in portal:
            fold._portal[user] = [last_view, armed]
            timers.append((armed, _PORTAL, user))
        for user, last_request, armed in api:
            fold._api[user] = [last_request, armed]
            timers.append((armed, _API, user))
        heapify(timers)
        for user, count, since in users:
            fold._users[user] = [count, since]
        fold._buf = list(buf)  # stored in heap order
        fold._seen = {record[EVENT_ID]: record for record in fold._buf}
        fold._windows = PeakWindows.load(account_id, windows)
        return fold


# -- partition-level entry points ----------------------------------------------------------------------------------


def fold_batch(
    states: dict[str, AccountFold],
    clock: PartitionClock,
    batch: Sequence[tuple[int, Event]],
    settings: Settings,
    record_ms: Sequence[int | None] | None = None,
) -> tuple[FoldOutput, list[tuple[int, Event, Verdict]]]:
    """Admit each (arrival, event) with the clock, offer it to its account, then advance every touched account
    once to the new horizon. `record_ms[i]` is the arrival time of `batch[i]` (Kafka record timestamp) for the
    future-skew check. Returns the outputs and the non-accepted verdicts."""
    rejected: list[tuple[int, Event, Verdict]] = []
    touched: dict[str, AccountFold] = {}
    for index, (arrival, event) in enumerate(batch):
        account_id = event.account_id
        fold = states.get(account_id)
        if fold is None:
            fold = states[account_id] = AccountFold(account_id)
        at_ms = at_ms_of(event)
        admitted = clock.admit(at_ms, record_ms[index] if record_ms is not None else None)
        if admitted == "ok":
            verdict = fold._offer(event, at_ms, arrival, clock.horizon)
            touched[account_id] = fold
            if verdict == "accepted":
                continue
        else:
            verdict = admitted
            if verdict == "too_late":
                fold.metrics.too_late += 1
            else:
                fold.metrics.future_skew += 1
        rejected.append((arrival, event, verdict))
    out = FoldOutput()
    horizon = clock.horizon
    for fold in touched.values():
        fold.advance_into(horizon, settings, out)
    return out, rejected


def tick(states: dict[str, AccountFold], clock: PartitionClock, settings: Settings) -> FoldOutput:
    """Advance the accounts that have work below the partition's horizon (the engine calls this periodically)."""
    out = FoldOutput()
    horizon = clock.horizon
    for fold in states.values():
        if fold.pending_until() < horizon:
            fold.advance_into(horizon, settings, out)
    return out


def flush(states: dict[str, AccountFold], settings: Settings) -> FoldOutput:
    """End of input: advance every account to +infinity (all timers fire, every window closes)."""
    out = FoldOutput()
    for fold in states.values():
        fold.advance_into(NEVER, settings, out)
    return out


def fold_history(
    events: Iterable[Event], settings: Settings = Settings(), batch_size: int = 1000
) -> tuple[FoldOutput, dict[str, Metrics], list[tuple[int, Event, Verdict]]]:
    """Run a whole single-partition history in arrival order (arrival = position), in batches, then flush.

    A file has no arrival times, so there is no reference for future skew: it is not checked (like the batch engine).
    """
    states: dict[str, AccountFold] = {}
    clock = PartitionClock(replace(settings, max_future_skew_ms=NEVER))
    out = FoldOutput()
    rejected: list[tuple[int, Event, Verdict]] = []
    batch: list[tuple[int, Event]] = []
    ticked = -NEVER
    for arrival, event in enumerate(events):
        batch.append((arrival, event))
        if len(batch) >= batch_size:
            step, bad = fold_batch(states, clock, batch, settings)
            out.extend(step)
            rejected.extend(bad)
            batch = []
            if clock.horizon >= ticked + _TICK_EVERY_MS:  # idle accounts: at most once a minute of event time
                ticked = clock.horizon
                out.extend(tick(states, clock, settings))
    if batch:
        step, bad = fold_batch(states, clock, batch, settings)
        out.extend(step)
        rejected.extend(bad)
    out.extend(flush(states, settings))
    return out, {account_id: fold.metrics for account_id, fold in states.items()}, rejected
