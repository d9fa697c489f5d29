"""The correctness oracle: the pure fold, the worker's partition driver and the independent DuckDB engine agree.

Random multi-user histories with duplicates, conflicting copies, arrival shuffled within the allowed lateness, accounts
whose producers lag the others on the same partition, events hours too late, local midnights and DST changes go
through the implementations; usage changes, peak windows, user and presence intervals, plans, `data_through` and
reports must be identical. Two readings of a history (SPEC 2):
- **file** (`late_events="count"`): every event counts however late it arrived; `fold_history` and the batch engine;
- **stream** (`late_events="drop"`): too-late events are dropped; `fold_history`, the worker's `StreamProcessor` (its
  own partition driver, in batches) and the batch engine. The driver's outputs are what it has emitted below each
  account's horizon, as a snapshot would hold them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from processor.core.periods import local_date
from processor.eventfile import read_events
from processor.worker.runner import StreamProcessor
from schemas.events import Event, Rejection
from tests.histories import MINUTE, HistoryShape, generate, seeds, to_jsonl

DST_EUROPE = 1_806_969_600_000  # 2027-03-28T00:00:00Z, the night Europe/Berlin springs forward (01:00 UTC)
DST_US_FALL = 1_793_505_600_000  # 2026-11-01T04:00:00Z, midnight in New York before clocks fall back (06:00 UTC)


@dataclass
class Outputs:
    """What one implementation says about a history, in a comparable order."""

    changes: list[UsageChange]
    windows: list[PeakWindow]
    intervals: list[UserInterval]
    presences: list[PresenceInterval]
    plans: dict[str, list[Plan]]
    horizons: dict[str, int]
    too_late: list[int] = field(default_factory=list)

    def of(self, account: str) -> tuple[list[UsageChange], list[UserInterval], list[PresenceInterval], list[Plan]]:
        """The account's changes, intervals, presences and plans (what a report needs)."""
        return (
            [c for c in self.changes if c.account_id == account],
            [i for i in self.intervals if i.account_id == account],
            [p for p in self.presences if p.account_id == account],
            self.plans.get(account, []),
        )


def _sorted(changes, windows, intervals, presences) -> tuple[list, list, list, list]:
    return (
        sorted(changes, key=lambda c: (c.account_id, c.at_ms)),
        sorted(windows, key=lambda w: (w.account_id, w.kind, w.start_ms, w.end_ms)),
        sorted(intervals, key=lambda i: (i.account_id, i.user_id, i.start_ms)),
        sorted(presences, key=lambda p: (p.account_id, p.user_id, p.start_ms, p.kind, p.device_id or "")),
    )


def valid_events(path: Path) -> list[Event]:
    return [event for _, event in read_events(path) if not isinstance(event, Rejection)]


def by_fold(path: Path, late_events: LateEvents) -> Outputs:
    output, _metrics, verdicts = fold_history(valid_events(path), late_events=late_events)
    plans: dict[str, list[Plan]] = {}
    for account, plan in output.plans:
        plans.setdefault(account, []).append(plan)
    closed = [p for p in output.presences if p.end_ms < NEVER]
    too_late = [arrival for arrival, _, verdict in verdicts if verdict == "too_late"]
    return Outputs(*_sorted(output.usage_changes, output.windows, output.intervals, closed), plans,
                   output.horizons, too_late)


def by_engine(path: Path, late_events: LateEvents) -> Outputs:
    with BatchEngine(late_events=late_events) as engine:
        engine.load(path)
        accounts = engine.accounts()
        return Outputs(
            engine.usage_changes(),
            engine.peak_windows(),
            engine.user_intervals(),
            engine.presence_intervals(),
            {account: plans for account in accounts if (plans := engine.plans(account))},
            {account: h for account in accounts if (h := engine.data_through(account)) is not None},
            engine.too_late(),
        )


