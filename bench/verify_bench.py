"""`ccmeter replay verify` at scale (issue 13: "verify of 30 M events within 4 GiB"): peak RSS and events/s of the
command as a subprocess, at two sizes of the simulator's accounts (5 agents each, 1 day), and the peak RSS of 30 M
events extrapolated from them.

Each snapshot is built like batch_bench's (the batch engine's outputs through the sink's own SinkWriter, the events
table from the Parquet file, then `build_snapshot`), so verify must find no difference. Peak RSS is the process's
high-water mark (`VmHWM` of /proc/self/status, read by bench/cli_peak.py as the command finishes), DuckDB's native
memory included. The 30 M figure is the straight line through the two sizes: a fixed part plus bytes per event.
The same two runs are repeated with every DuckDB connection capped at `SET memory_limit = 1GB` (bench/cli_peak.py
--memory-limit, a diagnostic: ccmeter sets no limit, so DuckDB keeps its default of 80% of the machine's memory) to
show how much of the growth is DuckDB's buffer pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.batch_bench import build_snapshot_of
from bench.common import OUT, ROOT, Row, log
from bench.data import sim_dataset
from bench.procs import clean_env
from processor.batch.engine import BatchEngine

TARGET_EVENTS = 30_000_000
TARGET_GIB = 4.0
GIB = 1 << 30
CAP = "1GB"  # DuckDB memory_limit of the diagnostic runs


def sizes(quick: bool) -> tuple[int, int]:
    """Accounts (x 5 agents x 1 day, about 1,040 events each) of the two measured points."""
    return (250, 500) if quick else (1000, 2000)


def snapshot_of(accounts: int) -> tuple[Path, int, float]:
    """The snapshot of `accounts` x 5 agents x 1 day (built each run); (file, events, build seconds)."""
    dataset = sim_dataset(accounts, 5, 1, jsonl=False)
    log(f"verify: snapshot of {dataset.name} ({dataset.events:,} events)")
    began = time.perf_counter()
    with BatchEngine() as engine:
        engine.load(dataset.parquet)
        path, _ = build_snapshot_of(engine, dataset.parquet, f"verify-{dataset.name}")
    return path, dataset.events, time.perf_counter() - began


def run_verify(snapshot: Path, workdir: Path, cap: str | None = None) -> dict[str, Any]:
    """`ccmeter replay verify --snapshot FILE --quiet` as a subprocess, through bench.cli_peak (its peak RSS; with
    `cap`, DuckDB's memory_limit): wall and CPU seconds, exit status, peak RSS, output."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"verify-{snapshot.stem}{'-capped' if cap else ''}"
    out, peak = workdir / f"{name}.out", workdir / f"{name}.json"
    limit = ["--memory-limit", cap] if cap else []
    args = [sys.executable, "-m", "bench.cli_peak", str(peak), *limit, "replay", "verify", "--snapshot",
            str(snapshot), "--quiet"]  # fmt: skip
    began = time.perf_counter()
    with out.open("wb") as handle:
        popen = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=clean_env())
    _, status, usage = os.wait4(popen.pid, 0)  # CPU time from the rusage (its ru_maxrss counts the driver too)
    seconds = time.perf_counter() - began
    popen.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    text = out.read_text(errors="replace")
    if not peak.exists():
        raise RuntimeError(f"verify of {snapshot} wrote no peak (exit {popen.returncode}):\n{text[-3000:]}")
    return {
        "seconds": seconds, "status": popen.returncode,
        "peak_rss_bytes": json.loads(peak.read_text())["vmhwm_kib"] * 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime, "ok": popen.returncode == 0 and "OK: no differences" in text,
        "output": text.strip().splitlines()[-6:],
    }  # fmt: skip


def line(small: dict[str, Any], large: dict[str, Any]) -> tuple[float, float, float]:
    """(bytes per event, fixed bytes, bytes at 30 M events) of the straight line through two points."""
    slope = (large["peak_rss_bytes"] - small["peak_rss_bytes"]) / (large["events"] - small["events"])
    base = large["peak_rss_bytes"] - slope * large["events"]
    return slope, base, base + slope * TARGET_EVENTS


def bench(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Verify at two sizes (and again with DuckDB capped), the extrapolation to 30 M events; rows and details."""
    points: list[dict[str, Any]] = []
    capped: list[dict[str, Any]] = []
    workdir = OUT / "work" / "verify"
    for accounts in sizes(quick):
        snapshot, events, build = snapshot_of(accounts)
        for cap, into in ((None, points), (CAP, capped)):
            result = run_verify(snapshot, workdir, cap)
            result.update(accounts=accounts, events=events, snapshot_build_seconds=build,
                          snapshot_bytes=snapshot.stat().st_size, cap=cap)  # fmt: skip
            log(f"verify {events:,} events{f' (DuckDB capped at {cap})' if cap else ''}: {result['seconds']:.1f} s, "
                f"peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB, exit {result['status']}")  # fmt: skip
            into.append(result)
    small, large = points
    slope, base, projected = line(small, large)
    capped_slope, capped_base, capped_projected = line(*capped)
    met = projected <= TARGET_GIB * GIB
    capped_rss = ", ".join(f"{p['peak_rss_bytes'] / 2**20:,.0f}" for p in capped)
    capped_seconds = ", ".join(f"{p['seconds']:.1f}" for p in capped)
    ok = all(p["ok"] for p in points + capped)
    rows = [
        Row("verify", f"replay verify, {p['events'] / 1e6:.1f} M events", p["events"] / p["seconds"], "events/s",
            note=f"{p['seconds']:.1f} s wall, {p['events'] / p['cpu_seconds']:,.0f} per CPU-s; peak RSS "
            f"{p['peak_rss_bytes'] / 2**20:,.0f} MiB ({p['peak_rss_bytes'] / p['events']:,.0f} B/event); "
            f"{p['accounts']} accounts; snapshot {p['snapshot_bytes'] / 1e6:.0f} MB")
        for p in points
    ]  # fmt: skip
    rows += [
        Row("verify", "replay verify, peak RSS per extra event", slope, "bytes",
            note=f"between {small['events']:,} and {large['events']:,} events; fixed part {base / 2**20:,.0f} MiB"),
        Row("verify", "replay verify of 30 M events, peak RSS (extrapolated)", projected / GIB, "GiB",
            f"<= {TARGET_GIB:g} GiB", met,
            f"straight line through the two points above ({base / 2**20:,.0f} MiB + {slope:,.0f} B/event x 30 M), "
            "not a 30 M run; DuckDB's default memory_limit (80% of RAM) would cap its part before that"),
        Row("verify", f"diagnostic: same with DuckDB memory_limit {CAP}, 30 M extrapolated", capped_projected / GIB,
            "GiB", note=f"bench/cli_peak.py --memory-limit; peak RSS {capped_rss} MiB in {capped_seconds} s; "
            f"{capped_base / 2**20:,.0f} MiB + {capped_slope:,.0f} B/event"),
        Row("verify", "replay verify finds no differences", "yes" if ok else "NO", "", "none", ok,
            "snapshots built from the batch engine's outputs: " + "; ".join(
                f"{p['events']:,} events exit {p['status']}" for p in points + capped)),
    ]  # fmt: skip
    details = {
        "points": points, "capped": capped, "bytes_per_event": slope, "fixed_bytes": base,
        "projected_30m_bytes": projected, "capped_bytes_per_event": capped_slope,
        "capped_projected_30m_bytes": capped_projected,
    }  # fmt: skip
    return rows, details
