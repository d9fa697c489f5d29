"""The worker's partition processing without a broker: batches, re-delivery, partial state writes after a crash.

Input: the contract suite's shrinking histories as events-topic records (tests/processor/worker/wires.py), with
batch cuts, crash points and re-delivery positions drawn by Hypothesis too, so that a failure shrinks to a short
history and schedule. Reference: `fold_history` of each partition's events (the fold's own batch entry point, too-late
events dropped), cut at each account's final horizon: usage changes before it, windows that end at or before it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor import deadletters
from processor.core.alerts import alerts_for
from processor.core.model import Settings
from processor.core.partition import fold_history
from processor.worker import records as rec
from processor.worker.partition import BatchResult, Raw
from processor.worker.runner import StreamProcessor
from processor.worker.state import DictStore, account_header, account_key, clock_key, decode_clock
from schemas.events import Event, Rejection, decode, format_ms
from schemas.outputs import AlertRecord, PeakWindowRecord, UsageChangeRecord
from tests.processor.worker.wires import (
    MALFORMED,
    PARTITIONS,
    T0,
    TOPIC,
    Wire,
    batch_end,
    event_times,
    partition_of,
    wires,
)

SETTINGS = Settings()
MAX_BATCH = 16  # records in a batch of the schedule (a partition has a few dozen)
Parts = dict[int, list[Raw]]


@dataclass
class Expected:
    """What the worker must have sent once every partition was read to its end."""

    changes: dict[str, dict] = field(default_factory=dict)  # change_id -> record
    windows: dict[str, dict] = field(default_factory=dict)  # window_id -> record
    alerts: dict[tuple[str, str], dict] = field(default_factory=dict)  # (alert_id, state) -> record
    letters: dict[tuple[int, int], str] = field(default_factory=dict)  # (partition, offset) -> reason
    horizons: dict[str, int] = field(default_factory=dict)  # each account's data_through
    watermarks: dict[int, int | None] = field(default_factory=dict)  # each partition's W_p


def reference(parts: Parts) -> Expected:
    """The fold of each partition as the stream sees it (too-late events dropped), cut at each account's horizon; the
    alerts of the pure rules over that cut; the rejections and too-late verdicts as dead letters."""
    want = Expected()
    for p, batch in parts.items():
        offsets: list[int] = []
        events: list[Event] = []
        for offset, _, value, _ in batch:
            event = decode(value or b"")
            if isinstance(event, Rejection):
                want.letters[(p, offset)] = event.reason
            else:
                offsets.append(offset)
                events.append(event)
        want.watermarks[p] = max((event.at_ms for event in events), default=None)
        out, _, verdicts = fold_history(events, SETTINGS, late_events="drop")
        for arrival, _, verdict in verdicts:
            if verdict not in ("duplicate", "duplicate_conflict"):
                want.letters[(p, offsets[arrival])] = verdict
        want.horizons.update(out.horizons)
        for account, horizon in out.horizons.items():
            changes = [c for c in out.usage_changes if c.account_id == account and c.at_ms < horizon]
            plans = [plan for a, plan in out.plans if a == account and plan.at_ms < horizon]
            want.changes.update((c.change_id, rec.usage_change(c)) for c in changes)
            for alert in alerts_for(account, changes, plans, horizon):
                want.alerts[(alert.alert_id, alert.state)] = alert.to_record().model_dump()
        cut = out.horizons
        want.windows.update((w.window_id, rec.peak_window(w)) for w in out.windows if w.end_ms <= cut[w.account_id])
    return want


class Collector:
    """What a consumer of the output topics keeps: records by id (a re-sent one must equal the first), dead letters
    by position, each account's greatest horizon and each partition's greatest idle floor (like the snapshot view
    `account_horizons`: after a crash, batches cut otherwise may send an account's earlier horizons again)."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.changes: dict[str, dict] = {}
        self.windows: dict[str, dict] = {}
        self.alerts: dict[tuple[str, str], dict] = {}
        self.letters: dict[tuple[int, int], str] = {}
        self.horizons: dict[str, int] = {}
        self.floors: dict[int, int] = {}
        self.sent: dict[str, int] = {}  # each account's last horizon sent since the worker (re)started

    def restart(self) -> None:
        """The worker restarted: it may send an account's horizons below those sent before the crash again."""
        self.sent = {}

    def take(self, result: BatchResult) -> None:
        """Keep one batch's outputs; no id gets two contents, no account's horizon moves back (between restarts)."""
        for change in result.output.usage_changes:
            record = rec.usage_change(change)
            assert self.changes.setdefault(record["change_id"], record) == record
        for window in result.output.windows:
            record = rec.peak_window(window)
            assert self.windows.setdefault(record["window_id"], record) == record
        for alert in result.alerts:
            record = alert.to_record().model_dump()
            assert self.alerts.setdefault((alert.alert_id, alert.state), record) == record
        for letter in result.dead_letters:
            where = (letter["partition"], letter["offset"])
            assert self.letters.setdefault(where, letter["reason"]) == letter["reason"]
            assert letter["original"] == self.parts[where[0]][where[1]][2]
        for account, horizon in result.output.horizons.items():
            assert horizon >= self.sent.get(account, horizon), f"{account}: horizon moved back"
            self.sent[account] = horizon
            self.horizons[account] = max(horizon, self.horizons.get(account, horizon))
        if result.idle_floor is not None:
            self.floors[result.partition] = max(result.idle_floor, self.floors.get(result.partition, result.idle_floor))

    def data_through(self) -> dict[str, int]:
        """Each account's data_through as a snapshot reads it: its horizon, or its partition's idle floor if above."""
        return {a: max(h, self.floors.get(partition_of(a.encode()), h)) for a, h in self.horizons.items()}


@dataclass(frozen=True)
class Step:
    """One poll of the schedule and what follows it.

    The batch: the next records of `partition` (or of the next partition with records left) whose events lie less
    than `minutes` after the batch's first event, malformed lines along, at most `MAX_BATCH` (`wires.batch_end`: cut
    by event time, a batch keeps its records when the shrinker drops others); `minutes=0` is an empty poll, what an
    unneeded step shrinks to. Then: the state is written (`then="write"`), and the offsets committed too
    (`"commit"`); or the worker crashes before sending the outputs, or after sending them while writing the state:
    the last `lost` of the batch's state entries (the clock's is the last) never reach the store. After a crash the
    worker restarts from the store and re-reads each partition `p` from `reread[p]` records before where it was (not
    before its last commit)."""

    partition: int
    minutes: int
    then: str
    lost: int
    reread: tuple[int, ...]


THEN = ("write", "commit", "write", "commit", "crash while writing", "crash before sending")  # a crash is 1 in 3
steps = st.builds(
    Step,
    partition=st.integers(0, PARTITIONS - 1),
    minutes=st.integers(0, 90),
    then=st.sampled_from(THEN),
    lost=st.integers(0, 6),
    reread=st.tuples(*[st.integers(0, MAX_BATCH)] * PARTITIONS),
)


def run(parts: Parts, store: DictStore, schedule: list[Step]) -> Collector:
    """Feed the partitions batch by batch as `schedule` says, with its crashes and re-reads; then the rest of each
    partition in one batch."""
    collector = Collector(parts)
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    positions = dict.fromkeys(range(PARTITIONS), 0)
    committed = dict.fromkeys(range(PARTITIONS), 0)
    times = {p: event_times(records) for p, records in parts.items()}
    ends = {p: len(parts.get(p, ())) for p in range(PARTITIONS)}
    for step in schedule:
        order = [(step.partition + i) % PARTITIONS for i in range(PARTITIONS)]
        p = next((q for q in order if positions[q] < ends[q]), None)
        if p is None:
            break
        start = positions[p]
        batch = parts[p][start : batch_end(times[p], start, step.minutes, MAX_BATCH)] if step.minutes else []
        result = processor.process(p, batch) if batch else BatchResult(p)
        if step.then.startswith("crash"):
            if step.then == "crash while writing":
                collector.take(result)
                entries = list(result.states.items())
                store.update(dict(entries[: max(0, len(entries) - step.lost)]))
            processor = StreamProcessor(TOPIC, SETTINGS, store)  # restart: state from the store only
            collector.restart()
            for q, back in enumerate(step.reread):
                positions[q] = max(committed[q], positions[q] - back)
            continue
        collector.take(result)
        store.update(result.states)
        positions[p] += len(batch)
        if step.then == "commit":
            committed[p] = positions[p]
    for p in parts:  # the rest of each partition in one batch
        if positions[p] < ends[p]:
            result = processor.process(p, parts[p][positions[p] :])
            collector.take(result)
            store.update(result.states)
    return collector


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=wires(), schedule=st.lists(steps, min_size=8, max_size=40))
def test_batches_and_crashes_give_the_fold_outputs(wire: Wire, schedule: list[Step]):
    parts = wire.parts()
    want = reference(parts)
    store = DictStore()
    got = run(parts, store, schedule)
    assert got.changes == want.changes
    assert got.windows == want.windows
    assert got.data_through() == want.horizons
    assert got.letters == want.letters
    assert set(MALFORMED.values()) | {"too_late"} <= set(got.letters.values())
    assert got.alerts == want.alerts
    for p, batch in parts.items():
        clock = decode_clock(store.data[clock_key(p)])
        assert (clock.applied, clock.watermark) == (len(batch) - 1, want.watermarks[p])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=wires())
