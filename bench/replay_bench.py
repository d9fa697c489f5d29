"""Replay rebuild (issue 13): `ccmeter replay run --from beginning --into v2` over a pre-loaded 4-partition events
topic, as a subprocess with its real settings, timed two ways; the rebuilt version's outputs checked against the
batch engine's.

* the rebuild worker's processing rate, read from its own counter (GET /health on the port given with `--web-port`,
  polled every 0.1 s) from its first processed batch to the last record, as worker_bench times the live worker:
  what a long rebuild runs at;
* the command's own figure ("caught up ... in N s", from starting the worker to the applied offsets reaching the end
  offsets, worker start-up and the changelog-clock polling included) and its wall time.
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
from processor.brokers.common import free_port
from processor.topics import topic_names
from replay.common import check_version

PARTITIONS = 4
REBUILD_TARGET = 100_000  # events/s, issue 13
VERSION = "v2"


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (empty when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def rebuild(loaded: Loaded, workdir: Path) -> dict[str, Any]:
    """Run `ccmeter replay run` on the pre-loaded topic; its timings, the worker's samples and counters."""
    app_id = f"bench-rebuild-{uuid.uuid4().hex[:6]}"
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    out, err = workdir / f"{app_id}.out", workdir / f"{app_id}.err"
    args = [
        sys.executable, "-m", "processor.cli", "replay", "run", "--broker", loaded.bootstrap,
        "--prefix", loaded.prefix, "--from", "beginning", "--into", VERSION, "--app-id", app_id,
        "--state-dir", str(workdir / f"state-{app_id}"), "--web-port", str(port), "--timeout", "15m", "--quiet",
    ]  # fmt: skip
    began = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(args, stdout=stdout, stderr=stderr, cwd=ROOT, env=clean_env())
    cli = Proc(popen, err, port)  # /health of the rebuild worker needs no token
    samples: list[tuple[float, int, float]] = []
    worker_pid = 0
    rss = 0.0
    health: dict[str, Any] = {}
    deadline = time.monotonic() + 900
    while cli.alive() and time.monotonic() < deadline:
        worker_pid = worker_pid or next(iter(children(popen.pid)), 0)
        body = cli.health()
        now = time.perf_counter()
        if body:
            health = body
            done = int(body["stats"]["records"]) - int(body["stats"].get("redelivered", 0))
            if done and (not samples or done > samples[-1][1]):
                samples.append((now, done, cpu_seconds(worker_pid) if worker_pid else 0.0))
                rss = max(rss, rss_mib(worker_pid) if worker_pid else 0.0)
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
        "app_id": app_id, "wall_seconds": wall, "caught_up_seconds": float(caught.group(1)),
        "rate": (r1 - r0) / (t1 - t0) if timed else None,
        "cpu_rate": (r1 - r0) / max(c1 - c0, 1e-9) if timed else None, "seconds": t1 - t0,
        "records": r1 - r0, "first_sample_records": r0, "applied": r1, "rss_mib": rss,
        "samples": samples[:: max(1, len(samples) // 50)], "stats": health.get("stats", {}),
        "output": text.strip().splitlines()[-2:],
    }  # fmt: skip


def bench(bootstrap: str, dataset: SimDataset, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """The rebuild rows and details."""
    loaded = preload_partitioned(bootstrap, dataset, PARTITIONS, "bench-replay")
    result = rebuild(loaded, OUT / "work" / "replay")
    command_rate = loaded.records / result["caught_up_seconds"]
    caught = result["caught_up_seconds"]
    rate: float = result["rate"] if result["rate"] is not None else command_rate
    how = (
        f"{result['cpu_rate']:,.0f} events per CPU-s; the rebuild worker's first batch to its last record "
        f"({result['records']:,} events in {result['seconds']:.1f} s)"
        if result["rate"] is not None
        else f"the whole command's rate: the worker applied all {result['applied']:,} records in its first batch"
    )
    log(f"replay run: {rate:,.0f} events/s while processing; command caught up in {caught:.1f} s "
        f"({command_rate:,.0f} events/s), wall {result['wall_seconds']:.1f} s")  # fmt: skip
    new_prefix = check_version(VERSION, loaded.prefix)
    rebuilt = Loaded(bootstrap, new_prefix, topic_names(new_prefix), dataset, loaded.records, 0.0)
    check = check_outputs(rebuilt)
    log(f"rebuild output check: {check}")
    size = f"{loaded.records:,} records, {dataset.accounts} accounts, {PARTITIONS} partitions"
    rows = [
        Row("replay", "replay rebuild (`replay run --from beginning`), processing rate", rate, "events/s",
            f">= {REBUILD_TARGET:,}", rate >= REBUILD_TARGET, f"{how}; RSS {result['rss_mib']:.0f} MiB; {size}"),
        Row("replay", "replay rebuild, whole command", command_rate, "events/s",
            note=f"caught up in {result['caught_up_seconds']:.1f} s (worker start-up included), command wall "
            f"{result['wall_seconds']:.1f} s (with the worker's stop and output counts)"),
        equal_row("replay", check, f"rebuilt version {VERSION}"),
    ]  # fmt: skip
    details = {"dataset": dataset.name, "records": loaded.records, "produce_seconds": loaded.produce_seconds,
               **result, "command_rate": command_rate, "check": check}  # fmt: skip
    return rows, details
