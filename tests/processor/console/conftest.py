"""Fixtures of the console tests: a snapshot built from a simulated history without Kafka, and `ccmeter console`
serving it (a real process on a free loopback port)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import build_snapshot
from tests.processor.snapshots.streams import build_streams, feed, history_lines

CCMETER = [sys.executable, "-m", "processor.cli"]
START_TIMEOUT_S = 120


def ccmeter(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `ccmeter` (the real console script's main) and capture its output."""
    return subprocess.run([*CCMETER, *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="session")
def console_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 accounts x 4 agents x 2 days with malformed lines (dead letters), duplicates and late arrivals, plus the
    worker's outputs, written through the sink's writer (no broker) and snapshotted."""
    root = tmp_path_factory.mktemp("console")
    lines = history_lines(seed=3, malformed=0.01, duplicates=0.02, out_of_order=0.05)
    feed(SinkWriter(root / "data", "ccmeter."), build_streams(lines, "ccmeter.events"), flush_every=4000)
    return build_snapshot(root / "data", root / "usage.duckdb").path


class Console:
    """A running `ccmeter console` and what it printed."""

    def __init__(self, process: subprocess.Popen[str], url: str, output: list[str]) -> None:
        self.process, self.url, self.output = process, url, output

    def log(self) -> str:
        """What the console printed so far (for assertion messages)."""
        return "".join(self.output)[-4000:]

    def get(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of GET `path`."""
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=60) as response:
                return response.status, response.headers.get_content_type(), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get_content_type(), exc.read()

    def json(self, path: str, status: int = 200) -> dict:
        """The JSON body of GET `path`, asserting its status."""
        code, kind, body = self.get(path)
        assert code == status, f"GET {path}: {code} {body[:500]!r}\n{self.log()}"
        assert kind == "application/json", f"GET {path}: {kind}"
        return json.loads(body)


@pytest.fixture(scope="session")
def console(console_snapshot: Path) -> Iterator[Console]:
    """`ccmeter console --snapshot ... --port 0`, stopped at the end of the session."""
    command = [*CCMETER, "console", "--snapshot", str(console_snapshot), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    ready = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "serving" in line and "http://" in line:
                url.append(line.split("http://", 1)[1].split()[0])
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(START_TIMEOUT_S) and url, f"the console did not start:\n{''.join(output)}"
        yield Console(process, f"http://{url[0]}", output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
