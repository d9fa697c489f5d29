"""How the worker's own cost grows with accounts and with signed-in users (issue 13), in-process, no Kafka.

Traffic is synthetic and steady: every user signs in and starts a work session at minute 0, then sends a desktop
heartbeat once a minute (at its own second of the minute), in event-time order; user `i` belongs to account
`i % accounts`. The worker's partition driver (`StreamProcessor.process`, the worker's batch size) is fed the raw
records in batches; every output record is encoded as the worker does and the state entries are applied to a dict
store (what the changelog-backed store keeps). Each point runs in its own Python process, so that its peak RSS
(`VmHWM`: store, cached folds, everything) is its own.

Timed: the batches after the first `WARM_MINUTES` of event time: the steady state. The reorder buffer holds the
allowed lateness (10 minutes) of events only after that, and the sign-ins and session starts of minute 0 are
applied (usage changes, intervals, alerts for every user at once) in the batches of minutes 10 and 11; a point with
many users and few timed minutes would otherwise time that burst with its steady state (before 2026-12-01 16:00 the
20,000-account point did, with 11 warm minutes). The timed part is at least `TIMED_MINUTES` of event time: an
account's state is a base plus deltas, and its base is rewritten whole about every 11 batches here
(processor/worker/accounts.py), in the same batch for every account of this synchronised traffic; two batches (what
100,000 users got before 2026-12-01 18:45) could miss that batch or time a slow one alone (the 20,000-account point
gave 54k events/s timed over 2 minutes, 43k over 18). The process uses the worker's collector thresholds
(processor/worker/collector.py). Per timed event: outputs, state bytes written (keys and
values, what the worker sends to its changelog), and, for comparison, the bytes the whole-state format (one blob per
touched account, `AccountFold.to_bytes()`, as written before the state was split into parts) would have written,
computed outside the timed part. Event counts are scaled down to keep the bench to a few minutes: at least
`MIN_EVENTS` per point, more minutes for small populations.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.common import ROOT, Row, log
from bench.partitioned import equal_row
from processor.core.model import Settings
from processor.topics import topic_names
from processor.worker.collector import tuned_collector
from processor.worker.config import WorkerConfig
from processor.worker.partition import BatchResult, Raw
from processor.worker.runner import StreamProcessor
from processor.worker.sender import output_records
from processor.worker.state import DictStore, is_account_key
from schemas.events import format_ms

T0 = 1_793_606_400_000  # 2026-11-02T08:00:00Z
MINUTE = 60_000
WARM_MINUTES = 12  # the allowed lateness, then the two minutes in which the sign-ins of minute 0 are applied
MIN_EVENTS = 200_000
TIMED_MINUTES = 24  # at least two base rewrites of every account (one every 10-11 batches of this traffic)
BATCH = WorkerConfig.batch_size
NAMES = topic_names("bench.")

ACCOUNT_POINTS = (200, 2_000, 20_000)  # x 5 users each
ACCOUNT_USERS = 5
USER_POINTS = (10_000, 100_000)  # over 1,000 accounts
USER_ACCOUNTS = 1_000
TARGETS = {"a200": 100_000, "a20000": 50_000, "u100000": 50_000}
RSS_TARGET_MIB = 1024
FLAT_TARGET = 1.5


def traffic(accounts: int, users: int, minutes: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(at_ms, key, value) in event-time order: sign-in and session start at minute 0, then a heartbeat a minute."""
    offsets = sorted(((i * 7919) % 59_000, i) for i in range(users))
    ids = [(f"acct-{i % accounts}", f"user-{i}") for i in range(users)]
    for minute in range(minutes):
        base = T0 + minute * MINUTE
        for offset, i in offsets:
            account, user = ids[i]
            at = base + offset
            stamp = format_ms(at)
            kinds = ("desktop.signed_in", "work_session.started") if minute == 0 else ("desktop.heartbeat",)
            for n, kind in enumerate(kinds):
                body = (
                    f'{{"event_id":"{user}-{minute}-{n}","type":"{kind}","account_id":"{account}",'
                    f'"occurred_at":"{stamp}","user_id":"{user}","device_id":"d"}}'
                )
                yield at, account.encode(), body.encode()


def apply_batch(processor: StreamProcessor, store: DictStore, batch: list[Raw]) -> tuple[BatchResult, int]:
    """What the worker does with one batch of partition 0, in-process: process it, encode every output record, write
    its state entries to the store and trim the account cache; the result and how many output records it gave."""
    result = processor.process(0, batch)
    outputs = len(output_records(NAMES, result))
    store.update(result.states)
    processor.trim(0, keep=(k.decode() for k in result.states if is_account_key(k)))
    return result, outputs


def run_point(accounts: int, users: int) -> dict[str, Any]:
    """One point, in this process: rates and bytes per timed event, peak RSS."""
    with tuned_collector():
        return _run_point(accounts, users)


