"""`python -m bench.run [--quick] [--only NAME ...]` (`make bench`): every benchmark, one table, bench/out/results.json.

Benchmarks (names for --only): worker (throughput on real Kafka: naive agent, worker, raw consumer, Faust floors;
output check), core (the worker's own work in-process), scale (in-process cost growth
with accounts and signed-in users, issue 13), growth (in-process memory over hours of event time with live-size
batches), batch (batch engine and report
latency, snapshots), memory (state per signed-in user), latency (publish -> live usage), scaleout (two workers on four
partitions against one on one), replay (`replay run` rebuild rate), verify (`replay verify` peak RSS and rate; issue
13). Starts its own Kafka (KafkaServer, free port) when worker, latency, scaleout or replay runs. The machine is
shared: each row records the 1-minute load average, and docs/performance.md reads the numbers as ratios within one
run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from bench.common import OUT, Row, load_average, log, machine, table

NAMES = ("worker", "core", "scale", "growth", "batch", "memory", "latency", "scaleout", "replay", "verify")
KAFKA = ("worker", "latency", "scaleout", "replay")


def sizes(quick: bool) -> dict[str, Any]:
    """Data sizes of a full or a quick run."""
    if quick:
        return {"worker": (30, 10, 1), "billing": (100, 10, 1), "month": (100, 30), "memory_agents": 300}
    return {"worker": (200, 10, 1), "billing": (1000, 5, 1), "month": (1000, 30), "memory_agents": 1000}


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; print the table; write results.json."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, fewer repeats (about 2 minutes)")
    parser.add_argument("--only", action="append", choices=NAMES, metavar="NAME", help=f"one of {', '.join(NAMES)}")
    args = parser.parse_args(argv)
    selected = args.only or list(NAMES)
    size = sizes(args.quick)
    began = time.perf_counter()
    info = machine()
    log(f"machine: {info['nproc']} x {info['cpu']}, {info['memory_gib']} GiB, Python {info['python']}, "
        f"Kafka {info['kafka']}; load average {info['load_average_at_start']}")  # fmt: skip
    from bench.data import sim_dataset

    shutil.rmtree(OUT / "work", ignore_errors=True)  # scratch of the previous run (logs, sink dirs, snapshots)

    rows: list[Row] = []
    details: dict[str, Any] = {}
    failed: list[str] = []
    worker_data = sim_dataset(*size["worker"])
    with ExitStack() as stack:
        bootstrap = ""
        if any(name in KAFKA for name in selected):
            from processor.brokers.kafka_server import KafkaServer

            # Kafka's own default for the first rebalance of a new group (3 s; the test broker uses 0): the group of
            # `replay run --workers 2` forms with both members, as it would on a production broker, instead of the
            # first one up taking every partition and handing half of them over in a rebalance mid-run.
            kafka = stack.enter_context(KafkaServer(extra_properties={"group.initial.rebalance.delay.ms": "3000"}))
            bootstrap = kafka.bootstrap
            log(f"Kafka {info['kafka']} on {bootstrap} (started in {kafka.startup_seconds:.1f} s)")
        for name in selected:
            started = time.perf_counter()
            try:
                part, extra = run_bench(name, bootstrap, worker_data, size, args.quick)
            except Exception as exc:  # noqa: BLE001 - one failing benchmark does not lose the others' rows
                failed.append(name)
                log(f"{name} FAILED: {type(exc).__name__}: {exc}")
                first_line = (str(exc).splitlines() or [""])[0]
                part = [Row(name, "benchmark failed", type(exc).__name__, met=False, note=first_line[:200])]
                extra = {"error": traceback.format_exc()}
            extra["seconds"] = time.perf_counter() - started
            rows += part
            details[name] = extra
            log(f"{name} done in {extra['seconds']:.0f} s")
    elapsed = time.perf_counter() - began
    OUT.mkdir(parents=True, exist_ok=True)
    results = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "selected": selected,
        "seconds": elapsed,
        "machine": info,
        "load_average_at_end": load_average(),
        "rows": [row.as_dict() for row in rows],
        "details": details,
    }
    path = OUT / "results.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(table(rows))
    print(f"\n{len(rows)} rows in {elapsed:.0f} s; load average {load_average():.2f}; details in {path}")
    if failed:
        print(f"failed: {', '.join(failed)} (tracebacks under `details` in {path})", file=sys.stderr)
        return 1
    return 0


def run_bench(name: str, bootstrap: str, worker_data: Any, size: dict[str, Any], quick: bool) -> tuple[list[Row], Any]:
    """One benchmark's rows and details."""
    from bench.data import month_dataset, sim_dataset

    part: list[Row]
    extra: Any
    if name == "worker":
        from bench import worker_bench

        part, extra = worker_bench.bench(bootstrap, worker_data, quick)
    elif name == "core":
        from bench import core_bench

        part, extra = core_bench.bench(worker_data)
    elif name == "scale":
        from bench import scale_bench

        part, extra = scale_bench.bench(quick)
    elif name == "growth":
        from bench import growth_bench

        part, extra = growth_bench.bench(quick)
    elif name == "batch":
        from bench import batch_bench

        month = month_dataset(*size["month"])
        billing = sim_dataset(*size["billing"], jsonl=False)
        part, extra = batch_bench.bench(month, billing.parquet, quick)
    elif name == "memory":
        from bench import memory_bench

        part, extra = memory_bench.bench(size["memory_agents"])
    elif name == "scaleout":
        from bench import scaleout_bench

        part, extra = scaleout_bench.bench(bootstrap, worker_data, quick)
    elif name == "replay":
        from bench import replay_bench

        part, extra = replay_bench.bench(bootstrap, worker_data, quick)
    elif name == "verify":
        from bench import verify_bench

        part, extra = verify_bench.bench(quick)
    else:
        from bench import latency_bench

        part, extra = latency_bench.bench(bootstrap, worker_data, quick)
    return part, extra


if __name__ == "__main__":
    sys.exit(main())