def test_records_validate_against_the_output_models(wire: Wire):
    parts = wire.parts()
    processor = StreamProcessor(TOPIC, SETTINGS, {})
    results = [processor.process(p, batch) for p, batch in parts.items()]
    changes = [rec.usage_change(c) for r in results for c in r.output.usage_changes]
    windows = [rec.peak_window(w) for r in results for w in r.output.windows]
    for record in changes:
        assert UsageChangeRecord.model_validate(record).model_dump() == record
        assert json.loads(rec.dumps(record)) == record
    for record in windows:
        assert PeakWindowRecord.model_validate(record).model_dump() == record
    assert any(result.dead_letters for result in results)  # the malformed lines at least
    for result in results:
        for letter in result.dead_letters:
            assert deadletters.read(*deadletters.encode(letter)) == letter  # what readers get back
            assert letter["original"] == parts[result.partition][letter["offset"]][2]
        for alert in result.alerts:
            AlertRecord.model_validate(alert.to_record().model_dump())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=wires(), size=st.integers(1, 20))
def test_alerts_equal_the_pure_rules_on_the_whole_history(wire: Wire, size: int):
    parts = wire.parts()
    processor = StreamProcessor(TOPIC, SETTINGS, {})
    got: dict[str, list] = defaultdict(list)
    changes: dict[str, list] = defaultdict(list)
    plans: dict[str, list] = defaultdict(list)
    horizons = {}
    for p, batch in parts.items():
        for start in range(0, len(batch), size):
            result = processor.process(p, batch[start : start + size])
            for alert in result.alerts:
                got[alert.account_id].append(alert)
            for change in result.output.usage_changes:
                changes[change.account_id].append(change)
            for account, plan in result.output.plans:
                plans[account].append(plan)
        state = processor.partition(p)
        mine = [account for account in changes if partition_of(account.encode()) == p]
        horizons.update((account, state.clock.horizon_of(state.slot(account).fold)) for account in mine)
    for account in changes:
        horizon = horizons[account]
        assert got[account] == alerts_for(account, changes[account], plans[account], horizon)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=wires(), limit=st.sampled_from((1, 2)), size=st.integers(1, 20))
