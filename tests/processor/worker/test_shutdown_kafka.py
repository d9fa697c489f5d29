"""The worker's stop has a deadline (processor/worker/shutdown.py): with its broker gone, SIGTERM still ends it within
`--shutdown-timeout`, exit status 1, and it says why; with the broker there, it stops cleanly as before."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from processor.topics import EVENTS, create_topics, topic_names
from tests.processor.worker.support import produce, start_worker, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]
LINE = (
    b'{"event_id":"e1","type":"api.request","account_id":"acme","user_id":"u1",'
    b'"occurred_at":"2026-11-02T09:00:00.000Z"}'
)


def stop_within(proc: subprocess.Popen[bytes], seconds: float) -> tuple[int, float]:
    """SIGTERM, then the exit status and how long it took (SIGKILL and a failure past `seconds`)."""
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the worker did not stop within {seconds}s of SIGTERM")
    return status, time.monotonic() - began


def test_a_worker_whose_broker_is_gone_stops_within_its_shutdown_timeout(tmp_path: Path) -> None:
    from processor.brokers.kafka_server import KafkaServer

    kafka = KafkaServer(heap=("-Xms128m", "-Xmx384m", "-XX:TieredStopAtLevel=1"))  # its own: it is stopped below
    kafka.start()
    try:
        prefix = "t.shutdown."
        asyncio.run(create_topics(kafka.bootstrap, prefix, 1, 1))
        produce(kafka.bootstrap, topic_names(prefix)[EVENTS], [LINE])
        worker = start_worker(kafka.bootstrap, prefix, "app-shutdown", tmp_path, "--shutdown-timeout", "3s")
        worker.wait_ready()
        # Idle before the broker goes: a batch still in flight then fails its checkpoint and the worker stops by
        # itself (EXIT_CHECKPOINT, tested elsewhere), which is not the stop this test is about. The group's offset
        # is committed after the batch's checkpoint (step 4, processor/app.py).
        wait_committed(kafka.bootstrap, "app-shutdown", {TopicPartition(topic_names(prefix)[EVENTS], 0): 1}, worker)
    finally:
        kafka.stop()
    time.sleep(2.0)  # the clients notice
    status, took = stop_within(worker.proc, 60)
    log = worker.log.read_text()
    assert status == 1, log[-3000:]
    assert 3.0 <= took < 30, took
    assert "stop did not finish within 3s (--shutdown-timeout; is the broker reachable?)" in log


def test_a_worker_with_its_broker_stops_cleanly_before_the_deadline(broker: str, tmp_path: Path) -> None:
    prefix = f"t.shutdown-clean.{time.monotonic_ns()}."
    asyncio.run(create_topics(broker, prefix, 1, 1))
    produce(broker, topic_names(prefix)[EVENTS], [LINE])
    worker = start_worker(broker, prefix, f"app-clean-{time.monotonic_ns()}", tmp_path, "--shutdown-timeout", "60s")
    worker.wait_ready()
    status, took = stop_within(worker.proc, 60)
    log = worker.log.read_text()
    assert status == 0, log[-3000:]
    assert "stop did not finish" not in log
