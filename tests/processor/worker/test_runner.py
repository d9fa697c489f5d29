"""The worker's partition processing without a broker: batches, re-delivery, partial state writes after a crash.

Reference: `fold_history` of each partition's events (the fold's own batch entry point), cut at the partition's
final horizon: usage changes before it, windows that end at or before it.
"""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from collections import defaultdict

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor import deadletters
from processor.core.alerts import alerts_for
from processor.core.model import Settings
from processor.core.partition import fold_history
from processor.worker import records as rec
from processor.worker.partition import BatchResult
from processor.worker.runner import StreamProcessor
from processor.worker.state import account_header, account_key, clock_key, decode_clock
from schemas.events import Event, decode, format_ms
from schemas.outputs import AlertRecord, PeakWindowRecord, UsageChangeRecord
from tests.histories import T0, HistoryShape, generate

TOPIC = "t.events"
PARTITIONS = 3
SETTINGS = Settings()


def partition_of(key: bytes | None) -> int:
    return zlib.crc32(key or b"") % PARTITIONS


def wire(seed: int) -> list[tuple[bytes | None, bytes]]:
    """(key, value) records in arrival order: a history, malformed lines, a too-late event and a pusher."""
    history = generate(seed, HistoryShape(accounts=5, users=4, devices=2, events=150, span_minutes=300))
    out: list[tuple[bytes | None, bytes]] = [(e["account_id"].encode(), json.dumps(e).encode()) for e in history]
    rng = random.Random(seed)
    for bad in (b"not json", b'{"type": "nope"}', b"\xff\xfe", b"[1, 2]"):
        out.insert(rng.randrange(len(out)), (b"acct-0", bad))
    late = {"event_id": "late-1", "type": "api.request", "account_id": "acct-1", "user_id": "u1"}
    late["occurred_at"] = format_ms(T0)
    out.append((b"acct-1", json.dumps(late).encode()))
    return out


ARRIVAL_MS = T0 + 30 * 86_400_000  # record timestamps: all records were published long after their events


def split(records: list[tuple[bytes | None, bytes]]) -> dict[int, list[tuple[int, bytes | None, bytes, int]]]:
    parts: dict[int, list[tuple[int, bytes | None, bytes, int]]] = defaultdict(list)
    for key, value in records:
        part = parts[partition_of(key)]
        part.append((len(part), key, value, ARRIVAL_MS))
    return parts


def reference(parts) -> tuple[dict[str, dict], dict[str, dict], dict[int, int], dict[str, int]]:
    """The fold of each partition as the stream sees it (too-late events dropped), cut at each account's horizon;
    the partition watermarks and the accounts' horizons."""
    changes: dict[str, dict] = {}
    windows: dict[str, dict] = {}
    watermarks: dict[int, int] = {}
    horizons: dict[str, int] = {}
    for p, batch in parts.items():
        events: list[Event] = [e for _, _, v, _ in batch if not hasattr(e := decode(v), "reason")]
        watermarks[p] = max(event.at_ms for event in events)
        out, _, _ = fold_history(events, SETTINGS, late_events="drop")
        horizons.update(out.horizons)
        changes.update(
            (c.change_id, rec.usage_change(c)) for c in out.usage_changes if c.at_ms < out.horizons[c.account_id]
        )
        windows.update((w.window_id, rec.peak_window(w)) for w in out.windows if w.end_ms <= out.horizons[w.account_id])
    return changes, windows, watermarks, horizons


class Collector:
    def __init__(self) -> None:
        self.changes: dict[str, dict] = {}
        self.windows: dict[str, dict] = {}
        self.alerts: list[dict] = []
        self.dead: list[dict] = []
        self.horizons: dict[str, int] = {}

    def take(self, result: BatchResult) -> None:
        for change in result.output.usage_changes:
            record = rec.usage_change(change)
            assert self.changes.setdefault(record["change_id"], record) == record
        for window in result.output.windows:
            record = rec.peak_window(window)
            assert self.windows.setdefault(record["window_id"], record) == record
        self.alerts.extend(a.to_record().model_dump() for a in result.alerts)
        for account, horizon in result.output.horizons.items():  # never moves back, even after a crash
            self.horizons[account] = max(horizon, self.horizons.get(account, horizon))
        self.dead.extend(result.dead_letters)


