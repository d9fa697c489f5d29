"""Shared fixtures of the snapshot tests: one simulated history, its sink directory and its snapshot (built once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import build_snapshot
from tests.processor.snapshots.streams import Streams, build_streams, feed, history_lines

EVENTS_TOPIC = "ccmeter.events"


@pytest.fixture(scope="session")
def sim_streams() -> Streams:
    """4 accounts x 4 agents x 2 days with malformed lines, duplicates and late arrivals, plus the worker's outputs."""
    lines = history_lines(seed=3, malformed=0.01, duplicates=0.02, out_of_order=0.05)
    return build_streams(lines, EVENTS_TOPIC)


@pytest.fixture(scope="session")
def sink_dir(sim_streams: Streams, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sink data directory holding every record of `sim_streams` (written without Kafka, in several commits)."""
    data = tmp_path_factory.mktemp("sink") / "data"
    feed(SinkWriter(data, "ccmeter."), sim_streams, flush_every=4000)
    return data


@pytest.fixture(scope="session")
def snapshot_path(sink_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of `sink_dir` (read-only use only)."""
    out = tmp_path_factory.mktemp("snapshot") / "usage.duckdb"
    build_snapshot(sink_dir, out)
    return out
