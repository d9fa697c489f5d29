"""The Quix Streams baseline of the worker bench: its own environment, its runs and its rows.

Quix Streams is not a dependency of ccmeter: `quix_python` installs the pinned version from PyPI into
bench/out/quix-venv once (reused while its stamp file is there). Without PyPI the baseline is skipped with a
one-line message and a row that says so. bench/quix_app.py is the app; it does a simpler job than the worker
(counts and user sets per account: no lateness, no timers, no windows, no billing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import OUT, Row, log
from bench.procs import rss_mib, start_quix

QUIX_VERSION = "3.28.1"
QUIX_FACTOR = 2.5  # issue 13: the worker >= 2.5x the Quix baseline
VENV = OUT / "quix-venv"
STAMP = f"quixstreams-{QUIX_VERSION}.installed"  # in the venv: the install finished
LABEL = "Quix Streams baseline (simpler job)"


def quix_python(venv: Path = VENV, timeout: float = 600.0) -> tuple[Path | None, str]:
    """(python of a venv with quixstreams==QUIX_VERSION, "") made once and reused; (None, why) if it cannot be
    installed (PyPI unreachable, say). A venv without its stamp (an interrupted install) is made anew."""
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    if stamp.exists() and python.exists():
        return python, ""
    shutil.rmtree(venv, ignore_errors=True)
    log(f"installing quixstreams=={QUIX_VERSION} into {venv} (once)")
    steps = {
        "python -m venv": [sys.executable, "-m", "venv", str(venv)],
        f"pip install quixstreams=={QUIX_VERSION} (PyPI unreachable?)": [
            str(python), "-m", "pip", "install", "--quiet", "--timeout", "20", "--retries", "1",
            f"quixstreams=={QUIX_VERSION}",
        ],
    }  # fmt: skip
    for name, step in steps.items():
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            why = f"{name} timed out after {timeout:.0f} s"
            break
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            why = f"{name} failed: {lines[-1] if lines else f'exit {done.returncode}'}"
            break
    else:
        stamp.write_text(f"quixstreams=={QUIX_VERSION}\n")
        return python, ""
    shutil.rmtree(venv, ignore_errors=True)
    return None, why


def run_quix(bootstrap: str, topic: str, limit: int, workdir: Path, runs: int) -> tuple[list[dict[str, Any]], str]:
    """`runs` runs of bench/quix_app.py over the first `limit` records of `topic`, each with its own consumer group
    (so each reads from the start); (results, "") or ([], why skipped)."""
    python, why = quix_python()
    if python is None:
        log(f"Quix Streams baseline skipped: {why}")
        return [], why
    return [_run_once(python, bootstrap, topic, limit, workdir) for _ in range(runs)], ""


def _run_once(python: Path, bootstrap: str, topic: str, limit: int, workdir: Path) -> dict[str, Any]:
    app_id = f"bench-quix-{uuid.uuid4().hex[:6]}"
    result = workdir / f"{app_id}.json"
    proc = start_quix(python, bootstrap, topic, app_id, limit, result, workdir)
    try:
        deadline = time.monotonic() + 120 + limit / 1_000
        while time.monotonic() < deadline:
            if result.exists():
                body: dict[str, Any] = json.loads(result.read_text())
                body["rss_mib"] = rss_mib(proc.pid)
                log(f"Quix Streams baseline: {body['rate']:,.0f} events/s over {body['events']:,} events")
                return body
            if not proc.alive():
                raise RuntimeError(f"Quix Streams baseline exited:\n{proc.tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"Quix Streams baseline did not reach {limit} events in time:\n{proc.tail()}")
    finally:
        proc.stop()


def quix_rows(results: list[dict[str, Any]], why: str, same: tuple[float, float] | None, whole: float) -> list[Row]:
    """The baseline's row (best of `results`) and the "worker / Quix" row. `same`: the worker's (events/s, events
    per CPU-s) over the same first records as the best run; `whole`: the worker's rate over its whole run."""
    if not results or same is None:
        note = f"skipped: {why}"
        return [Row("worker", LABEL, None, "events/s", note=note),
                Row("worker", "worker / Quix", None, "x", f">= {QUIX_FACTOR}x", None, note)]  # fmt: skip
    best = max(results, key=lambda result: result["rate"])  # best of the runs: the baseline is not handicapped
    cpu = best["events"] / best["cpu_seconds"]
    ratio = same[0] / best["rate"]
    return [
        Row("worker", LABEL, best["rate"], "events/s",
            note=f"quixstreams {QUIX_VERSION}, RocksDB state + changelog; per-account count and user set only; "
            f"{cpu:,.0f} events per CPU-s; first {best['events']:,} events; best of {len(results)}"),
        Row("worker", "worker / Quix", ratio, "x", f">= {QUIX_FACTOR}x", ratio >= QUIX_FACTOR,
            f"worker {same[0]:,.0f}/s over the same first {best['events']:,} events; per CPU-s "
            f"{same[1] / cpu:.2f}x; whole run {whole / best['rate']:.2f}x"),
    ]  # fmt: skip