def test_cache_trim_keeps_results(wire: Wire, limit: int, size: int):
    parts = wire.parts()
    store = DictStore()
    trimmed = StreamProcessor(TOPIC, SETTINGS, store, cache_limit=limit)
    plain = StreamProcessor(TOPIC, SETTINGS, {})
    a, b = Collector(parts), Collector(parts)
    for p, batch in parts.items():
        for start in range(0, len(batch), size):
            result = trimmed.process(p, batch[start : start + size])
            store.update(result.states)
            trimmed.trim(p)
            a.take(result)
            b.take(plain.process(p, batch[start : start + size]))
    assert (a.changes, a.windows, a.alerts, a.letters) == (b.changes, b.windows, b.alerts, b.letters)


def test_key_mismatch_and_redelivery():
    event = {"event_id": "e1", "type": "api.request", "account_id": "a", "user_id": "u", "occurred_at": format_ms(T0)}
    value = json.dumps(event).encode()
    processor = StreamProcessor(TOPIC, SETTINGS, {})
    first = processor.process(0, [(0, b"b", value, None), (1, b"a", value, None)])
    assert [d["reason"] for d in first.dead_letters] == ["key_mismatch"]
    again = processor.process(0, [(0, b"b", value, None), (1, b"a", value, None), (2, b"a", value, None)])
    assert again.redelivered == 2 and again.dead_letters == []
    assert processor.partition(0).slot("a").fold.metrics.duplicate == 1


def test_live_view_and_header():
    event = {"event_id": "e1", "type": "api.request", "account_id": "a", "user_id": "u", "occurred_at": format_ms(T0)}
    store: dict[bytes, bytes] = {}
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    result = processor.process(0, [(0, b"a", json.dumps(event).encode(), None)])
    store.update(result.states)
    view = StreamProcessor(TOPIC, SETTINGS, store).live_view("a")
    assert view is not None and view.usage == 1 and view.as_of_ms == T0
    assert processor.live_view("zzz") is None
    partition, applied, wake = account_header(store[b"a"])
    assert (partition, applied) == (0, 0) and wake == T0  # the buffered event
    assert msgpack.unpackb(store[b"a"])[0] == 2  # the fold in parts (processor/worker/accounts.py)


