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
from dataclasses import dataclass, fields
from heapq import heapify, heappop, heappush
from typing import Any, Literal

import msgpack

from processor.core.model import (
    DEFAULT_PLAN,
    NEVER,
    FoldOutput,
    Metrics,
    Plan,
    PresenceInterval,
    PresenceKind,
    Settings,
    UsageChange,
    UserInterval,
)
from processor.core.records import (
    API_REQUEST,
    CODE,
    EVENT_ID,
    HEARTBEAT,
    KEY,
    PAGE_VIEWED,
    PLAN,
    PLAN_CHANGED,
    PORTAL_SIGNED_OUT,
    SESSION_ENDED,
    SESSION_STARTED,
    SIGNED_IN,
    SIGNED_OUT,
    USER,
    Record,
    at_ms_of,
    same_payload,
    to_record,
)
from processor.core.windows import KIND_INDEX, PeakWindows
from schemas.events import CONTACT_CENTER_PAGES
from schemas.fast import WireEvent

Verdict = Literal["accepted", "duplicate", "duplicate_conflict", "too_late", "future_skew"]

FORMAT_VERSION = 2  # 2: presence starts and the account watermark; 1 is still read
PARTS_VERSION = 3  # `header_state` (the state in parts: header, base, deltas)
_METRIC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Metrics))
_DESKTOP, _PORTAL, _API = 0, 1, 2  # timer kinds
_KIND_NAMES: tuple[PresenceKind, ...] = ("desktop", "portal", "api")
_USERS = 3  # the users' counters, in change tracking
# Fields of a desktop presence's state list: session running, last seen, session since, armed timer due.
_ACTIVE, _SEEN, _SINCE = 0, 1, 2
# Field of a portal or API presence's state list `[last activity, since, armed]`.
_LAST = 0


def _mark_dirty(dirty: set[tuple[int, Any]], record: Record) -> None:
    """An applied record may change the presence it names (a plan change touches no presence)."""
    code = record[CODE]
    if code <= SESSION_ENDED:
        dirty.add((_DESKTOP, (record[USER], record[KEY])))
    elif code <= PORTAL_SIGNED_OUT:
        dirty.add((_PORTAL, record[USER]))
    elif code == API_REQUEST:
        dirty.add((_API, record[USER]))


def _presence_order(item: tuple[tuple[int, str, str | None], int | None]) -> tuple[int, str, str]:
    """Presences changed at one instant are reported in (kind, user, device) order, whatever applied them first."""
    kind, user, device = item[0]
    return kind, user, device or ""



class PartitionClock:
    """Event-time watermark `W_p` of one partition: the largest `occurred_at` admitted on it (SPEC section 2)."""

    __slots__ = ("settings", "watermark")

    def __init__(self, settings: Settings, watermark: int | None = None) -> None:
        self.settings = settings
        self.watermark = watermark

    def skewed(self, at_ms: int, record_ms: int | None = None) -> bool:
        """True if an event at `at_ms` lies more than `max_future_skew` ahead of `max(watermark, record_ms)`.

        `record_ms` is the record's arrival time (the Kafka record timestamp): after a quiet stretch longer than the
        skew, the watermark alone would reject every honest event (docs/semantics.md section 7).
        """
        watermark = self.watermark
        reference = watermark if record_ms is None or (watermark is not None and record_ms < watermark) else record_ms
        return reference is not None and at_ms > reference + self.settings.max_future_skew_ms

    def observe(self, at_ms: int) -> None:
        """An event at `at_ms` was admitted: advance the watermark."""
        if self.watermark is None or at_ms > self.watermark:
            self.watermark = at_ms

    def admit(self, at_ms: int, record_ms: int | None = None) -> Literal["ok", "future_skew"]:
        """`skewed`, else `observe`: the verdict of the partition on an event (lateness is per account)."""
        if self.skewed(at_ms, record_ms):
            return "future_skew"
        self.observe(at_ms)
        return "ok"

    @property
    def idle_floor(self) -> int:
        """`W_p - account_idle_lateness`: no account of the partition has a horizon below it (-NEVER before events)."""
        if self.watermark is None:
            return -NEVER
        return self.watermark - self.settings.account_idle_lateness_ms

    def horizon_of(self, fold: AccountFold) -> int:
        """The account's horizon `H_a` on this partition."""
        return fold.horizon(self.watermark, self.settings)


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
    plan: Plan = DEFAULT_PLAN  # the plan in effect at `as_of` (the console's live usage shows its settings)


