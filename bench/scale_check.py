"""Outputs of a scale point against the batch engine's (issue 13: "outputs still equal the batch engine's on every
shape"). The timed run of `bench/scale_bench.py` keeps no outputs (that would change the peak RSS it measures), so
the check runs the point's traffic again in its own process: the worker's partition driver over all of it in the
worker's batches, then one record of the throwaway account `~push` a day later, which closes every window; the
usage changes and peak windows, by id, against `BatchEngine` on the same records written to a JSONL file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.data import pusher_line, pusher_time
from processor.core.model import Settings
from processor.worker import records as rec
from processor.worker.runner import StreamProcessor
from processor.worker.state import DictStore


def worker_outputs(
    records: list[tuple[int, bytes, bytes]], batch: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], int]:
    """Usage changes and peak windows by id of the worker's driver over `records` (at_ms, key, value), and how
    many ids came twice with different contents."""
    store = DictStore()
    processor = StreamProcessor("events", Settings(), store)
    changes: dict[str, dict[str, Any]] = {}
    windows: dict[str, dict[str, Any]] = {}
    differ = 0
    for begin in range(0, len(records), batch):
        raws = [(begin + i, key, value, at) for i, (at, key, value) in enumerate(records[begin : begin + batch])]
        result = processor.process(0, raws)
        store.update(result.states)
        for change in map(rec.usage_change, result.output.usage_changes):
            differ += changes.setdefault(change["change_id"], change) != change
        for window in map(rec.peak_window, result.output.windows):
            differ += windows.setdefault(window["window_id"], window) != window
    return changes, windows, differ


def engine_by_id(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Usage changes and peak windows by id of `BatchEngine` over an events file, real accounts only (not the
    throwaway `~` ones); what every bench's output check compares with."""
    from processor.batch.engine import BatchEngine

    with BatchEngine() as engine:
        engine.load(path)
        changes = {c["change_id"]: c for c in map(rec.usage_change, engine.usage_changes())}
        windows = {w["window_id"]: w for w in map(rec.peak_window, engine.peak_windows())}
    return real(changes), real(windows)


def real(items: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records of real accounts (not the throwaway `~` ones, e.g. the watermark pusher)."""
    return {key: value for key, value in items.items() if value["account_id"][0] != "~"}


def engine_outputs(values: list[bytes]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """`engine_by_id` over the records, written as a JSONL file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        path.write_bytes(b"".join(value + b"\n" for value in values))
        return engine_by_id(path)


def check(records: list[tuple[int, bytes, bytes]], batch: int) -> dict[str, Any]:
    """The equality of the worker's outputs and the batch engine's over `records` plus the pusher (real accounts
    only): counts and verdicts, in the form `bench.partitioned.equal_row` reads."""
    at = pusher_time(records[-1][0])
    records = [*records, (at, b"~push", pusher_line(at))]
    got_changes, got_windows, differ = worker_outputs(records, batch)
    want_changes, want_windows = engine_outputs([value for _, _, value in records])
    got_changes, got_windows = real(got_changes), real(got_windows)
    return {
        "usage_changes_expected": len(want_changes),
        "usage_changes_got": len(got_changes),
        "usage_changes_equal": got_changes == want_changes and not differ,
        "peak_windows_expected": len(want_windows),
        "peak_windows_got": len(got_windows),
        "peak_windows_equal": got_windows == want_windows and not differ,
    }
