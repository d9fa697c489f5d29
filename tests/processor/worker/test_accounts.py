"""An account's state in parts (processor/worker/accounts.py): round trip, writes proportional to the changes,
compaction, and the version 1 entries written before."""

from __future__ import annotations

import json
from unittest.mock import patch

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.core.alerts import AlertTracker
from processor.core.fold import AccountFold
from processor.core.model import Settings
from processor.worker import accounts
from processor.worker.accounts import load_account
from processor.worker.runner import StreamProcessor
from processor.worker.state import (
    AccountEntry,
    DictStore,
    PartsEntry,
    account_key,
    decode_account,
    decode_part,
    encode_account,
    entry_partition,
    is_account_key,
    is_part_key,
    part_key,
)
from schemas.events import format_ms
from tests.contract.implementations import History
from tests.contract.strategies import histories
from tests.processor.worker.wires import T0, batch_end, event_times, raws

TOPIC = "t.events"
SETTINGS = Settings()


def canonical(fold: AccountFold) -> list:
    """The fold's whole state, independent of dict and heap order."""
    items = msgpack.unpackb(fold.to_bytes(), raw=False)
    for index in (9, 10, 11, 12, 13):  # devices, portal, api, users, buffer
        items[index] = sorted(items[index], key=repr)
    return items


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=histories(),
    windows=st.lists(st.integers(0, 60), min_size=1, max_size=6),
    max_deltas=st.sampled_from((accounts.MAX_DELTAS, 0, 1, 3)),
)
def test_the_stored_parts_rebuild_the_fold_after_every_batch(history: History, windows: list[int], max_deltas: int):
    """After each batch, a fold read back from what was written (base + deltas, old parts deleted) equals the fold in
    memory; also with a new base at every write (`MAX_DELTAS` 0) or every few writes. Batch `n` holds the records
    whose events lie less than `windows[n % len(windows)]` minutes after its first one (at most 16)."""
    store = DictStore()
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    records = raws(history.events)
    times = event_times(records)
    position = n = 0
    with patch.object(accounts, "MAX_DELTAS", max_deltas):
        while position < len(records):
            end = batch_end(times, position, windows[n % len(windows)], 16)
            result = processor.process(0, records[position:end])
            position, n = end, n + 1
            store.update(result.states)
            for key in result.states:
                if not is_account_key(key):
                    continue
                live = processor.partition(0).slot(key.decode())
                loaded = load_account(store.data[key], store.get)
                assert canonical(loaded.fold) == canonical(live.fold), f"account {key!r} after offset {position}"
                assert (loaded.applied, loaded.wake, loaded.parts) == (live.applied, live.wake, live.parts)
    parts = [key for key in store.data if is_part_key(key)]
    named = set()
    for key, value in store.data.items():
        if is_account_key(key):
            entry = decode_account(value)
            named |= {part_key(key.decode(), entry.generation, i) for i in range(entry.deltas + 1)}
    assert set(parts) == named, "every stored part is named by its account entry (replaced ones are deleted)"


def signed_in(users: int, at: int) -> list[dict]:
    out = []
    for u in range(users):
        for kind in ("desktop.signed_in", "work_session.started"):
            out.append(
                {"event_id": f"{kind}-{u}", "type": kind, "account_id": "big", "user_id": f"user-{u:03d}",
                 "device_id": "d", "occurred_at": format_ms(at)}
            )  # fmt: skip
    return out


def api(user: str, at: int, event_id: str) -> dict:
    return {"event_id": event_id, "type": "api.request", "account_id": "big", "user_id": user,
            "occurred_at": format_ms(at)}  # fmt: skip


