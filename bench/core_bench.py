"""The worker's own work without Kafka or Faust: `StreamProcessor.process` over the same records in batches of
5,000 (decode, clock, fold, alerts, state entries) plus the JSON encoding of every output record, in-process
with a dict as the state store. It bounds what any transport around the current core could reach."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bench.common import Row, log
from bench.data import SimDataset
from bench.kafka_io import record_key
from processor.core.model import Settings
from processor.worker import records as rec
from processor.worker.runner import StreamProcessor
from schemas.events import EPOCH, Rejection, decode, format_ms


class DictStore:
    """The worker's state store as a dict."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def items(self) -> list[tuple[bytes, bytes]]:
        return list(self.data.items())


def encode_outputs(result: Any) -> int:
    """JSON bytes of every output record of a batch, as `processor.app.Worker._send` makes them; how many."""
    out, dumps = result.output, rec.dumps
    encoded = [dumps(rec.usage_change(c)) for c in out.usage_changes]
    encoded += [dumps(rec.peak_window(w)) for w in out.windows]
    encoded += [dumps(alert.to_record().model_dump(mode="json")) for alert in result.alerts]
    encoded += [dumps(rec.user_interval(i)) for i in out.intervals]
    encoded += [dumps(rec.plan(a, p)) for a, p in out.plans]
    encoded += [dumps(letter) for letter in result.dead_letters]
    return len(encoded)


def raws(lines: list[bytes], stamps: list[int], begin: int) -> list[tuple[int, bytes | None, bytes, int]]:
    """The worker's raw records (offset, key, value, timestamp) of up to 5,000 lines from `begin`."""
    return [(i, record_key(lines[i]), lines[i], stamps[i]) for i in range(begin, min(len(lines), begin + 5000))]


def run_core(lines: list[bytes], stamps: list[int]) -> dict[str, float]:
    """Seconds in process() and in output encoding, outputs and state bytes, over all records."""
    store = DictStore()
    processor = StreamProcessor("events", Settings(), store)
    process_s = encode_s = 0.0
    outputs = state_bytes = 0
    for begin in range(0, len(lines), 5000):
        batch = raws(lines, stamps, begin)
        t0 = time.perf_counter()
        result = processor.process(0, batch)
        t1 = time.perf_counter()
        outputs += encode_outputs(result)
        t2 = time.perf_counter()
        process_s += t1 - t0
        encode_s += t2 - t1
        state_bytes += sum(len(v) for v in result.states.values())
        store.data.update(result.states)
        processor.trim(0)
    return {"process_s": process_s, "encode_s": encode_s, "outputs": outputs, "state_bytes": state_bytes}


@functools.lru_cache(maxsize=8192)
def _minute_text(minute: int) -> str:
    return (EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")


def format_ms_cached(ms: int) -> str:
    """The proposed `schemas.events.format_ms`: the text up to the minute cached, seconds and ms appended."""
    minute, rest = divmod(ms, 60_000)
    return f"{_minute_text(minute)}{rest // 1000:02d}.{rest % 1000:03d}Z"


def _time(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def bench(dataset: SimDataset) -> tuple[list[Row], dict[str, Any]]:
    """Rows: the in-process core rate, its parts, and the gain of the cached format_ms on output encoding."""
    lines, stamps = dataset.lines(), dataset.timestamps()
    n = len(lines)
    log(f"core in-process over {n:,} records")
    decode_s = _time(lambda: [decode(line) for line in lines])
    core = run_core(lines, stamps)
    # The proposed format_ms, on the same outputs: encode the output records of the first 100,000 records twice.
    sample = lines[:100_000]
    processor = StreamProcessor("events", Settings(), DictStore())
    results = [processor.process(0, raws(sample, stamps, b)) for b in range(0, len(sample), 5000)]
    assert all(format_ms_cached(ms) == format_ms(ms) for ms in (0, -1, 1_793_491_200_123, stamps[-1]))
    before = _time(lambda: [encode_outputs(r) for r in results])
    rec.format_ms = format_ms_cached  # type: ignore[attr-defined]
    try:
        after = _time(lambda: [encode_outputs(r) for r in results])
    finally:
        rec.format_ms = format_ms  # type: ignore[attr-defined]
    total = core["process_s"] + core["encode_s"]
    rate = n / total
    details = {**core, "records": n, "decode_s": decode_s, "rate": rate, "encode_sample_s": before,
               "encode_sample_cached_s": after}  # fmt: skip
    log(f"core: {details}")
    valid = sum(1 for line in lines[:1000] if not isinstance(decode(line), Rejection))
    rows = [
        Row("worker", "worker core in-process, no Kafka (process + encode outputs)", rate, "events/s",
            note=f"process() {n / core['process_s']:,.0f}/s (decode alone {n / decode_s:,.0f}/s), output encoding "
            f"{core['outputs'] / core['encode_s']:,.0f} records/s, {core['outputs'] / n:.2f} outputs per event"
            f"{'' if valid == 1000 else ' (some invalid)'}"),
        Row("worker", "output encoding with a minute-cached format_ms (proposed)", before / after, "x",
            note=f"{before:.2f} s -> {after:.2f} s for the outputs of 100,000 events"),
    ]  # fmt: skip
    return rows, details