class AccountFold:
    """All state of one account; serialisable."""

    __slots__ = (
        "account_id",
        "metrics",
        "_plan",
        "_applied_to",
        "_watermark",
        "_usage",
        "_seg_start",
        "_last",
        "_seq",
        "_devices",
        "_portal",
        "_api",
        "_users",
        "_touched",
        "_presence_touched",
        "_buf",
        "_seen",
        "_timers",
        "_windows",
        "_close_at",
        "_dirty",
        "_new",
    )

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.metrics = Metrics()
        self._plan: Plan = DEFAULT_PLAN
        self._applied_to = -NEVER  # every instant below it is applied (the last horizon advanced to)
        self._watermark: int | None = None  # W_a: the largest occurred_at admitted for this account
        self._usage = 0
        self._seg_start = -NEVER  # start of the running constant piece of usage, not yet fed to the windows
        self._last: int | None = None  # last applied instant
        self._seq = 0
        # State exists only while the presence is on (desktop: while signed in); the last item is `armed`.
        self._devices: dict[tuple[str, str], list[Any]] = {}  # [session, last_seen, session_since, armed]
        self._portal: dict[str, list[int]] = {}  # [last_cc_view, since, armed]
        self._api: dict[str, list[int]] = {}  # [last_request, since, armed]
        self._users: dict[str, list[int]] = {}  # [active presences, counted since]
        self._touched: dict[str, bool] = {}  # users changed during the current instant -> counted before it
        # presences changed during the current instant -> their start before it (None: off before it)
        self._presence_touched: dict[tuple[int, str, str | None], int | None] = {}
        self._buf: list[Record] = []  # heap of records in application order
        self._seen: dict[str, Record] = {}  # event_id -> record, for every buffered record
        self._timers: list[tuple[int, int, Any]] = []  # heap of (due, kind, key)
        self._windows = PeakWindows(account_id)
        self._close_at: int | None = None  # cache of the earliest window end (None: unknown)
        # Change tracking for state written in parts (`track`): presence keys changed, records accepted since the
        # last `take_delta`; None when not tracking (the pure fold and its copies).
        self._dirty: set[tuple[int, Any]] | None = None
        self._new: list[Record] = []

    # -- input ---------------------------------------------------------------------------------------------------

    def offer(self, event: WireEvent, arrival: int, horizon: int, at_ms: int | None = None) -> Verdict:
        """Deduplicate and buffer one event (applied by a later `advance`). `horizon` is the account's horizon;
        `at_ms` is `event.at_ms` if the caller has it already (it is slow to read)."""
        if at_ms is None:
            at_ms = at_ms_of(event)
        if event.account_id != self.account_id:
            raise ValueError(f"event of account {event.account_id!r} offered to {self.account_id!r}")
        if at_ms < horizon or at_ms < self._applied_to:
            self.metrics.too_late += 1
            return "too_late"
        if self._watermark is None or at_ms > self._watermark:
            self._watermark = at_ms
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
        if self._dirty is not None:
            self._new.append(record)
        return "accepted"

    def horizon(self, partition_watermark: int | None, settings: Settings) -> int:
        """`H_a = max(W_a - allowed_lateness, W_p - account_idle_lateness)` (SPEC 2), never below what is applied."""
        horizon = settings.horizon(self._watermark, partition_watermark)
        applied = self._applied_to
        return applied if applied > horizon and applied < NEVER else horizon

    @property
    def watermark(self) -> int | None:
        """`W_a`: the largest `occurred_at` admitted for this account (None before any)."""
        return self._watermark

    def observe(self, at_ms: int) -> None:
        """An event at `at_ms` was admitted but is not offered (a later copy in a file read): it still moves `W_a`,
        as every admitted copy does in the stream."""
        if self._watermark is None or at_ms > self._watermark:
            self._watermark = at_ms

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
        metrics, dirty = self.metrics, self._dirty
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
                if dirty is not None:
                    _mark_dirty(dirty, record)
                if record[CODE] == HEARTBEAT:
                    state = devices.get((record[USER], record[KEY]))
                    if state is not None:
                        state[_SEEN] = t
                else:
                    self._apply(record, t, settings, out)
            metrics.applied += applied
            if timers and timers[0][0] <= t:  # zero timeouts: still part of instant t
                fired += self._fire(t, settings)
            if applied or fired:  # not when only stale or re-armed timers popped
                self._last = t
            if self._touched:
                self._settle(t, out)
            if self._presence_touched:
                self._settle_presences(t, out)
            if self._usage != usage_before:
                out.usage_changes.append(UsageChange(self.account_id, t, self._usage, self._plan.licenses))
                self._feed(t, usage_before, plan_before, out)
            elif self._plan is not plan_before:
                self._feed(t, usage_before, plan_before, out)

    def _feed(self, t: int, usage: int, plan: Plan, out: FoldOutput) -> None:
        """Close the running piece of usage at `t` and start a new one (its minute gets a 1m window)."""
        self._windows.mark(t, self._seg_start, usage, plan.licenses)
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
            if self._dirty is not None:
                self._dirty.add((kind, key))
            if kind == _DESKTOP:
                table: dict[Any, list[Any]] = self._devices
                state = table.get(key)
                if state is None or state[-1] != due:
                    continue
                actual = state[1] + settings.device_timeout_ms
                user = key[0]
                active = state[0]
            else:
                table = self._portal if kind == _PORTAL else self._api
                state = table.get(key)
                if state is None or state[-1] != due:
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
            fired += 1
            if active:
                self._mark(kind, user, key[1] if kind == _DESKTOP else None)
                del table[key]
                self._off(user)
            else:
                del table[key]
        return fired

    def _apply(self, record: Record, t: int, settings: Settings, out: FoldOutput) -> None:
        """Apply one event (not a heartbeat of a known device) at instant `t`: one rule per kind of event."""
        code = record[CODE]
        if code <= SESSION_ENDED:
            self._apply_desktop(code, (record[USER], record[KEY]), t, settings)
        elif code == PAGE_VIEWED:
            self._apply_page_view(record[USER], record[KEY], t, settings)
        elif code == API_REQUEST:
            self._apply_api_request(record[USER], t, settings)
        elif code == PORTAL_SIGNED_OUT:
            self._apply_portal_sign_out(record[USER])
        elif code == PLAN_CHANGED:
            plan = Plan(t, *record[PLAN])
            self._plan = plan
            out.plans.append((self.account_id, plan))

    def _apply_desktop(self, code: int, key: tuple[str, str], t: int, settings: Settings) -> None:
        """SPEC 1, desktop: sign-in starts tracking the device (a heartbeat keeps it), a work session started on a
        signed-in device takes a license until it ends, the device signs out or goes silent. Events on an unknown
        device, or ending a session that is not running, are orphans."""
        devices = self._devices
        state = devices.get(key)
        if code == SIGNED_IN:
            if state is None:
                due = t + settings.device_timeout_ms
                devices[key] = [False, t, t, due]
                heappush(self._timers, (due, _DESKTOP, key))
            else:
                state[_SEEN] = t
            return
        if state is None:
            if code != HEARTBEAT:  # a heartbeat of a signed-out device has no effect
                self.metrics.orphan += 1
            return
        if code == SESSION_STARTED:
            state[_SEEN] = t
            if not state[_ACTIVE]:
                self._mark(_DESKTOP, key[0], key[1])
                state[_ACTIVE] = True
                state[_SINCE] = t
                self._on(key[0])
        elif code == SESSION_ENDED:
            state[_SEEN] = t
            if state[_ACTIVE]:
                self._mark(_DESKTOP, key[0], key[1])
                state[_ACTIVE] = False
                self._off(key[0])
            else:
                self.metrics.orphan += 1
        elif code == SIGNED_OUT:
            if state[_ACTIVE]:
                self._mark(_DESKTOP, key[0], key[1])
                self._off(key[0])
            del devices[key]

    def _apply_page_view(self, user: str, page: str, t: int, settings: Settings) -> None:
        """SPEC 1, portal: a Contact Center page view takes (or keeps) a license; any other page gives it back."""
        portal = self._portal
        if page in CONTACT_CENTER_PAGES:
            state = portal.get(user)
            if state is None:
                due = t + settings.portal_idle_timeout_ms
                self._mark(_PORTAL, user, None)
                portal[user] = [t, t, due]
                heappush(self._timers, (due, _PORTAL, user))
                self._on(user)
            else:
                state[_LAST] = t
        elif user in portal:
            self._mark(_PORTAL, user, None)
            del portal[user]
            self._off(user)

    def _apply_api_request(self, user: str, t: int, settings: Settings) -> None:
        """SPEC 1, API: a request takes (or keeps) a license for the activity window."""
        state = self._api.get(user)
        if state is None:
            due = t + settings.api_activity_window_ms
            self._mark(_API, user, None)
            self._api[user] = [t, t, due]
            heappush(self._timers, (due, _API, user))
            self._on(user)
        else:
            state[_LAST] = t

    def _apply_portal_sign_out(self, user: str) -> None:
        """SPEC 1, portal: signing out gives the license back; without a portal presence it is an orphan."""
        if user not in self._portal:
            self.metrics.orphan += 1
            return
        self._mark(_PORTAL, user, None)
        del self._portal[user]
        self._off(user)

    def _on(self, user: str) -> None:
        if self._dirty is not None:
            self._dirty.add((_USERS, user))
        counter = self._users.get(user)
        if counter is None:
            counter = self._users[user] = [0, 0]
        if user not in self._touched:
            self._touched[user] = counter[0] > 0
        counter[0] += 1
        if counter[0] == 1:
            self._usage += 1

    def _off(self, user: str) -> None:
        if self._dirty is not None:
            self._dirty.add((_USERS, user))
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

    def _presence_since(self, kind: int, user: str, device: str | None) -> int | None:
        """Start of the presence if it is on now, else None."""
        if kind == _DESKTOP:
            state = self._devices.get((user, device))  # type: ignore[arg-type]
            return state[2] if state is not None and state[0] else None
        state = (self._portal if kind == _PORTAL else self._api).get(user)
        return state[1] if state is not None else None

    def _mark(self, kind: int, user: str, device: str | None) -> None:
        """A presence is about to change during the current instant: remember how it was before the instant."""
        key = (kind, user, device)
        if key not in self._presence_touched:
            self._presence_touched[key] = self._presence_since(kind, user, device)

    def _settle_presences(self, t: int, out: FoldOutput) -> None:
        """End of instant `t`: report the presences it opened and closed (one that ended and started again at `t` as
        two intervals that touch; one that started and ended at `t` not at all)."""
        touched = self._presence_touched
        items = sorted(touched.items(), key=_presence_order) if len(touched) > 1 else touched.items()
        for (kind, user, device), before in items:
            now = self._presence_since(kind, user, device)
            if before is None:
                if now is not None:
                    out.presences.append(PresenceInterval(self.account_id, user, _KIND_NAMES[kind], device, t, NEVER))
            elif now is None:
                out.presences.append(PresenceInterval(self.account_id, user, _KIND_NAMES[kind], device, before, t))
            elif now != before:  # ended and started again at t: two presences that touch
                name = _KIND_NAMES[kind]
                out.presences.append(PresenceInterval(self.account_id, user, name, device, before, t))
                out.presences.append(PresenceInterval(self.account_id, user, name, device, t, NEVER))
        self._presence_touched.clear()

    # -- queries -------------------------------------------------------------------------------------------------

    def live_view(self, settings: Settings, partition_watermark: int | None = None) -> LiveView:
        """Provisional view: as if every buffered event were applied now (self is not changed); `data_through` is
        the account's horizon on a partition whose watermark is `partition_watermark`."""
        fold: AccountFold = AccountFold.from_bytes(self.to_bytes()) if self._buf else self
        if fold is not self:
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
            data_through_ms=None if self._watermark is None else self.horizon(partition_watermark, settings),
            plan=plan,
        )

    @property
    def usage(self) -> int:
        """Usage after the last applied instant."""
        return self._usage

    @property
    def plan(self) -> Plan:
        """The plan in effect after the last applied instant."""
        return self._plan

    def holdings(self) -> dict[str, int]:
        """How much the state holds (for sizing): signed-in users, desktop devices, portal and API presences, and
        buffered events."""
        return {
            "users": len(self._users),
            "devices": len(self._devices),
            "portal": len(self._portal),
            "api": len(self._api),
            "buffered": len(self._buf),
        }

    def without_buffer(self) -> AccountFold:
        """A copy of the state without its buffered (not yet applied) events (for sizing)."""
        fold: AccountFold = AccountFold.from_bytes(self.to_bytes())
        fold._buf, fold._seen = [], {}
        return fold

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
            self._watermark,
        ]
        packed: bytes = msgpack.packb(data, use_bin_type=True)
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountFold:
        """Inverse of `to_bytes`."""
        items = msgpack.unpackb(data, use_list=False, raw=False)
        version = items[0] if items else None
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"unsupported AccountFold format {version!r}")
        (_, account_id, metrics, plan, applied_to, usage, seg_start, last, seq) = items[:9]
        devices, portal, api, users, buf, windows = items[9:15]
        fold = cls(account_id)
        for name, value in zip(_METRIC_FIELDS, metrics, strict=False):
            setattr(fold.metrics, name, value)
        fold._plan = DEFAULT_PLAN if plan is None else Plan(*plan)
        fold._applied_to, fold._usage, fold._seg_start, fold._last, fold._seq = applied_to, usage, seg_start, last, seq
        for user, count, since in users:
            fold._users[user] = [count, since]
        if version == 1:  # no presence starts were kept: the user's counted-since is the best lower bound
            since = {user: counter[1] for user, counter in fold._users.items()}
            devices = [(u, d, on, seen, since.get(u, applied_to), armed) for u, d, on, seen, armed in devices]
            portal = [(u, last, since.get(u, applied_to), armed) for u, last, armed in portal]
            api = [(u, last, since.get(u, applied_to), armed) for u, last, armed in api]
        else:
            fold._watermark = items[15]
        timers = fold._timers
        for user, device, session, last_seen, since, armed in devices:
            key = (user, device)
            fold._devices[key] = [session, last_seen, since, armed]
            timers.append((armed, _DESKTOP, key))
        for user, last_view, since, armed in portal:
            fold._portal[user] = [last_view, since, armed]
            timers.append((armed, _PORTAL, user))
        for user, last_request, since, armed in api:
            fold._api[user] = [last_request, since, armed]
            timers.append((armed, _API, user))
        heapify(timers)
        fold._buf = list(buf)  # stored in heap order
        fold._seen = {record[EVENT_ID]: record for record in fold._buf}
        fold._windows = PeakWindows.load(account_id, windows)
        return fold

    # -- state in parts (the worker writes a header, a base and deltas: processor/worker/accounts.py) ---------------

    def track(self) -> None:
        """Start change tracking: from now on `take_delta` gives what changed since the last base or delta."""
        if self._dirty is None:
            self._dirty, self._new = set(), []

    def header_state(self) -> list[Any]:
        """Everything but the presences and the reorder buffer (small): plan, counters, metrics, open windows."""
        plan = self._plan
        return [
            PARTS_VERSION,
            self.account_id,
            [getattr(self.metrics, name) for name in _METRIC_FIELDS],
            None if plan is DEFAULT_PLAN else _plan_row(plan),
            self._applied_to,
            self._usage,
            self._seg_start,
            self._last,
            self._seq,
            self._windows.dump(),
            self._watermark,
        ]

    def base_state(self) -> list[Any]:
        """The presences and the reorder buffer, whole (the base of later deltas: tracking starts over)."""
        if self._dirty is not None:
            self._dirty.clear()
            self._new = []
        return [
            [[key[0], key[1], *state] for key, state in self._devices.items()],
            [[user, *state] for user, state in self._portal.items()],
            [[user, *state] for user, state in self._api.items()],
            [[user, *counter] for user, counter in self._users.items()],
            list(self._buf),
        ]

    def take_delta(self) -> list[Any]:
        """What changed since the last base or delta: the records accepted and not yet applied, then the current row
        of each changed presence and user counter (the key alone: gone). Empty lists if nothing changed."""
        applied_to = self._applied_to
        new = [record for record in self._new if record[0] >= applied_to]
        rows: tuple[list[list[Any]], ...] = ([], [], [], [])
        tables = (self._devices, self._portal, self._api, self._users)
        for kind, key in self._dirty or ():
            state = tables[kind].get(key)
            head = [key[0], key[1]] if kind == _DESKTOP else [key]
            rows[kind].append(head if state is None else [*head, *state])
        if self._dirty is not None:
            self._dirty.clear()
            self._new = []
        return [new, *rows]

    @classmethod
    def from_parts(cls, header: Sequence[Any], base: Sequence[Any], deltas: Iterable[Sequence[Any]]) -> AccountFold:
        """Inverse of `header_state`, `base_state` and the `take_delta`s since (in order); the fold tracks changes."""
        if not header or header[0] != PARTS_VERSION:
            raise ValueError(f"unsupported AccountFold header {header[0] if header else None!r}")
        (_, account_id, metrics, plan, applied_to, usage, seg_start, last, seq, windows, watermark) = header
        fold = cls(account_id)
        for name, value in zip(_METRIC_FIELDS, metrics, strict=False):
            setattr(fold.metrics, name, value)
        fold._plan = DEFAULT_PLAN if plan is None else Plan(*plan)
        fold._applied_to, fold._usage, fold._seg_start, fold._last, fold._seq = applied_to, usage, seg_start, last, seq
        fold._watermark = watermark
        fold._windows = PeakWindows.load(account_id, windows)
        tables: tuple[dict[Any, list[Any]], ...] = (fold._devices, fold._portal, fold._api, fold._users)
        for delta in (base, *deltas):
            rows = delta[:4] if delta is base else delta[1:]
            for kind, table in enumerate(tables):
                width = 2 if kind == _DESKTOP else 1
                for row in rows[kind]:
                    key = (row[0], row[1]) if width == 2 else row[0]
                    if len(row) == width:
                        table.pop(key, None)
                    else:
                        table[key] = list(row[width:])
            fold._buf.extend(record for record in (delta[4] if delta is base else delta[0]) if record[0] >= applied_to)
        heapify(fold._buf)
        fold._seen = {record[EVENT_ID]: record for record in fold._buf}
        timers = fold._timers
        for kind, table in enumerate(tables[:3]):
            timers.extend((state[-1], kind, key) for key, state in table.items())
        heapify(timers)
        fold.track()
        return fold


def _plan_row(plan: Plan) -> list[Any]:
    return [
        plan.at_ms,
        plan.licenses,
        plan.overage_allowance,
        plan.billing_anchor_day,
        plan.timezone,
        plan.grace_minutes,
        plan.grace_mode,
    ]
