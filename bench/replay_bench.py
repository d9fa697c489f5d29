"""Replay rebuild (issue 13): `ccmeter replay run --from beginning --into VERSION` over a pre-loaded 4-partition
events topic, as a subprocess with its real settings, with one worker process and with `--workers 2` (one consumer
group: two processes split the partitions) over the same topic, each timed two ways; each rebuilt version's outputs
checked against the batch engine's.

* the rebuild workers' processing rate, read from their own counters (GET /health on the ports given with
  `--web-port P`: P, P+1, ..., polled every 0.1 s, summed over the workers) from the moment every worker has
  processed its first batch to the last record, as worker_bench times the live worker: what a long rebuild runs at;
* the command's own figure ("caught up ... in N s", from starting the workers to the applied offsets reaching the end
  offsets, worker start-up and the changelog-clock polling included) and its wall time.

The target (>= 100,000 events/s) is on the 2-worker processing row; a ratio row compares 2 workers with 1. On a
2-core machine shared with Kafka and the driver, two workers can at best double the rate.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import OUT, ROOT, Row, log
from bench.data import SimDataset
from bench.partitioned import equal_row, preload_partitioned
from bench.procs import Proc, clean_env, cpu_seconds, rss_mib
from bench.worker_bench import Loaded, check_outputs
from processor.brokers.common import ephemeral_ports, free_port, port_in_use
from processor.topics import topic_names
from replay.common import check_version

PARTITIONS = 4
REBUILD_TARGET = 100_000  # events/s, issue 13: met with --workers 2 or not at all on this machine
VERSIONS = {1: "v2", 2: "v3"}  # workers -> the version they rebuild into (same events topic, own outputs)


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (empty when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def consecutive_free_ports(count: int) -> int:
    """A port P such that P, P+1, ..., P+count-1 are free now (`replay run --web-port P --workers count`), all below
    the ephemeral range, where no outgoing connection takes one before its worker binds it."""
    while True:
        first = free_port()
        low = ephemeral_ports()[0]
        fits = first + count <= (low if first < low else 65536)  # the OS picked `first` if there is no room below
        if fits and not any(port_in_use("127.0.0.1", first + i) for i in range(1, count)):
            return first


def rebuild(loaded: Loaded, workdir: Path, workers: int = 1) -> dict[str, Any]:
    """Run `ccmeter replay run --workers N` on the pre-loaded topic; its timings, the workers' samples (summed) and
    counters."""
    version = VERSIONS[workers]
    app_id = f"bench-rebuild-{workers}w-{uuid.uuid4().hex[:6]}"
    port = consecutive_free_ports(workers)
    workdir.mkdir(parents=True, exist_ok=True)
    out, err = workdir / f"{app_id}.out", workdir / f"{app_id}.err"
    args = [
        sys.executable, "-m", "processor.cli", "replay", "run", "--broker", loaded.bootstrap,
        "--prefix", loaded.prefix, "--from", "beginning", "--into", version, "--app-id", app_id,
        "--state-dir", str(workdir / f"state-{app_id}"), "--web-port", str(port), "--workers", str(workers),
        "--give-up-after", "15m", "--quiet",
    ]  # fmt: skip
    began = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(args, stdout=stdout, stderr=stderr, cwd=ROOT, env=clean_env())
    cli = Proc(popen, err, port)
    ports = [Proc(popen, err, port + i) for i in range(workers)]  # /health of each rebuild worker needs no token
    samples: list[tuple[float, int, float]] = []
    worker_pids: list[int] = []
    rss = 0.0
    healths: list[dict[str, Any]] = [{} for _ in ports]
    owned: list[list[int]] = []  # who owned what at the last sample that made progress (not during the stop)
    deadline = time.monotonic() + 900
    while cli.alive() and time.monotonic() < deadline:
        if len(worker_pids) < workers:
            worker_pids = children(popen.pid)
        bodies = [proc.health() for proc in ports]
        now = time.perf_counter()
        for index, body in enumerate(bodies):
            if body:
                healths[index] = body
        done = sum(_applied(h) for h in healths)
        if _all_started(healths) and (not samples or done > samples[-1][1]):
            samples.append((now, done, sum(cpu_seconds(pid) for pid in worker_pids)))
            owned = [sorted(h.get("partitions") or []) for h in healths]
            rss = max(rss, sum(rss_mib(pid) for pid in worker_pids))
        time.sleep(0.1)
    cli.stop()
    wall = time.perf_counter() - began
    text = out.read_text()
    if popen.returncode != 0:
        raise RuntimeError(f"replay run failed ({popen.returncode}):\n{text[-2000:]}\n{err.read_text()[-3000:]}")
    caught = re.search(r"caught up with the end offsets captured at the start in ([0-9.]+)s", text)
    if not caught or not samples:
        raise RuntimeError(f"replay run: no timing in its output or no progress seen:\n{text[-2000:]}")
    (t0, r0, c0), (t1, r1, c1) = samples[0], samples[-1]
    timed = len(samples) >= 2  # a small topic can be done in the first batch: no processing rate then
    return {
        "workers": workers, "version": version, "app_id": app_id, "wall_seconds": wall,
        "caught_up_seconds": float(caught.group(1)),
        "rate": (r1 - r0) / (t1 - t0) if timed else None,
        "cpu_rate": (r1 - r0) / max(c1 - c0, 1e-9) if timed else None, "seconds": t1 - t0,
        "records": r1 - r0, "first_sample_records": r0, "applied": r1, "rss_mib": rss,
        "partitions": owned,
        "samples": samples[:: max(1, len(samples) // 50)], "stats": [h.get("stats", {}) for h in healths],
        "output": text.strip().splitlines()[-2:],
    }  # fmt: skip


def _all_started(healths: list[dict[str, Any]]) -> bool:
    """True once every partition is owned and every worker that owns some has finished its first batch: the clock
    starts there, so that no worker's first batch (begun before the clock) is counted in the processing rate."""
    owners = [h for h in healths if h and h.get("partitions")]
    owned = sum(len(h["partitions"]) for h in owners)
    return owned >= PARTITIONS and all(_applied(h) > 0 for h in owners)


