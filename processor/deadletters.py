"""The dead-letter record: written by the worker, read by the sink, `ccmeter deadletters` and replay.

Format 2 (Kafka Connect's convention, cf. its `__connect.errors.*` headers): the record's value is the original
value exactly as received and its key the original key; why and where from go in headers (`HEADERS`). So a dead
letter is never larger than the record the broker accepted, plus a few hundred bytes of headers. A `too_large`
letter carries neither key nor value, only the original's size and SHA-256. A null original value (a tombstone) is
a null value with the header `ccmeter.original.null`; an empty value stays an empty value.

Format 1 (before): a JSON value `{"reason", "detail", "original_base64", "topic", "partition", "offset", "line"}`
without a format header (schemas/outputs.py `DeadLetterRecord`). `read` accepts both.

A letter is a dict (`Letter`): reason, detail, topic, partition, offset, timestamp (the original's Kafka timestamp,
ms), key, original (None: a tombstone, or not carried), size (bytes of the original value; None for a tombstone),
sha256 (hex, `too_large` letters; else None), line (format 1 only), format.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

FORMAT = 2
FORMAT_HEADER = "ccmeter.dlq.format"
REASON = "ccmeter.dlq.reason"
DETAIL = "ccmeter.dlq.detail"
TOPIC = "ccmeter.dlq.topic"
PARTITION = "ccmeter.dlq.partition"
OFFSET = "ccmeter.dlq.offset"
TIMESTAMP = "ccmeter.dlq.timestamp"
SIZE = "ccmeter.dlq.size"
SHA256 = "ccmeter.dlq.sha256"
ORIGINAL_NULL = "ccmeter.original.null"
HEADERS: dict[str, str] = {
    FORMAT_HEADER: "`2` (absent: the JSON format 1)",
    REASON: "why the record was not applied, e.g. `invalid_json`, `too_late`, `too_large`",
    DETAIL: "more about the reason (at most 1000 characters)",
    TOPIC: "topic of the original record",
    PARTITION: "its partition (decimal)",
    OFFSET: "its offset (decimal)",
    TIMESTAMP: "its Kafka timestamp, ms since the epoch (decimal; absent when unknown)",
    SIZE: "bytes of the original value (decimal; absent for a null value)",
    SHA256: "SHA-256 of the original value, hex (`too_large` letters only: their value is not carried)",
    ORIGINAL_NULL: "`true` when the original value was null (a tombstone); the letter's value is null too",
}
DETAIL_LIMIT = 1000
Header = tuple[str, bytes]


class Letter(TypedDict):
    """One dead letter, whatever its format."""

    reason: str
    detail: str
    topic: str | None
    partition: int | None
    offset: int | None
    timestamp: int | None
    key: bytes | None
    original: bytes | None
    size: int | None
    sha256: str | None
    line: int | None
    format: int


class BadLetter(ValueError):
    """A dead-letter-topic record in neither format."""


def encode(letter: Mapping[str, Any]) -> tuple[bytes | None, bytes | None, list[Header]]:
    """(key, value, headers) of the record of a letter (format 2)."""
    original = letter.get("original")
    headers: list[Header] = [(FORMAT_HEADER, str(FORMAT).encode()), (REASON, str(letter["reason"]).encode())]
    headers.append((DETAIL, str(letter.get("detail") or "")[:DETAIL_LIMIT].encode("utf-8", "replace")))
    for name, field in ((TOPIC, "topic"), (PARTITION, "partition"), (OFFSET, "offset"), (TIMESTAMP, "timestamp")):
        value = letter.get(field)
        if value is not None:
            headers.append((name, str(value).encode("utf-8", "replace")))
    size, digest = letter.get("size"), letter.get("sha256")
    if digest is not None:  # by reference: nothing of the original is carried
        headers += [(SIZE, str(size).encode()), (SHA256, str(digest).encode())]
        return None, None, headers
    if original is None:
        headers.append((ORIGINAL_NULL, b"true"))
    else:
        headers.append((SIZE, str(len(original)).encode()))
    return letter.get("key"), original, headers


def read(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]] = ()) -> Letter:
    """The letter of a dead-letter-topic record of either format; raises BadLetter for anything else."""
    found = {name: raw for name, raw in headers or ()}
    if FORMAT_HEADER not in found:
        return _read_json(value)
    text = {name: (raw or b"").decode("utf-8", "replace") for name, raw in found.items()}
    if text[FORMAT_HEADER] != str(FORMAT):
        raise BadLetter(f"unknown dead-letter format {text[FORMAT_HEADER]!r}")
    if not text.get(REASON):
        raise BadLetter("no reason header")
    digest = text.get(SHA256)
    size = _number(text, SIZE)
    if digest is None and value is not None:
        size = len(value)
    return {
        "reason": text[REASON],
        "detail": text.get(DETAIL, ""),
        "topic": text.get(TOPIC),
        "partition": _number(text, PARTITION),
        "offset": _number(text, OFFSET),
        "timestamp": _number(text, TIMESTAMP),
        "key": key,
        "original": None if digest is not None else value,
        "size": size,
        "sha256": digest,
        "line": None,
        "format": FORMAT,
    }


def _number(text: dict[str, str], name: str) -> int | None:
    raw = text.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadLetter(f"header {name} is not a number: {raw!r}") from None


def _read_json(value: bytes | None) -> Letter:
    """A format 1 letter (JSON with `original_base64`)."""
    try:
        record = json.loads(value or b"")
    except ValueError as exc:
        raise BadLetter("neither a format header nor JSON") from exc
    if not isinstance(record, dict) or not record.get("reason"):
        raise BadLetter("a JSON dead letter needs a reason")
    try:
        original = base64.b64decode(record.get("original_base64") or "", validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadLetter("original_base64 is not base64") from exc
    numbers = {}
    for name in ("partition", "offset", "line"):
        number = record.get(name)
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
            raise BadLetter(f"{name} is not a number: {number!r}")
        numbers[name] = number
    return {
        "reason": str(record["reason"]),
        "detail": str(record.get("detail") or ""),
        "topic": record.get("topic"),
        "partition": numbers["partition"],
        "offset": numbers["offset"],
        "timestamp": None,
        "key": None,
        "original": original,
        "size": len(original),
        "sha256": None,
        "line": numbers["line"],
        "format": 1,
    }