def test_a_hole_in_the_offsets_stops_the_batch_until_re_read():
    def api(n: int) -> bytes:
        body = {"event_id": f"e{n}", "type": "api.request", "account_id": "a", "user_id": f"u{n}"}
        return json.dumps({**body, "occurred_at": format_ms(T0 + n * 1000)}).encode()

    processor = StreamProcessor(TOPIC, SETTINGS, {})
    first = processor.process(0, [(n, b"a", api(n), None) for n in (0, 1, 3, 4)])
    assert (first.resume_at, first.gaps, processor.partition(0).applied) == (2, 1, 1)
    again = processor.process(0, [(n, b"a", api(n), None) for n in (2, 3, 4)])
    assert (again.resume_at, again.gaps, processor.partition(0).applied) == (None, 0, 4)
    real_hole = processor.process(0, [(n, b"a", api(n), None) for n in (7, 8)], accept_gaps=True)
    assert (real_hole.resume_at, real_hole.gaps, processor.partition(0).applied) == (None, 1, 8)
    fresh = StreamProcessor(TOPIC, SETTINGS, {})
    assert fresh.process(1, [(n, b"a", api(n), None) for n in (5, 6)]).resume_at is None  # start unknown


def _api_record(offset: int, account: str, seconds: int, event_id: str | None = None) -> tuple:
    event = {
        "event_id": event_id or f"{account}-{offset}",
        "type": "api.request",
        "account_id": account,
        "user_id": "u",
        "occurred_at": format_ms(T0 + seconds * 1000),
    }
    return (offset, account.encode(), json.dumps(event).encode(), T0 + seconds * 1000)  # published at once


def test_a_record_whose_processing_fails_is_a_dead_letter_and_the_partition_goes_on():
    """An unreadable stored state makes every record of that account fail; the others are applied."""
    store = {account_key("broken"): b"\x93not a state"}
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    batch = [_api_record(0, "ok", 0), _api_record(1, "broken", 1), _api_record(2, "ok", 2)]
    result = processor.process(0, batch)
    assert [(d["reason"], d["offset"]) for d in result.dead_letters] == [("processing_error", 1)]
    assert result.dead_letters[0]["detail"].split(":")[0] in {"ValueError", "TypeError", "ExtraData"}
    assert result.dead_letters[0]["original"] == batch[1][2] and result.dead_letters[0]["key"] == b"broken"
    assert decode_clock(result.states[clock_key(0)]).applied == 2
    assert processor.stats.dead_letters["processing_error"] == 1


def test_an_account_that_fails_to_advance_is_quarantined_for_the_batch(monkeypatch):
    from processor.core.fold import AccountFold

    real = AccountFold.advance_into

    def advance_into(self, horizon, settings, out):
        if self.account_id == "poison":
            raise OverflowError("date value out of range")
        return real(self, horizon, settings, out)

    monkeypatch.setattr(AccountFold, "advance_into", advance_into)
    processor = StreamProcessor(TOPIC, SETTINGS, {})
    batch = [_api_record(0, "ok", 0), _api_record(1, "poison", 1), _api_record(2, "poison", 2)]
    batch += [_api_record(3, "ok", 1200)]  # moves the horizon of "ok" past its first request
    result = processor.process(0, batch)
    letters = [(d["reason"], d["offset"]) for d in result.dead_letters]
    assert letters == [("processing_error", 1), ("processing_error", 2)]
    assert result.dead_letters[0]["detail"] == "OverflowError: date value out of range"
    assert account_key("poison") not in result.states and account_key("ok") in result.states
    assert [c.account_id for c in result.output.usage_changes] == ["ok", "ok"]
    following = processor.process(0, [_api_record(4, "ok", 1300)])  # the partition goes on
    assert following.dead_letters == [] and decode_clock(following.states[clock_key(0)]).applied == 4


def test_counts_are_kept_with_the_state_across_restarts():
    store: dict[bytes, bytes] = {}
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    first = [_api_record(0, "a", 0), _api_record(1, "a", 0, event_id="a-0"), (2, b"a", b"not json", None)]
    result = processor.process(0, first)
    store.update(result.states)
    late = [_api_record(3, "a", 3600), _api_record(4, "a", 0, event_id="old")]  # 1 h behind its own watermark
    store.update(processor.process(0, late).states)
    restarted = StreamProcessor(TOPIC, SETTINGS, store)
    counts = restarted.counts([0])
    assert counts["duplicate"] == 1 and counts["dead_letter:invalid_json"] == 1 and counts["dead_letter:too_late"] == 1
    assert counts["applied"] == 1  # the first request: the one at 3600 s is still above the account's horizon
    store.update(restarted.process(0, [(5, b"a", b"[]", None)]).states)
    assert StreamProcessor(TOPIC, SETTINGS, store).counts([0])["dead_letter:not_an_object"] == 1


