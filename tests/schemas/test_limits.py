"""Input limits of `schemas.events.decode`: record size first, then UTF-8, then JSON nesting depth."""

from __future__ import annotations

import json

import pytest

from schemas.events import MAX_JSON_DEPTH, MAX_RECORD_BYTES, Rejection, decode, too_deep

GOOD = {"event_id": "e1", "type": "api.request", "account_id": "a", "user_id": "u",
        "occurred_at": "2026-11-02T08:00:00Z"}  # fmt: skip


def reason(raw: bytes, max_bytes: int = MAX_RECORD_BYTES) -> str | None:
    decoded = decode(raw, max_bytes)
    return decoded.reason if isinstance(decoded, Rejection) else None


def test_size_is_checked_before_anything_else() -> None:
    raw = json.dumps(GOOD).encode()
    assert reason(raw, len(raw)) is None and reason(raw, len(raw) - 1) == "too_large"
    assert reason(b"\xff" * 50, 49) == "too_large" and reason(b"\xff" * 50, 50) == "invalid_utf8"
    assert decode(b"x" * 5_000_000).detail == f"5000000 bytes, more than the limit of {MAX_RECORD_BYTES}"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), True),
        (b"{" * 10_000, True),  # not JSON either: too_large wins
        (b'["' + b"[" * 100 + b'"]', False),  # brackets inside a string do not count
        (b'["\\"' + b"[" * 100 + b'"]', False),  # nor after an escaped quote
        (b'["\\\\"' + b"[" * 100 + b"]", True),  # an escaped backslash ends the string
        (b'"open' + b"[" * 100, False),  # an unclosed string runs to the end
        (b"]" * 10 + b"[" * (MAX_JSON_DEPTH + 1), False),  # a running sum: the parser stops at the first "]"
        (b"[]" * 10 + b"[" * (MAX_JSON_DEPTH + 1), True),
        (b"[]" * 1000, False),
    ],
)
def test_nesting_depth(raw: bytes, deep: bool) -> None:
    assert too_deep(raw) is deep
    assert (reason(raw) == "too_large") is deep


def test_valid_events_at_the_depth_limit_decode() -> None:
    nested: object = 1
    for _ in range(MAX_JSON_DEPTH - 1):  # the event object itself is one level
        nested = [nested]
    assert reason(json.dumps({**GOOD, "extra": nested}).encode()) is None
    assert reason(json.dumps({**GOOD, "extra": [nested]}).encode()) == "too_large"


def test_ids_longer_than_spec_allows_are_rejected() -> None:
    assert reason(json.dumps({**GOOD, "account_id": "a" * 128}).encode()) is None
    assert reason(json.dumps({**GOOD, "account_id": "a" * 129}).encode()) == "invalid_field:account_id"
    assert reason(json.dumps({**GOOD, "user_id": "é" * 129}).encode()) == "invalid_field:user_id"