def _run_point(accounts: int, users: int) -> dict[str, Any]:
    minutes = point_minutes(users)
    store = DictStore()
    processor = StreamProcessor("events", Settings(), store)
    warm_until = T0 + WARM_MINUTES * MINUTE
    seconds = cpu = 0.0
    events = outputs = state_bytes = whole_bytes = entries = 0
    batch: list[Raw] = []
    offset = 0
    stream = traffic(accounts, users, minutes)
    done = False
    while not done:
        batch.clear()
        for at, key, value in stream:
            batch.append((offset, key, value, at))
            offset += 1
            if len(batch) == BATCH:
                break
        else:
            done = True
        if not batch:
            break
        timed = batch[0][3] >= warm_until
        began, began_cpu = time.perf_counter(), time.process_time()
        result, outputs_n = apply_batch(processor, store, batch)
        spent, spent_cpu = time.perf_counter() - began, time.process_time() - began_cpu
        if timed:
            seconds += spent
            cpu += spent_cpu
            events += len(batch)
            outputs += outputs_n
            entries += len(result.states)
            state_bytes += sum(len(k) + len(v) for k, v in result.states.items() if v is not None)
            part = processor.partition(0)
            whole_bytes += sum(
                len(k) + len(part.slot(k.decode()).fold.to_bytes()) + 40  # + offsets and alert state, about
                for k in result.states
                if is_account_key(k)
            )
    rss = 0.0
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    return {
        "accounts": accounts,
        "users": users,
        "minutes": minutes,
        "events": events,
        "seconds": seconds,
        "rate": events / seconds if seconds else 0.0,
        "cpu_rate": events / cpu if cpu else 0.0,
        "outputs_per_event": outputs / max(events, 1),
        "state_bytes_per_event": state_bytes / max(events, 1),
        "whole_state_bytes_per_event": whole_bytes / max(events, 1),
        "entries_per_event": entries / max(events, 1),
        "store_entries": len(store.data),
        "store_bytes": sum(len(v) for v in store.data.values()),
        "peak_rss_mib": rss,
    }


def point_minutes(users: int) -> int:
    """Minutes of traffic of a point: the warm-up plus enough to time at least MIN_EVENTS and TIMED_MINUTES."""
    return WARM_MINUTES + max(TIMED_MINUTES, -(-MIN_EVENTS // users))


def check_point(accounts: int, users: int) -> dict[str, Any]:
    """The point's outputs against the batch engine's (bench/scale_check.py), on the same traffic."""
    from bench.scale_check import check

    return check(list(traffic(accounts, users, point_minutes(users))), BATCH)


def _child(accounts: int, users: int, *extra: str) -> dict[str, Any]:
    """`run_point` (or with `--check`, `check_point`) in a fresh interpreter (its own peak RSS)."""
    cmd = [sys.executable, "-m", "bench.scale_bench", "--accounts", str(accounts), "--users", str(users), *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scale point {accounts}/{users} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """The accounts sweep (200 / 2,000 / 20,000 accounts x 5 users) and the users sweep (10k / 100k users over 1,000
    accounts): one row each, with targets where issue 13 sets them, and the cost growth per 10x."""
    account_points = ACCOUNT_POINTS[:2] if quick else ACCOUNT_POINTS
    user_points = USER_POINTS[:1] if quick else USER_POINTS
    results: dict[str, dict[str, Any]] = {}
    checks: dict[str, dict[str, Any]] = {}
    shapes = [(f"a{n}", n, n * ACCOUNT_USERS) for n in account_points]
    shapes += [(f"u{n}", USER_ACCOUNTS, n) for n in user_points]
    for name, accounts, users in shapes:
        log(f"scale: {accounts:,} accounts, {users:,} signed-in users")
        results[name] = _child(accounts, users)
        checks[name] = _child(accounts, users, "--check")
        log(f"scale: outputs against the batch engine: {checks[name]}")
    rows = []
    for name, point in results.items():
        target = TARGETS.get(name)
        met: bool | None = None if target is None else point["rate"] >= target
        target_text = "" if target is None else f">= {target:,}"
        if name == "u100000":
            met = bool(met) and point["peak_rss_mib"] <= RSS_TARGET_MIB
            target_text += f", RSS <= {RSS_TARGET_MIB} MiB"
        label = (
            f"{point['accounts']:,} accounts x {point['users'] // point['accounts']} users"
            if name.startswith("a")
            else f"{point['users']:,} signed-in users, {point['accounts']:,} accounts"
        )
        rows.append(
            Row("scale", f"worker in-process: {label}", point["rate"], "events/s", target_text, met,
                f"{point['cpu_rate']:,.0f} per CPU-s; {point['outputs_per_event']:.3f} outputs/event; "
                f"state {point['state_bytes_per_event']:,.0f} B/event "
                f"(whole-state format {point['whole_state_bytes_per_event']:,.0f}); {point['entries_per_event']:.2f} "
                f"entries/event; peak RSS {point['peak_rss_mib']:,.0f} MiB; {point['events']:,} timed events "
                f"after {WARM_MINUTES} min")
        )  # fmt: skip
        rows.append(equal_row("scale", checks[name], f"worker in-process: {label}"))
    if "a200" in results and "a20000" in results:
        ratio = results["a200"]["rate"] / results["a20000"]["rate"]
        cpu_ratio = results["a200"]["cpu_rate"] / results["a20000"]["cpu_rate"]
        rows.append(
            Row("scale", "200 accounts / 20,000 accounts (events/s)", ratio, "x", f"<= {FLAT_TARGET}x",
                ratio <= FLAT_TARGET, f"per CPU-s {cpu_ratio:.2f}x; same users per account, same batch size")
        )  # fmt: skip
    details = {
        "points": results, "checks": checks, "warm_minutes": WARM_MINUTES, "min_events": MIN_EVENTS,
        "timed_minutes": TIMED_MINUTES,
    }  # fmt: skip
    return rows, {**details, "batch": BATCH}


def main(argv: list[str] | None = None) -> int:
    """One point (what `bench` runs in a child process); prints its JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, required=True, help="accounts")
    parser.add_argument("--users", type=int, required=True, help="signed-in users, spread over the accounts")
    parser.add_argument("--check", action="store_true", help="compare the outputs with the batch engine's instead")
    args = parser.parse_args(argv)
    point = check_point if args.check else run_point
    print(json.dumps(point(args.accounts, args.users)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
