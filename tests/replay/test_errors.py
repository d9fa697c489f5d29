"""Operational errors of the replay and topics commands: one clean line on standard error, exit 1 for runtime
failures and 2 for usage errors, no tracebacks and no library logging (the console script, as a user runs it)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.replay.support import event


def closed_port() -> str:
    """A local address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def ccmeter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processor.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == code, shown
    assert len(lines) == 1 and lines[0].startswith("ccmeter: error: "), shown
    for fragment in fragments:
        assert fragment in lines[0], shown
    for noise in ("Traceback", "Unable connect", "Unclosed", "KafkaConnectionError("):
        assert noise not in result.stderr, shown


@pytest.mark.parametrize(
    "command",
    [
        ["replay", "archive", "--from", "2026-11-01", "--to", "2026-11-02", "--out", "{tmp}/a.parquet", "--quiet"],
        ["replay", "archive", "--from", "2026-11-01", "--to", "2026-11-02", "--out", "{tmp}/a.parquet", "--by",
         "event-time", "--quiet"],
        ["replay", "plan", "--from", "beginning"],
        ["replay", "plan", "--from", "beginning", "--format", "json"],
        ["replay", "publish", "{tmp}/events.jsonl", "--quiet"],
        ["topics", "list"],
        ["topics", "delete", "--prefix", "ccmeter.v1."],
    ],
    ids=["archive", "archive-event-time", "plan", "plan-json", "publish", "topics-list", "topics-delete"],
)  # fmt: skip
def test_an_unreachable_broker_is_one_line_and_exit_1(command: list[str], tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_bytes(event("e1", 1_793_610_000_000) + b"\n")
    broker = closed_port()
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    result = ccmeter(*args, "--broker", broker, "--timeout", "10s") if args[0] == "topics" else None
    if result is None:
        result = ccmeter(*args, "--broker", broker)
    assert_one_line(result, 1, broker)
    assert not (tmp_path / "a.parquet").exists()


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (["replay", "archive", "--from", "2026-11-02", "--to", "2026-11-01", "--out", "a.parquet"], "--to must be"),
        (["replay", "archive", "--from", "2026-11-01", "--to", "2026-11-02", "--out", "a.csv"], ".parquet"),
        (["replay", "plan", "--from", "yesterday"], "--from must be a timestamp"),
        (["replay", "verify", "--snapshot", "/nonexistent/usage.duckdb"], "no such snapshot file"),
        (["topics", "delete", "--prefix", "bad prefix!"], "--prefix"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(command: list[str], fragment: str) -> None:
    assert_one_line(ccmeter(*command, *(["--broker", closed_port()] if command[0] == "topics" else [])), 2, fragment)


def test_unknown_format_is_a_usage_error() -> None:
    result = ccmeter("replay", "plan", "--from", "beginning", "--format", "xml")
    assert result.returncode == 2 and "invalid choice: 'xml'" in result.stderr, result.stderr
