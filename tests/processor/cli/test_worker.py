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
