"""From behaviour to an arrival-ordered stream of rows: heartbeat expansion, event ids, delivery faults, merging.

A row is one record of the output, as int64 columns (see the column constants). Rows are produced per local day of
every account, then merged by arrival key and handed out in blocks once no later day can arrive before them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from processor.simulation.accounts import Account, Catalog, build_accounts, rng
from processor.simulation.behaviour import EventTuple, account_day, orphans
from processor.simulation.config import HEARTBEAT, MAX_DELAY_MS, PLAN_CHANGED, SimConfig
from schemas.events import format_ms

# Row columns. The first eight are the event tuple of behaviour.py, in the same order.
T, TYP, USER, DEV, PAGE, EP, PLAN, TAIL, ACCT, KEY, EID, MAL = range(12)
N_COLS = 12


@dataclass(slots=True)
class SimCounts:
    """What a run produced, by kind of record."""

    records: int = 0
    events: int = 0
    duplicates: int = 0
    delayed: int = 0
    orphans: int = 0
    malformed: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Block:
    """Consecutive output records in arrival order; `malformed` holds the text of the rows with MAL >= 0."""

    rows: np.ndarray
    malformed: list[str]

    def split(self, max_rows: int) -> Iterator[Block]:
        """The block in consecutive pieces of at most `max_rows` rows (text arrays stay far below 2 GiB)."""
        if len(self.rows) <= max_rows:
            yield self
            return
        used = 0
        for begin in range(0, len(self.rows), max_rows):
            rows = self.rows[begin : begin + max_rows]
            n_bad = int((rows[:, MAL] >= 0).sum())
            yield Block(rows=rows, malformed=self.malformed[used : used + n_bad])
            used += n_bad


class Engine:
    """Generates the rows of a run, account-day by account-day, and yields them in arrival order."""

    def __init__(self, config: SimConfig) -> None:
        config.validate()
        self.config = config
        self.catalog: Catalog
        self.accounts: list[Account]
        self.catalog, self.accounts = build_accounts(config)
        self.counts = SimCounts()
        self._next_eid = [0] * config.accounts
        self._pollers = [np.array([api.user for api in a.integrations if api.poller], np.int64) for a in self.accounts]
        self._bad: dict[int, str] = {}
        self._bad_count = 0
        # Events per account stay below this generous bound (users x days x (heartbeats of two devices for 36 h
        # + 3000 others), doubled by orphans), so event ids can be zero-padded to a fixed width.
        per_user_day = 2 * 36 * 3600 // config.heartbeat_seconds + 3_000
        bound = (3 * config.agents + 100) * config.days * per_user_day * (1 + config.orphans)
        self.eid_width = len(str(int(bound)))

    def blocks(self, on_account_day: Callable[[], None] | None = None) -> Iterator[Block]:
        """Every record of the run in arrival order, in blocks; calls `on_account_day` after each account-day."""
        config = self.config
        buffer = np.empty((0, N_COLS), np.int64)
        for d in range(config.days):
            parts = [buffer]
            for account in self.accounts:
                parts.append(self._account_day(account, d))
                if on_account_day is not None:
                    on_account_day()
            rows = np.concatenate(parts)
            rows = rows[np.argsort(rows[:, KEY], kind="stable")]
            if d + 1 < config.days:
                # Nothing of a later local day happens (or arrives) before that day's earliest local midnight.
                horizon = min(account.midnights[d + 1] for account in self.accounts)
                cut = int(np.searchsorted(rows[:, KEY], horizon, side="left"))
            else:
                cut = len(rows)
            buffer = rows[cut:]
            if cut:
                yield self._block(rows[:cut])

    def _block(self, rows: np.ndarray) -> Block:
        bad_ids = rows[:, MAL]
        texts = [self._bad.pop(int(i)) for i in bad_ids[bad_ids >= 0]]
        return Block(rows=rows, malformed=texts)

    def _account_day(self, account: Account, d: int) -> np.ndarray:
        """Every record of account-day `d`: its events (orphans included) and heartbeats in event-time order with
        their ids, then the delivery faults: late arrivals, duplicate copies and malformed lines."""
        config = self.config
        events, spans = account_day(config, self.catalog, account, d)
        nrng = np.random.default_rng([config.seed, account.index, d, 7])
        rr = rng(config, "faults", account.index, d)
        span_arr = np.array(spans, dtype=np.int64).reshape(-1, 5)
        period = config.heartbeat_seconds * 1000
        counts = heartbeat_counts(span_arr, period)
        if config.orphans > 0:
            events.extend(self._orphans(len(events) + int(counts.sum()), nrng, rr, account, d))
        rows = event_rows(events, span_arr, counts, period, nrng)
        rows[:, ACCT] = account.index
        rows[:, MAL] = -1
        rows = rows[np.argsort(rows[:, T], kind="stable")]
        self._number(rows, account.index)
        n = len(rows)
        parts = [rows]
        if config.out_of_order > 0 and n:
            self._delay(rows, nrng, account.index)
        if config.duplicates > 0 and n:
            parts.append(self._duplicates(rows, nrng))
        if config.malformed > 0 and n:
            parts.append(self._malformed(n, nrng, rr, account, d))
        out = np.concatenate(parts) if len(parts) > 1 else rows
        self.counts.events += n
        self.counts.records += len(out)
        return out

    def _orphans(
        self, n: int, nrng: np.random.Generator, rr: random.Random, account: Account, d: int
    ) -> list[EventTuple]:
        """Orphan events of day `d`, a binomial share of its `n` events (heartbeats included)."""
        n_orphans = int(nrng.binomial(n, self.config.orphans))
        self.counts.orphans += n_orphans
        return orphans(rr, account, n_orphans, account.midnights[d], account.midnights[d + 1])

    def _number(self, rows: np.ndarray, account_index: int) -> None:
        """Event ids in event-time order, continuing the account's sequence; arrival key = event time; type counts."""
        n = len(rows)
        base = self._next_eid[account_index]
        if base + n >= 10**self.eid_width:
            raise RuntimeError("event ids outgrew their fixed width")  # the bound in __init__ is wrong
        rows[:, EID] = np.arange(base, base + n, dtype=np.int64)
        self._next_eid[account_index] = base + n
        rows[:, KEY] = rows[:, T]
        self._count_types(rows[:, TYP])

    def _delay(self, rows: np.ndarray, nrng: np.random.Generator, account_index: int) -> None:
        """Late arrivals: a share of the rows arrives 1 s to MAX_DELAY_MS after its event time. Plans (first per
        account) and pollers (the stream's keep-alive) are never late."""
        late = nrng.random(len(rows)) < self.config.out_of_order
        late &= rows[:, TYP] != PLAN_CHANGED
        late &= ~np.isin(rows[:, USER], self._pollers[account_index])
        n_late = int(late.sum())
        rows[late, KEY] += nrng.integers(1_000, MAX_DELAY_MS + 1, n_late)
        self.counts.delayed += n_late

    def _duplicates(self, rows: np.ndarray, nrng: np.random.Generator) -> np.ndarray:
        """Copies of a share of the rows; a copy arrives after its original, still within MAX_DELAY_MS of its event
        time."""
        copies = rows[nrng.random(len(rows)) < self.config.duplicates]
        room = copies[:, T] + MAX_DELAY_MS - copies[:, KEY]
        copies[:, KEY] += nrng.integers(0, room + 1)
        self.counts.duplicates += len(copies)
        return copies

    def _malformed(self, n: int, nrng: np.random.Generator, rr: random.Random, account: Account, d: int) -> np.ndarray:
        """Malformed lines, a binomial share of the day's `n` rows at random times of the day; their texts wait in
        `_bad` until their block is handed out."""
        n_bad = int(nrng.binomial(n, self.config.malformed))
        bad = np.full((n_bad, N_COLS), -1, np.int64)
        bad[:, ACCT] = account.index
        bad[:, KEY] = bad[:, T] = nrng.integers(account.midnights[d], account.midnights[d + 1], n_bad)
        for row in bad:
            self._bad[self._bad_count] = malformed_line(rr, self.catalog, account, int(row[T]), self._bad_count)
            row[MAL] = self._bad_count
            self._bad_count += 1
        self.counts.malformed += n_bad
        return bad

    def _count_types(self, types: np.ndarray) -> None:
        from schemas.events import EVENT_TYPES

        counted = np.bincount(types, minlength=len(EVENT_TYPES))
        by_type = self.counts.by_type
        for code, name in enumerate(EVENT_TYPES):
            if counted[code]:
                by_type[name] = by_type.get(name, 0) + int(counted[code])


