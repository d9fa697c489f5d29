"""The worker's metrics without a broker: per-batch totals from real batch results, scrape-time series from a
view of the worker, and the Prometheus text they render."""

from __future__ import annotations

import pytest

from processor.core.model import Settings
from processor.metrics.worker import PartitionView, WorkerMetrics, WorkerView
from processor.worker.peers import Answer, Local
from processor.worker.runner import StreamProcessor
from tests.processor.metrics.support import arrival_times, history, samples, value


class DictStore(dict):
    """The worker's state store as a dict (StateStore protocol)."""

    def items(self):  # type: ignore[override]
        return list(super().items())


def run_batches(metrics: WorkerMetrics, size: int) -> StreamProcessor:
    """Process the history in batches of `size` records, each counted by `metrics`; the processor."""
    records, _ = history()
    stamps = arrival_times([value for _, value in records])
    store = DictStore()
    processor = StreamProcessor("t.events", Settings(), store)
    raws = [(offset, key, val, stamps[offset]) for offset, (key, val) in enumerate(records)]
    for start in range(0, len(raws), size):
        result = processor.process(0, raws[start : start + size])
        store.update(result.states)
        metrics.batch([result], 0.02)
    return processor


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_batch_totals_match_what_the_processor_counted(size: int):
    metrics = WorkerMetrics()
    processor = run_batches(metrics, size)
    _, want = history()
    found = samples(metrics.render().decode())
    counts = processor.counts([0])
    assert {k: v for k, v in counts.items() if v} == want
    for outcome in ("applied", "orphan", "duplicate", "duplicate_conflict"):
        assert value(found, "ccmeter_worker_events_total", outcome=outcome) == counts.get(outcome, 0), found
    for reason in ("invalid_json", "key_mismatch", "too_late", "future_skew", "processing_error"):
        got = value(found, "ccmeter_worker_dead_letters_total", reason=reason)
        assert got == counts.get(f"dead_letter:{reason}", 0), (reason, found)
    batches = -(-len(history()[0]) // size)
    assert value(found, "ccmeter_worker_batch_duration_seconds_count") == batches
    assert value(found, "ccmeter_worker_batch_duration_seconds_bucket", le="0.025") == batches
    assert value(found, "ccmeter_worker_outputs_total", kind="dead_letter") == 4
    assert value(found, "ccmeter_worker_outputs_total", kind="horizon") >= 3  # the accounts' horizons moved
    assert value(found, "ccmeter_worker_state_entries_written_total") >= batches  # a clock entry per batch at least
    assert value(found, "ccmeter_worker_state_written_bytes_total") > value(
        found, "ccmeter_worker_state_entries_written_total"
    )
    build = [key for key in found if key[0] == "ccmeter_build_info"]
    assert len(build) == 1 and dict(build[0][1])["component"] == "worker"


def test_scrape_time_series_come_from_the_view():
    view = WorkerView(
        partitions=(PartitionView(0, lag=12, idle_floor_ms=1_000_000), PartitionView(3, lag=None, idle_floor_ms=None)),
        ready=True,
        recovering=1,
        restored=250,
        records=40,
        redelivered=3,
        fenced=2,
    )
    metrics = WorkerMetrics(lambda: view, clock=lambda: 1_060.5)
    metrics.rebalance("assigned")
    metrics.rebalance("assigned")
    metrics.rebalance("revoked")
    found = samples(metrics.render().decode())
    assert value(found, "ccmeter_worker_consumer_lag_records", partition="0") == 12
    assert value(found, "ccmeter_worker_consumer_lag_records", partition="3") is None  # end not known yet
    assert value(found, "ccmeter_worker_horizon_delay_seconds", partition="0") == pytest.approx(60.5)
    assert value(found, "ccmeter_worker_horizon_timestamp_seconds", partition="0") == 1_000
    assert value(found, "ccmeter_worker_horizon_delay_seconds", partition="3") is None  # no event yet
    assert value(found, "ccmeter_worker_partitions_owned") == 2
    assert value(found, "ccmeter_worker_partitions_recovering") == 1
    assert value(found, "ccmeter_worker_ready") == 1
    assert value(found, "ccmeter_worker_changelog_restored_records_total") == 250
    assert value(found, "ccmeter_worker_records_read_total") == 40
    assert value(found, "ccmeter_worker_records_redelivered_total") == 3
    assert value(found, "ccmeter_worker_fenced_total") == 2
    assert value(found, "ccmeter_worker_rebalances_total", phase="assigned") == 2
    assert value(found, "ccmeter_worker_rebalances_total", phase="revoked") == 1


def test_live_queries_by_answer():
    metrics = WorkerMetrics()
    mine = Local(True, frozenset({0}), {"account_id": "a"})
    other = Local(True, frozenset({0}))
    metrics.live_query(Answer(200, {}), mine)
    metrics.live_query(Answer(200, {}), other)
    metrics.live_query(Answer(200, {}), other)
    metrics.live_query(Answer(404, {}), other)
    metrics.live_query(Answer(503, {}), Local(False, frozenset()))
    found = samples(metrics.render().decode())
    assert value(found, "ccmeter_worker_live_queries_total", answer="local") == 1
    assert value(found, "ccmeter_worker_live_queries_total", answer="forwarded") == 2
    assert value(found, "ccmeter_worker_live_queries_total", answer="not_found") == 1
    assert value(found, "ccmeter_worker_live_queries_total", answer="unavailable") == 1


def test_registries_are_per_instance():
    one, two = WorkerMetrics(), WorkerMetrics()
    one.rebalance("revoked")
    assert value(samples(two.render().decode()), "ccmeter_worker_rebalances_total", phase="revoked") == 0
