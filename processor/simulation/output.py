"""The public API of the simulator: iterate records, or stream them to a `.jsonl` or `.parquet` file."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.parquet as pq

from processor.simulation.config import SimConfig
from processor.simulation.encode import PARQUET_SCHEMA, Encoder
from processor.simulation.engine import MAL, Engine

FORMATS: tuple[str, ...] = (".jsonl", ".parquet")
MAX_BLOCK_ROWS = 1 << 19  # rows encoded at once (also one Parquet row group)
DICTIONARY_COLUMNS: list[str] = [
    "type",
    "account_id",
    "user_id",
    "device_id",
    "page",
    "endpoint",
    "timezone",
    "grace_mode",
]


class SimRecord(NamedTuple):
    """One output line in arrival order; `malformed` lines are deliberately invalid."""

    line: str
    malformed: bool


@dataclass(slots=True)
class SimStats:
    """Summary of a written file."""

    path: str
    records: int
    events: int
    duplicates: int
    delayed: int
    orphans: int
    malformed: int
    seconds: float
    by_type: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the terminal."""
        return (
            f"wrote {self.records:,} records to {self.path} in {self.seconds:.1f} s "
            f"({self.events:,} events, {self.duplicates:,} duplicates, {self.delayed:,} delayed, "
            f"{self.orphans:,} orphans, {self.malformed:,} malformed)"
        )


def output_format(path: str | Path) -> str:
    """`.jsonl` or `.parquet` from the file name; ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"output file must end with .jsonl or .parquet, not {str(path)!r}")
    return suffix


def iter_records(config: SimConfig) -> Iterator[SimRecord]:
    """Every output line (without newline) in arrival order, as written to a `.jsonl` file."""
    engine = Engine(config)
    encoder = Encoder(engine.catalog, engine.eid_width)
    for day_block in engine.blocks():
        for block in day_block.split(MAX_BLOCK_ROWS):
            flags = (block.rows[:, MAL] >= 0).tolist()
            for text, bad in zip(encoder.lines(block).to_pylist(), flags, strict=True):
                yield SimRecord(text[:-1], bad)


def iter_lines(config: SimConfig) -> Iterator[str]:
    """Every `.jsonl` line (without newline) in arrival order, malformed ones included."""
    for record in iter_records(config):
        yield record.line


def simulate(config: SimConfig) -> Iterator[dict[str, Any]]:
    """The valid events in arrival order as wire dicts (duplicates, orphans and late arrivals included)."""
    for record in iter_records(config):
        if not record.malformed:
            yield json.loads(record.line)


def write_events(
    path: str | Path,
    config: SimConfig,
    progress: Callable[[], None] | None = None,
) -> SimStats:
    """Simulate `config` into `path` (`.jsonl` or `.parquet`); `progress` is called after every account-day.

    Encoding and writing run on a second thread, overlapping the generation of the next day.
    """
    fmt = output_format(path)
    if fmt == ".parquet" and config.malformed > 0:
        raise ValueError("--malformed applies to .jsonl output only (a Parquet file has no malformed rows)")
    began = time.perf_counter()
    engine = Engine(config)
    encoder = Encoder(engine.catalog, engine.eid_width)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")  # renamed once complete: no half-written event files
    try:
        if fmt == ".jsonl":
            _write_jsonl(partial, engine, encoder, progress)
        else:
            _write_parquet(partial, engine, encoder, progress)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    counts = engine.counts
    return SimStats(
        path=str(path),
        records=counts.records if fmt == ".jsonl" else counts.records - counts.malformed,
        events=counts.events,
        duplicates=counts.duplicates,
        delayed=counts.delayed,
        orphans=counts.orphans,
        malformed=counts.malformed,
        seconds=time.perf_counter() - began,
        by_type=dict(counts.by_type),
    )


def _write_jsonl(path: Path, engine: Engine, encoder: Encoder, progress: Callable[[], None] | None) -> None:
    pending: deque[Future[None]] = deque()
    # The pool is left first: pending writes finish before the file closes.
    with path.open("wb") as out, ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccmeter-sim-writer") as pool:
        for day_block in engine.blocks(progress):
            for block in day_block.split(MAX_BLOCK_ROWS):
                pending.append(pool.submit(lambda b=block: out.write(encoder.json_bytes(b)) and None))
                _drain(pending, 2)
        _drain(pending, 0)


def _write_parquet(path: Path, engine: Engine, encoder: Encoder, progress: Callable[[], None] | None) -> None:
    pending: deque[Future[None]] = deque()
    with (
        pq.ParquetWriter(path, PARQUET_SCHEMA, compression="zstd", use_dictionary=DICTIONARY_COLUMNS) as writer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccmeter-sim-writer") as pool,
    ):
        arrival = 0
        for day_block in engine.blocks(progress):
            for block in day_block.split(MAX_BLOCK_ROWS):
                n = int((block.rows[:, MAL] < 0).sum())
                pending.append(pool.submit(lambda b=block, a=arrival: writer.write_table(encoder.table(b, a))))
                arrival += n
                _drain(pending, 2)
        _drain(pending, 0)


def _drain(pending: deque[Future[None]], keep: int) -> None:
    """Wait for the oldest writes until at most `keep` are pending (re-raising their errors)."""
    while len(pending) > keep:
        pending.popleft().result()