def heartbeat_counts(span_arr: np.ndarray, period: int) -> np.ndarray:
    """How many heartbeats each signed-in span `(from, to, user, device, tail)` gets: one every `period` ms after
    its start, all at least 1 s before its end."""
    return np.maximum((span_arr[:, 1] - span_arr[:, 0] - 1000) // period, 0)


def event_rows(
    events: list[EventTuple], span_arr: np.ndarray, counts: np.ndarray, period: int, nrng: np.random.Generator
) -> np.ndarray:
    """The events, then the heartbeats of the spans at `from + k * period + jitter` (k >= 1, jitter < 1 s), as rows
    with the event-tuple columns filled (the others are left for the caller)."""
    n_events = len(events)
    total = int(counts.sum())
    rows = np.empty((n_events + total, N_COLS), np.int64)
    if n_events:
        rows[:n_events, :8] = np.array(events, dtype=np.int64)
    if total:
        which = np.repeat(np.arange(len(span_arr)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        step = np.arange(1, total + 1, dtype=np.int64) - first
        hb = rows[n_events:]
        hb[:, T] = span_arr[which, 0] + step * period + nrng.integers(0, 1000, total)
        hb[:, TYP] = HEARTBEAT
        hb[:, USER] = span_arr[which, 2]
        hb[:, DEV] = span_arr[which, 3]
        hb[:, PAGE:TAIL] = -1
        hb[:, TAIL] = span_arr[which, 4]
    return rows


def malformed_line(rr: random.Random, catalog: Catalog, account: Account, at_ms: int, number: int) -> str:
    """One line that `schemas.events.decode` rejects: bad JSON, not an object, unknown type, missing or
    ill-typed field."""
    agent = account.agents[rr.randrange(len(account.agents))]
    user = catalog.users[agent.user]
    device = catalog.devices[agent.devs[0]]
    event_id = f"{account.account_id}-bad-{number}"
    at = format_ms(at_ms)
    head = f'{{"event_id":"{event_id}","occurred_at":"{at}"'
    acct = f'"account_id":"{account.account_id}"'
    kind = rr.randrange(7)
    if kind == 0:  # truncated JSON
        full = f'{head},"type":"desktop.heartbeat",{acct},"user_id":"{user}","device_id":"{device}"}}'
        return full[: rr.randrange(10, len(full) - 2)]
    if kind == 1:
        return f'{head},"type":"desktop.rebooted",{acct},"user_id":"{user}","device_id":"{device}"}}'
    if kind == 2:  # missing device_id
        return f'{head},"type":"desktop.heartbeat",{acct},"user_id":"{user}"}}'
    if kind == 3:  # missing occurred_at
        return (
            f'{{"event_id":"{event_id}","type":"work_session.started",{acct},'
            f'"user_id":"{user}","device_id":"{device}"}}'
        )
    if kind == 4:  # ill-typed: no offset on the timestamp
        return (
            f'{{"event_id":"{event_id}","occurred_at":"{at[:-5]}","type":"desktop.signed_in",{acct},'
            f'"user_id":"{user}","device_id":"{device}"}}'
        )
    if kind == 5:  # ill-typed licenses
        return (
            f'{head},"type":"account.plan_changed",{acct},"licenses":"ten","overage_allowance":0,'
            f'"billing_anchor_day":1,"timezone":"UTC"}}'
        )
    return f'["{event_id}","desktop.heartbeat"]'
