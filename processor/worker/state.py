"""What the worker keeps in its state store and changelog (key and value bytes), one entry per account plus one per
partition.

- account entry, key `account_id` (UTF-8): msgpack `[1, partition, applied_offset, wake_at, alert_state, fold]` where
  `applied_offset` is the last events-topic offset applied to this account, `wake_at` the event time at which the
  account has work again (`NEVER` when idle), `alert_state` the `AlertTracker` state and `fold` the
  `AccountFold.to_bytes()` blob;
- clock entry, key `__clock__:{partition}`: msgpack `[1, partition, watermark, applied_offset, counts]` where
  `applied_offset` is the last offset of that partition whose batch was fully applied and `counts` what the
  partition saw since it began (`applied`, `orphan`, `duplicate`, `duplicate_conflict`, `dead_letter:<reason>`;
  entries written before counts were kept have none).

The header (first four items) can be read without unpacking the fold blob (`account_header`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

ENTRY_VERSION = 1
CLOCK_PREFIX = b"__clock__:"


class AccountEntry(NamedTuple):
    """A decoded account entry."""

    partition: int
    applied: int
    wake: int
    alert_state: list[Any] | None
    fold: bytes


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


def encode_account(entry: AccountEntry) -> bytes:
    """Value bytes of an account entry."""
    return msgpack.packb([ENTRY_VERSION, *entry], use_bin_type=True)


def decode_account(value: bytes) -> AccountEntry:
    """Inverse of `encode_account`."""
    items = msgpack.unpackb(value, raw=False, strict_map_key=False)
    _check_version(items[0])
    return AccountEntry(*items[1:6])


def account_header(value: bytes) -> tuple[int, int, int]:
    """`(partition, applied_offset, wake_at)` of an account entry, without unpacking the fold."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(value)
    unpacker.read_array_header()
    _check_version(unpacker.unpack())
    return unpacker.unpack(), unpacker.unpack(), unpacker.unpack()


def encode_clock(entry: ClockEntry) -> bytes:
    """Value bytes of a clock entry."""
    return msgpack.packb([ENTRY_VERSION, *entry], use_bin_type=True)


def decode_clock(value: bytes) -> ClockEntry:
    """Inverse of `encode_clock`."""
    items = msgpack.unpackb(value, raw=False)
    _check_version(items[0])
    return ClockEntry(*items[1:5])


def _check_version(version: Any) -> None:
    if version != ENTRY_VERSION:
        raise ValueError(f"unsupported state entry version {version!r}")