def _applied(health: dict[str, Any]) -> int:
    """Records a worker has processed, re-deliveries after a rebalance left out."""
    if not health:
        return 0
    stats = health["stats"]
    return int(stats["records"]) - int(stats.get("redelivered", 0))


def measured(loaded: Loaded, result: dict[str, Any]) -> tuple[float, float, str]:
    """(processing rate, whole-command rate, how the processing rate was taken) of a rebuild."""
    command_rate = loaded.records / result["caught_up_seconds"]
    rate: float = result["rate"] if result["rate"] is not None else command_rate
    how = (
        f"{result['cpu_rate']:,.0f} events per CPU-s; from every rebuild worker's first batch to the last record "
        f"({result['records']:,} events in {result['seconds']:.1f} s)"
        if result["rate"] is not None
        else f"the whole command's rate: the workers applied all {result['applied']:,} records in their first batch"
    )
    caught, wall = result["caught_up_seconds"], result["wall_seconds"]
    log(f"replay run --workers {result['workers']}: {rate:,.0f} events/s while processing; command caught up in "
        f"{caught:.1f} s ({command_rate:,.0f} events/s), wall {wall:.1f} s")  # fmt: skip
    return rate, command_rate, how


def checked(bootstrap: str, dataset: SimDataset, loaded: Loaded, version: str) -> dict[str, Any]:
    """The rebuilt version's outputs against the batch engine's."""
    new_prefix = check_version(version, loaded.prefix)
    check = check_outputs(Loaded(bootstrap, new_prefix, topic_names(new_prefix), dataset, loaded.records, 0.0))
    log(f"rebuild {version} output check: {check}")
    return check


def bench(bootstrap: str, dataset: SimDataset, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """The rebuild rows (1 worker, 2 workers, their ratio) and details."""
    loaded = preload_partitioned(bootstrap, dataset, PARTITIONS, "bench-replay")
    workdir = OUT / "work" / "replay"
    one = rebuild(loaded, workdir, 1)
    rate1, command1, how1 = measured(loaded, one)
    check1 = checked(bootstrap, dataset, loaded, one["version"])
    two = rebuild(loaded, workdir, 2)
    rate2, command2, how2 = measured(loaded, two)
    check2 = checked(bootstrap, dataset, loaded, two["version"])
    size = f"{loaded.records:,} records, {dataset.accounts} accounts, {PARTITIONS} partitions"
    owned = "; ".join(f"worker {i}: partitions {p}" for i, p in enumerate(two["partitions"], start=1))
    ratio, command_ratio = rate2 / rate1, command2 / command1
    rows = [
        Row("replay", "replay rebuild (`replay run --from beginning`), processing rate", rate1, "events/s",
            note=f"{how1}; RSS {one['rss_mib']:.0f} MiB; {size}; 1 worker (the target is on the 2-worker row)"),
        Row("replay", "replay rebuild, whole command", command1, "events/s",
            note=f"caught up in {one['caught_up_seconds']:.1f} s (worker start-up included), command wall "
            f"{one['wall_seconds']:.1f} s (with the worker's stop and output counts)"),
        equal_row("replay", check1, f"rebuilt version {one['version']}"),
        Row("replay", "replay rebuild, 2 workers (`replay run --workers 2`), processing rate", rate2, "events/s",
            f">= {REBUILD_TARGET:,}", rate2 >= REBUILD_TARGET,
            f"{how2}, both workers' counters summed; {owned}; RSS {two['rss_mib']:.0f} MiB of both; {size}"),
        Row("replay", "replay rebuild, 2 workers, whole command", command2, "events/s",
            note=f"caught up in {two['caught_up_seconds']:.1f} s (start-up of both workers and their first "
            f"rebalance included), command wall {two['wall_seconds']:.1f} s"),
        equal_row("replay", check2, f"rebuilt version {two['version']} (2 workers)"),
        Row("replay", "replay rebuild, 2 workers / 1 worker (processing rate)", ratio, "x",
            note=f"whole command {command_ratio:.2f}x; the same events topic; a 2-core machine (Kafka and the driver "
            "included) bounds it at 2x"),
    ]  # fmt: skip
    details = {"dataset": dataset.name, "records": loaded.records, "produce_seconds": loaded.produce_seconds,
               "one_worker": {**one, "command_rate": command1, "check": check1},
               "two_workers": {**two, "command_rate": command2, "check": check2},
               "ratio": ratio, "command_ratio": command_ratio}  # fmt: skip
    return rows, details
