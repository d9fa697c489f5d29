"""Whether the worker's memory stays flat over hours of event time with live-size batches (issue 13), in-process.

The scale points (bench/scale_bench.py) run minutes of event time in batches of 100,000 events; a live worker
instead takes what arrived within `--batch-within` (200 ms), so it advances every account it touches many times a
minute, for hours. Anything kept per account per batch until the idle floor (`account_idle_lateness`, two hours)
passes it grows for two hours there and nowhere else: the wake heap did (one entry per reschedule), until
2026-12-01. Here the scale bench's steady traffic (every user signs in at minute 0, then a heartbeat a minute) runs
for `HOURS` hours of event time in batches of `BATCH` events (a few seconds of this traffic: about what 200 ms
collects at the live rates of bench/latency_bench.py), in its own process, with the worker's collector thresholds;
at the end of every hour: RSS (`VmRSS`), the store's entries and bytes, the wake heap's entries, cached accounts.
The verdict: growth of RSS from the end of the first hour (reorder buffers and presences long full) to the end of
the last, past the two-hour idle window: with steady traffic, anything more is state that grows with batches (the
wake heap of before: 172 -> 209 MiB here, 250,000 -> 550,000 entries for 1,000 accounts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT, Row, log
from bench.procs import rss_mib
from bench.scale_bench import MINUTE, T0, apply_batch, traffic
from processor.core.model import Settings
from processor.worker.collector import tuned_collector
from processor.worker.partition import Raw
from processor.worker.runner import StreamProcessor
from processor.worker.state import DictStore

ACCOUNTS = 1_000
USERS = 5_000
QUICK_ACCOUNTS = 200
HOURS = 3
BATCH = 250
GROWTH_TARGET = 0.05  # RSS growth from the end of hour 1 to the end of the last, as a share of the first


def run(accounts: int, users: int, hours: int = HOURS, batch_size: int = BATCH) -> dict[str, Any]:
    """Feed `hours` of traffic in batches of `batch_size`; a sample at the end of each hour of event time."""
    with tuned_collector():
        store = DictStore()
        processor = StreamProcessor("events", Settings(), store)
        samples: list[dict[str, Any]] = []
        batch: list[Raw] = []
        began = time.perf_counter()
        events = batches = 0

        def flush() -> None:
            nonlocal batches
            if batch:
                apply_batch(processor, store, batch)
                batches += 1
                batch.clear()

        def sample(hour: int) -> None:
            flush()
            state = processor.partition(0)
            samples.append({
                "hour": hour, "events": events, "batches": batches, "rss_mib": rss_mib(os.getpid()),
                "store_entries": len(store.data), "store_bytes": sum(len(v) for v in store.data.values()),
                "wake_heap": state.driver.queued, "cached_accounts": len(state.slots),
            })  # fmt: skip

        for offset, (at, key, value) in enumerate(traffic(accounts, users, hours * 60)):
            if at >= T0 + (len(samples) + 1) * 60 * MINUTE:
                sample(len(samples) + 1)
            batch.append((offset, key, value, at))
            events += 1
            if len(batch) == batch_size:
                flush()
        sample(hours)
        return {
            "accounts": accounts, "users": users, "batch": batch_size, "events": events, "batches": batches,
            "seconds": time.perf_counter() - began, "samples": samples,
        }  # fmt: skip


def bench(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """One run in a child process; the row: RSS growth from the end of hour 1 to the end of the run."""
    accounts = QUICK_ACCOUNTS if quick else ACCOUNTS
    users = accounts * USERS // ACCOUNTS
    log(f"growth: {accounts:,} accounts, {users:,} users, {HOURS} h of event time in batches of {BATCH}")
    cmd = [sys.executable, "-m", "bench.growth_bench", "--accounts", str(accounts), "--users", str(users)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"growth run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    samples = result["samples"]
    before, after = samples[0], samples[-1]
    growth = (after["rss_mib"] - before["rss_mib"]) / before["rss_mib"]
    hourly = ", ".join(
        f"{s['hour']} h: RSS {s['rss_mib']:,.0f} MiB, heap {s['wake_heap']:,}, store {s['store_entries']:,} entries"
        for s in samples
    )
    row = Row(
        "growth", f"RSS growth from hour 1 to hour {HOURS} of event time, live-size batches", round(100 * growth, 1),
        "%",
        f"<= {100 * GROWTH_TARGET:.0f}%", growth <= GROWTH_TARGET,
        f"{accounts:,} accounts x {users // accounts} users, batches of {BATCH} events ({result['batches']:,}); "
        f"{hourly}; {result['events'] / result['seconds']:,.0f} events/s",
    )  # fmt: skip
    return [row], result


def main(argv: list[str] | None = None) -> int:
    """The run (what `bench` starts in a child process); prints its JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.growth_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=ACCOUNTS, help="accounts")
    parser.add_argument("--users", type=int, default=USERS, help="signed-in users, spread over the accounts")
    parser.add_argument("--hours", type=int, default=HOURS, help="hours of event time")
    parser.add_argument("--batch", type=int, default=BATCH, help="events per batch")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.accounts, args.users, args.hours, args.batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
