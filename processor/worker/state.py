"""What the worker keeps in its state store and changelog (key and value bytes): per account a small entry plus its
parts, and one entry per partition.

- account entry, key `account_id` (UTF-8): msgpack `[2, partition, applied_offset, wake_at, alert_state, header,
  [generation, deltas, base_bytes, delta_bytes]]` where `applied_offset` is the last events-topic offset applied to
  this account, `wake_at` the event time at which the account has work again (`NEVER` when idle), `alert_state` the
  `AlertTracker` state and `header` `AccountFold.header_state()`; the fold's presences and reorder buffer are in the
  account's parts of that `generation`: the base (index 0, `AccountFold.base_state()`) and `deltas` deltas (index
  1.., `AccountFold.take_delta()`), applied in order (processor/worker/accounts.py). Version 1 entries
  (`[1, partition, applied_offset, wake_at, alert_state, fold]`, `fold` the whole `AccountFold.to_bytes()` blob) are
  still read;
- part entry, key `PART_PREFIX + generation (4 bytes) + index (4 bytes) + account_id`: msgpack `[2, partition,
  payload]`. `PART_PREFIX` (0xFF) never starts a UTF-8 text, so no account key is ever a part key;
- clock entry, key `__clock__:{partition}`: msgpack `[1, partition, watermark, applied_offset, counts]` where
  `applied_offset` is the last offset of that partition whose batch was fully applied and `counts` what the
  partition saw since it began (`applied`, `orphan`, `duplicate`, `duplicate_conflict`, `dead_letter:<reason>`;
  entries written before counts were kept have none).

The header (first four items) can be read without unpacking the fold blob (`account_header`).
"""

from __future__ import annotations

import struct
import threading
from typing import Any, NamedTuple

import msgpack
import msgspec

from processor.errors import StateFormatError

ENTRY_VERSION = 1  # the clock entry; version 1 account entries hold the whole fold
PARTS_ENTRY_VERSION = 2  # account entries with their fold in parts, and part entries
CLOCK_PREFIX = b"__clock__:"
PART_PREFIX = b"\xff"
_PART_IDS = struct.Struct(">II")
_ENCODER = msgspec.msgpack.Encoder()


class _Buffer(threading.local):
    """One encoding buffer per thread."""

    def __init__(self) -> None:
        self.data = bytearray(4096)


_BUFFER = _Buffer()


def pack(value: Any) -> bytes:
    """The msgpack bytes of `value`: the same bytes as `msgpack.packb(value, use_bin_type=True)` for the state's
    values (None, bools, ints, floats, texts, bytes, lists, tuples, dicts; the smallest format of each, floats as
    float64), written by msgspec at about twice the speed in the worker. Encoded into a reused buffer and copied out
    at its exact size: with msgspec's own `encode` the same entries took about 130 MiB more peak RSS at 20,000
    accounts (docs/performance.md)."""
    data = _BUFFER.data
    _ENCODER.encode_into(value, data)
    return bytes(data)


class AccountEntry(NamedTuple):
    """A decoded account entry."""

    partition: int
    applied: int
    wake: int
    alert_state: list[Any] | None
    fold: bytes


class PartsEntry(NamedTuple):
    """A decoded account entry whose fold is in parts (version 2)."""

    partition: int
    applied: int
    wake: int
    alert_state: list[Any] | None
    header: list[Any]
    generation: int
    deltas: int
    base_bytes: int
    delta_bytes: int


class ClockEntry(NamedTuple):
    """A decoded partition clock entry."""

    partition: int
    watermark: int | None
    applied: int
    counts: dict[str, int] = {}  # noqa: RUF012 - never mutated: the partition keeps its own Counter


def account_key(account_id: str) -> bytes:
    """Table key of an account."""
    return account_id.encode()


def clock_key(partition: int) -> bytes:
    """Table key of a partition's clock."""
    return CLOCK_PREFIX + str(partition).encode()


