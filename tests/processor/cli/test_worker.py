"""`ccmeter publish`'s record keys: any line gets a key or none, never an exception (the worker judges the line)."""

from __future__ import annotations

import pytest

from processor.cli.worker import record_key


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (b'{"account_id": "acme"}', b"acme"),
        (b'{"account_id": "caf\\u00e9"}', "café".encode()),
        (b"[" * 10_000 + b"]" * 10_000, None),  # nested deeper than json can read
        (b'{"account_id": "\\ud800"}', None),  # a lone surrogate has no UTF-8 form
        (b'{"account_id": 7}', None),
        (b"not json", None),
        (b"\xff\xfe", None),
        (b"[1, 2]", None),
    ],
)
def test_record_key_never_raises(line: bytes, key: bytes | None) -> None:
    assert record_key(line) == key


def test_a_worker_without_a_broker_says_so_in_one_line_and_exits_1(tmp_path) -> None:
    """No aiokafka retry noise on stderr, only the error; a runtime failure, not a usage error."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "processor.cli", "worker", "--broker", "127.0.0.1:1", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    expected = "ccmeter: error: cannot prepare topics on 127.0.0.1:1: broker not reachable"
    assert done.stderr.strip().splitlines() == [expected]


def test_a_bad_worker_setting_is_a_usage_error(tmp_path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "processor.cli", "worker", "--batch-size", "0", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("argument --batch-size: '0' must be at least 1")
