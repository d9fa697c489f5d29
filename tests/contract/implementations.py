"""The three implementations of the contract behind one interface, and the outputs they are compared on.

An implementation reads a `History` (wire events in arrival order, one partition) in one of two readings (SPEC 2,
docs/semantics.md section 7):
- `"file"`: the restated view, every valid event counts however late it arrived (`late_events="count"`);
- `"stream"`: as the worker reads its partition, too-late events dropped (`late_events="drop"`).

Adapters: `Fold` (processor/core/fold.py `fold_history`), `Driver` (the worker's partition driver,
processor/worker/partition.py `PartitionState.process` over raw records, its state in a `DictStore`, rebuilt from
the store between batches like a restarted worker) and `Engine` (the DuckDB engine of processor/batch/). The
driver never flushes: its outputs are what it emitted below each account's horizon, so it is compared on
`Outputs.final()` only (`final_only`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import ClassVar, Literal

from processor.batch.engine import BatchEngine
from processor.core.billing import build_report
from processor.core.model import (
    NEVER,
    LateEvents,
    PeakWindow,
    Plan,
    PresenceInterval,
    Settings,
    UsageChange,
    UserInterval,
)
from processor.core.partition import fold_history
from processor.worker.partition import PartitionState, scan_entries
from processor.worker.state import DictStore
from schemas.events import EVENT_ADAPTER, Event
from schemas.outputs import Report

Reading = Literal["file", "stream"]
LATE_EVENTS: dict[Reading, LateEvents] = {"file": "count", "stream": "drop"}
TOPIC = "events"
ReportKey = tuple[str, date, date]


@dataclass(frozen=True)
class History:
    """Wire events (dicts) of one partition in arrival order; `batch_size` for the fold and the driver; `reports`:
    the (account, from, to) reports to make (None: `report_ranges` decides)."""

    events: tuple[dict, ...]
    batch_size: int = 50
    settings: Settings = Settings()
    reports: tuple[ReportKey, ...] | None = None

    def lines(self) -> list[bytes]:
        """One JSON line per event, in arrival order."""
        return [json.dumps(event, separators=(",", ":")).encode() for event in self.events]

    def decoded(self) -> list[Event]:
        """The events as the schema decodes them (every generated event is valid)."""
        return [EVENT_ADAPTER.validate_python(event) for event in self.events]

    def accounts(self) -> list[str]:
        """Every account with an event in the history, sorted."""
        return sorted({event["account_id"] for event in self.events})

    def report_ranges(self) -> list[ReportKey]:
        """The given `reports`, else per account: a range around all its events (a day either side, UTC dates), and
        its first day alone."""
        if self.reports is not None:
            return list(self.reports)
        days: dict[str, list[date]] = defaultdict(list)
        for event in self.decoded():
            days[event.account_id].append(event.occurred_at.date())
        ranges = []
        for account, seen in sorted(days.items()):
            first, last = min(seen), max(seen)
            ranges += [(account, first - timedelta(days=1), last + timedelta(days=1)), (account, first, first)]
        return ranges


@dataclass
class Outputs:
    """What one implementation says about a history, in a comparable order.

    `intervals` and `presences` may hold open ones (end NEVER) from the driver. `orphans` is None where the
    implementation does not count them (the engine)."""

    changes: list[UsageChange]
    windows: list[PeakWindow]
    intervals: list[UserInterval]
    presences: list[PresenceInterval]
    plans: dict[str, list[Plan]]
    horizons: dict[str, int]  # data_through of each account with a valid record (too late or not)
    too_late: list[int]  # arrivals dropped as too late (stream reading)
    duplicates: tuple[int, int]  # (exact copies, conflicting copies) over the partition
    orphans: int | None = None
    reports: dict[ReportKey, Report] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.changes = sorted(self.changes, key=lambda c: (c.account_id, c.at_ms))
        self.windows = sorted(self.windows, key=lambda w: (w.account_id, w.kind, w.start_ms, w.end_ms))
        self.intervals = sorted(self.intervals, key=lambda i: (i.account_id, i.user_id, i.start_ms))
        self.presences = sorted(
            self.presences, key=lambda p: (p.account_id, p.user_id, p.start_ms, p.kind, p.device_id or "")
        )

    def final(self) -> Outputs:
        """What is final below each account's horizon (what a snapshot holds): changes before it, windows that end
        by it, intervals, presences and plans that closed or took effect before it."""

        def h(account: str) -> int:
            return self.horizons.get(account, -NEVER)

        return replace(
            self,
            changes=[c for c in self.changes if c.at_ms < h(c.account_id)],
            windows=[w for w in self.windows if w.end_ms <= h(w.account_id)],
            intervals=[i for i in self.intervals if i.end_ms < h(i.account_id)],
            presences=[p for p in self.presences if p.end_ms < h(p.account_id)],
            plans={a: kept for a, plans in self.plans.items() if (kept := [p for p in plans if p.at_ms < h(a)])},
            orphans=None,  # counted when applied: the driver has not applied what is above the horizon
        )  # reports stop at data_through already

    def without(self, account: str) -> Outputs:
        """The outputs with one account's records left out (a scenario's settling account)."""
        return replace(
            self,
            changes=[c for c in self.changes if c.account_id != account],
            windows=[w for w in self.windows if w.account_id != account],
            intervals=[i for i in self.intervals if i.account_id != account],
            presences=[p for p in self.presences if p.account_id != account],
            plans={a: p for a, p in self.plans.items() if a != account},
            horizons={a: h for a, h in self.horizons.items() if a != account},
            reports={key: r for key, r in self.reports.items() if key[0] != account},
        )


def reports_of(outputs: Outputs, ranges: list[ReportKey]) -> dict[ReportKey, Report]:
    """`core.billing.build_report` over the outputs, per range (how the fold side reports)."""
    reports = {}
    for account, start, end in ranges:
        changes = [c for c in outputs.changes if c.account_id == account]
        intervals = [i for i in outputs.intervals if i.account_id == account]
        presences = [p for p in outputs.presences if p.account_id == account]
        reports[(account, start, end)] = build_report(
            account, start, end, changes, intervals, outputs.plans.get(account, []),
            presences=presences, data_through_ms=outputs.horizons.get(account),
        )  # fmt: skip
    return reports


class Implementation(ABC):
    """One implementation of the contract."""

    name: ClassVar[str]
    readings: ClassVar[tuple[Reading, ...]] = ("file", "stream")
    final_only: ClassVar[bool] = False  # compared on `Outputs.final()` only
    counts_orphans: ClassVar[bool] = True

    @abstractmethod
    def run(self, history: History, reading: Reading) -> Outputs:
        """The outputs of the history in that reading, with reports over `history.report_ranges()`."""

    def __repr__(self) -> str:
        return self.name


class Fold(Implementation):
    """The pure fold: `fold_history`, flushed at the end."""

    name = "fold"

    def run(self, history: History, reading: Reading) -> Outputs:
        events = history.decoded()
        out, metrics, verdicts = fold_history(events, history.settings, history.batch_size, LATE_EVENTS[reading])
        plans: dict[str, list[Plan]] = defaultdict(list)
        for account, plan in out.plans:
            plans[account].append(plan)
        outputs = Outputs(
            out.usage_changes,
            out.windows,
            out.intervals,
            [p for p in out.presences if p.end_ms < NEVER],
            dict(plans),
            out.horizons,
            [arrival for arrival, _, verdict in verdicts if verdict == "too_late"],
            (sum(m.duplicate for m in metrics.values()), sum(m.duplicate_conflict for m in metrics.values())),
            sum(m.orphan for m in metrics.values()),
        )
        outputs.reports = reports_of(outputs, history.report_ranges())
        return outputs


class Driver(Implementation):
    """The worker's partition driver in-process: raw records (offset, key, value, timestamp) in batches, state
    entries into a `DictStore`, and a fresh `PartitionState` rebuilt from the store (`scan_entries`) after every
    `restart_every` batches, as after a restart. Every record's timestamp is the history's latest event time (no
    future skew). What it emitted is kept as a snapshot would: a closed copy supersedes the open one, and an account's
    data_through is the greatest of its horizon records and the partition's idle floors (snapshot view
    `account_horizons`)."""

    name = "driver"
    readings = ("stream",)
    final_only = True

    def __init__(self, restart_every: int = 2) -> None:
        self.restart_every = restart_every

    def run(self, history: History, reading: Reading) -> Outputs:
        if reading != "stream":
            raise ValueError("the worker reads a partition as a stream only")
        lines = history.lines()
        latest = max((event.at_ms for event in history.decoded()), default=0)
        raws = [(offset, event["account_id"].encode(), line, latest) for offset, (event, line) in
                enumerate(zip(history.events, lines, strict=True))]  # fmt: skip
        store = DictStore()
        state = self._state(store, history.settings)
        changes: list[UsageChange] = []
        windows: list[PeakWindow] = []
        intervals: dict[tuple, UserInterval] = {}
        presences: dict[tuple, PresenceInterval] = {}
        plans: dict[str, list[Plan]] = defaultdict(list)
        horizons: dict[str, int] = {}
        too_late: list[int] = []
        counts: dict[str, int] = defaultdict(int)
        floor = -NEVER  # the partition's idle floor: an idle account is known up to it too (a partition_horizon)
        for n, start in enumerate(range(0, len(raws), history.batch_size), 1):
            result = state.process(raws[start : start + history.batch_size])
            store.update(result.states)
            out = result.output
            changes += out.usage_changes
            windows += out.windows
            for interval in (*out.opened, *out.intervals):
                intervals[(interval.account_id, interval.user_id, interval.start_ms)] = interval
            for p in out.presences:
                presences[(p.account_id, p.user_id, p.kind, p.device_id, p.start_ms)] = p
            for account, plan in out.plans:
                plans[account].append(plan)
            horizons.update(out.horizons)
            floor = max(floor, -NEVER if result.idle_floor is None else result.idle_floor)
            letters = [(letter["offset"] or 0, letter["reason"]) for letter in result.dead_letters]  # offsets: ints
            too_late += [offset for offset, reason in letters if reason == "too_late"]
            others = [letter for letter in letters if letter[1] != "too_late"]
            assert not others and result.resume_at is None, f"driver: unexpected dead letters {others} or a gap"
            for key, value in result.counts.items():
                counts[key] += value
            if n % self.restart_every == 0:
                state = self._state(store, history.settings)
        data_through = {account: max(horizon, floor) for account, horizon in horizons.items()}
        outputs = Outputs(
            changes, windows, list(intervals.values()), list(presences.values()), dict(plans), data_through, too_late,
            (counts["duplicate"], counts["duplicate_conflict"]), counts["orphan"],
        )  # fmt: skip
        outputs.reports = reports_of(outputs, history.report_ranges())
        return outputs

    @staticmethod
    def _state(store: DictStore, settings: Settings) -> PartitionState:
        clocks, wakes = scan_entries(store.items())
        return PartitionState(0, TOPIC, settings, store.get, clock=clocks.get(0), wakes=wakes.get(0))


class Engine(Implementation):
    """The DuckDB engine (processor/batch/) over the history as a `.jsonl` file; its own reports."""

    name = "engine"
    counts_orphans = False

    def run(self, history: History, reading: Reading) -> Outputs:
        with TemporaryDirectory(prefix="ccmeter-contract-") as tmp, self._engine(history, reading) as engine:
            path = Path(tmp) / "history.jsonl"
            path.write_bytes(b"".join(line + b"\n" for line in history.lines()))
            stats = engine.load(path)
            assert not engine.rejected(), f"engine: rejected valid events {engine.rejected()}"
            accounts = engine.accounts()
            return Outputs(
                engine.usage_changes(),
                engine.peak_windows(),
                engine.user_intervals(),
                engine.presence_intervals(),
                {account: plans for account in accounts if (plans := engine.plans(account))},
                {account: h for account in history.accounts() if (h := engine.data_through(account)) is not None},
                engine.too_late(),
                (stats.duplicates, stats.duplicate_conflicts),
                None,
                {key: engine.report(*key) for key in history.report_ranges()},
            )

    @staticmethod
    def _engine(history: History, reading: Reading) -> BatchEngine:
        return BatchEngine(history.settings, late_events=LATE_EVENTS[reading])


IMPLEMENTATIONS: tuple[Implementation, ...] = (Fold(), Driver(), Engine())


def comparable(outputs: Outputs, implementation: Implementation) -> Outputs:
    """The part of `outputs` that `implementation`'s outputs are compared on."""
    return outputs.final() if implementation.final_only else outputs


def differences(got: Outputs, expected: Outputs, implementation: Implementation) -> Iterator[str]:
    """Each field where `got` (of `implementation`) and `expected` differ, on what the implementation provides."""
    if got.horizons != expected.horizons:  # the cut of a final-only implementation needs equal horizons first
        yield f"horizons: {got.horizons} != {expected.horizons}"
        return
    a, b = comparable(got, implementation), comparable(expected, implementation)
    names = ["changes", "windows", "intervals", "presences", "plans", "too_late", "duplicates", "reports"]
    if implementation.counts_orphans and not implementation.final_only:
        names.append("orphans")
    for name in names:
        mine, theirs = getattr(a, name), getattr(b, name)
        if mine != theirs:
            yield f"{name}: {implementation} gave {mine!r}, expected {theirs!r}"