def is_clock_key(key: bytes) -> bool:
    """True for `__clock__:{partition}` keys."""
    return key.startswith(CLOCK_PREFIX)


def part_key(account_id: str, generation: int, index: int) -> bytes:
    """Table key of one part (index 0: the base, 1..: deltas) of an account's fold."""
    return PART_PREFIX + _PART_IDS.pack(generation, index) + account_id.encode()


def is_part_key(key: bytes) -> bool:
    """True for the keys of fold parts."""
    return key.startswith(PART_PREFIX)


def is_account_key(key: bytes) -> bool:
    """True for account entry keys (neither a clock nor a part)."""
    return not key.startswith(PART_PREFIX) and not key.startswith(CLOCK_PREFIX)


def encode_account(entry: AccountEntry | PartsEntry) -> bytes:
    """Value bytes of an account entry (version 1 for an `AccountEntry`, 2 for a `PartsEntry`)."""
    if isinstance(entry, PartsEntry):
        *head, generation, deltas, base_bytes, delta_bytes = entry
        parts = [generation, deltas, base_bytes, delta_bytes]
        return pack([PARTS_ENTRY_VERSION, *head, parts])
    return pack([ENTRY_VERSION, *entry])


def decode_account(value: bytes) -> AccountEntry | PartsEntry:
    """Inverse of `encode_account`."""
    items = msgpack.unpackb(value, raw=False, strict_map_key=False, use_list=False)
    if items and items[0] == PARTS_ENTRY_VERSION:
        return PartsEntry(*items[1:6], *items[6])
    _check_version(items[0])
    return AccountEntry(*items[1:6])


def encode_part(partition: int, payload: list[Any]) -> bytes:
    """Value bytes of a fold part."""
    return pack([PARTS_ENTRY_VERSION, partition, payload])


def decode_part(value: bytes) -> Any:
    """The payload of a fold part (lists read as tuples: buffered records are tuples)."""
    items = msgpack.unpackb(value, raw=False, use_list=False)
    if items[0] != PARTS_ENTRY_VERSION:
        raise StateFormatError(f"unsupported fold part version {items[0]!r}")
    return items[2]


def account_header(value: bytes) -> tuple[int, int, int]:
    """`(partition, applied_offset, wake_at)` of an account entry, without unpacking the fold."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(value)
    unpacker.read_array_header()
    version = unpacker.unpack()
    if version != PARTS_ENTRY_VERSION:
        _check_version(version)
    return unpacker.unpack(), unpacker.unpack(), unpacker.unpack()


def entry_partition(key: bytes, value: bytes) -> int:
    """The events partition of any entry (account, part or clock)."""
    if is_clock_key(key):
        return decode_clock(value).partition
    if is_part_key(key):
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(value)
        unpacker.read_array_header()
        unpacker.unpack()
        return unpacker.unpack()
    return account_header(value)[0]


def encode_clock(entry: ClockEntry) -> bytes:
    """Value bytes of a clock entry."""
    return pack([ENTRY_VERSION, *entry])


def decode_clock(value: bytes) -> ClockEntry:
    """Inverse of `encode_clock`."""
    items = msgpack.unpackb(value, raw=False)
    _check_version(items[0])
    return ClockEntry(*items[1:5])


def _check_version(version: Any) -> None:
    if version != ENTRY_VERSION:
        raise StateFormatError(f"unsupported state entry version {version!r}")


class DictStore:
    """The worker's state store over a dict: what its changelog-backed store holds (None in `update` deletes).
    For rebuilds (replay seed), benchmarks and tests that drive the partition driver without Kafka."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        """The entry of `key`, or None."""
        return self.data.get(key)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every entry."""
        return list(self.data.items())

    def update(self, entries: dict[bytes, bytes | None]) -> None:
        """Apply a batch's entries (None: delete)."""
        for key, value in entries.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
