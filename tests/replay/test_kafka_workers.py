"""`replay run --workers 2` against a real broker: two worker processes of v2 (one consumer group) rebuild a
4-partition events topic into the same outputs as one worker, and as the batch engine."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from processor.cli import main
from processor.topics import EVENTS, PEAK_WINDOWS, USAGE_CHANGES, create_topics
from processor.topics import topic_names as names_of
from tests.processor.worker.support import arrival_times, expected, produce, real, with_pushers, write_jsonl
from tests.replay.test_kafka import WORKER_FLAGS, assert_same, history, mark, outputs_of

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
PARTITIONS = 4


@pytest.fixture(autouse=True)
def _no_ccmeter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CCMETER_"):
            monkeypatch.delenv(name)


def test_two_workers_rebuild_what_one_worker_and_the_batch_engine_give(
    broker: str, topic_prefix: str, tmp_path: Path, capsys
):
    asyncio.run(create_topics(broker, topic_prefix, PARTITIONS, 1))
    names = names_of(topic_prefix)
    lines = with_pushers(history(seed=26, accounts=4, agents=1), PARTITIONS)  # about 6,700 events
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    produce(broker, names[EVENTS], lines, arrival_times(lines))
    tag = uuid.uuid4().hex[:8]
    common = ["--broker", broker, "--prefix", topic_prefix, "--from", "beginning", "--quiet", "--give-up-after", "150s"]
    common += ["--stall-timeout", "12"]

    state = tmp_path / "v2"
    args = ["replay", "run", *common, "--into", "v2", "--app-id", f"v2-{tag}", "--state-dir", str(state)]
    mark("two workers start")
    assert main([*args, "--workers", "2", *WORKER_FLAGS]) == 0, [p.read_text()[-3000:] for p in state.glob("*.log")]
    mark("two workers done")
    out = capsys.readouterr().out
    assert out.startswith("plan: rebuild into v2 (") and "with 2 workers" in out.splitlines()[0]
    assert f"workers: 2 processes of group v2-{tag} share the {PARTITIONS} partitions" in out
    logs = {p.name: p.read_text()[-3000:] for p in state.glob("*.log")}
    assert "caught up with the end offsets" in out and "2 workers stopped (status 0)" in out, (out, logs)
    owned = [  # each worker its own log, in which it took partitions of the group (processor/worker/store.py)
        {int(p) for p in re.findall(r"partition (\d+): state recovered", log.read_text())}
        for log in (state / "replay-worker.log", state / "replay-worker-2.log")
    ]
    # A topic this small may be done before the second worker joins: that both own partitions is checked below,
    # on workers kept running (--follow).
    assert set().union(*owned) == set(range(PARTITIONS)), owned
    v2 = outputs_of(broker, f"{topic_prefix}v2.")

    want_changes, want_windows, source = expected(path)
    assert source == "BatchEngine"
    assert real(v2[USAGE_CHANGES]) == want_changes and want_changes  # type: ignore[arg-type]
    assert real(v2[PEAK_WINDOWS]) == want_windows and want_windows  # type: ignore[arg-type]

    one = ["replay", "run", *common, "--into", "v1", "--app-id", f"v1-{tag}", "--state-dir", str(tmp_path / "v1")]
    assert main([*one, *WORKER_FLAGS]) == 0
    mark("one worker done")
    assert "worker stopped (status 0)" in capsys.readouterr().out
    assert_same(v2, outputs_of(broker, f"{topic_prefix}v1."))  # alerts, intervals, dead letters too
    assert v2["data_through"] == outputs_of(broker, f"{topic_prefix}v1.")["data_through"]

    # Re-running with two workers resumes the group: nothing left to do.
    assert main([*args, "--workers", "2", *WORKER_FLAGS]) == 0
    assert "nothing to do" in capsys.readouterr().out


def split_between(ports: list[int], deadline: float) -> list[list[int]]:
    """The partitions each worker owns, once the group has given every worker some (or the deadline passed)."""
    owned: list[list[int]] = []
    while time.monotonic() < deadline:
        owned = []
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2.0) as response:
                    health = json.loads(response.read())
            except (OSError, ValueError):
                health = {}
            owned.append([] if health.get("rebalancing") else sorted(health.get("partitions") or []))
        if len(owned) == 2 and all(owned) and sum(map(len, owned)) == PARTITIONS:
            break
        time.sleep(0.5)
    return owned


def test_follow_keeps_every_worker_running_until_sigterm_stops_them_all(broker: str, topic_prefix: str, tmp_path):
    asyncio.run(create_topics(broker, topic_prefix, PARTITIONS, 1))
    lines = with_pushers(history(seed=27, accounts=2, agents=1), PARTITIONS)
    produce(broker, names_of(topic_prefix)[EVENTS], lines, arrival_times(lines))
    tag = uuid.uuid4().hex[:8]
    args = ["replay", "run", "--broker", broker, "--prefix", topic_prefix, "--from", "beginning", "--quiet"]
    args += ["--into", "v2", "--app-id", f"v2f-{tag}", "--state-dir", str(tmp_path / "v2"), "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCMETER_")}
    cli = subprocess.Popen(
        [sys.executable, "-m", "processor.cli", *args, "--follow", "--give-up-after", "150s", *WORKER_FLAGS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    printed: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [printed.put(line) for line in cli.stdout or ()], daemon=True).start()
    try:
        deadline, out = time.monotonic() + 150, ""
        while "following the live events topic" not in out:
            assert time.monotonic() < deadline and cli.poll() is None, out + (cli.stderr.read() if cli.stderr else "")
            try:
                out += printed.get(timeout=1.0)
            except queue.Empty:
                pass
        assert "(Ctrl-C stops all 2 workers)" in out
        workers = [int(pid) for pid in Path(f"/proc/{cli.pid}/task/{cli.pid}/children").read_text().split()]
        ports = [int(port) for port in re.findall(r"worker \d: web port (\d+)", out)]
        owned = split_between(ports, deadline=time.monotonic() + 90)  # still running: --follow keeps both
        assert len(workers) == 2 and cli.poll() is None
        assert all(owned) and sorted(owned[0] + owned[1]) == list(range(PARTITIONS)), owned
        assert all(Path(f"/proc/{pid}").exists() for pid in workers)
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=90) == 128 + signal.SIGTERM
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # stopped and reaped, both
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