def by_driver(path: Path, batch_size: int) -> Outputs:
    """The worker's partition driver over the file as one partition, in batches; what it emitted, cut like a snapshot:
    closed copies supersede open ones, nothing at or past an account's horizon."""
    lines = path.read_bytes().splitlines()
    latest = max(event.at_ms for event in valid_events(path))
    raws = [(offset, json.loads(line)["account_id"].encode(), line, latest) for offset, line in enumerate(lines)]
    processor = StreamProcessor("events", Settings(), {})
    changes, windows, intervals, presences = [], [], {}, {}
    plans: dict[str, list[Plan]] = {}
    horizons: dict[str, int] = {}
    too_late: list[int] = []
    for start in range(0, len(raws), batch_size):
        result = processor.process(0, raws[start : start + batch_size])
        out = result.output
        changes += out.usage_changes
        windows += out.windows
        for interval in (*out.opened, *out.intervals):
            intervals[(interval.account_id, interval.user_id, interval.start_ms)] = interval
        for presence in out.presences:
            key = (presence.account_id, presence.user_id, presence.kind, presence.device_id, presence.start_ms)
            presences[key] = presence
        for account, plan in out.plans:
            plans.setdefault(account, []).append(plan)
        horizons.update(out.horizons)
        too_late += [letter["offset"] for letter in result.dead_letters if letter["reason"] == "too_late"]
    closed_intervals = [i for i in intervals.values() if i.end_ms < NEVER]
    closed_presences = [p for p in presences.values() if p.end_ms < NEVER]
    outputs = Outputs(*_sorted(changes, windows, closed_intervals, closed_presences), plans, horizons, too_late)
    open_intervals = [i for i in intervals.values() if i.end_ms >= NEVER]
    open_presences = [p for p in presences.values() if p.end_ms >= NEVER]
    outputs.intervals = sorted(closed_intervals + open_intervals, key=lambda i: (i.account_id, i.user_id, i.start_ms))
    outputs.presences = closed_presences + open_presences
    return outputs


def cut(outputs: Outputs, horizons: dict[str, int]) -> Outputs:
    """What is final below each account's horizon: changes before it, windows that end by it, intervals and
    presences that closed before it."""
    h = lambda account: horizons.get(account, -NEVER)  # noqa: E731
    return Outputs(
        [c for c in outputs.changes if c.at_ms < h(c.account_id)],
        [w for w in outputs.windows if w.end_ms <= h(w.account_id)],
        [i for i in outputs.intervals if i.end_ms < h(i.account_id)],
        [p for p in outputs.presences if p.end_ms < h(p.account_id)],
        {a: [p for p in plans if p.at_ms < h(a)] for a, plans in outputs.plans.items()},
        horizons,
        outputs.too_late,
    )


def report_ranges(changes: list[UsageChange], plans: list[Plan], data_through: int) -> list[tuple]:
    """A range around all the usage and past data_through, and one single day inside it."""
    zone = plans[-1].timezone if plans else "UTC"
    first = local_date(changes[0].at_ms, zone) - timedelta(days=1)
    last = max(local_date(changes[-1].at_ms, zone), local_date(data_through, zone)) + timedelta(days=1)
    return [(first, last), (first + timedelta(days=1), first + timedelta(days=1))]


def check_reports(engine_path: Path, late_events: LateEvents, reference: Outputs) -> None:
    """The engine's reports equal core.billing over the reference's outputs and data_through."""
    with BatchEngine(late_events=late_events) as engine:
        engine.load(engine_path)
        for account in engine.accounts():
            changes, intervals, presences, plans = reference.of(account)
            data_through = reference.horizons.get(account)
            if not changes or data_through is None:
                continue
            for start, end in report_ranges(changes, plans, data_through):
                expected = build_report(
                    account, start, end, changes, intervals, plans, presences=presences, data_through_ms=data_through
                )
                assert engine.report(account, start, end) == expected, (account, start, end)


def check_file_agreement(path: Path) -> None:
    fold, engine = by_fold(path, "count"), by_engine(path, "count")
    assert fold.too_late == [] and engine.too_late == []
    assert fold.changes == engine.changes
    assert fold.windows == engine.windows
    assert fold.intervals == engine.intervals
    assert fold.presences == engine.presences
    assert fold.plans == engine.plans
    assert fold.horizons == engine.horizons
    check_reports(path, "count", fold)


def check_stream_agreement(path: Path, batch_size: int) -> None:
    fold, engine = by_fold(path, "drop"), by_engine(path, "drop")
    assert fold.too_late == engine.too_late
    assert (fold.changes, fold.windows, fold.intervals) == (engine.changes, engine.windows, engine.intervals)
    assert (fold.presences, fold.plans, fold.horizons) == (engine.presences, engine.plans, engine.horizons)
    driver = by_driver(path, batch_size)
    assert driver.too_late == engine.too_late
    assert driver.horizons == engine.horizons
    final_driver, final_engine = cut(driver, driver.horizons), cut(engine, driver.horizons)
    assert final_driver.changes == final_engine.changes
    assert final_driver.windows == final_engine.windows
    assert [i for i in final_driver.intervals if i.end_ms < NEVER] == final_engine.intervals
    assert sorted(final_driver.presences, key=repr) == sorted(final_engine.presences, key=repr)
    check_reports(path, "drop", driver)


