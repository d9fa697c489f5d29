"""`ccmeter console` as a user starts it: help, and one clear line for a bad snapshot path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processor.console.conftest import ccmeter


def test_help_explains_the_console() -> None:
    done = ccmeter("console", "--help")
    assert done.returncode == 0, done.stderr
    for words in ("--snapshot FILE", "--bind", "default 127.0.0.1", "default 8088", "/openapi.json"):
        assert words in done.stdout


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.duckdb", None, "no such snapshot file"),
        ("text.duckdb", b"not a database\n", "not a DuckDB database"),
    ],
)
def test_a_bad_snapshot_path_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, name: str, content: bytes | None, words: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    done = ccmeter("console", "--snapshot", str(path), "--port", "0")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ccmeter: error: ") and words in lines[0], done.stderr
    assert str(path) in lines[0] and "Traceback" not in done.stderr


def test_a_port_in_use_is_one_line(console_snapshot: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = ccmeter("console", "--snapshot", str(console_snapshot), "--port", str(port))
    assert done.returncode == 1  # a runtime failure: the command is right, the port is busy
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], done.stderr