def test_a_tombstone_and_an_empty_value_are_told_apart_in_their_dead_letters():
    result = StreamProcessor(TOPIC, SETTINGS, {}).process(0, [(0, b"a", None, None), (1, b"a", b"", None)])
    details = [letter["detail"] for letter in result.dead_letters]
    assert details[0] == "null record value (a tombstone)" and "EOF" in details[1]
    (_, tombstone, marked), (_, empty, plain) = (deadletters.encode(letter) for letter in result.dead_letters)
    assert tombstone is None and (deadletters.ORIGINAL_NULL, b"true") in marked
    assert empty == b"" and deadletters.ORIGINAL_NULL not in dict(plain)


def test_records_beyond_the_limits_are_too_large_letters_by_reference():
    """Too long (before any parsing), nested too deep, or keyed beyond any account_id: `too_large`, no value."""
    valid = _api_record(3, "a", 0)
    batch = [
        (0, b"a", b"x" * 2001, 1_000),
        (1, b"a", b"[" * 65 + b"]" * 65, None),
        (2, b"k" * 1025, valid[2], None),
        valid,
    ]
    result = StreamProcessor(TOPIC, SETTINGS, {}, max_record_bytes=2000).process(0, batch)
    letters = result.dead_letters
    assert [(d["reason"], d["offset"]) for d in letters] == [("too_large", 0), ("too_large", 1), ("too_large", 2)]
    assert letters[0]["detail"] == "2001 bytes, more than the limit of 2000" and "64 levels" in letters[1]["detail"]
    assert [d["size"] for d in letters] == [2001, 130, len(valid[2])]
    assert letters[0]["sha256"] == hashlib.sha256(b"x" * 2001).hexdigest()
    key, value, headers = deadletters.encode(letters[0])
    assert key is None and value is None
    assert dict(headers)[deadletters.TIMESTAMP] == b"1000" and dict(headers)[deadletters.SIZE] == b"2001"
    assert result.applied == 1  # the partition goes on


def test_a_record_applied_before_a_crash_is_not_judged_again_against_the_accounts_newer_horizon():
    """The account's entry was written, the clock's was not (a crash between them): on re-delivery the early event
    lies below the account's new horizon, but it was accepted the first time and its outputs exist, so it is neither
    a `too_late` dead letter nor counted again; the clock still ends where it did."""

    def event(event_id: str, at_ms: int) -> bytes:
        body = {"event_id": event_id, "type": "api.request", "account_id": "a", "user_id": "u"}
        return json.dumps(body | {"occurred_at": format_ms(at_ms)}).encode()

    published = T0 + 3_600_000  # both records' timestamp (the future-skew check's reference)
    batch = [(0, b"a", event("early", T0), published), (1, b"a", event("later", published), published)]
    store: dict[bytes, bytes] = {}
    first = StreamProcessor(TOPIC, SETTINGS, store).process(0, batch)
    assert first.dead_letters == [] and first.applied == 2
    store.update((key, value) for key, value in first.states.items() if key != clock_key(0))  # the clock is lost
    restarted = StreamProcessor(TOPIC, SETTINGS, store)
    again = restarted.process(0, batch)
    assert again.dead_letters == [] and again.applied == 0 and again.redelivered == 0
    assert restarted.partition(0).slot("a").fold.metrics.too_late == 0
    assert decode_clock(again.states[clock_key(0)]).watermark == T0 + 3_600_000


def test_a_negative_record_timestamp_counts_as_unknown_in_the_skew_check():
    """Kafka gives -1 for a record without a timestamp: the skew check then uses the watermark alone, as for None
    (as a time it would put every event of a fresh partition in the future)."""
    processor = StreamProcessor(TOPIC, SETTINGS, {})
    offset, key, value, _ = _api_record(0, "acme", 0)
    result = processor.process(0, [(offset, key, value, -1)])
    assert result.dead_letters == [] and result.applied == 1
    ahead = _api_record(1, "acme", 3600)  # an hour ahead of the watermark, arrival unknown: future_skew
    result = processor.process(0, [(ahead[0], ahead[1], ahead[2], -1)])
    assert [letter["reason"] for letter in result.dead_letters] == ["future_skew"]
