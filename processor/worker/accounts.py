"""An account's state entries, written in proportion to what changed (issue 13).

The account entry (processor/worker/state.py) holds the small part of the fold (`AccountFold.header_state`), the
alert state and offsets; the presences and the reorder buffer are in parts of one generation: a base (the whole of
them when it was written) and deltas (what changed in each batch since: records accepted, presence rows changed).
A batch writes the account's new delta, or, once the deltas add up to more than the base (or there are
`MAX_DELTAS` of them), a new base of the next generation; so the bytes written grow with the changes, and a base's
cost is spread over at least as many bytes of deltas.

Kill safety: within a batch an account's entries go in this order through the same producer to the same changelog
partition: its new part, then the account entry naming it, then tombstones of the generation it replaced. A prefix
of them (a crash without transactions) leaves the stored account entry naming parts that are all still there; a part
written but not yet named is overwritten by the next write of the same key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processor.core.fold import AccountFold
from processor.errors import StateFormatError
from processor.worker.state import (
    AccountEntry,
    PartsEntry,
    account_key,
    decode_account,
    decode_part,
    encode_account,
    encode_part,
    part_key,
)

MAX_DELTAS = 128  # bounds the parts read when an account is loaded
MIN_BASE_BYTES = 4096  # a small base takes deltas up to this many bytes before it is rewritten

Loader = Callable[[bytes], bytes | None]


@dataclass(slots=True)
class Parts:
    """Which parts of an account's fold are stored (generation -1: none yet, e.g. a new account or one read from a
    version 1 entry; its next write is a base)."""

    generation: int = -1
    deltas: int = 0
    base_bytes: int = 0
    delta_bytes: int = 0


@dataclass(slots=True)
class Loaded:
    """An account read from its entries."""

    fold: AccountFold
    alert_state: Any
    applied: int
    wake: int
    partition: int
    parts: Parts


def load_account(raw: bytes, load: Loader) -> Loaded:
    """The account of entry `raw`, its fold rebuilt from its parts (read through `load`) or, for a version 1 entry,
    from the whole blob; the fold tracks its changes. ValueError if a named part is missing."""
    entry = decode_account(raw)
    if isinstance(entry, AccountEntry):
        fold = AccountFold.from_bytes(entry.fold)
        fold.track()
        return Loaded(fold, entry.alert_state, entry.applied, entry.wake, entry.partition, Parts())
    account_id = entry.header[1]
    parts = [_part(load, account_id, entry.generation, index) for index in range(entry.deltas + 1)]
    fold = AccountFold.from_parts(entry.header, parts[0], parts[1:])
    stored = Parts(entry.generation, entry.deltas, entry.base_bytes, entry.delta_bytes)
    return Loaded(fold, entry.alert_state, entry.applied, entry.wake, entry.partition, stored)


def _part(load: Loader, account_id: str, generation: int, index: int) -> Any:
    value = load(part_key(account_id, generation, index))
    if value is None:
        raise StateFormatError(f"account {account_id!r}: state part {generation}/{index} is missing")
    return decode_part(value)


def write_account(
    out: dict[bytes, bytes | None],
    partition: int,
    fold: AccountFold,
    parts: Parts,
    applied: int,
    wake: int,
    alert_state: Any,
) -> None:
    """Add the account's entries for this batch to `out` in the kill-safe order (module docstring); `parts` is
    updated to what they store."""
    account_id = fold.account_id
    stale: list[bytes] = []
    room = parts.deltas < MAX_DELTAS and parts.delta_bytes <= max(parts.base_bytes, MIN_BASE_BYTES)
    if parts.generation >= 0 and room:
        delta = fold.take_delta()
        if any(delta):
            value = encode_part(partition, delta)
            parts.deltas += 1
            parts.delta_bytes += len(value)
            out[part_key(account_id, parts.generation, parts.deltas)] = value
    else:
        if parts.generation >= 0:
            stale = [part_key(account_id, parts.generation, index) for index in range(parts.deltas + 1)]
        parts.generation += 1
        value = encode_part(partition, fold.base_state())
        parts.deltas, parts.base_bytes, parts.delta_bytes = 0, len(value), 0
        out[part_key(account_id, parts.generation, 0)] = value
    header = fold.header_state()
    entry = PartsEntry(partition, applied, wake, alert_state, header, *_fields(parts))
    out[account_key(account_id)] = encode_account(entry)
    for key in stale:
        out[key] = None


def _fields(parts: Parts) -> tuple[int, int, int, int]:
    return parts.generation, parts.deltas, parts.base_bytes, parts.delta_bytes
