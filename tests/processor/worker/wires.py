"""Events-topic records for the worker's property tests, from the contract suite's shrinking histories
(tests/contract/strategies.py `histories`): the history's events keyed by account, malformed lines at drawn
positions and one event far too late, spread over the partitions by key. Everything shrinks with the history.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from processor.worker.partition import Raw
from schemas.events import Rejection, decode, format_ms
from tests.contract.implementations import History
from tests.contract.strategies import histories, utc

TOPIC = "t.events"
PARTITIONS = 3
MINUTE = 60_000
DAY = 86_400_000
T0 = utc(2026, 11, 2)  # a Monday, the first instant of most histories
# Record timestamps: every record was published long after the latest event any history has (no future skew).
ARRIVAL_MS = T0 + 30 * DAY
# A line of each kind of rejection, with its reason.
MALFORMED = {b"not json": "invalid_json", b'{"type": "nope"}': "unknown_type", b"\xff\xfe": "invalid_utf8",
             b"[1, 2]": "not_an_object"}  # fmt: skip


def partition_of(key: bytes | None) -> int:
    """The partition of a record key (a stand-in for Kafka's partitioner)."""
    return zlib.crc32(key or b"") % PARTITIONS


def raws(events: Iterable[dict[str, Any]]) -> list[Raw]:
    """The events as one partition's records: offsets from 0, keyed by account, published at `ARRIVAL_MS`."""
    return [(i, e["account_id"].encode(), json.dumps(e).encode(), ARRIVAL_MS) for i, e in enumerate(events)]


def event_times(records: Iterable[Raw]) -> list[int | None]:
    """Each record's event time (None: not a valid event)."""
    return [None if isinstance(e := decode(value or b""), Rejection) else e.at_ms for _, _, value, _ in records]


def batch_end(times: list[int | None], start: int, minutes: int, limit: int) -> int:
    """Where a batch from `start` ends: it holds the records whose events lie less than `minutes` after its first
    event (malformed lines go along), at least one, at most `limit`. A cut by event time rather than by count stays
    where it was when the shrinker drops other events. `times`: from `event_times`."""
    first = None
    end = start
    while end < len(times) and end - start < limit:
        at = times[end]
        if at is not None:
            if first is None:
                first = at
            elif at >= first + minutes * MINUTE:
                break
        end += 1
    return max(end, start + 1)


@dataclass(frozen=True)
class Wire:
    """(key, value) records of the events topic in arrival order."""

    records: tuple[tuple[bytes, bytes], ...]

    def parts(self) -> dict[int, list[Raw]]:
        """Each partition's records (offset, key, value, timestamp), offsets from 0."""
        parts: dict[int, list[Raw]] = defaultdict(list)
        for key, value in self.records:
            part = parts[partition_of(key)]
            part.append((len(part), key, value, ARRIVAL_MS))
        return dict(parts)


@st.composite
def wires(draw: st.DrawFn, max_accounts: int = 5) -> Wire:
    """A history of up to `max_accounts` accounts (partitions by key), each malformed line of `MALFORMED` at a drawn
    position under a drawn account's key, and at the end an event of a drawn account a day before the history's
    first event: too late, since its partition's watermark has passed the history's first event."""
    history: History = draw(histories(max_accounts=max_accounts))
    accounts = st.sampled_from([account.encode() for account in history.accounts()])
    records = [(event["account_id"].encode(), json.dumps(event).encode()) for event in history.events]
    for line in MALFORMED:
        records.insert(draw(st.integers(0, len(records))), (draw(accounts), line))
    first = min(event.at_ms for event in history.decoded())
    key = draw(accounts)
    late = {"event_id": "late-1", "type": "api.request", "account_id": key.decode(), "user_id": "u1",
            "occurred_at": format_ms(first - DAY)}  # fmt: skip
    records.append((key, json.dumps(late).encode()))
    return Wire(tuple(records))
