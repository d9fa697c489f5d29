"""`ccmeter alerts deliver` on a real broker, against a real local HTTP receiver that fails now and then.

The receiver dedupes by `Idempotency-Key` like a real one would; the deliverer runs as a subprocess, is SIGKILLed
mid-way and restarted, and at the end every alert and its resolution were accepted exactly once, signed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from processor.topics import ALERTS, create_topics, topic_names

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]
ROOT = Path(__file__).resolve().parents[3]
SECRET = "test-secret-7f3a"
POST_TIMEOUT = 1.0  # --post-timeout of the deliverer; the receiver's slow answers take longer


def alert(n: int, state: str, alert_id: str | None = None) -> dict[str, Any]:
    return {
        "alert_id": alert_id or f"{n:016x}",
        "account_id": f"acct-{n % 6}",
        "kind": "over_licenses",
        "state": state,
        "at": f"2026-11-02T09:{n % 60:02d}:00.000Z",
        "usage": 11,
        "licenses": 10,
        "overage_allowance": 2,
        "message": "",
    }


class Receiver:
    """A webhook receiver on 127.0.0.1 that dedupes by idempotency key and misbehaves on a fixed schedule:
    every 7th request from the 3rd a 503, from the 6th a dropped connection, every 19th from the 10th a slow answer
    (accepted, but answered after the client's timeout). Alerts whose id starts with `poison` get a 400."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.accepted: dict[str, bytes] = {}  # idempotency key -> body, first acceptance
        self.bodies: dict[str, set[bytes]] = {}  # every body seen per key
        self.ok_answers: Counter[str] = Counter()  # 2xx answered in time, per key
        self.bad_signatures = 0
        self.failures: Counter[str] = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts?token=abc"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, extra = receiver.receive(self.headers, body)
                if status == 0:  # drop the connection without an answer
                    self.close_connection = True
                    return
                if status < 0:  # slow: answer after the client gave up
                    time.sleep(POST_TIMEOUT + 0.5)
                    status = 200
                answer = b"ok" if status == 200 else b"try again" if status == 503 else b"no such alert kind"
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def receive(self, headers: Any, body: bytes) -> tuple[int, dict[str, str]]:
        """The answer to one request: (status, headers); status 0 drops the connection, -1 answers too late."""
        key = headers.get("Idempotency-Key", "")
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        with self.lock:
            self.requests += 1
            n = self.requests
            self.bodies.setdefault(key, set()).add(body)
            if not hmac.compare_digest(expected, headers.get("X-Ccmeter-Signature", "")):
                self.bad_signatures += 1
                return 401, {}
            if json.loads(body)["alert_id"].startswith("poison"):
                return 400, {}
            if n % 7 == 3:
                self.failures["503"] += 1
                return 503, {"Retry-After": "0"}
            if n % 7 == 6:
                self.failures["drop"] += 1
                return 0, {}
            self.accepted.setdefault(key, body)
            if n % 19 == 10:
                self.failures["slow"] += 1
                return -1, {}
            self.ok_answers[key] += 1
            return 200, {}

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def produce(broker: str, topic: str, values: list[bytes | None]) -> None:
    """Send `values` to `topic`, each keyed by its account (tombstones to acct-0), in order."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        try:
            for value in values:
                account = json.loads(value)["account_id"] if value and value.startswith(b"{") else "acct-0"
                await producer.send_and_wait(topic, value, key=account.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def encode(records: list[dict[str, Any]]) -> list[bytes | None]:
    return [json.dumps(record).encode() for record in records]


def start(broker: str, prefix: str, url: str, log: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    args = [sys.executable, "-m", "processor.cli", "alerts", "deliver", "--webhook", url, "--broker", broker]
    args += ["--prefix", prefix, "--post-timeout", f"{POST_TIMEOUT}s", "--retry-first", "50ms", "--retry-max", "300ms"]
    environment = {**os.environ, "CCMETER_WEBHOOK_SECRET": SECRET, **(env or {})}
    with log.open("ab") as handle:
        return subprocess.Popen([*args, *extra], stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=environment)


def wait_until(check: Callable[[], bool], proc: Any, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"deliverer exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s:\n{log.read_text()}")
        time.sleep(0.05)


def finish(proc: Any, log: Path, timeout: float = 40.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"deliverer did not finish within {timeout}s:\n{log.read_text()}")


def assert_clean(text: str) -> None:
    """Only the deliverer's own lines: no tracebacks, no library warnings, no secret, no URL token."""
    assert "Traceback" not in text and SECRET not in text and "token" not in text, text
    for line in text.splitlines():
        assert line.startswith(("alerts: ", "ccmeter alerts: ")), line


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_every_alert_and_resolution_accepted_once_across_a_kill_and_a_failing_receiver(
    broker: str, topic_prefix: str, tmp_path: Path, processes: list[Any]
) -> None:
    asyncio.run(create_topics(broker, topic_prefix, partitions=3))
    topic = topic_names(topic_prefix)[ALERTS]
    early = [alert(n, "raised") for n in range(30)] + [alert(n, "resolved") for n in range(15)]
    poison = [alert(0, "raised", alert_id="poison-000000001")]
    # the worker re-emits records after a crash: copies of some early records, and a tombstone and garbage
    produce(broker, topic, [*encode(early[:20]), *encode(poison), None, b"not json", *encode(early[20:] + early[:5])])
    late = [alert(n, "resolved") for n in range(15, 30)]
    log = tmp_path / "deliver.log"
    with Receiver() as receiver:
        first = start(broker, topic_prefix, receiver.url, log)
        processes.append(first)
        wait_until(lambda: len(receiver.accepted) >= 20, first, log, timeout=40)
        first.send_signal(signal.SIGKILL)
        first.wait()
        produce(broker, topic, encode(late + late[:5]))  # more alerts, again with re-emitted copies

        first_output = log.read_text()  # the killed run may already have declared the poison alert dead
        log.write_text("")
        second = start(broker, topic_prefix, receiver.url, log, "--once")
        processes.append(second)
        assert finish(second, log) == 0, log.read_text()

    output = log.read_text()
    expected = {f"{r['alert_id']}:{r['state']}" for r in early + late}
    assert set(receiver.accepted) == expected  # nothing lost; the poison alert is not accepted
    assert receiver.bad_signatures == 0
    assert all(len(bodies) == 1 for bodies in receiver.bodies.values())  # every attempt carried the same body
    for key, body in receiver.accepted.items():
        record = json.loads(body)
        assert f"{record['alert_id']}:{record['state']}" == key and record["type"] == f"alert.{record['state']}"
    assert set(receiver.failures) == {"503", "drop", "slow"}, receiver.failures  # the receiver did fail
    # the restarted run POSTed each late alert once (its re-emitted copies were dropped), retrying failures only
    assert all(receiver.ok_answers[f"{r['alert_id']}:resolved"] == 1 for r in late)
    dead_line = "poison-000000001:raised rejected by the receiver (HTTP 400: no such alert kind): dead"
    assert dead_line in first_output + output, first_output + output
    summary = re.search(r"ccmeter alerts: (\d+) delivered, (\d+) dead .*?, (\d+) re-emitted records dropped", output)
    assert summary and int(summary.group(3)) >= 5, output
    assert_clean(output)


def test_down_receiver_gives_up_then_a_later_run_resumes_and_sigterm_stops_cleanly(
    broker: str, topic_prefix: str, tmp_path: Path, processes: list[Any]
) -> None:
    asyncio.run(create_topics(broker, topic_prefix, partitions=2))
    topic = topic_names(topic_prefix)[ALERTS]
    records = [alert(n, state) for n in range(6) for state in ("raised", "resolved")]
    produce(broker, topic, encode(records))
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    secret = ["--secret-file", str(secret_file), "--group", f"g-{topic_prefix}"]
    log = tmp_path / "deliver.log"
    with Receiver() as receiver:
        url = receiver.url
    # nobody listens at `url` any more: the run gives up and commits nothing
    down = start(broker, topic_prefix, url, log, "--once", "--give-up-after", "2s", *secret, env={"X": ""})
    processes.append(down)
    assert finish(down, log) == 1
    lines = log.read_text().splitlines()
    gave_up = r"ccmeter alerts: receiver http://127\.0\.0\.1:\d+/hooks/alerts failing for \d+s .*gave up.*"
    assert re.fullmatch(gave_up, lines[-1]), lines
    assert_clean(log.read_text())

    with Receiver() as receiver:
        url = receiver.url
        log.write_text("")
        again = start(broker, topic_prefix, url, log, "--once", *secret)
        processes.append(again)
        assert finish(again, log) == 0, log.read_text()
        assert set(receiver.accepted) == {f"{r['alert_id']}:{r['state']}" for r in records}

        # a following run starts at the committed offsets: only the new alert is POSTed, then SIGTERM stops it
        produce(broker, topic, encode([alert(99, "raised")]))
        log.write_text("")
        follow = start(broker, topic_prefix, url, log, *secret)
        processes.append(follow)
        wait_until(lambda: f"{99:016x}:raised" in receiver.accepted, follow, log, timeout=30)
        wait_until(lambda: "delivered" in log.read_text(), follow, log, timeout=10)
        follow.send_signal(signal.SIGTERM)
        assert finish(follow, log, timeout=15) == 0
    output = log.read_text()
    assert "stopping after the POST in flight" in output
    assert re.search(r"ccmeter alerts: 1 delivered, 0 dead", output), output
    assert sum(receiver.ok_answers.values()) == len(records) + 1
    assert_clean(output)
