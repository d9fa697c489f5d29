"""Memory of the worker's state per signed-in user, mid-shift.

One simulated account with many agents is folded (arrival order, batches of 20,000, as the worker does) up to the
first instant of its peak usage of the day; the state is then measured:

* `AccountFold.to_bytes()` (what the worker stores in its table, per account) and the whole table entry
  (`encode_account`, with the alert state);
* the Python heap of the state, with tracemalloc: the fold rebuilt by `AccountFold.from_bytes` (everything
  allocated fresh), and, as a cross-check, the live fold as the feed left it (its strings partly shared with
  decoded events made before tracing started, so it reads lower);

each divided by the signed-in users: users with at least one active presence at the fold's applied instant
(`watermark - allowed_lateness`), plus the events buffered for the lateness window, which are part of the state.
"""

from __future__ import annotations

import gc
import tracemalloc
from datetime import date
from typing import Any

from bench.common import Row, log
from processor.core.alerts import AlertTracker
from processor.core.fold import AccountFold
from processor.core.model import Settings
from processor.core.partition import PartitionDriver, fold_batch, fold_history
from processor.simulation import SimConfig, iter_lines
from processor.worker.config import WorkerConfig
from processor.worker.state import AccountEntry, encode_account
from schemas.events import Rejection, decode

BATCH = WorkerConfig.batch_size  # the worker's default


def peak_instant(events: list[Any], settings: Settings) -> int:
    """First instant of the account's highest usage (from the pure fold of the whole history)."""
    out, _, _ = fold_history(events, settings)
    best = max(out.usage_changes, key=lambda change: (change.usage, -change.at_ms))
    return best.at_ms


def feed_until(events: list[Any], until_ms: int, settings: Settings) -> tuple[AccountFold, int]:
    """Fold the events in arrival order, in batches of 20,000, stopping before the first event at or after
    `until_ms`; returns the fold and how many events were fed."""
    states: dict[str, AccountFold] = {}
    driver = PartitionDriver(settings)
    stop = next((i for i, event in enumerate(events) if event.at_ms >= until_ms), len(events))
    latest = 0
    for begin in range(0, stop, BATCH):
        chunk = events[begin : min(stop, begin + BATCH)]
        stamps = []
        for event in chunk:
            latest = max(latest, event.at_ms)
            stamps.append(latest)
        fold_batch(states, driver, list(enumerate(chunk, start=begin)), stamps)
    (fold,) = states.values()
    return fold, stop


def bench(agents: int) -> tuple[list[Row], dict[str, Any]]:
    """Part 4: rows and details."""
    settings = Settings()
    config = SimConfig(accounts=1, agents=agents, days=1, start=date(2026, 11, 2))  # a Monday
    log(f"memory: simulating 1 account x {agents} agents x 1 day")
    events = [e for line in iter_lines(config) if not isinstance(e := decode(line), Rejection)]
    peak_ms = peak_instant(events, settings)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    live, fed = feed_until(events, peak_ms, settings)
    gc.collect()
    live_bytes = tracemalloc.get_traced_memory()[0] - base
    blob = live.to_bytes()
    entry = encode_account(AccountEntry(0, fed, 0, AlertTracker().to_state(), blob))
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    rebuilt = AccountFold.from_bytes(blob)
    gc.collect()
    heap_bytes = tracemalloc.get_traced_memory()[0] - base
    bare = AccountFold.from_bytes(blob).without_buffer()  # the same state without the lateness buffer
    bare_blob = bare.to_bytes()
    del bare
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    bare = AccountFold.from_bytes(bare_blob)
    gc.collect()
    bare_heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    held = rebuilt.holdings()
    assert bare.holdings()["users"] == held["users"]  # (keeps `bare` alive while it is measured)
    users, devices, buffered = held["users"], held["devices"], held["buffered"]
    details = {
        "agents": agents, "events": len(events), "fed": fed, "peak_at_ms": peak_ms, "signed_in_users": users,
        "signed_in_devices": devices, "portal": held["portal"], "api": held["api"],
        "buffered_events": buffered, "fold_bytes": len(blob), "entry_bytes": len(entry), "heap_bytes": heap_bytes,
        "live_heap_bytes": live_bytes, "usage": rebuilt.usage, "fold_bytes_without_buffer": len(bare_blob),
        "heap_bytes_without_buffer": bare_heap,
    }  # fmt: skip
    log(f"memory: {details}")
    per = max(users, 1)
    note = f"{users:,} signed-in users, {devices:,} devices, {buffered:,} buffered events (10 min lateness)"
    rows = [
        Row("memory", "state blob (AccountFold.to_bytes) per signed-in user", len(blob) / per, "bytes",
            note=f"{note}; without the buffer {len(bare_blob) / per:,.0f} B/user"),
        Row("memory", "Python heap of the state per signed-in user", heap_bytes / per, "bytes",
            note=f"tracemalloc of from_bytes; without the buffer {bare_heap / per:,.0f} B/user; live fold "
            f"{live_bytes / per:,.0f} B/user; table entry {len(entry) / per:,.0f} B/user"),
    ]  # fmt: skip
    return rows, details
