"""Benchmark inputs, generated once into bench/out/data and reused (the generators are deterministic).

* `sim_dataset`: the simulator's accounts (all events valid), as `.jsonl` (Kafka input, with a watermark pusher
  at the end) and `.parquet` (batch engine), with each record's Kafka timestamp (latest event time so far, as if
  the events had been published as they happened: the future-skew check's second reference).
* `month_dataset`: processor/simulation/month.py: one account, ~1,000 agents, 30 days, ~10 M events, `.parquet`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import OUT, log
from processor.core.model import Settings
from processor.simulation import SimConfig, write_events
from schemas.events import format_ms

DATA = OUT / "data"
DAY_MS = 86_400_000
PUSH_ACCOUNT = "~push"


@dataclass(frozen=True)
class SimDataset:
    """A simulated history: files, line count, per-record Kafka timestamps."""

    name: str
    config: SimConfig
    jsonl: Path  # the events plus one watermark pusher line at the end
    parquet: Path  # the events only
    events: int  # lines of the .jsonl without the pusher
    accounts: int

    def lines(self) -> list[bytes]:
        """Every line of the .jsonl (pusher included), without newlines."""
        return self.jsonl.read_bytes().splitlines()

    def timestamps(self) -> list[int]:
        """Kafka timestamps (ms) of every line: the running maximum of occurred_at (pusher: its own time)."""
        at_ms = _ms(pq.read_table(self.parquet, columns=["occurred_at"]).column("occurred_at"))
        stamps = np.maximum.accumulate(at_ms).tolist()
        return [*stamps, pusher_time(int(stamps[-1]))]


def _ms(column: pa.ChunkedArray) -> np.ndarray:
    """occurred_at timestamps of a Parquet column as int64 milliseconds."""
    return column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()


def pusher_time(last_ms: int, settings: Settings = Settings()) -> int:
    """An instant far enough past `last_ms` that every instant before it is final and every window closed."""
    return last_ms + DAY_MS + settings.account_idle_lateness_ms + 60_000


def pusher_line(at_ms: int) -> bytes:
    """An api.request of the throwaway account `~push` at `at_ms` (moves the partition's watermark there)."""
    body = {
        "event_id": "push",
        "type": "api.request",
        "account_id": PUSH_ACCOUNT,
        "occurred_at": format_ms(at_ms),
        "user_id": "p",
    }
    return json.dumps(body, separators=(",", ":")).encode()


def sim_dataset(accounts: int, agents: int, days: int, jsonl: bool = True) -> SimDataset:
    """The simulated history of `accounts` x `agents` for `days` (cached); the .jsonl only if `jsonl`."""
    name = f"sim-a{accounts}-g{agents}-d{days}"
    config = SimConfig(accounts=accounts, agents=agents, days=days)
    DATA.mkdir(parents=True, exist_ok=True)
    lines, parquet = DATA / f"{name}.jsonl", DATA / f"{name}.parquet"
    if not parquet.exists():
        log(f"simulating {name} (.parquet)")
        write_events(parquet, config)
    if jsonl and not lines.exists():
        log(f"simulating {name} (.jsonl)")
        raw = DATA / f"{name}.raw.jsonl"
        write_events(raw, config)
        data = raw.read_bytes()
        rows = pq.read_metadata(parquet).num_rows
        if data.count(b"\n") != rows:
            raise RuntimeError(f"{name}: .jsonl and .parquet disagree on the number of events")
        last = int(np.max(_ms(pq.read_table(parquet, columns=["occurred_at"]).column("occurred_at"))))
        partial = lines.with_name(lines.name + ".partial")
        partial.write_bytes(data + pusher_line(pusher_time(last)) + b"\n")
        partial.replace(lines)
        raw.unlink()
    events = pq.read_metadata(parquet).num_rows
    return SimDataset(name, config, lines, parquet, events, accounts)


def month_dataset(agents: int = 1000, days: int = 30) -> tuple[Path, int]:
    """processor/simulation/month.py's month of one account as Parquet (cached); (path, events)."""
    from processor.simulation.month import generate_month

    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"month-g{agents}-d{days}.parquet"
    if not path.exists():
        log(f"generating the month of one account ({agents} agents, {days} days)")
        partial = path.with_name(path.name + ".partial.parquet")
        generate_month(partial, agents, days)
        partial.replace(path)
    return path, pq.read_metadata(path).num_rows