SHAPES = {
    "default": HistoryShape(),
    "dense": HistoryShape(accounts=1, users=1, devices=1, events=80, span_minutes=60, grid_ms=60_000),
    "lagging tenant": HistoryShape(accounts=3, span_minutes=300, lag_minutes=(0, 30, 150), too_late=3),
    "local midnight and DST (Europe)": HistoryShape(
        accounts=2, span_minutes=600, start_ms=DST_EUROPE - 300 * MINUTE, zones=("Europe/Berlin", "UTC")
    ),
    "DST end (US) with a lagging tenant": HistoryShape(
        accounts=2, span_minutes=480, start_ms=DST_US_FALL - 60 * MINUTE, zones=("America/New_York",),
        lag_minutes=(0, 45), too_late=2,
    ),
}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=seeds, shape=st.sampled_from(sorted(SHAPES)))
def test_fold_and_batch_engine_agree_on_files(seed: int, shape: str, tmp_path: Path) -> None:
    path = tmp_path / f"history-{seed}.jsonl"
    path.write_bytes(to_jsonl(generate(seed, SHAPES[shape])))
    check_file_agreement(path)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=seeds, shape=st.sampled_from(sorted(SHAPES)), batch_size=st.sampled_from((7, 50, 10_000)))
def test_fold_worker_driver_and_batch_engine_agree_on_streams(
    seed: int, shape: str, batch_size: int, tmp_path: Path
) -> None:
    path = tmp_path / f"stream-{seed}.jsonl"
    path.write_bytes(to_jsonl(generate(seed, SHAPES[shape])))
    check_stream_agreement(path, batch_size)


def test_a_tenant_half_an_hour_behind_loses_nothing(tmp_path: Path) -> None:
    """Done-when of the live-edge issue, in both engines: two accounts on one partition, one producer 30 minutes
    behind the other: no dead letters, and the stream's results equal the file's."""
    shape = HistoryShape(accounts=2, span_minutes=240, lag_minutes=(0, 30))
    path = tmp_path / "lag.jsonl"
    path.write_bytes(to_jsonl(generate(7, shape)))
    stream, file = by_engine(path, "drop"), by_engine(path, "count")
    assert stream.too_late == [] and by_fold(path, "drop").too_late == [] and by_driver(path, 13).too_late == []
    assert (stream.changes, stream.intervals, stream.horizons) == (file.changes, file.intervals, file.horizons)
    check_stream_agreement(path, 13)


def test_hours_too_late_events_count_in_the_file_but_not_in_the_stream(tmp_path: Path) -> None:
    shape = HistoryShape(accounts=2, span_minutes=480, too_late=6)
    path = tmp_path / "late.jsonl"
    path.write_bytes(to_jsonl(generate(11, shape)))
    dropped = by_engine(path, "drop").too_late
    assert dropped and dropped == by_fold(path, "drop").too_late
    assert by_engine(path, "count").too_late == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=seeds)
def test_shuffled_arrival_within_lateness_equals_sorted_order(seed: int, tmp_path: Path) -> None:
    """SPEC 2: on a stream, results equal those of the same events sorted by occurred_at (exact duplicates only)."""
    history = generate(seed)
    first_payload: dict[tuple[str, str], dict] = {}
    for event in history:
        first_payload.setdefault((event["account_id"], event["event_id"]), event)
    consistent = [e for e in history if first_payload[(e["account_id"], e["event_id"])] == e]
    ordered = sorted(consistent, key=lambda e: e["occurred_at"])  # stable: same-instant events keep arrival order
    shuffled_path, sorted_path = tmp_path / "shuffled.jsonl", tmp_path / "sorted.jsonl"
    shuffled_path.write_bytes(to_jsonl(consistent))
    sorted_path.write_bytes(to_jsonl(ordered))
    shuffled, in_order = by_fold(shuffled_path, "drop"), by_fold(sorted_path, "drop")
    assert shuffled.too_late == [] and in_order.too_late == []
    assert shuffled.changes == in_order.changes
    assert shuffled.presences == in_order.presences