def test_a_batch_writes_only_the_users_it_touched():
    """100 users signed in; a batch that changes one user's presence writes a delta naming only that user, far
    smaller than the account's base."""
    store = DictStore()
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    history = [*signed_in(100, T0), api("user-042", T0 + 11 * 60_000, "p1")]  # horizon T0 + 1 min: sign-ins applied
    first = processor.process(0, raws(history))
    store.update(first.states)
    base_key = part_key("big", 0, 0)
    assert base_key in first.states and len(decode_part(first.states[base_key])[0]) == 100  # 100 devices
    # user-042's heartbeat at T0 + 1 min, applied once its api.request at T0 + 12 min moves the horizon past it.
    beat = {"event_id": "hb", "type": "desktop.heartbeat", "account_id": "big", "user_id": "user-042",
            "device_id": "d", "occurred_at": format_ms(T0 + 60_000)}  # fmt: skip
    later = [beat, api("user-042", T0 + 12 * 60_000, "p2")]
    second = processor.process(
        0, [(len(history) + i, b"big", json.dumps(e).encode(), None) for i, e in enumerate(later)]
    )
    store.update(second.states)
    assert set(second.states) == {account_key("big"), part_key("big", 0, 1), b"__clock__:0"}, second.states.keys()
    delta = decode_part(second.states[part_key("big", 0, 1)])
    assert [row[:2] for row in delta[1]] == [("user-042", "d")], delta  # the heartbeat moved its device's last_seen
    named = {row[0] for rows in delta[1:] for row in rows} | {r[4] for r in delta[0]}
    assert named == {"user-042"}, delta
    assert len(second.states[part_key("big", 0, 1)]) * 20 < len(first.states[base_key])
    fresh = StreamProcessor(TOPIC, SETTINGS, store).partition(0).slot("big").fold
    assert canonical(fresh) == canonical(processor.partition(0).slot("big").fold)


def test_deltas_are_compacted_into_a_new_generation():
    """Once the deltas outweigh the base, the next write is a base of the next generation and the old parts get
    tombstones, written after the account entry that names the new base."""
    store = DictStore()
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    offset, generations = 0, set()
    for minute in range(200):
        beat = {"event_id": f"hb{minute}", "type": "api.request", "account_id": "a", "user_id": f"u{minute % 7}",
                "occurred_at": format_ms(T0 + minute * 60_000)}  # fmt: skip
        result = processor.process(0, [(offset, b"a", json.dumps(beat).encode(), None)])
        offset += 1
        keys = list(result.states)
        entry = decode_account(result.states[account_key("a")])
        generations.add(entry.generation)
        tombstones = [k for k, v in result.states.items() if v is None]
        if tombstones:
            assert keys.index(account_key("a")) < keys.index(tombstones[0])
            assert part_key("a", entry.generation - 1, 0) in tombstones
            assert keys.index(part_key("a", entry.generation, 0)) < keys.index(account_key("a"))
        store.update(result.states)
    assert len(generations) > 1
    assert sum(1 for key in store.data if is_part_key(key)) <= accounts.MAX_DELTAS + 1


def test_version_1_entries_are_still_read_and_rewritten_in_parts():
    """An account entry written before (the whole fold in one blob) is read; the next write is a base (generation 0)."""
    fold = AccountFold("a")
    event_at = T0
    store = DictStore()
    processor = StreamProcessor(TOPIC, SETTINGS, store)
    first = {"event_id": "e1", "type": "api.request", "account_id": "a", "user_id": "u", "occurred_at": format_ms(T0)}
    result = processor.process(0, [(0, b"a", json.dumps(first).encode(), None)])
    fold = processor.partition(0).slot("a").fold
    old = encode_account(AccountEntry(0, 0, event_at, AlertTracker().to_state(), fold.to_bytes()))
    store.update({k: v for k, v in result.states.items() if not is_account_key(k) and not is_part_key(k)})
    store.data[account_key("a")] = old
    assert entry_partition(account_key("a"), old) == 0
    restarted = StreamProcessor(TOPIC, SETTINGS, store)
    assert restarted.live_view("a").usage == 1
    second = {"event_id": "e2", "type": "api.request", "account_id": "a", "user_id": "v",
              "occurred_at": format_ms(T0 + 1000)}  # fmt: skip
    after = restarted.process(0, [(1, b"a", json.dumps(second).encode(), None)])
    entry = decode_account(after.states[account_key("a")])
    assert isinstance(entry, PartsEntry) and entry.generation == 0 and part_key("a", 0, 0) in after.states
    assert entry_partition(part_key("a", 0, 0), after.states[part_key("a", 0, 0)]) == 0
    store.update(after.states)
    assert StreamProcessor(TOPIC, SETTINGS, store).live_view("a").usage == 2
