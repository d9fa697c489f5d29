"""Metrics on a real broker: a `ccmeter worker` and a `ccmeter sink --metrics-bind` subprocess are scraped over HTTP
after a history with duplicates and bad records was published; the series must count exactly what was published.

The history (tests/processor/metrics/support.py) ends with one far-ahead event per account, so that every other
valid event passes its account's horizon and is applied, then with one event far behind it (too late).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from processor.brokers.common import free_port
from processor.topics import EVENTS, create_topics, topic_names
from tests.processor.metrics.support import arrival_times, history, samples, value
from tests.processor.worker.support import ROOT, WorkerProcess, start_worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
PARTITIONS = 2
Found = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str | None = None) -> Found:
    """The samples of GET url (Prometheus text), with the bearer token if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain"), response.headers
        return samples(response.read().decode())


def wait_for(
    read: Callable[[], Found], done: Callable[[Found], bool], logs: Callable[[], str], timeout: float
) -> Found:
    """Scrape until `done` holds (bounded); AssertionError with the last scrape and the logs otherwise."""
    deadline = time.monotonic() + timeout
    found: Found = {}
    while time.monotonic() < deadline:
        try:
            found = read()
        except OSError:  # not listening yet
            found = {}
        if found and done(found):
            return found
        time.sleep(0.2)
    raise AssertionError(f"metrics not as expected after {timeout}s: {found}\n{logs()}")


async def _publish(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    stamps = arrival_times([v for _, v in records])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for (key, val), stamp in zip(records, stamps, strict=True):
            await producer.send(topic, value=val, key=key, timestamp_ms=stamp)
        await producer.flush()
    finally:
        await producer.stop()


def worker_done(want: dict[str, int]) -> Callable[[Found], bool]:
    def done(found: Found) -> bool:
        dead = want["dead_letter:invalid_json"] + want["dead_letter:key_mismatch"] + want["dead_letter:too_late"]
        return (
            value(found, "ccmeter_worker_events_total", outcome="applied") == want["applied"]
            and value(found, "ccmeter_worker_outputs_total", kind="dead_letter") == dead
        )

    return done


def test_worker_and_sink_metrics_count_what_was_published(broker: str, topic_prefix: str, tmp_path: Path):
    asyncio.run(create_topics(broker, topic_prefix, PARTITIONS, 1))
    names = topic_names(topic_prefix)
    records, want = history()
    worker = start_worker(broker, topic_prefix, f"app-{uuid.uuid4().hex[:8]}", tmp_path)
    sink_port = free_port()
    sink_log = tmp_path / "sink.log"
    sink: subprocess.Popen[bytes] | None = None
    try:
        worker.wait_ready()
        metrics_url = worker.url("/metrics")
        before = scrape(metrics_url, worker.token)
        assert value(before, "ccmeter_worker_events_total", outcome="applied") == 0, before
        assert value(before, "ccmeter_worker_partitions_owned") == PARTITIONS, before

        asyncio.run(_publish(broker, names[EVENTS], records))
        found = wait_for(lambda: scrape(metrics_url, worker.token), worker_done(want), worker.tail, timeout=120)
        check_worker(found, records, want, worker)

        with sink_log.open("wb") as handle:
            sink = subprocess.Popen(
                [sys.executable, "-m", "processor.cli", "sink", "--broker", broker, "--prefix", topic_prefix,
                 "--data-dir", str(tmp_path / "sink"), "--flush-interval", "500ms", "--metrics-bind", str(sink_port)],
                stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                env={k: v for k, v in os.environ.items() if not k.startswith("CCMETER_")},
            )  # fmt: skip

        def sink_logs() -> str:
            return sink_log.read_text(errors="replace")

        def sink_done(found: Found) -> bool:
            return value(found, "ccmeter_sink_rows_written_total", table="events") == len(records)

        url = f"http://127.0.0.1:{sink_port}/metrics"
        found = wait_for(lambda: scrape(url), sink_done, sink_logs, timeout=120)
        assert value(found, "ccmeter_sink_records_total") >= len(records), (found, sink_logs())
        assert value(found, "ccmeter_sink_files_written_total") >= 1, found
        assert value(found, "ccmeter_sink_broker_up") == 1, found
        assert value(found, "ccmeter_sink_reconnects_total") == 0, found
        for partition in range(PARTITIONS):
            lag = value(found, "ccmeter_sink_lag_records", topic=names[EVENTS], partition=str(partition))
            assert lag == 0, (partition, found, sink_logs())
        assert any(key[0] == "ccmeter_build_info" and ("component", "sink") in key[1] for key in found), found
    finally:
        if sink is not None and sink.poll() is None:
            sink.send_signal(signal.SIGTERM)
            try:
                sink.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sink.kill()
                sink.wait(timeout=30)
        worker.stop()


def check_worker(found: Found, records: list, want: dict[str, int], worker: WorkerProcess) -> None:
    """The worker's series after the whole history was processed."""
    logs = worker.tail()
    assert value(found, "ccmeter_worker_events_total", outcome="duplicate") == want["duplicate"], (found, logs)
    assert value(found, "ccmeter_worker_events_total", outcome="orphan") == 0, found
    for reason in ("invalid_json", "key_mismatch", "too_late"):
        got = value(found, "ccmeter_worker_dead_letters_total", reason=reason)
        assert got == want[f"dead_letter:{reason}"], (reason, found, logs)
    assert value(found, "ccmeter_worker_dead_letters_total", reason="future_skew") == 0, found
    read = value(found, "ccmeter_worker_records_read_total")
    assert read - value(found, "ccmeter_worker_records_redelivered_total") == len(records), (found, logs)
    assert value(found, "ccmeter_worker_batch_duration_seconds_count") >= 1, found
    assert value(found, "ccmeter_worker_state_entries_written_total") >= 1, found
    assert value(found, "ccmeter_worker_outputs_total", kind="horizon") >= 3, found
    assert value(found, "ccmeter_worker_ready") == 1, found
    assert value(found, "ccmeter_worker_rebalances_total", phase="assigned") >= 1, found
    # The same counts as /health, which keeps them with each partition's state.
    health = worker.health()
    assert health is not None, logs
    assert health["counts"]["applied"] == want["applied"] and health["counts"]["duplicate"] == want["duplicate"]
    # Every owned partition: caught up, its horizon floor far behind the wall clock (the history is in 2026).
    for partition in range(PARTITIONS):
        label = str(partition)
        assert value(found, "ccmeter_worker_consumer_lag_records", partition=label) == 0, (partition, found, logs)
    delays = [v for (name, _), v in found.items() if name == "ccmeter_worker_horizon_delay_seconds"]
    assert delays, found
    # Live queries are counted by answer.
    assert worker.get("/accounts/acct-0/usage")[0] == 200
    assert worker.get("/accounts/no-such-account/usage")[0] == 404
    after = scrape(worker.url("/metrics"), worker.token)
    assert value(after, "ccmeter_worker_live_queries_total", answer="local") == 1, after
    assert value(after, "ccmeter_worker_live_queries_total", answer="not_found") == 1, after
