"""The dead-letter format (processor/deadletters.py): headers round-trip, by-reference letters, the old JSON format."""

from __future__ import annotations

import base64
import json

import pytest

from processor import deadletters
from processor.worker import records as rec


def test_a_letter_round_trips_through_key_value_and_headers() -> None:
    original = b"\x00not json \xff"
    letter = rec.dead_letter("invalid_utf8", "bad byte", original, "ccmeter.events", 3, 42, key=b"acct", timestamp=7)
    key, value, headers = deadletters.encode(letter)
    assert (key, value) == (b"acct", original)  # the original record, exactly as received
    named = dict(headers)
    assert named[deadletters.FORMAT_HEADER] == b"2" and named[deadletters.REASON] == b"invalid_utf8"
    assert named[deadletters.TOPIC] == b"ccmeter.events" and named[deadletters.PARTITION] == b"3"
    assert named[deadletters.OFFSET] == b"42" and named[deadletters.TIMESTAMP] == b"7"
    assert all(isinstance(name, str) and isinstance(raw, bytes) for name, raw in headers)
    assert deadletters.read(key, value, headers) == letter


def test_a_too_large_letter_carries_only_size_and_digest() -> None:
    original = b"x" * 5000
    letter = rec.too_large("5000 bytes", original, "t", 0, 9, timestamp=None)
    key, value, headers = deadletters.encode(letter)
    assert key is None and value is None and deadletters.TIMESTAMP not in dict(headers)
    back = deadletters.read(key, value, headers)
    assert back == letter and back["original"] is None and back["size"] == 5000
    assert len(back["sha256"] or "") == 64


def test_a_long_detail_is_cut() -> None:
    letter = rec.dead_letter("invalid_json", "d" * 5000, b"{", "t", 0, 0)
    _, _, headers = deadletters.encode(letter)
    assert len(dict(headers)[deadletters.DETAIL]) == deadletters.DETAIL_LIMIT


def test_the_old_json_format_is_still_read() -> None:
    old = {"reason": "too_late", "detail": "late", "original_base64": base64.b64encode(b"{}").decode(),
           "topic": "t", "partition": 1, "offset": 5, "line": None}  # fmt: skip
    letter = deadletters.read(None, json.dumps(old).encode(), [])
    assert letter["format"] == 1 and letter["original"] == b"{}" and letter["size"] == 2
    assert (letter["reason"], letter["topic"], letter["partition"], letter["offset"]) == ("too_late", "t", 1, 5)


@pytest.mark.parametrize(
    ("value", "headers", "message"),
    [
        (b"not json", [], "neither a format header nor JSON"),
        (b'{"detail": "x"}', [], "needs a reason"),
        (b'{"reason": "x", "original_base64": "%%%"}', [], "not base64"),
        (b"", [(deadletters.FORMAT_HEADER, b"3"), (deadletters.REASON, b"x")], "unknown dead-letter format"),
        (b"", [(deadletters.FORMAT_HEADER, b"2")], "no reason header"),
        (b"", [(deadletters.FORMAT_HEADER, b"2"), (deadletters.REASON, b"x"), (deadletters.OFFSET, b"z")], "number"),
    ],
)
def test_other_records_are_bad_letters(value: bytes, headers: list, message: str) -> None:
    with pytest.raises(deadletters.BadLetter, match=message):
        deadletters.read(None, value, headers)