def run(parts, store: dict[bytes, bytes], rng: random.Random, crashes: int) -> Collector:
    """Feed every partition in random batches; `crashes` times, lose part of a batch's state and restart."""
    collector = Collector()
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    positions = {p: 0 for p in parts}
    committed = {p: 0 for p in parts}
    while any(positions[p] < len(parts[p]) for p in parts):
        p = rng.choice([p for p in parts if positions[p] < len(parts[p])])
        size = rng.randint(1, 40)
        batch = parts[p][positions[p] : positions[p] + size]
        result = processor.process(p, batch)
        if crashes and rng.random() < 0.15:
            crashes -= 1
            if rng.random() < 0.5:  # outputs were delivered, then the state writes stopped part way
                collector.take(result)
                entries = list(result.states.items())
                store.update(entries[: rng.randint(0, len(entries))])
            processor = StreamProcessor(TOPIC, SETTINGS, store)  # restart: state from the store only
            positions = {q: rng.randint(committed[q], positions[q]) for q in parts}  # re-delivery from a commit
            continue
        collector.take(result)
        store.update(result.states)
        positions[p] += len(batch)
        if rng.random() < 0.3:
            committed[p] = positions[p]
    return collector


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31), st.integers(0, 4))
def test_batches_and_crashes_give_the_fold_outputs(seed, crashes):
    parts = split(wire(seed))
    want_changes, want_windows, watermarks, horizons = reference(parts)
    store: dict[bytes, bytes] = {}
    got = run(parts, store, random.Random(seed), crashes)
    assert got.changes == want_changes
    assert got.windows == want_windows
    assert got.horizons == horizons
    for p, watermark in watermarks.items():
        assert decode_clock(store[clock_key(p)]).applied == len(parts[p]) - 1
        assert decode_clock(store[clock_key(p)]).watermark == watermark
    reasons = {letter["reason"] for letter in got.dead}
    assert {"invalid_json", "unknown_type", "invalid_utf8", "not_an_object", "too_late"} <= reasons
    # Alerts: after dropping re-deliveries, the pure rules over the reference usage changes and the plans.
    by_id: dict[tuple[str, str], dict] = {}
    for alert in got.alerts:
        assert by_id.setdefault((alert["alert_id"], alert["state"]), alert) == alert


def test_records_validate_against_the_output_models():
    parts = split(wire(7))
    processor = StreamProcessor(TOPIC, SETTINGS, {})
    results = [processor.process(p, batch) for p, batch in parts.items()]
    changes = [rec.usage_change(c) for r in results for c in r.output.usage_changes]
    windows = [rec.peak_window(w) for r in results for w in r.output.windows]
    assert changes and windows
    for record in changes:
        assert UsageChangeRecord.model_validate(record).model_dump() == record
        assert json.loads(rec.dumps(record)) == record
    for record in windows:
        assert PeakWindowRecord.model_validate(record).model_dump() == record
    for result in results:
        for letter in result.dead_letters:
            assert deadletters.read(*deadletters.encode(letter)) == letter  # what readers get back
            assert letter["original"] == parts[result.partition][letter["offset"]][2]
        for alert in result.alerts:
            AlertRecord.model_validate(alert.to_record().model_dump())


def test_alerts_equal_the_pure_rules_on_the_whole_history():
    parts = split(wire(11))
    processor = StreamProcessor(TOPIC, SETTINGS, {})
    got: dict[str, list] = defaultdict(list)
    changes: dict[str, list] = defaultdict(list)
    plans: dict[str, list] = defaultdict(list)
    horizons = {}
    for p, batch in parts.items():
        for start in range(0, len(batch), 17):
            result = processor.process(p, batch[start : start + 17])
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


@pytest.mark.parametrize("limit", [1, 2])
def test_cache_trim_keeps_results(limit):
    parts = split(wire(3))
    store: dict[bytes, bytes] = {}
    trimmed = StreamProcessor(TOPIC, SETTINGS, store, cache_limit=limit)
    plain = StreamProcessor(TOPIC, SETTINGS, {})
    a, b = Collector(), Collector()
    for p, batch in parts.items():
        for start in range(0, len(batch), 25):
            result = trimmed.process(p, batch[start : start + 25])
            store.update(result.states)
            trimmed.trim(p)
            a.take(result)
            b.take(plain.process(p, batch[start : start + 25]))
    assert a.changes == b.changes and a.windows == b.windows and a.alerts == b.alerts


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
