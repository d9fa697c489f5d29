"""The worker's own work without Kafka or Faust: `StreamProcessor.process` over the same records in the worker's
default batches (decode, clock, fold, alerts, state entries) plus the JSON encoding of every output record, in-process
with a dict as the state store and the worker's collector thresholds. It bounds what any transport around the current
core could reach."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.common import Row, log
from bench.data import SimDataset
from bench.kafka_io import record_key
from processor.core.model import Settings
from processor.topics import topic_names
from processor.worker.collector import tuned_collector
from processor.worker.config import WorkerConfig
from processor.worker.runner import StreamProcessor
from processor.worker.sender import output_records
from processor.worker.state import DictStore
from schemas.events import Rejection, decode
from schemas.fast import decode_wire

NAMES = topic_names("bench.")
BATCH = WorkerConfig.batch_size  # the worker's default


def encode_outputs(result: Any) -> int:
    """Encode every output record of a batch as the worker does (`output_records`); how many."""
    return len(output_records(NAMES, result))


def raws(lines: list[bytes], stamps: list[int], begin: int) -> list[tuple[int, bytes | None, bytes, int]]:
    """The worker's raw records (offset, key, value, timestamp) of up to one batch of lines from `begin`."""
    return [(i, record_key(lines[i]), lines[i], stamps[i]) for i in range(begin, min(len(lines), begin + BATCH))]


def run_core(lines: list[bytes], stamps: list[int]) -> dict[str, float]:
    """Seconds in process() and in output encoding, outputs and state bytes, over all records."""
    with tuned_collector():
        return _run_core(lines, stamps)


def _run_core(lines: list[bytes], stamps: list[int]) -> dict[str, float]:
    store = DictStore()
    processor = StreamProcessor("events", Settings(), store)
    process_s = encode_s = 0.0
    outputs = state_bytes = 0
    for begin in range(0, len(lines), BATCH):
        batch = raws(lines, stamps, begin)
        t0 = time.perf_counter()
        result = processor.process(0, batch)
        t1 = time.perf_counter()
        outputs += encode_outputs(result)
        t2 = time.perf_counter()
        process_s += t1 - t0
        encode_s += t2 - t1
        state_bytes += sum(len(v) for v in result.states.values() if v is not None)
        store.update(result.states)
        processor.trim(0)
    return {"process_s": process_s, "encode_s": encode_s, "outputs": outputs, "state_bytes": state_bytes}


def _time(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def bench(dataset: SimDataset) -> tuple[list[Row], dict[str, Any]]:
    """Rows: the in-process core rate and its parts."""
    lines, stamps = dataset.lines(), dataset.timestamps()
    n = len(lines)
    log(f"core in-process over {n:,} records")
    decode_s = _time(lambda: [decode_wire(line) for line in lines])
    pydantic_s = _time(lambda: [decode(line) for line in lines])
    core = run_core(lines, stamps)
    total = core["process_s"] + core["encode_s"]
    rate = n / total
    details = {**core, "records": n, "decode_s": decode_s, "pydantic_decode_s": pydantic_s, "rate": rate}
    log(f"core: {details}")
    valid = sum(1 for line in lines[:1000] if not isinstance(decode(line), Rejection))
    rows = [
        Row("worker", "worker core in-process, no Kafka (process + encode outputs)", rate, "events/s",
            note=f"process() {n / core['process_s']:,.0f}/s (decode alone {n / decode_s:,.0f}/s; pydantic's "
            f"{n / pydantic_s:,.0f}/s), output encoding "
            f"{core['outputs'] / core['encode_s']:,.0f} records/s, {core['outputs'] / n:.2f} outputs per event"
            f"{'' if valid == 1000 else ' (some invalid)'}"),
    ]  # fmt: skip
    return rows, details
